"""Efficiency of an encoder, measured: parameters, FLOPs, file size (fp32, fp16, int8), CPU latency and
throughput, and an ONNX export with a parity check against PyTorch (onnxruntime).

The ONNX graph is exported for one band set (the wavelengths and widths are folded in as constants, so
the spectral stem's generated weights become fixed convolutions): an ONNX file serves one sensor's
band set, the PyTorch model any. int8 is ONNX Runtime's dynamic quantisation (weights int8, activations
quantised on the fly), measured with onnxruntime like the fp32 graph, and, given calibration windows, its static
quantisation (activation ranges fixed on real imagery, integer convolutions throughout).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch import nn
from tqdm.auto import tqdm


class FixedBands(nn.Module):
    """An any-band encoder with its band set and GSD fixed (the spectral stem baked into plain convolution
    weights, :func:`vhrfm.models.fix_bands`): ``forward(x)`` -> pooled features (B, D)."""

    def __init__(self, encoder: nn.Module, wavelengths, widths, gsd: float):
        from vhrfm.models import fix_bands

        super().__init__()
        self.encoder = fix_bands(encoder, wavelengths, widths)
        self.register_buffer("wl", torch.as_tensor(wavelengths, dtype=torch.float32))
        self.register_buffer("wd", torch.as_tensor(widths, dtype=torch.float32))
        self.gsd = float(gsd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, self.wl, torch.full((x.shape[0],), self.gsd, dtype=x.dtype), self.wd)


def n_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def flops(model: nn.Module, x: torch.Tensor) -> int:
    """Floating-point operations of one forward pass (multiply-add = 2), by PyTorch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops())


def state_size_mb(model: nn.Module, dtype=torch.float32) -> float:
    """Size of the weights written as safetensors in ``dtype`` (MB, 10^6 bytes)."""
    from safetensors.torch import save_file

    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "w.safetensors"
        save_file(state, str(p))
        return p.stat().st_size / 1e6


def export_onnx(model: nn.Module, x: torch.Tensor, path: str | Path, output_name: str = "features",
                spatial_dynamic: bool = False) -> Path:
    """ONNX (opset 17) of ``model(x)`` (input ``image``) with a dynamic batch axis, and dynamic height and width with
    ``spatial_dynamic`` (for dense outputs); the TorchScript exporter (no network, no extra tools)."""
    import warnings

    path = Path(path)
    axes = {0: "batch", 2: "height", 3: "width"} if spatial_dynamic else {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, still supported
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape arithmetic fixed for this input's size
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=[output_name],
                          dynamic_axes={"image": axes, output_name: axes}, opset_version=17, dynamo=False)
    return path


def _drop_weight_identities(src: str | Path, dst: str | Path) -> Path:
    """The TorchScript exporter shares folded weights through Identity nodes; the quantiser needs the weights
    as initializers, so consumers are pointed at the initializers directly and those Identity nodes dropped."""
    import onnx

    m = onnx.load(str(src))
    g = m.graph
    inits = {i.name for i in g.initializer}
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input[0] in inits}
    outputs = {o.name for o in g.output}
    keep = [n for n in g.node if not (n.op_type == "Identity" and n.output[0] in alias and n.output[0] not in outputs)]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in alias and alias[name] not in outputs:
                n.input[i] = alias[name]
    del g.node[:]
    g.node.extend(keep)
    onnx.save(m, str(dst))
    return Path(dst)


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    plain = Path(dst).with_suffix(".plain.onnx")
    _drop_weight_identities(src, plain)
    try:
        quantize_dynamic(str(plain), str(dst), weight_type=QuantType.QInt8)
    finally:
        plain.unlink(missing_ok=True)
    return Path(dst)


class _Calibration:
    """onnxruntime's calibration reader over an array of (N, C, H, W) inputs, one at a time."""

    def __init__(self, xs: np.ndarray):
        self._it = iter([{"image": x[None].astype(np.float32)} for x in xs])

    def get_next(self):
        return next(self._it, None)


def quantize_static_int8(src: str | Path, dst: str | Path, calib: np.ndarray) -> Path:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) of the ONNX graph ``src``, its
    activation ranges calibrated (min-max) on ``calib`` (N, C, H, W). Static graphs run integer convolutions
    throughout; the dynamic quantisation of :func:`quantize_int8` quantises every activation at run time, which cost
    more than it saved on the 2-core machines measured here, with and without AVX-512 VNNI (``make bench``: quant)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    plain, pre = dst.with_suffix(".plain.onnx"), dst.with_suffix(".pre.onnx")
    try:
        _drop_weight_identities(src, plain)
        quant_pre_process(str(plain), str(pre))
        quantize_static(str(pre), str(dst), _Calibration(calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        plain.unlink(missing_ok=True)
        pre.unlink(missing_ok=True)
    return dst


def real_windows(paths, n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random ``size`` x ``size`` windows (all bands) read from the rasters ``paths`` (drawn in turn), each band
    standardised over the windows drawn (the encoders' inputs are per-band z-scores). (n, C, size, size) float32."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        with rasterio.open(paths[i % len(paths)]) as src:
            r0 = int(rng.integers(0, src.height - size + 1))
            c0 = int(rng.integers(0, src.width - size + 1))
            out.append(src.read(window=((r0, r0 + size), (c0, c0 + size))).astype(np.float32))
    x = np.stack(out)
    mean, std = x.mean(axis=(0, 2, 3), keepdims=True), x.std(axis=(0, 2, 3), keepdims=True)
    return ((x - mean) / np.maximum(std, 1e-6)).astype(np.float32)


def calibration_windows(n_calib: int = 16, n_eval: int = 8, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real Pleiades RGB windows at 0.5 m for static quantisation (:func:`real_windows`): ``n_calib`` to calibrate
    from the first half of the airport scenes (sorted by name) and ``n_eval`` to check fidelity from the other half."""
    from vhrfm.config import data_dir

    scenes = sorted((data_dir() / "pretrain" / "airbus_pleiades_aircraft" / "images").glob("*.jpg"))
    if len(scenes) < 2:
        raise FileNotFoundError(f"need two Pleiades scenes under {data_dir()}/pretrain/airbus_pleiades_aircraft/images "
                                "(run `make data`)")
    half = len(scenes) // 2
    return real_windows(scenes[:half], n_calib, size, seed=seed), real_windows(scenes[half:], n_eval, size, seed=seed + 1)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the cosine similarity between ``a`` and ``b`` (N, ...), each row flattened."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


def fastest_precision(latency_ms: dict, cosine: dict, min_cosine: float = 0.99) -> str:
    """The precision (a key of ``latency_ms``, the first one the fallback) with the lowest latency among those whose
    features keep a cosine of at least ``min_cosine`` to PyTorch's: what a deployment would run."""
    kept = [p for p in latency_ms if cosine[p] >= min_cosine] or [next(iter(latency_ms))]
    return min(kept, key=latency_ms.__getitem__)


def ort_session(path: str | Path, threads: int | None = None, spin: bool = True):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (default: PyTorch's). ``spin=False`` turns off
    the worker threads' spinning after a call (ONNX Runtime's default is on), as a shared machine might configure."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def calls_per_block(fn, min_block_s: float, clock=time.perf_counter, max_calls: int = 100_000, before=None) -> int:
    """How many calls of ``fn`` fill ``min_block_s``, found as :meth:`timeit.Timer.autorange` finds its loop count:
    blocks of 1, 2, 4, ... calls until one lasts ``min_block_s``, whose rate then scales the count. A few slow first
    calls (a fresh session's allocations, cold caches) are diluted in the growing blocks instead of setting it.
    ``before``: called (untimed) before each block, e.g. the idle pause that precedes every timed block."""
    n = 1
    while True:
        if before is not None:
            before()
        t0 = clock()
        for _ in range(n):
            fn()
        spent = clock() - t0
        if spent >= min_block_s or n >= max_calls:
            return max(1, int(np.ceil(n * min_block_s / max(spent, 1e-12))))
        n *= 2


def paired_speedup(ref_fn, fn, rounds: int, warmup: int = 2, clock=time.perf_counter, min_block_s: float = 0.0,
                   settle_s: float = 0.0, sleep=time.sleep, rewarm: int = 0) -> dict:
    """Speed-up of ``fn`` over ``ref_fn`` from interleaved timings: each round times one block of calls of each back to
    back (the order alternating between rounds), so both see the same machine state, and the speed-up is the median
    of the rounds' ratios (ref time / fn time) with their interquartile range. Latencies measured minutes apart on a
    shared machine drift; their ratio moved up to twofold between runs here.

    A block is ``calls_per_timing`` calls of the same callable, as many as make ``fn``'s block last ``min_block_s``
    (:func:`calls_per_block`, after the warm-up, each of its growing blocks after the same pause as a timed block;
    1 when 0): a 1 ms call timed alone carries the scheduler's jitter, which spread the ONNX Runtime ratios of the
    smallest student over an interquartile range from 7 to 17. The count was first read from one call after the
    warm-up; in the distillation stage that call of the smallest student still ran about ten times its steady time,
    its blocks held 4 calls where a separate process counted 37, and its paired ONNX Runtime speed-up read 18x
    where separate processes read about 24x. Longer blocks dilute what a block pays once, after its pause;
    ``rewarm`` (below) takes it out of the timing.

    ``settle_s``: an idle pause before every timed block (outside the timing). ONNX Runtime's worker threads keep
    spinning for a while after a run returns; two sessions timed back to back on two cores then share them with the
    previous session's spinning threads, which slows the shorter calls most, and spreads the ratios. PyTorch runs both
    models on one thread pool and is barely affected. ``scripts/student_speed_study.py`` measures the paired ratios
    with and without the pause (record: ``results/studies/student_speed_repeats.json``).

    ``rewarm``: untimed calls of a block's callable after the pause and before its timing (and before each
    calibration block). The first call after an idle pause runs slower than the steady calls of a stream (parked
    worker threads, caches the other model evicted, perhaps), and a block pays it once: with ``rewarm=1`` every
    paired ratio of the smallest student rose, by 5-6 % in ONNX Runtime and about 10 % in PyTorch, at two threads
    and at one, in each of three repetitions (``scripts/speed_contention_study.py``, record
    ``results/studies/speed_rewarm.json``; which of those causes weighs most was not measured). A whole-scene prediction
    calls the network on window after window, the steady state that ``rewarm`` times."""
    for _ in range(warmup):
        ref_fn()
        fn()

    def prepare(call):  # untimed, before each block of ``call``: the pause, then ``rewarm`` calls
        if settle_s > 0:
            sleep(settle_s)
        for _ in range(rewarm):
            call()

    calls = calls_per_block(fn, min_block_s, clock, before=lambda: prepare(fn)) if min_block_s > 0 else 1
    ratios = []
    for r in range(rounds):
        pair = (ref_fn, fn) if r % 2 == 0 else (fn, ref_fn)
        spent = []
        for call in pair:
            prepare(call)
            t0 = clock()
            for _ in range(calls):
                call()
            spent.append(clock() - t0)
        t_ref, t_fn = spent if r % 2 == 0 else spent[::-1]
        ratios.append(t_ref / max(t_fn, 1e-12))
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return {"median": round(float(q50), 3), "iqr": [round(float(q25), 3), round(float(q75), 3)], "rounds": rounds,
            "calls_per_timing": calls, "settle_ms": round(1e3 * settle_s, 3), "rewarm_calls": rewarm}


class torch_threads:
    """Context: PyTorch's intra-op thread count set to ``n`` inside (``None``: unchanged), restored on exit."""

    def __init__(self, n: int | None):
        self.n, self.before = n, None

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
        return False


def _proc_stat() -> list[int] | None:
    """The machine's aggregate CPU counters (/proc/stat's ``cpu`` line, clock ticks), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


class machine_load:
    """Context measuring what else used the machine's CPUs while it was open: ``result`` = {"other_cpu_share": the
    CPU time of every other process (and the kernel's interrupts), as a share of all CPUs' time; "steal_share": the
    share the hypervisor gave to other guests; "own_cpu_share": this process's}, from /proc/stat and
    :func:`os.times` (None off Linux). A timing taken while ``other_cpu_share`` is high was taken on a shared,
    busy machine: on two cores, another busy process lowered the two-thread paired speed-ups from 24x to 18-20x in
    ONNX Runtime (and from 9.6x to 2-4x in PyTorch) and left the one-thread ones as they were
    (``scripts/speed_contention_study.py``)."""

    def __enter__(self):
        self.result = None
        self._stat, self._own, self._t = _proc_stat(), os.times(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        stat, own = _proc_stat(), os.times()
        if self._stat is None or stat is None:
            return False
        d = [b - a for a, b in zip(self._stat, stat)]  # user nice system idle iowait irq softirq steal
        total = sum(d)
        if total <= 0:
            return False
        tick = os.sysconf("SC_CLK_TCK")
        own_ticks = ((own.user - self._own.user) + (own.system - self._own.system)) * tick
        busy = total - d[3] - d[4] - d[7]
        self.result = {"other_cpu_share": round(max(0.0, busy - own_ticks) / total, 3),
                       "steal_share": round(d[7] / total, 3), "own_cpu_share": round(min(own_ticks, total) / total, 3),
                       "seconds": round(time.perf_counter() - self._t, 1)}
        return False


def speedup_key(runtime: str, threads: int | None = None, batch: int = 1) -> str:
    """The key of one reading in a :func:`paired_speedups` result: ``runtime`` ("torch" or "onnx"), then ``_b32`` for
    a batch other than one, then ``_1thread`` for a set thread count (none: every core PyTorch uses)."""
    return runtime + (f"_b{batch}" if batch != 1 else "") + (f"_{threads}thread" if threads else "")


def paired_speedups(teacher: nn.Module, students: dict[str, nn.Module], wavelengths, widths, gsd: float, *,
                    size: int = 256, rounds: int = 30, seed: int = 0, min_block_s: float = 0.0, settle_s: float = 0.0,
                    threads: int | None | tuple = None, batch: int | None = None, batch_rounds: int | None = None,
                    rewarm: int = 0, progress: bool = False) -> dict:
    """:func:`paired_speedup` of each of ``students`` ({name: encoder}) over ``teacher`` at batch one, in PyTorch and
    in ONNX Runtime (fp32 graphs of :func:`export_onnx`), on the same random input of their band set; the teacher is
    fixed to the band set, and every network is exported once. Returns {name: {key: result}}, keys from
    :func:`speedup_key` ("torch", "onnx", ...), each result with its thread count and the :class:`machine_load` of
    its timing under ``"machine"``.

    ``threads``: the intra-op threads of both runtimes (None: PyTorch's, every core), or a tuple of such counts, each
    timed in turn (all students at the first, then at the next). With one thread, a model timed on a two-core machine
    leaves a core to whatever else runs there, and its speed-up stays a property of the two networks; with every
    core, any other busy process slows the thread that waits for it, most in the small model's many short operators
    (``scripts/speed_contention_study.py``).

    ``batch``: also pair the PyTorch throughput at that batch (``batch_rounds`` rounds, default ``rounds``), at the
    first thread count only: a whole batch's call is long, so few rounds suffice."""
    counts = list(threads) if isinstance(threads, (tuple, list)) else [threads]
    torch.manual_seed(seed)
    x1 = torch.randn(1, len(wavelengths), size, size)
    xb = torch.randn(batch, len(wavelengths), size, size) if batch else None
    feed = {"image": x1.numpy()}
    ref = FixedBands(teacher, wavelengths, widths, gsd).eval()
    models = {name: FixedBands(enc, wavelengths, widths, gsd).eval() for name, enc in students.items()}
    out = {name: {} for name in students}
    kw = {"min_block_s": min_block_s, "settle_s": settle_s, "rewarm": rewarm}
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        ref_path = export_onnx(ref, x1, Path(d) / "teacher.onnx")
        paths = {name: export_onnx(m, x1, Path(d) / f"{name}.onnx") for name, m in models.items()}
        for i, n in enumerate(counts):
            with torch_threads(n):
                ref_sess = ort_session(ref_path, threads=n)
                for name in tqdm(students, desc=f"paired speed-ups ({n or 'all'} threads)", disable=not progress):
                    model, sess = models[name], ort_session(paths[name], threads=n)
                    pairs = [("torch", 1, (lambda: ref(x1), lambda: model(x1)), rounds),
                             ("onnx", 1, (lambda: ref_sess.run(None, feed), lambda: sess.run(None, feed)), rounds)]
                    if batch and i == 0:
                        pairs.append(("torch", batch, (lambda: ref(xb), lambda: model(xb)), batch_rounds or rounds))
                    for rt, b, pair, r in pairs:
                        key = speedup_key(rt, n, b)
                        with machine_load() as load:
                            out[name][key] = paired_speedup(*pair, r, **kw)
                        out[name][key].update(threads=torch.get_num_threads(), batch=b, machine=load.result)
    return out


def architecture_scan(teacher: nn.Module, timm_names: list[str], wavelengths, widths, gsd: float, *, size: int = 256,
                      rounds: int = 30, seed: int = 0, min_block_s: float = 0.0, settle_s: float = 0.0,
                      rewarm: int = 0, progress: bool = False) -> dict:
    """Which student architectures *could* reach a speed target, before any is trained: each timm network of
    ``timm_names`` with the any-band stem, at random initialisation (the time of a forward pass does not depend on the
    weights' values), measured like the trained students (parameters, FLOPs, fp32 size, :func:`paired_speedups` over
    ``teacher`` in PyTorch and ONNX Runtime). Returns {timm_name: {...}}."""
    from vhrfm.models.conv import AnyBandConvNet

    cands = {}
    for name in timm_names:
        torch.manual_seed(seed)
        cands[name] = AnyBandConvNet(name).eval()
    paired = paired_speedups(teacher, cands, wavelengths, widths, gsd, size=size, rounds=rounds, seed=seed,
                             min_block_s=min_block_s, settle_s=settle_s, rewarm=rewarm, progress=progress)
    x1 = torch.zeros(1, len(wavelengths), size, size)
    out = {}
    for name, enc in cands.items():
        p = paired[name]
        out[name] = {"params": n_params(enc), "flops_per_image": flops(FixedBands(enc, wavelengths, widths, gsd).eval(), x1),
                     "size_mb_fp32": round(state_size_mb(enc, torch.float32), 3),
                     "speedup_torch": p["torch"]["median"], "speedup_torch_iqr": p["torch"]["iqr"],
                     "speedup_onnx": p["onnx"]["median"], "speedup_onnx_iqr": p["onnx"]["iqr"],
                     "calls_per_timing": {rt: p[rt]["calls_per_timing"] for rt in ("torch", "onnx")}}
    return out


def task_model_efficiency(models: dict, reference: str, *, size: int = 256, rounds: int = 30, seed: int = 0,
                          min_block_s: float = 0.0, settle_s: float = 0.0, rewarm: int = 0) -> dict:
    """Efficiency of whole task networks (encoder and dense head, as ``vhrfm predict`` runs them) on ``size`` x
    ``size`` tiles of their training bands at batch one: parameters, FLOPs (and the encoder's share), and each
    model's :func:`paired_speedup` over ``models[reference]`` in PyTorch and in ONNX Runtime, and over itself in
    PyTorch when run in ONNX Runtime (``onnx_vs_torch``). ``models``: {name: TaskModel}, all on one band set.

    The encoders' speed-ups of :func:`paired_speedups` leave the head out; an analyst waits for both."""
    from vhrfm.heads import Segmenter
    from vhrfm.runtime import FixedTaskNet

    ref_card = models[reference].card
    c = len(ref_card["bands"])
    for name, tm in models.items():
        if list(tm.card["bands"]) != list(ref_card["bands"]):
            raise ValueError(f"{name}: bands {tm.card['bands']} differ from {reference}'s {ref_card['bands']}")
    torch.manual_seed(seed)
    x1 = torch.randn(1, c, size, size)
    feed = {"image": x1.numpy()}
    kw = {"min_block_s": min_block_s, "settle_s": settle_s, "rewarm": rewarm}
    nets, sessions, out = {}, {}, {}
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        for name, tm in models.items():
            card = tm.card
            nets[name] = FixedTaskNet(tm.net, card["wavelengths"], card["widths"], card["gsd_m"]).eval()
            sessions[name] = ort_session(export_onnx(nets[name], x1, Path(d) / f"{name}.onnx", "logits"))
            row = {"model": card.get("name", name), "params": n_params(tm.net), "flops_per_image": flops(nets[name], x1)}
            if isinstance(tm.net, Segmenter):
                row["head"] = {"decoder": tm.net.decoder}
                if tm.net.decoder == "fpn":  # the light head's settings (the U-Net decoder has fixed widths)
                    row["head"].update(width=tm.net.head.out.in_channels, skip_levels=tm.net.head.skip_levels)
                enc = FixedBands(tm.net.encoder, card["wavelengths"], card["widths"], card["gsd_m"]).eval()
                row["encoder_flops_share"] = round(flops(enc, x1) / row["flops_per_image"], 4)
            row["cpu_latency_ms"] = round(1e3 * _median_time(lambda: nets[name](x1), 10), 3)
            row["onnx_latency_ms"] = round(1e3 * _median_time(lambda: sessions[name].run(None, feed), 10), 3)
            out[name] = row
        for name in models:
            n, sess = nets[name], sessions[name]
            runs = {"onnx_vs_torch": paired_speedup(lambda: n(x1), lambda: sess.run(None, feed), rounds, **kw)}
            if name != reference:
                r, rs = nets[reference], sessions[reference]
                runs["torch"] = paired_speedup(lambda: r(x1), lambda: n(x1), rounds, **kw)
                runs["onnx"] = paired_speedup(lambda: rs.run(None, feed), lambda: sess.run(None, feed), rounds, **kw)
            for k, v in runs.items():
                out[name][f"speedup_{k}"], out[name][f"speedup_{k}_iqr"] = v["median"], v["iqr"]
    return {"reference": reference, "input": [c, size, size], "models": out}


def measure(encoder: nn.Module, wavelengths, widths, gsd: float, *, size: int = 256, batch: int = 32,
            repeats: int = 10, seed: int = 0, calib: np.ndarray | None = None, evaluation: np.ndarray | None = None) -> dict:
    """Every efficiency figure of one encoder on ``size`` x ``size`` inputs of its band set, on this CPU. With
    ``calib`` (N, C, size, size) also the static int8 graph (:func:`quantize_static_int8`): its size, latency and
    fidelity to PyTorch (mean cosine over the ``evaluation`` windows, real imagery not used to calibrate; else the
    random input of the other checks)."""
    torch.manual_seed(seed)
    model = FixedBands(encoder, wavelengths, widths, gsd).eval()
    c = len(wavelengths)
    x1 = torch.randn(1, c, size, size)
    xb = torch.randn(batch, c, size, size)
    out = {"params": n_params(encoder), "flops_per_image": flops(model, x1), "input": [c, size, size],
           "size_mb_fp32": round(state_size_mb(encoder, torch.float32), 3),
           "size_mb_fp16": round(state_size_mb(encoder, torch.float16), 3), "torch_threads": torch.get_num_threads()}
    with torch.no_grad():
        out["cpu_latency_ms"] = round(1e3 * _median_time(lambda: model(x1), repeats), 3)
        out["cpu_images_per_s_b%d" % batch] = round(batch / _median_time(lambda: model(xb), max(2, repeats // 3), 1), 2)
        ref = model(x1).numpy()
    with tempfile.TemporaryDirectory() as d:
        fp32 = export_onnx(model, x1, Path(d) / "m.onnx")
        int8 = quantize_int8(fp32, Path(d) / "m.int8.onnx")
        out["onnx_mb_fp32"] = round(os.path.getsize(fp32) / 1e6, 3)
        out["size_mb_int8"] = round(os.path.getsize(int8) / 1e6, 3)
        if calib is not None:
            static = quantize_static_int8(fp32, Path(d) / "m.int8s.onnx", calib)
            out["size_mb_int8_static"] = round(os.path.getsize(static) / 1e6, 3)
            sess = ort_session(static)
            feed = {"image": x1.numpy()}
            out["onnx_int8_static_latency_ms"] = round(1e3 * _median_time(lambda: sess.run(None, feed), repeats), 3)
            xe = np.asarray(evaluation if evaluation is not None else x1.numpy(), dtype=np.float32)
            with torch.no_grad():
                want = model(torch.as_tensor(xe)).numpy()
            got = np.concatenate([sess.run(None, {"image": xe[i:i + 1]})[0] for i in range(len(xe))])
            out["onnx_int8_static_cosine_to_torch"] = mean_cosine(got, want)
        for name, path in (("onnx", fp32), ("onnx_int8", int8)):
            sess = ort_session(path)
            feed = {"image": x1.numpy()}
            y = sess.run(None, feed)[0]
            out[f"{name}_latency_ms"] = round(1e3 * _median_time(lambda: sess.run(None, feed), repeats), 3)
            out[f"{name}_max_abs_diff"] = float(np.abs(y - ref).max())
            out[f"{name}_cosine_to_torch"] = mean_cosine(y, ref)
    return out


__all__ = ["FixedBands", "n_params", "flops", "state_size_mb", "export_onnx", "quantize_int8", "quantize_static_int8",
           "real_windows", "calibration_windows", "mean_cosine", "fastest_precision", "ort_session", "measure",
           "architecture_scan", "task_model_efficiency", "calls_per_block", "paired_speedup", "paired_speedups", "speedup_key",
           "torch_threads", "machine_load"]
