"""Weights as safetensors with a JSON model card beside them; ``load_encoder`` restores both.

The card carries what a user needs to use the weights correctly: architecture and its arguments, the
wavelength range and GSD range seen in training, the normalisation statistics per product, training
data and licences, objective and settings, steps, metrics and the command that made them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vhrfm.config import models_dir
from vhrfm.data.io import atomic_path
from vhrfm.errors import VHRFMInputError


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def write_card(weights: str | Path, card: dict) -> Path:
    final, tmp = atomic_path(card_path(weights))
    tmp.write_text(json.dumps(card, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, final)
    return final


def save_encoder(encoder: torch.nn.Module, path: str | Path, card: dict) -> Path:
    """Write ``path`` (.safetensors) and its card (.json), atomically."""
    final, tmp = atomic_path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    save_file(state, str(tmp), metadata={"arch": str(card.get("arch", ""))})
    os.replace(tmp, final)
    write_card(final, card)
    return final


def resolve(path_or_name: str | Path) -> Path:
    p = Path(path_or_name)
    if p.suffix != ".safetensors":
        for cand in (p.with_suffix(".safetensors"), models_dir() / f"{path_or_name}.safetensors"):
            if cand.exists():
                return cand
    if not p.exists():
        raise VHRFMInputError("encoder weights not found", expected="a .safetensors path or a name under models/",
                              found=str(path_or_name))
    return p


def read_card(path_or_name: str | Path) -> dict:
    """The JSON model card of an encoder (path or name under models/), without loading its weights."""
    cp = card_path(resolve(path_or_name))
    if not cp.exists():
        raise VHRFMInputError("model card missing beside the weights", expected=str(cp), found="nothing")
    return json.loads(cp.read_text())


def load_encoder(path_or_name: str | Path, map_location: str = "cpu"):
    """Create the encoder named in the card and load its weights; the card is attached as ``.card``."""
    from vhrfm.models import create_encoder

    weights = resolve(path_or_name)
    card = read_card(weights)
    enc = create_encoder(card["arch"], **card.get("arch_kwargs", {}))
    state = load_file(str(weights), device=map_location)
    missing, unexpected = enc.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VHRFMInputError("weights do not match the architecture in the card", expected=card["arch"],
                              found=f"missing {missing[:3]}, unexpected {unexpected[:3]}", path=weights)
    enc.card = card
    return enc.eval()
