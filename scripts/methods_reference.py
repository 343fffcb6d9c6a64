"""Write docs/methods.md, the methods and metrics reference, from explainnn's registries and docstrings.

* attribution methods from ``explainnn.attributions.registry.METHODS``: modalities, whether a causal graph
  is needed, random draws, options with their defaults, and the first line of the implementation's docstring;
* metrics from the registry ``explainnn.evaluation.metrics.METRICS``: family, direction (which scores are
  better), modalities, what each needs, explainnn's defaults, which engine computes it and whether
  ``evaluation.definitions`` changes it;
* what ``definitions: paper`` changes in each metric and why, from each declaration's ``paper``;
* the batched definition of each metric, from the docstrings of its ``fast`` function.

    .venv/bin/python scripts/methods_reference.py           # write docs/methods.md
    .venv/bin/python scripts/methods_reference.py --check   # exit 1 when the committed page differs

``make docs`` regenerates the page (the mkdocs hook ``docs/hooks.py``); ``tests/project/test_docs.py`` checks that
the committed page equals what this script writes.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.append(str(ROOT / "src"))  # a checkout without the package installed

OUTPUT = ROOT / "docs" / "methods.md"


def markdown(text: str) -> str:
    """Sphinx-flavoured docstring text as Markdown: ``code`` -> `code`, :func:`~a.b` -> `b`, one paragraph a line."""
    text = re.sub(r":(?:func|class|meth|attr|mod|data):`~?\.?([^`]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`",
                  text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return text


def paragraphs(doc: str) -> list[str]:
    """A docstring's paragraphs, each joined into one line; a bullet list keeps one bullet a line."""
    found = []
    for block in re.split(r"\n\s*\n", doc.strip()):
        lines = [line.strip() for line in block.splitlines()]
        if lines and lines[0].startswith("* "):
            items: list[str] = []
            for line in lines:
                if line.startswith("* "):
                    items.append(line)
                else:
                    items[-1] += " " + line
            found.append("\n".join(items))
        else:
            found.append(" ".join(lines))
    return [markdown(block) for block in found]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def option_text(options: dict[str, Any]) -> str:
    shown = {name: value for name, value in options.items() if name not in ("seed", "modality")}
    return ", ".join(f"`{name}={value!r}`" for name, value in shown.items())


def methods_table() -> list[str]:
    from explainnn.attributions.registry import METHODS

    lines = ["| method | inputs | needs a graph | random draws | options (defaults) | what it does |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in sorted(METHODS):
        info = METHODS[name]
        draws = "no" if not info.stochastic else ("seeded per input" if info.seeded_per_input else "yes (`seed`)")
        lines.append(f"| `{name}` | {', '.join(info.modalities)} | {'yes' if info.needs_graph else 'no'} | {draws} "
                     f"| {cell(option_text(info.options()))} | {cell(markdown(info.description))} |")
    return lines


def metrics_table() -> list[str]:
    from explainnn.evaluation.metrics import METRICS

    lines = ["| metric | family | better | inputs | needs | fast engine | `definitions` | explainnn's settings |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, spec in METRICS.items():
        needs = "ground-truth masks" if spec.needs_masks else ""
        if spec.needs:
            needs = f"{needs}; {spec.needs}" if needs else spec.needs
        engine = "batched" if spec.fast is not None else "runs with Quantus"
        differs = "[paper differs](#quantus-06-and-the-papers)" if spec.differs else "the same"
        lines.append(f"| `{name}` | {spec.family} | {spec.direction} | {', '.join(spec.modalities)} | {cell(needs)} "
                     f"| {engine} | {differs} | {cell(markdown(spec.note))} |")
    return lines


def fast_sections() -> tuple[list[str], list[str]]:
    """(what ``definitions: paper`` changes, one bullet per metric; the definition of every batched metric).

    The bullets come from each declaration's ``paper``; the definitions from the docstrings of the ``fast``
    functions.
    """
    from explainnn.evaluation.metrics import METRICS

    departures = [f"* **{name}**: {markdown(spec.paper)}" for name, spec in METRICS.items() if spec.differs]
    definitions: list[str] = []
    for name, spec in METRICS.items():
        if spec.fast is not None:
            definitions += [f"### {name}", "", *[p + "\n" for p in paragraphs(inspect.getdoc(spec.fast) or "")]]
    return departures, definitions


def render() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from explainnn.evaluation import fast, metrics

    departures, definitions = fast_sections()
    out = [
        "# Methods and metrics",
        "",
        "<!-- Generated by scripts/methods_reference.py from the registries explainnn.attributions.registry and",
        "     explainnn.evaluation.metrics (each metric's declaration and batched function). Do not edit: `make docs`",
        "     rewrites it, and tests/project/test_docs.py compares the two. -->",
        "",
        "## Attribution methods",
        "",
        "Every method is called the same way, `attribute(model, inputs, target, method, graph=None, **options)`,",
        "and returns float32 attributions of the inputs' shape (`(N, L)`, one score per token, for token ids).",
        "`seed` (default 0) fixes every random draw; `modality` reads 4-D `(N, 1, T, F)` inputs as sequences and",
        "3-D `(N, 1, F)` inputs as tabular rows. A method \"seeded per input\" draws each sample's random numbers",
        "from a generator seeded by `seed` and the input shape, so a sample's attributions never depend on its",
        "batch. In a run, `attribution.options.<method>` sets the options; the evaluation uses the same.",
        "",
        *methods_table(),
        "",
        "## Metrics",
        "",
        *[p + "\n" for p in paragraphs(inspect.getdoc(metrics) or "")],
        "\"better\" is the direction in which a score is better; a metric that cannot apply to the inputs (an",
        "image-only metric on sequences, a localisation metric without ground-truth masks) is skipped with its",
        "reason in `skipped.csv`. `evaluation.options.<metric>` takes the Quantus metric's own options.",
        "",
        *metrics_table(),
        "",
        "## The fast engine and Quantus",
        "",
        *[p + "\n" for p in paragraphs(inspect.getdoc(fast) or "")],
        "### Quantus 0.6 and the papers",
        "",
        "`evaluation.definitions` chooses, for every metric at once, Quantus 0.6's definition (`quantus`, the",
        "default: both engines give the same scores) or the paper's (`paper`, computed by the fast engine only).",
        "They differ in these metrics; what `paper` changes, and why:",
        "",
        *departures,
        "",
        "RegionPerturbation is ranked with higher as better under both definitions: with the most relevant",
        "patches removed first (`order: morf`, explainnn's default) a larger drop of the target score is better,",
        "whereas Quantus 0.6 labels the metric 'lower' (which fits its random and LeRF orders). The scores are",
        "Quantus' under both.",
        "",
        "## Definitions of the batched metrics",
        "",
        *[p + "\n" for p in paragraphs(inspect.getdoc(importlib.import_module("explainnn.evaluation.fast.common"))
                                       or "")],
        *definitions,
    ]
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed page differs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.output.is_file() and args.output.read_text() == text
        if not same:
            print(f"{args.output} is out of date; run .venv/bin/python scripts/methods_reference.py", file=sys.stderr)
        return 0 if same else 1
    if not args.output.is_file() or args.output.read_text() != text:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
