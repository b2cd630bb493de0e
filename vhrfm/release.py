"""The release: weights (safetensors), ONNX graphs, model cards, a data card, the paper and the citation,
gathered into one folder with SHA-256 checksums (``vhrfm export``, DVC stage ``release``).

Everything is copied or generated from what the pipeline wrote: the JSON cards beside each weight file
become Markdown model cards; the source registry (``vhrfm.data.sources``) becomes the data card. A model
inherits the licence restrictions of every dataset it, or the model it started from, was trained on:
the cards say which sources are non-commercial.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from vhrfm.config import APP_TASKS, models_dir, project_root

INTENDED_USE = {
    "encoder": "Feature extraction from very-high-resolution multispectral or panchromatic imagery (any band subset "
               "with known centre wavelengths, GSD within the trained range) for linear probes, dense heads and "
               "fine-tuning; a starting point for research, not an operational product.",
    "wildfire": "Rapid burned-area mapping of a post-fire scene, as a first draft for an analyst to check.",
    "megafauna": "Finding candidate animals (points) in satellite or aerial scenes for an ecologist to confirm.",
}
RELEASE_LIMITS = ("Trained and measured on two CPU cores at the budgets of the pipeline's profile; every number in "
                  "this card comes from the metrics the pipeline wrote. See the paper's Limitations section.")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sources():
    from vhrfm.data.sources import SOURCES

    return SOURCES


def restrictions(source_ids) -> list[str]:
    """The non-commercial sources among ``source_ids``."""
    S = _sources()
    return sorted(s for s in set(source_ids) if s in S and S[s].non_commercial)


def card_sources(card: dict) -> list[str]:
    """Every data source a model's weights depend on: its own training data, and for a model that started from
    the teacher or a KD student, the teacher's pretraining corpus."""
    own = [d.get("source") for d in card.get("training_data", []) + card.get("data", [])]
    start = (card.get("encoder") or {}).get("pretrained")
    inherited = []
    if start or card.get("distilled_from") == "teacher":
        teacher = models_dir(card.get("profile", "cpu")) / "teacher.json"
        if teacher.exists():
            inherited = [d["source"] for d in json.loads(teacher.read_text()).get("training_data", [])]
    return sorted({s for s in own + inherited if s})


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    return str(v)


def _licence_lines(card: dict) -> list[str]:
    S = _sources()
    srcs = card_sources(card)
    lines = ["| source | sensor | licence | attribution |", "|---|---|---|---|"]
    lines += [f"| {s} | {S[s].sensor} | {S[s].licence} | {S[s].attribution} |" for s in srcs if s in S]
    nc = restrictions(srcs)
    lines.append("")
    lines.append(f"**Non-commercial:** trained on (or started from a model trained on) {', '.join(nc)}, whose licences "
                 "forbid commercial use: treat these weights as non-commercial." if nc else
                 "No non-commercial source is among its training data.")
    return lines


def encoder_card_md(card: dict, files: dict[str, str]) -> str:
    """A Markdown model card for a pretrained or distilled encoder, from its JSON card."""
    name = card.get("name", card["arch"])
    norm = card.get("normalisation", {})
    lines = [f"# {name}", "",
             f"Encoder `{card['arch']}` ({card.get('objective', '')}; {card.get('steps', '?')} steps, seed "
             f"{card.get('seed', '?')}){'; distilled from the teacher' if card.get('distilled_from') else ''}.", "",
             "## Inputs",
             f"- Any subset of bands with centre wavelengths in {card.get('accepted_wavelength_range_nm')} nm (the "
             "spectral stem generates each band's weights from its wavelength and width); trained on "
             f"{', '.join(str(w) for w in card.get('trained_wavelengths_nm', []))} nm.",
             f"- GSD {card.get('gsd_range_m')} m (trained range, scale jitter included).",
             "- Normalisation: per product, mean and standard deviation of the raw values (below); for a new "
             "sensor, the scene's own statistics.", ""]
    if norm:
        lines += ["| product | sensor | bands | mean | std |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v.get('sensor')} | {', '.join(map(str, v.get('bands', [])))} | "
                  f"{', '.join(f'{x:.1f}' for x in v.get('mean', []))} | {', '.join(f'{x:.1f}' for x in v.get('std', []))} |"
                  for k, v in sorted(norm.items())]
        lines.append("")
    lines += ["## Training data and licences", *_licence_lines(card), ""]
    if card.get("metrics"):
        lines += ["## Metrics", f"Frozen linear probes on test (command: `{card.get('metrics_command', card.get('command'))}`):", "",
                  "| task | linear accuracy | 95 % CI | k-NN accuracy |", "|---|---|---|---|"]
        lines += [f"| {t} | {_fmt(r.get('linear_acc'))} | {_fmt(r.get('ci95'))} | {_fmt(r.get('knn_acc'))} |"
                  for t, r in card["metrics"].items()]
        lines.append("")
    lines += ["## Use", "```python", "import torch, vhrfm",
              f'enc = vhrfm.load_encoder("{files.get("weights", name + ".safetensors")}")  # the JSON card beside it',
              "x = torch.randn(1, 3, 128, 128)                       # normalised bands",
              "wl, wd = torch.tensor([660., 560., 485.]), torch.tensor([60., 70., 60.])  # centre wavelengths, widths (nm)",
              "feats = enc.forward_features(x, wl, torch.tensor([0.5]), wd)  # (1, C, h, w); enc(...) pools", "```", "",
              "## Intended use", INTENDED_USE["encoder"], "", "## Limits", RELEASE_LIMITS, "",
              "## Files", *[f"- `{f}`" for f in files.values()], "", f"Made by `{card.get('command', 'dvc repro')}`.", ""]
    return "\n".join(lines)


def task_card_md(card: dict, files: dict[str, str]) -> str:
    """A Markdown model card for a task model (wildfire segmenter, megafauna detector), from its JSON card."""
    enc = card.get("encoder") or {}
    arch = {"segmenter": f"`{enc.get('arch')}` encoder with a dense head (started from {enc.get('pretrained') or 'random weights'}"
                         f"{', frozen' if enc.get('frozen') else ''}{', task KD from the teacher' if enc.get('task_kd') else ''})",
            "unet": "U-Net trained from scratch (segmentation-models-pytorch)",
            "classical": f"classical rule: {json.dumps(card.get('classical'))}"}[card["kind"]]
    lines = [f"# {card['name']}", "", f"{card['task']} model: {arch}; label budget {card.get('budget')}.", "",
             "## Inputs",
             f"- Trained on {card.get('sensor')} bands {', '.join(card['bands'])} "
             f"({', '.join(f'{w:.0f}' for w in card['wavelengths'])} nm) at {card['gsd_m']} m GSD, tiles of "
             f"{card.get('tile_size')} px.",
             ("- Other sensors' bands are accepted through the any-band stem (`vhrfm predict --sensor`), normalised by "
              "the scene's own statistics: out of distribution." if card["kind"] == "segmenter" else
              "- Only its training bands are accepted."),
             f"- Normalisation: mean {', '.join(f'{x:.2f}' for x in card['norm']['mean'])}, std "
             f"{', '.join(f'{x:.2f}' for x in card['norm']['std'])} ({card['norm'].get('key')}).",
             f"- Output: {card.get('output', 'burned probability per pixel')}; operating threshold "
             f"{card['threshold']:.3f} chosen on {card.get('threshold_chosen_on', 'validation')}.", "",
             "## Training data and licences", *_licence_lines(card), "",
             "## Metrics (test split)", f"Command: `{card.get('command')}`", "",
             "| metric | value |", "|---|---|", *[f"| {k} | {_fmt(v)} |" for k, v in card.get("test", {}).items()], "",
             "## Use", "```bash", f"vhrfm predict --task {card['task']} SCENE.tif -o OUT --model {files.get('card', card['name'])}",
             "```", "", "## Intended use", INTENDED_USE.get(card["task"], ""), "",
             "## Limits", card.get("limits", ""), RELEASE_LIMITS, "",
             "## Files", *[f"- `{f}`" for f in files.values()], ""]
    return "\n".join(lines)


def data_card_md() -> str:
    """The data card: every source in the store with sensor, GSD, labels, licence and attribution."""
    from vhrfm.errors import VHRFMInputError
    from vhrfm.sensors import get_sensor

    S = _sources()
    lines = ["# Data card", "",
             "Every source of `data/` (pulled by `make data` from the DVC store), as registered in `vhrfm/data/sources.py`; "
             "details and provenance in `../shared/data/README.md`.", "",
             "| source | use | sensor | GSD (m) | labels | licence | attribution | origin | non-commercial |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in S.values():
        try:
            gsd = ", ".join(f"{k} {v}" for k, v in get_sensor(s.sensor).gsd_m.items())
        except VHRFMInputError:  # a sensor without a registry entry: no nominal GSD
            gsd = "see the source"
        lines.append(f"| {s.id} | {s.area} | {s.sensor} | {gsd} | {s.labels} | {s.licence} | {s.attribution} | {s.origin} | "
                     f"{'yes' if s.non_commercial else 'no'} |")
    nc = [s.id for s in S.values() if s.non_commercial]
    lines += ["", "## Consequences of the licences",
              f"- Non-commercial sources: {', '.join(nc)}. Any model trained on one of them, or started from such a "
              "model (the teacher, the KD students and the task models fine-tuned from them), is released for "
              "non-commercial use only; each model card lists its sources.",
              "- Share-alike sources (CC BY-SA, CC BY-NC-SA) require derived datasets to keep the same licence.",
              "- Attribution is required by every source: cite the attribution column.", ""]
    return "\n".join(lines)


def _onnx_encoder(card_path: Path, out: Path) -> Path:
    """An encoder's ONNX graph for RGB at 0.5 m (the efficiency band set of the distillation chapter)."""
    from vhrfm.checkpoint import load_encoder
    from vhrfm.distill.efficiency import FixedBands, export_onnx
    from vhrfm.distill.run import EFFICIENCY_BANDS
    from vhrfm.sensors import get_sensor

    sensor = get_sensor(EFFICIENCY_BANDS["sensor"])
    enc = load_encoder(card_path.with_suffix(".safetensors")).eval()
    fixed = FixedBands(enc, sensor.wavelengths(EFFICIENCY_BANDS["bands"]), sensor.widths(EFFICIENCY_BANDS["bands"]),
                       EFFICIENCY_BANDS["gsd"]).eval()
    return export_onnx(fixed, torch.zeros(1, 3, 64, 64), out)


def _onnx_task(card_path: Path, out: Path) -> Path | None:
    """A learned task model's ONNX graph on its training bands (input: normalised bands; output: probabilities)."""
    from vhrfm.apps.taskmodel import load_task_model
    from vhrfm.distill.efficiency import export_onnx
    from vhrfm.runtime import FixedTaskNet

    tm = load_task_model(card_path)
    if tm.net is None:
        return None
    model = FixedTaskNet(tm.net, tm.card["wavelengths"], tm.card["widths"], tm.card["gsd_m"], sigmoid=True).eval()
    return export_onnx(model, torch.zeros(1, tm.n_bands, 64, 64), out, output_name="probability", spatial_dynamic=True)


def release_models(profile: str) -> dict[str, list[Path]]:
    """The JSON cards released: the teacher, the KD students, and each task's models named in its index."""
    md = models_dir(profile)
    encoders = [md / "teacher.json", *sorted((md / "distill").glob("kd_*.json"))]
    tasks = []
    for task in APP_TASKS:
        index = md / task / "index.json"
        if index.exists():
            idx = json.loads(index.read_text())
            names = sorted({v for k, v in idx.items() if k != "models"})
            tasks += [md / task / f"{n}.json" for n in names]
    missing = [str(p) for p in encoders + tasks if not p.exists()]
    if missing or not (md / "teacher.json").exists():
        raise FileNotFoundError(f"run the pipeline first (dvc repro): missing {missing or [str(md / 'teacher.json')]}")
    return {"encoders": encoders, "tasks": tasks}


def export_release(profile: str, out: str | Path, onnx: bool = True, progress: bool = True) -> dict:
    """Write the release folder (replaced atomically): weights, ONNX, cards, data card, paper, citation, checksums."""
    from tqdm.auto import tqdm

    out = Path(out)
    root = project_root()
    paper = root / "paper" / "build" / profile / "paper.html"
    if not paper.exists():
        raise FileNotFoundError(f"{paper} missing: run `dvc repro paper@{profile}` first")
    models = release_models(profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".release-", dir=out.parent))
    manifest: dict = {"profile": profile, "models": {}}
    try:
        for sub in ("weights", "onnx", "cards"):
            (tmp / sub).mkdir()
        jobs = [("encoder", p) for p in models["encoders"]] + [("task", p) for p in models["tasks"]]
        for kind, card_path in tqdm(jobs, desc="release", disable=not progress):
            card = json.loads(card_path.read_text())
            name = card.get("name") or card_path.stem
            name = "teacher" if card_path.name == "teacher.json" else name
            files = {"card": f"weights/{name}.json"}
            shutil.copy2(card_path, tmp / files["card"])
            if card_path.with_suffix(".safetensors").exists():
                files["weights"] = f"weights/{name}.safetensors"
                shutil.copy2(card_path.with_suffix(".safetensors"), tmp / files["weights"])
            if onnx:
                target = tmp / "onnx" / f"{name}.onnx"
                made = _onnx_encoder(card_path, target) if kind == "encoder" else _onnx_task(card_path, target)
                if made is not None:
                    files["onnx"] = f"onnx/{name}.onnx"
            files["model_card"] = f"cards/{name}.md"
            text = encoder_card_md(card, files) if kind == "encoder" else task_card_md(card, files)
            (tmp / files["model_card"]).write_text(text)
            manifest["models"][name] = {"kind": kind, "files": files, "non_commercial": bool(restrictions(card_sources(card)))}
        (tmp / "cards" / "DATA_CARD.md").write_text(data_card_md())
        shutil.copy2(paper, tmp / "paper.html")
        for extra in ("CITATION.cff", "LICENSE", "CHANGELOG.md"):
            if (root / extra).exists():
                shutil.copy2(root / extra, tmp / extra)
        for task in APP_TASKS:
            idx = models_dir(profile) / task / "index.json"
            if idx.exists():
                manifest[f"{task}_index"] = json.loads(idx.read_text())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        (tmp / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(tmp).as_posix()}\n" for p in files))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "models": sorted(manifest["models"]), "files": len(files) + 1}


def verify_release(folder: str | Path) -> list[str]:
    """Files whose SHA-256 differs from ``SHA256SUMS`` (or that are missing): an empty list means intact."""
    folder = Path(folder)
    bad = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        p = folder / rel
        if not p.exists() or sha256(p) != digest:
            bad.append(rel)
    return bad


__all__ = ["export_release", "verify_release", "encoder_card_md", "task_card_md", "data_card_md", "release_models",
           "card_sources", "restrictions", "sha256"]
