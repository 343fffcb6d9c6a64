"""mkdocs hooks: regenerate the generated reference pages, and list the benchmark pages that exist.

* ``on_pre_build``: docs/configuration.md (scripts/config_reference.py, from the pydantic schema) and
  docs/methods.md (scripts/methods_reference.py, from the registries and the fast engine's docstrings) are
  rewritten when the code says something else, so ``make docs`` always builds them as the code is.
* ``on_page_markdown``: in docs/benchmarks/index.md the line ``<!-- benchmark pages -->`` becomes a list of
  every page under docs/benchmarks/ (written by hand or by a benchmark script), with its title.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENERATORS = ("config_reference", "methods_reference")
MARKER = "<!-- benchmark pages -->"
log = logging.getLogger("mkdocs.hooks.explainnn")


def _generator(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_pre_build(config: Any, **kwargs: Any) -> None:
    for name in GENERATORS:
        module = _generator(name)
        text = module.render()
        if not module.OUTPUT.is_file() or module.OUTPUT.read_text() != text:
            module.OUTPUT.write_text(text)
            log.info("regenerated %s", module.OUTPUT.relative_to(ROOT))


def _title(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("_", " ")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != "benchmarks/index.md" or MARKER not in markdown:
        return markdown
    folder = Path(page.file.abs_src_path).parent
    pages = sorted(path for path in folder.glob("*.md") if path.name != "index.md")
    listing = "\n".join(f"* [{_title(path)}]({path.name})" for path in pages)
    return markdown.replace(MARKER, listing)
