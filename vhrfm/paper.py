"""The paper: a Markdown template with placeholders, filled from the chapters' metrics files.

``paper/paper.md`` holds text and ``{{ ... }}`` placeholders only; every number comes from
``results[/<profile>]/<chapter>/metrics.json`` (as ``m.<chapter>...``) and every figure from the
chapters' figure folders, embedded into one self-contained HTML file. A placeholder without a value
fails the build (Jinja's StrictUndefined); a literal result number in the template fails a test.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jinja2
from markdown_it import MarkdownIt

from vhrfm.config import project_root, results_dir

CHAPTERS = ("data", "pretraining", "distillation", "multisensor", "wildfire", "megafauna")

# result-like literals: decimals, percentages, and integers of 3+ digits that are not years
LITERAL_NUMBER = re.compile(r"(?<![\w.#-])(?:\d+[.,]\d+|\d+\s*%|(?!(?:19|20)\d\d(?!\d))\d{3,})(?![\w])")


def strip_templating(text: str) -> str:
    """The template without its Jinja expressions, statements and comments (what a reader would see as literal text)."""
    text = re.sub(r"\{#.*?#\}", " ", text, flags=re.S)
    text = re.sub(r"\{\{.*?\}\}", " ", text, flags=re.S)
    return re.sub(r"\{%.*?%\}", " ", text, flags=re.S)


ALLOWED_LITERALS = {"95 %"}  # the confidence level of the intervals: a convention, not a result


def literal_numbers(text: str) -> list[str]:
    return [x for x in LITERAL_NUMBER.findall(strip_templating(text)) if x not in ALLOWED_LITERALS]


class Metrics(dict):
    """Attribute access over nested metric dicts (``m.pretraining.summary.ssl_linear_acc``)."""

    def __getattr__(self, key):
        try:
            v = self[key]
        except KeyError:
            raise jinja2.UndefinedError(f"metric {key!r} not found (have {sorted(self)})") from None
        return Metrics(v) if isinstance(v, dict) else v


def load_metrics(profile: str) -> Metrics:
    out = {}
    for ch in CHAPTERS:
        p = results_dir(profile) / ch / "metrics.json"
        if not p.exists():
            raise FileNotFoundError(f"{p} missing: run the chapter's stage first (dvc repro)")
        out[ch] = json.loads(p.read_text())
    return Metrics(out)


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * float(x):.{digits}f} %"


def num(x: float, digits: int = 3) -> str:
    return f"{float(x):.{digits}f}"


def ci(pair) -> str:
    return f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}] %"


def render(profile: str, template: str | Path | None = None, out: str | Path | None = None) -> Path:
    root = project_root()
    template = Path(template) if template else root / "paper" / "paper.md"
    out = Path(out) if out else root / "paper" / "build" / profile / "paper.html"
    res = results_dir(profile)

    def fig(chapter: str, name: str, caption: str) -> str:
        p = res / chapter / "figures" / name
        if not p.exists():
            raise FileNotFoundError(f"figure {p} missing: run the chapter's stage first")
        data = base64.b64encode(p.read_bytes()).decode()
        return f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%"><figcaption>{caption}</figcaption></figure>'

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template.parent)), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True)
    env.filters.update(pct=pct, num=num, ci=ci)
    md = env.get_template(template.name).render(m=load_metrics(profile), profile=profile, fig=fig)
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    html = ("<!doctype html><html><head><meta charset='utf-8'><title>vhrfm</title><style>"
            "body{max-width:60em;margin:2em auto;font-family:Georgia,serif;line-height:1.45;padding:0 1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .5em}"
            "figcaption{font-size:.9em;color:#444}</style></head><body>" + body + "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.with_suffix(".md")).write_text(md)
    out.write_text(html)
    return out
