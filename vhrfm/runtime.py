"""Run a task model in ONNX Runtime instead of eager PyTorch (``vhrfm predict --runtime onnx``).

A small network spends most of a batch-one call in PyTorch's per-layer overhead, not in arithmetic (chapter 2
measures it); ONNX Runtime executes the same graph with far less. :func:`onnx_task_model` wraps a loaded
:class:`~vhrfm.apps.taskmodel.TaskModel` so that its network runs as an ONNX graph and everything else (card,
normalisation, threshold, cloud rule, ``for_bands``) is unchanged, so whole-scene prediction takes it as it is.

An ONNX graph is fixed to one band set (the any-band stem folded into a plain convolution,
:func:`vhrfm.models.fix_bands`), one GSD and one tile shape; the wrapper exports a graph the first time it sees
a combination (a few seconds) and reuses it after. The batch axis is dynamic. Exports live in a temporary
folder that is removed with the wrapper.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

RUNTIMES = ("torch", "onnx")


class FixedTaskNet(nn.Module):
    """A task network with its band set and GSD fixed: ``forward(normalised x)`` -> the network's logits, or
    probabilities with ``sigmoid``."""

    def __init__(self, net: nn.Module, wavelengths, widths, gsd: float, sigmoid: bool = False):
        super().__init__()
        from vhrfm.heads import Segmenter
        from vhrfm.models import fix_bands

        net = copy.deepcopy(net).eval()
        if isinstance(net, Segmenter):  # an any-band encoder with a head: fold the spectral stem
            net.encoder = fix_bands(net.encoder, wavelengths, widths)
        self.net = net
        self.register_buffer("wl", torch.as_tensor(wavelengths, dtype=torch.float32))
        self.register_buffer("wd", torch.as_tensor(widths, dtype=torch.float32))
        self.gsd = float(gsd)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x, self.wl, torch.full((x.shape[0],), self.gsd, dtype=x.dtype), self.wd)
        return torch.sigmoid(y) if self.sigmoid else y


class OnnxNet:
    """Stands in for a task network (same call: ``net(x, wavelengths, gsd, widths)`` -> logits tensor) and runs it
    in ONNX Runtime, one exported graph per (tile shape, band set, GSD)."""

    def __init__(self, net: nn.Module, threads: int | None = None):
        self.net = net.eval()
        self.threads = threads
        self._dir = tempfile.TemporaryDirectory(prefix="vhrfm-onnx-")
        self._sessions: dict[tuple, object] = {}

    @property
    def exports(self) -> int:
        """How many graphs have been exported so far."""
        return len(self._sessions)

    def _session(self, shape, wavelengths, widths, gsd: float):
        key = (tuple(shape[1:]), tuple(np.round(wavelengths, 4)), tuple(np.round(widths, 4)), round(float(gsd), 6))
        if key not in self._sessions:
            from vhrfm.distill.efficiency import export_onnx, ort_session

            fixed = FixedTaskNet(self.net, wavelengths, widths, gsd).eval()
            path = Path(self._dir.name) / f"net_{len(self._sessions)}.onnx"
            export_onnx(fixed, torch.zeros(1, *shape[1:]), path, output_name="logits")
            self._sessions[key] = ort_session(path, threads=self.threads)
        return self._sessions[key]

    def __call__(self, x: torch.Tensor, wavelengths, gsd, widths=None) -> torch.Tensor:
        wl = torch.as_tensor(wavelengths, dtype=torch.float32).numpy()
        wd = None if widths is None else torch.as_tensor(widths, dtype=torch.float32).numpy()
        if wd is None:
            raise ValueError("the ONNX runtime needs the band widths (the task-model card carries them)")
        g = torch.as_tensor(gsd, dtype=torch.float32).reshape(-1)
        if len(g) and not torch.allclose(g, g[0]):
            raise ValueError("one GSD per batch in the ONNX runtime; got several")
        sess = self._session(tuple(x.shape), wl, wd, float(g[0]) if len(g) else 1.0)
        (y,) = sess.run(None, {"image": x.detach().cpu().numpy().astype(np.float32)})
        return torch.from_numpy(y)


def onnx_task_model(model, threads: int | None = None):
    """``model`` (a :class:`~vhrfm.apps.taskmodel.TaskModel`) with its network run by ONNX Runtime; a classical rule
    (no network) is returned unchanged."""
    if model.net is None:
        return model
    return dataclasses.replace(model, net=OnnxNet(model.net, threads=threads))


def with_runtime(model, runtime: str):
    """``model`` run by ``runtime`` (one of :data:`RUNTIMES`)."""
    from vhrfm.errors import VHRFMInputError

    if runtime not in RUNTIMES:
        raise VHRFMInputError("unknown runtime", expected=list(RUNTIMES), found=runtime)
    return onnx_task_model(model) if runtime == "onnx" else model


__all__ = ["RUNTIMES", "FixedTaskNet", "OnnxNet", "onnx_task_model", "with_runtime"]
