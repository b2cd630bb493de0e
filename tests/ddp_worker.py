"""Run by tests/test_ssl.py under torchrun: a few DDP pretraining steps on a synthetic corpus."""

import json
import os
import sys

import numpy as np

from vhrfm.ssl.corpus import Corpus
from vhrfm.ssl.train import pretrain

CFG = dict(encoder="vit_nano_p8", mask_ratio=0.75, decoder_dim=32, decoder_depth=1, texture_weight=0.5, tau=0.2,
           momentum=0.99, contrastive_weight=1.0, crop=32, scale=[0.8, 1.2], band_drop=0.3, jitter=0.1, steps=3,
           batch_size=4, lr=1e-3, weight_decay=0.05, warmup_steps=1, ckpt_every=10, log_every=1, clip_grad=1.0)


def synthetic_corpus():
    rng = np.random.default_rng(0)
    return Corpus.from_arrays({"ms": (rng.normal(size=(16, 4, 40, 40)), [480, 545, 660, 832], [60, 70, 60, 125], 2.0),
                               "pan": (rng.normal(size=(16, 1, 40, 40)), [625], [350], 0.5)})


if __name__ == "__main__":
    out, objective = sys.argv[1], sys.argv[2]
    s = pretrain(objective, objective, CFG, synthetic_corpus(), out, seed=0, progress=False)
    rank = int(os.environ.get("RANK", 0))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(s, f)
