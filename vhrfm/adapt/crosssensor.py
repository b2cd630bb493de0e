"""Cross-sensor evaluation: a frozen encoder with a linear probe trained on one sensor's imagery and tested
on another's, over every pair of domains; adaptation methods compared with the naive transfer on the
same matrix.

Domains here are **simulated** from the real Pleiades aircraft patches (chapter 1's probe task) with
:mod:`vhrfm.adapt.simulate`: other sensors' RGB or PAN bands, GSDs, MTF, noise and digital-number
scales. The data store holds no labelled task observed by two real sensors, so there is no real-pair
matrix yet; every number of this module is on simulated domains and says so.

Methods (each a way to feed target-domain pixels to the frozen encoder; the probe is never retrained):
``naive`` (the source's normalisation statistics), ``hist_match`` (target bands histogram-matched to the
source's, then the source's statistics), ``own_norm`` (the target's own per-band statistics from its
unlabeled training patches), ``own_norm_adabn`` (own statistics + AdaBN: the encoder's batch-norm
statistics re-estimated on each domain's unlabeled patches, the source's for its probe and the target's
for its test patches), ``own_norm_adabn_tent`` (AdaBN, then TENT, Wang et al., ICLR 2021: the encoder's
batch-norm scales and shifts optimised to minimise the entropy of the source probe's predictions on the
target's unlabeled training patches; the probe itself stays fixed).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from vhrfm.adapt.simulate import sensor_target, simulate
from vhrfm.ssl.probe import ProbeTask, linear_probe

METHODS = ("naive", "hist_match", "own_norm", "own_norm_adabn", "own_norm_adabn_tent")
TENT = {"steps": 10, "lr": 1e-3, "batch": 64}


class Domain:
    """Raw (un-normalised) patches of one domain with their band metadata; train / val / test as in the task."""

    def __init__(self, name: str, raw: np.ndarray, wavelengths, widths, gsd: float, y, split, simulated: bool):
        self.name, self.raw, self.gsd, self.y, self.split, self.simulated = name, raw.astype(np.float32), float(gsd), y, split, simulated
        self.wavelengths = np.asarray(wavelengths, np.float32)
        self.widths = np.asarray(widths, np.float32)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band mean and std over the unlabeled training patches."""
        tr = self.raw[self.split == "train"]
        return tr.mean((0, 2, 3)), np.maximum(tr.std((0, 2, 3)), 1e-6)

    def quantiles(self, q) -> np.ndarray:
        """(C, len(q)) quantiles per band over the unlabeled training patches."""
        flat = self.raw[self.split == "train"].transpose(1, 0, 2, 3).reshape(self.raw.shape[1], -1)
        return np.quantile(flat, q, axis=1).T


def source_domain(task: ProbeTask, mean, std) -> Domain:
    """The real task's patches, back to raw values."""
    raw = task.X * np.asarray(std, np.float32)[None, :, None, None] + np.asarray(mean, np.float32)[None, :, None, None]
    return Domain(f"{task.sensor} (real)", raw, task.wavelengths, task.widths, task.gsd, task.y, task.split, False)


def simulate_domain(src: Domain, spec: dict, seed: int = 0, mtf_nyquist: float = 0.3, snr: float = 100.0,
                    dn_scale: bool = True) -> Domain:
    """``src`` as seen by ``spec`` = {name, sensor, bands, gsd}. ``dn_scale``: the product's digital numbers are
    2^(bit depth - 8) times the 8-bit source's (counts); otherwise the same scale (calibrated products)."""
    t = sensor_target(spec["sensor"], tuple(spec["bands"]))
    rng = np.random.default_rng(seed)
    gain = 2.0 ** (t["bit_depth"] - 8) if dn_scale else 1.0
    out = [simulate(x, src.wavelengths, src.widths, src.gsd, t["wavelengths"], t["widths"], spec["gsd"],
                    mtf_nyquist=mtf_nyquist, gain=gain, snr=snr, bit_depth=t["bit_depth"] if dn_scale else None, rng=rng)
           for x in src.raw]
    return Domain(spec["name"], np.stack(out), t["wavelengths"], t["widths"], spec["gsd"], src.y, src.split, True)


def hist_match(target: Domain, source: Domain, n_q: int = 101) -> np.ndarray:
    """Target raw values mapped band by band onto the source's distribution (quantile mapping; single-band
    targets are matched to the mean of the source bands)."""
    q = np.linspace(0, 1, n_q)
    tq = target.quantiles(q)
    sq = source.quantiles(q)
    if target.raw.shape[1] != source.raw.shape[1]:
        sq = np.repeat(sq.mean(0, keepdims=True), target.raw.shape[1], 0)
    out = np.empty_like(target.raw)
    for b in range(target.raw.shape[1]):
        out[:, b] = np.interp(target.raw[:, b], tq[b], sq[b])
    return out


def embed(encoder, xb: torch.Tensor, dom: Domain) -> torch.Tensor:
    """Pooled features of a batch of one domain's patches.

    A patch-based encoder (a ViT) needs sides that are a multiple of its patch size, and a simulated domain's
    patches need not have them (32 px at 1 m resampled to 1.24 m is 26 px): they are centre-cropped to the largest
    such sides, so no pixel is invented and the GSD is unchanged. A convolutional encoder gets them whole."""
    p = getattr(encoder, "patch_size", None)
    if p:
        h, w = xb.shape[-2:]
        hh, ww = h - h % p, w - w % p
        if hh == 0 or ww == 0:
            raise ValueError(f"{dom.name}: patches of {h}x{w} px are smaller than the encoder's {p} px patch")
        top, left = (h - hh) // 2, (w - ww) // 2
        xb = xb[..., top:top + hh, left:left + ww]
    return encoder(xb, dom.wavelengths, torch.full((len(xb),), dom.gsd), dom.widths)


@torch.no_grad()
def features(encoder, x: np.ndarray, dom: Domain, batch: int = 128) -> np.ndarray:
    encoder.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))
        out.append(embed(encoder, xb, dom).float().numpy())
    return np.concatenate(out)


@torch.no_grad()
def reestimate_bn(module: torch.nn.Module, feed) -> torch.nn.Module:
    """AdaBN (Li et al., 2016): a copy of ``module`` whose batch-norm running statistics are re-estimated as the
    cumulative average over whatever ``feed(copy)`` runs through it. Only the batch-norm layers are put in training
    mode (a frozen encoder's too); dropout and everything else stay in evaluation mode, and no weight changes."""
    out = copy.deepcopy(module).eval()
    bns = [m for m in out.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return out
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    feed(out)
    return out.eval()


def adabn(encoder, x: np.ndarray, dom: Domain, batch: int = 64):
    """A copy of ``encoder`` whose batch-norm running statistics are re-estimated on ``x`` (cumulative average)."""
    def feed(enc):
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))
            embed(enc, xb, dom)

    return reestimate_bn(encoder, feed)


def probe_logits(scaler, clf, f: torch.Tensor) -> torch.Tensor:
    """The fitted sklearn probe (standard scaler + binary logistic regression) as a differentiable function."""
    mu, sd = torch.as_tensor(scaler.mean_, dtype=f.dtype), torch.as_tensor(scaler.scale_, dtype=f.dtype)
    w, b = torch.as_tensor(clf.coef_[0], dtype=f.dtype), torch.as_tensor(clf.intercept_[0], dtype=f.dtype)
    return ((f - mu) / sd) @ w + b


def binary_entropy(logit: torch.Tensor) -> torch.Tensor:
    """Element-wise entropy of Bernoulli predictions given as logits (numerically stable)."""
    p1 = torch.sigmoid(logit)
    return -(p1 * torch.nn.functional.logsigmoid(logit) + (1 - p1) * torch.nn.functional.logsigmoid(-logit))


def tent_bn_affine(module: torch.nn.Module, objective, steps: int, lr: float) -> torch.nn.Module:
    """TENT (Wang et al., "Tent: fully test-time adaptation by entropy minimization", ICLR 2021, Eq. 1-2): a copy
    of ``module`` whose batch-norm affine parameters (gamma, beta), and nothing else, are optimised with Adam for
    ``steps`` steps to minimise ``objective(copy)`` (an entropy on unlabeled target data). The copy stays in
    evaluation mode, so batch-norm statistics stay those of ``module`` (AdaBN's when run after it) and the result
    does not depend on the test batch. Returns the adapted copy, with no parameter requiring gradients."""
    out = copy.deepcopy(module).eval()
    bns = [m for m in out.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine]
    for p in out.parameters():
        p.requires_grad_(False)
    params = [p for m in bns for p in (m.weight, m.bias)]
    if not params:
        return out
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = objective(out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    return out


def tent(encoder, x: np.ndarray, dom: Domain, probe, steps: int = 10, lr: float = 1e-3, batch: int = 64, seed: int = 0):
    """TENT (:func:`tent_bn_affine`) on a frozen encoder and a fixed linear probe: the mean binary entropy of the
    probe's predictions on unlabeled target patches ``x`` is minimised. Returns an adapted copy."""
    scaler, clf, _ = probe
    rng = np.random.default_rng(seed)

    def objective(enc):
        xb = torch.from_numpy(np.ascontiguousarray(x[rng.integers(0, len(x), min(batch, len(x)))]))
        logit = probe_logits(scaler, clf, embed(enc, xb, dom).float())
        return binary_entropy(logit).mean()

    return tent_bn_affine(encoder, objective, steps, lr)


def normalised(raw: np.ndarray, mean, std) -> np.ndarray:
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean.size != raw.shape[1]:  # a source with more bands than the target (e.g. RGB -> PAN): use their average
        mean, std = np.full(raw.shape[1], mean.mean(), np.float32), np.full(raw.shape[1], std.mean(), np.float32)
    return ((raw - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


def domain_inputs(encoder, target: Domain, source: Domain, method: str, probe=None, seed: int = 0):
    """(encoder to use, normalised target patches) for one method (``probe``: the source's, for TENT)."""
    if method == "naive":
        return encoder, normalised(target.raw, *source.stats())
    if method == "hist_match":
        return encoder, normalised(hist_match(target, source), *source.stats())
    x = normalised(target.raw, *target.stats())
    if method == "own_norm":
        return encoder, x
    if method == "own_norm_adabn":
        return adabn(encoder, x[target.split == "train"], target), x
    if method == "own_norm_adabn_tent":
        if probe is None:
            raise ValueError("TENT needs the source's probe")
        tr = x[target.split == "train"]
        return tent(adabn(encoder, tr, target), tr, target, probe, TENT["steps"], TENT["lr"], TENT["batch"], seed), x
    raise ValueError(f"unknown method {method!r}")


def cross_sensor_matrix(encoder, domains: list[Domain], methods=METHODS, seed: int = 0, progress: bool = True) -> dict:
    """F1 (positive class, test split) for every (train domain -> test domain, method); the probe of each
    train domain is fitted once on its own normalised features (C chosen on its val split). For AdaBN the
    probe is fitted on features whose batch-norm statistics come from its own domain too (Li et al., 2016:
    each domain normalised by its own statistics, source and target alike)."""
    probes, probes_bn = {}, {}
    for a in domains:
        xa = normalised(a.raw, *a.stats())
        tr, va = a.split == "train", a.split == "val"
        f = features(encoder, xa, a)
        probes[a.name] = linear_probe(f[tr], a.y[tr], f[va], a.y[va], seed)
        if {"own_norm_adabn", "own_norm_adabn_tent"} & set(methods):
            fb = features(adabn(encoder, xa[tr], a), xa, a)
            probes_bn[a.name] = linear_probe(fb[tr], a.y[tr], fb[va], a.y[va], seed)
    out = {m: {} for m in methods}
    jobs = [(a, b, m) for a in domains for b in domains for m in methods]
    cache = {}
    for a, b, m in tqdm(jobs, desc="cross-sensor", disable=not progress):
        key = (a.name, b.name, m) if m in ("naive", "hist_match", "own_norm_adabn_tent") else (b.name, m)
        te = b.split == "test"
        probe = (probes_bn if m.startswith("own_norm_adabn") else probes)[a.name]
        if key not in cache:  # only the test patches need features (statistics come from the training ones)
            enc, x = domain_inputs(encoder, b, a, m, probe=probe, seed=seed)
            cache[key] = features(enc, x[te], b)
        scaler, clf, _ = probe
        pred = clf.predict(scaler.transform(cache[key]))
        out[m][f"{a.name}->{b.name}"] = float(f1_score(b.y[te], pred))
    return out


def summarise(matrix: dict, domains: list[str], adapted: str, naive: str = "naive") -> dict:
    """In-domain F1 (the diagonal: each domain's probe on its own test split), every method's mean drop off the
    diagonal, and the gap reduction of the ``adapted`` method named beforehand (never picked on these numbers)."""
    in_domain = {d: matrix["own_norm"][f"{d}->{d}"] for d in domains}
    pairs = [(a, b) for a in domains for b in domains if a != b]
    drops = {m: float(np.mean([in_domain[b] - matrix[m][f"{a}->{b}"] for a, b in pairs])) for m in matrix}
    return {"in_domain": in_domain, "mean_drop": drops, "adapted_method": adapted,
            "mean_drop_naive": drops[naive], "mean_drop_adapted": drops[adapted],
            "gap_reduction": 1 - drops[adapted] / drops[naive] if drops[naive] > 0 else 0.0}


__all__ = ["METHODS", "Domain", "source_domain", "simulate_domain", "hist_match", "features", "adabn", "reestimate_bn",
           "normalised",
           "domain_inputs", "cross_sensor_matrix", "summarise", "tent", "tent_bn_affine", "binary_entropy", "probe_logits",
           "TENT"]
