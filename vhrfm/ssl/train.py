"""The pretraining loop: one objective, progress bar, CSV log, checkpoints + exact resume, DDP, AMP.

Launch on one process (``vhrfm pretrain``) or several (``torchrun --nproc_per_node N -m vhrfm.cli
pretrain ...``): with ``WORLD_SIZE`` > 1 the loop joins a process group (NCCL on GPUs, gloo on CPUs),
wraps the objective in DistributedDataParallel and gives each rank its own batch stream. Every
random draw of a step (batch, views, masks) comes from generators seeded with (seed, step, rank), so
a run killed after a checkpoint resumes to exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from vhrfm.checkpoint import save_encoder
from vhrfm.models import create_encoder, encoder_config
from vhrfm.ssl.contrastive import MoCoV3
from vhrfm.ssl.corpus import Corpus
from vhrfm.ssl.hybrid import Hybrid
from vhrfm.ssl.mae import MAE
from vhrfm.ssl.vicreg import VICReg
from vhrfm.ssl.views import View, make_view

OBJECTIVES = ("mae", "contrastive", "hybrid", "vicreg", "distill")
LOSS_TERMS = ("mse", "texture", "contrastive", "invariance", "variance", "covariance", "cosine", "relational")
LOG_FIELDS = ["step", "loss", *LOSS_TERMS, "lr", "momentum", "images_per_s", "product"]


FREEZABLE = ("stem",)


def freeze_parts(model: nn.Module, parts) -> int:
    """Keep ``parts`` of every encoder of an objective (online, and momentum where there is one) at their
    initialisation: ``"stem"`` is the any-band stem's kernel generator, frozen at random init as MoCo v3 freezes the
    ViT's patch projection (Chen, Xie and He, ICCV 2021); chapter 1 found a random stem's statistics the probes' best
    single level (``scripts/frozen_stem_study.py``). Frozen parameters leave the optimiser (no update, no weight
    decay). Returns the number of the online encoder's parameters frozen."""
    parts = list(parts or [])
    bad = [q for q in parts if q not in FREEZABLE]
    if bad:
        raise ValueError(f"freeze: unknown part(s) {bad}; expected any of {FREEZABLE}")
    n = 0
    for name in ("encoder", "momentum_encoder"):
        enc = getattr(model, name, None)
        if enc is None or not parts:
            continue
        if not hasattr(enc, "stem"):
            raise ValueError(f"freeze: {type(enc).__name__} has no any-band stem (a convolutional any-band encoder has)")
        for p in enc.stem.parameters():
            n += p.numel() if name == "encoder" else 0
            p.requires_grad_(False)
    return n


def build_objective(objective: str, cfg: dict) -> nn.Module:
    model = _build_objective(objective, cfg)
    freeze_parts(model, cfg.get("freeze"))
    return model


def _build_objective(objective: str, cfg: dict) -> nn.Module:
    enc = create_encoder(cfg["encoder"])
    mae_kw = dict(mask_ratio=cfg["mask_ratio"], decoder_dim=cfg["decoder_dim"], decoder_depth=cfg["decoder_depth"],
                  texture_weight=cfg["texture_weight"])
    moco_kw = dict(tau=cfg["tau"], momentum=cfg["momentum"])
    if objective == "mae":
        return MAE(enc, **mae_kw)
    if objective == "contrastive":
        return MoCoV3(enc, **moco_kw)
    if objective == "hybrid":
        return Hybrid(MAE(enc, **mae_kw), contrastive_weight=cfg["contrastive_weight"], **moco_kw)
    if objective == "vicreg":
        w = cfg.get("vicreg_weights") or {}
        return VICReg(enc, dim=cfg.get("vicreg_dim", 2048), sim_weight=w.get("sim", 25.0), var_weight=w.get("var", 25.0),
                      cov_weight=w.get("cov", 1.0))
    if objective == "distill":
        from vhrfm.checkpoint import load_encoder
        from vhrfm.distill.kd import FeatureKD

        return FeatureKD(enc, load_encoder(cfg["teacher"]), cos_weight=cfg.get("cos_weight", 1.0),
                         rel_weight=cfg.get("rel_weight", 1.0))
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def n_views(objective: str) -> int:
    """How many views of a batch ``objective`` takes: one for the masked / distillation objectives, two otherwise."""
    return 1 if objective in ("mae", "distill") else 2


def objective_loss(model: nn.Module, objective: str, views: list[View], g: torch.Generator) -> dict:
    """The objective's losses on its views (on the model's device): the one call every objective is made through,
    here and in the pretraining benchmark's bare loop (:func:`vhrfm.bench.bench_pretrain`)."""
    if objective in ("mae", "distill"):
        (v,) = views
        return model(v.image, v.wavelengths, v.gsd, v.widths, g)
    v1, v2 = views
    return model(v1, v2) if objective in ("contrastive", "vicreg") else model(v1, v2, g)


def step_loss(model: nn.Module, objective: str, batch, cfg: dict, g: torch.Generator, device) -> dict:
    """One step's losses: the batch moves to ``device`` (and to float32) first, so its views are made there (on a
    GPU, not one sample at a time on the CPU)."""
    x, wl, wd, gsd, _ = batch
    x, gsd = x.to(device, torch.float32, non_blocking=True), gsd.to(device)
    views = [make_view(x, wl, wd, gsd, out=cfg["crop"], scale=tuple(cfg["scale"]), band_drop=cfg["band_drop"],
                       jitter=cfg["jitter"], g=g) for _ in range(n_views(objective))]
    return objective_loss(model, objective, views, g)


def train_device(rank: int = 0) -> torch.device:
    """Where a rank trains: its GPU when there are GPUs, else the CPU."""
    return torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")


def autocast_for(device: torch.device):
    """The loop's mixed precision: bf16 autocast on a GPU, none on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def lr_at(step: int, cfg: dict) -> float:
    warm = cfg["warmup_steps"]
    if step < warm:
        return cfg["lr"] * (step + 1) / warm
    progress = (step - warm) / max(1, cfg["steps"] - warm)
    return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * progress))


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return world, rank


def _write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".part")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


SNAPSHOT_DIR = "snapshots"


def snapshot_name(name: str, step: int) -> str:
    """The file stem of ``name``'s encoder after ``step`` training steps (in ``SNAPSHOT_DIR``)."""
    return f"{name}_step{step}"


def _card(name: str, objective: str, cfg: dict, corpus: Corpus, seed: int, steps: int, rows: list[dict],
          card_extra: dict | None) -> dict:
    return {
        "arch": cfg["encoder"], "arch_kwargs": encoder_config(cfg["encoder"]), "name": name, "objective": objective,
        "settings": cfg, "steps": steps, "seed": seed, "final_loss": rows[-1]["loss"] if rows and steps else None,
        "trained_wavelengths_nm": sorted({round(float(w), 1) for p in corpus.products for w in p.wavelengths}),
        "accepted_wavelength_range_nm": [350.0, 2500.0],
        "gsd_range_m": [min(p.gsd for p in corpus.products) * cfg["scale"][0],
                        max(p.gsd for p in corpus.products) * cfg["scale"][1]],
        "corpus": corpus.summary().to_dict(orient="records"),
        **(card_extra or {}),
    }


def pretrain(name: str, objective: str, cfg: dict, corpus: Corpus, out_dir: str | Path, *, seed: int = 0,
             card_extra: dict | None = None, progress: bool = True, resume: bool = True,
             fail_at_step: int | None = None) -> dict:
    """Train ``objective`` for ``cfg['steps']`` steps; write ``<name>.safetensors`` + card, ``<name>_log.csv``.

    ``cfg['snapshots']`` (optional) lists step counts after which the encoder is also written, as
    ``snapshots/<name>_step<k>.safetensors`` (0: the initialisation this run starts from): a learning curve of the
    frozen features. ``fail_at_step`` raises after that many steps (tests use it to stand for a kill).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world, rank = _dist_info()
    device = train_device(rank)
    torch.manual_seed(seed)
    model = build_objective(objective, cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.95))
    ckpt = out / f"{name}_checkpoint.pt"
    start, rows = 0, []
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, rows = state["step"], state["log"]
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    amp = autocast_for(device)
    bar = tqdm(range(start, cfg["steps"]), desc=f"pretrain {name}", disable=not progress or rank != 0,
               initial=start, total=cfg["steps"])
    t_start = time.perf_counter()
    momentum = float("nan")
    snapshots = sorted({int(k) for k in cfg.get("snapshots") or []})
    if any(k < 0 or k >= cfg["steps"] for k in snapshots):
        raise ValueError(f"{name}: snapshots {snapshots} must lie in [0, steps={cfg['steps']}) (the last step is the model)")
    for step in bar:
        if rank == 0 and step in snapshots:  # the encoder after `step` updates (written before this step's update)
            snap = out / SNAPSHOT_DIR / f"{snapshot_name(name, step)}.safetensors"
            if not snap.exists():
                save_encoder(model.encoder, snap, _card(name, objective, cfg, corpus, seed, step, rows, card_extra))
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))
        batch = corpus.batch(step, cfg["batch_size"], seed, rank)
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        with amp:
            out_d = step_loss(ddp, objective, batch, cfg, g, device)
        opt.zero_grad(set_to_none=True)
        out_d["loss"].backward()
        if cfg.get("clip_grad"):
            nn.utils.clip_grad_norm_(params, cfg["clip_grad"])
        opt.step()
        if hasattr(model, "update_momentum"):
            momentum = model.update_momentum((step + 1) / cfg["steps"])
        dt = time.perf_counter() - t0
        if step % cfg["log_every"] == 0 or step == cfg["steps"] - 1:
            row = {"step": step, "loss": float(out_d["loss"].detach()), "lr": lr, "momentum": momentum,
                   "images_per_s": cfg["batch_size"] * world / dt, "product": batch[4]}
            for k in LOSS_TERMS:
                row[k] = float(out_d[k]) if k in out_d else float("nan")
            rows.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
        if rank == 0 and ((step + 1) % cfg["ckpt_every"] == 0 or step + 1 == cfg["steps"]):
            tmp = ckpt.with_suffix(".part")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1, "log": rows}, tmp)
            tmp.replace(ckpt)
            _write_log(out / f"{name}_log.csv", rows)
        if fail_at_step is not None and step + 1 >= fail_at_step:
            raise RuntimeError(f"simulated kill after step {step + 1}")
    seconds = time.perf_counter() - t_start
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    summary = {"param_digest": digest, "name": name, "objective": objective, "steps": cfg["steps"], "final_loss": rows[-1]["loss"] if rows else None,
               "seconds_this_run": round(seconds, 1), "world_size": world, "device": str(device)}
    if rank == 0:
        save_encoder(model.encoder, out / f"{name}.safetensors",
                     _card(name, objective, cfg, corpus, seed, cfg["steps"], rows, card_extra))
        # the whole objective (decoder, projector...) for reconstructions and further training; not published
        torch.save({"objective": objective, "settings": cfg, "state": model.state_dict()}, out / f"{name}_objective.pt")
        _write_log(out / f"{name}_log.csv", rows)
        ckpt.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    return summary
