"""A trained task model as files: weights (safetensors) and a JSON card holding everything prediction needs.

The card names the model kind (a pretrained encoder with a dense head, a U-Net, or a classical spectral
index), the bands it was trained on (names, centre wavelengths, widths), the training GSD, the
normalisation statistics, the operating threshold chosen on validation and the metrics measured on
test. ``load_task_model`` rebuilds the model from the card alone, so a scene can be mapped without the
training data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vhrfm.apps.segmentation import positive_probs
from vhrfm.data.io import atomic_path
from vhrfm.errors import VHRFMInputError

CARD_VERSION = 1
KINDS = ("segmenter", "unet", "classical")


def card_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def weights_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".safetensors")


def save_task_model(path: str | Path, model, card: dict) -> Path:
    """Write ``<path>.json`` (the card) and, for learned models, ``<path>.safetensors``; both atomically."""
    kind = card.get("kind")
    if kind not in KINDS:
        raise ValueError(f"card kind must be one of {KINDS}, got {kind!r}")
    for key in ("task", "bands", "wavelengths", "widths", "gsd_m", "norm", "threshold"):
        if key not in card:
            raise ValueError(f"task-model card lacks {key!r}")
    card = {**card, "card_version": CARD_VERSION}
    if kind == "classical":  # a rule: its fitted settings go into the card, there are no weights
        card["classical"] = model.card_entry()
    else:
        final, tmp = atomic_path(weights_path(path))
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp), metadata={"task": card["task"], "kind": kind})
        os.replace(tmp, final)
    final, tmp = atomic_path(card_path(path))
    tmp.write_text(json.dumps(card, indent=1, sort_keys=True, default=float) + "\n")
    os.replace(tmp, final)
    return final


@dataclass
class TaskModel:
    """A loaded task model: ``probs(raw)`` maps raw band values (N, C, H, W) to probabilities (N, H, W).

    With ``tta`` a network's probabilities are the mean over the 8 rotations and flips of each window, each turned
    back (D4 test-time augmentation, :func:`vhrfm.apps.segmentation.positive_probs`; 8x the inference). A classical rule
    is left as it is (a spectral index is per pixel; the blob filter is isotropic)."""

    card: dict
    net: torch.nn.Module | None = None  # None for a classical rule (its settings are in card["classical"])
    tta: bool = False

    @property
    def n_bands(self) -> int:
        return len(self.card["bands"])

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.card["norm"]["mean"], np.float32)[None, :, None, None]
        std = np.asarray(self.card["norm"]["std"], np.float32)[None, :, None, None]
        return ((raw.astype(np.float32) - mean) / std).astype(np.float32)

    def _check(self, raw: np.ndarray) -> None:
        if raw.ndim != 4 or raw.shape[1] != self.n_bands:
            raise VHRFMInputError("band count does not match the model", expected=f"{self.n_bands} bands {self.card['bands']}",
                                  found=raw.shape[1] if raw.ndim == 4 else raw.shape)

    def for_bands(self, bands, wavelengths, widths, mean, std) -> TaskModel:
        """The same model on another band set (another sensor), normalised by the given statistics.

        Only models whose input is band-agnostic accept this: the any-band encoder with a head, and the
        band-mean blob detector. A U-Net or a spectral-index rule knows only its training bands.
        """
        c = self.card.get("classical", {})
        if self.card["kind"] == "unet" or (self.card["kind"] == "classical" and c.get("type") != "blob"):
            raise VHRFMInputError("this model accepts only its training bands", expected=f"{self.n_bands} bands "
                                  f"{self.card['bands']}", found=f"{len(bands)} bands {list(bands)}")
        if not len(bands) == len(wavelengths) == len(widths) == len(mean) == len(std):
            raise ValueError("bands, wavelengths, widths, mean and std must have one entry per band")
        card = {**self.card, "bands": [str(b) for b in bands], "wavelengths": [float(v) for v in wavelengths],
                "widths": [float(v) for v in widths], "norm": {"key": "scene", "mean": [float(v) for v in mean],
                                                               "std": [float(v) for v in std]},
                "trained_bands": self.card.get("trained_bands", self.card["bands"])}
        return replace(self, card=card)

    def cloud(self, raw: np.ndarray) -> np.ndarray | None:
        """Pixels the card's cloud rule flags (N, H, W), or None when the card has none.

        The rule (fitted by :func:`vhrfm.apps.wildfire.fit_cloud_rule`) flags pixels bright in every visible band:
        the minimum over those bands of the normalised value above ``min_z``. Normalised values, so the rule
        follows a scene normalised by its own statistics (``for_bands``)."""
        rule = self.card.get("cloud_mask")
        if not rule:
            return None
        x = self.normalise(raw)
        vis = [i for i, w in enumerate(self.card["wavelengths"]) if 400.0 <= float(w) <= 700.0]
        if not vis:
            return None
        return x[:, vis].min(1) > float(rule["min_z"])

    @torch.no_grad()
    def probs(self, raw: np.ndarray, gsd: float | None = None, valid: np.ndarray | None = None) -> np.ndarray:
        """Probabilities of the positive class; invalid pixels (``valid`` False) are zeroed before the model."""
        self._check(raw)
        x = self.normalise(raw)
        if valid is not None:
            x[~np.broadcast_to(valid[:, None], x.shape)] = 0.0
        gsd = float(self.card["gsd_m"] if gsd is None else gsd)
        if self.net is None:
            c = self.card["classical"]
            if c.get("type") == "blob":
                from vhrfm.apps.megafauna import BlobDetector, blob_response

                v = np.ones((len(x), *x.shape[-2:]), bool) if valid is None else valid
                return BlobDetector._squash(blob_response(x, v, gsd, c["size_m"], c["polarity"]), c["scale"])
            from vhrfm.apps.wildfire import _scale01, spectral_indices

            score = spectral_indices(raw.astype(np.float32), self.card["wavelengths"])[c["index"]]
            return _scale01(score, *c["range"])
        wl = torch.tensor(self.card["wavelengths"], dtype=torch.float32)
        wd = torch.tensor(self.card["widths"], dtype=torch.float32)
        return positive_probs(self.net, torch.from_numpy(x), wl, torch.full((len(x),), gsd), wd,
                              self.tta).numpy().astype(np.float32)


def encoder_card(model_name: str, model) -> dict:
    """The card fields of a learned any-band model (encoder + dense head): the encoder's architecture, where its
    weights started (the teacher, a self-supervised KD student, or nothing), whether it was frozen, and its dense
    decoder (``fpn`` or ``unet``, :mod:`vhrfm.heads`)."""
    from vhrfm.heads import FROM_SCRATCH

    enc = model.encoder.card
    start = ("teacher" if model_name.startswith("teacher") else
             None if model_name in FROM_SCRATCH else f"kd_{enc['arch']} (self-supervised KD of the teacher)")
    return {"encoder": {"arch": enc["arch"], "arch_kwargs": enc.get("arch_kwargs", {}), "pretrained": start,
                        "frozen": model.frozen, "task_kd": model_name == "student_taskkd"},
            "head_width": model.head.out.in_channels, "dense_decoder": model.decoder,
            "head_skip_levels": getattr(model.head, "skip_levels", 0)}


def deployment_picks(results: dict, few_label: tuple[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """The (model, budget) behind each name of a task's ``index.json``, each chosen on validation F1 over every
    budget: ``student`` (the best student variant), ``teacher`` (the best teacher variant), ``best_val`` (the best
    of every model), ``few_label`` (given, optional); ``default`` (what `vhrfm predict` uses) is the student, or ``best_val``
    when no student ran."""
    from vhrfm.heads import STUDENT_MODELS, TEACHER_MODELS

    def best(models):
        cands = [(m, b) for m in models if m in results for b in results[m]]
        return max(cands, key=lambda k: results[k[0]][k[1]]["val"]["f1"]) if cands else None

    picks = {"best_val": best(results), "teacher": best(TEACHER_MODELS), "student": best(STUDENT_MODELS),
             "few_label": few_label}
    picks = {k: v for k, v in picks.items() if v is not None}
    picks["default"] = picks.get("student", picks["best_val"])
    return picks


def build_net(card: dict) -> torch.nn.Module:
    from vhrfm.heads import Segmenter, SMPUNet
    from vhrfm.models import create_encoder

    if card["kind"] == "segmenter":
        enc = create_encoder(card["encoder"]["arch"], **card["encoder"].get("arch_kwargs", {}))
        return Segmenter(enc, width=card.get("head_width", 64), decoder=card.get("dense_decoder", "fpn"),
                         skip_levels=card.get("head_skip_levels", 0))
    if card["kind"] == "unet":
        return SMPUNet(in_channels=len(card["bands"]), encoder_name=card.get("unet_encoder", "resnet18"))
    raise ValueError(f"no network for kind {card['kind']!r}")


def load_task_model(path: str | Path, task: str | None = None) -> TaskModel:
    """Load a task model from its card (``.json``) or weights (``.safetensors``) path; errors name what is wrong."""
    cp = card_path(path)
    if not cp.exists():
        raise VHRFMInputError("task model not found", expected="a task-model card (.json) written by the pipeline "
                              "(`dvc repro`, e.g. models/wildfire/wildfire.json)", found=str(path))
    try:
        card = json.loads(cp.read_text())
    except json.JSONDecodeError as exc:
        raise VHRFMInputError("task-model card is not valid JSON", found=str(exc), path=cp) from None
    if card.get("kind") not in KINDS or "bands" not in card:
        raise VHRFMInputError("not a task-model card", expected=f"a JSON with kind in {KINDS}", found=card.get("kind"), path=cp)
    if task is not None and card.get("task") != task:
        raise VHRFMInputError("task model is for another task", expected=task, found=card.get("task"), path=cp)
    if card["kind"] == "classical":
        return TaskModel(card)
    wp = weights_path(path)
    if not wp.exists():
        raise VHRFMInputError("task-model weights missing beside the card", expected=str(wp), found="nothing")
    net = build_net(card)
    try:
        state = load_file(str(wp), device="cpu")
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise VHRFMInputError("task-model weights cannot be read (corrupt file)", found=str(exc)[:200], path=wp) from None
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VHRFMInputError("weights do not match the architecture in the card", expected=card["kind"],
                              found=f"missing {missing[:3]}, unexpected {unexpected[:3]}", path=wp)
    return TaskModel(card, net=net.eval())


INDEX_NAMES = ("default", "student", "teacher", "best_val", "few_label")


def resolve_task_model(task: str, model: str | None, profile: str) -> Path:
    """A task-model card: an explicit path, a name under models/<task>/, a name of the pipeline's index
    (``student``, ``teacher``, ``best_val``, ``few_label``), or the index's default (the distilled student)."""
    from vhrfm.config import APP_TASKS, models_dir

    if task not in APP_TASKS:
        raise VHRFMInputError("unknown task", expected=list(APP_TASKS), found=task)
    folder = models_dir(profile) / task
    index_path = folder / "index.json"
    if model is not None and model not in INDEX_NAMES:
        p = Path(model)
        for cand in (p, p.with_suffix(".json"), folder / f"{model}.json"):
            if cand.suffix == ".json" and cand.exists():
                return cand
        raise VHRFMInputError("task model not found", expected=f"a card path, a name in {folder}, or one of "
                              f"{list(INDEX_NAMES)}", found=model)
    if not index_path.exists():
        raise VHRFMInputError(f"no trained {task} model yet", expected=f"{index_path} (run `make repro` or "
                              f"`dvc repro {task}@{profile}`)", found="nothing")
    index = json.loads(index_path.read_text())
    name = model or "default"
    if name not in index:
        raise VHRFMInputError(f"the {task} pipeline saved no {name!r} model", expected=sorted(set(index) - {"models"}),
                              found=name, path=index_path)
    return folder / f"{index[name]}.json"


__all__ = ["TaskModel", "save_task_model", "load_task_model", "resolve_task_model", "INDEX_NAMES", "build_net", "encoder_card", "deployment_picks", "card_path", "weights_path"]
