"""The guided tour ``demonstration.ipynb``: committed with its outputs (bounded), runs top to bottom, public API only."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "demonstration.ipynb"
MAX_COMMITTED_OUTPUT_BYTES = 2_500_000
"""The executed notebook is committed (a reader browsing the repository sees the pictures); this bounds its size."""
MIN_PICTURES = 12
KERNEL = "explainnn-test"


def _notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def _python(source: str) -> str:
    """A code cell as plain Python (IPython magics become function calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _private_uses(tree: ast.AST) -> list[str]:
    """Names starting with one underscore that the code imports or reads as attributes (dunders are public)."""

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".") + [alias.name for alias in node.names]
            found += [f"from {node.module} import {alias.name}" for alias in node.names if any(map(private, parts))]
        elif isinstance(node, ast.Import):
            found += [f"import {alias.name}" for alias in node.names if any(map(private, alias.name.split(".")))]
        elif isinstance(node, ast.Attribute) and private(node.attr):
            found.append(f".{node.attr}")
    return found


def _outputs(notebook: nbformat.NotebookNode) -> list:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def test_notebook_is_committed_with_bounded_outputs():
    """Committed executed (``make notebook``), a reader browsing the repository sees the pictures; size bounded."""
    notebook = _notebook()
    nbformat.validate(notebook)
    outputs = _outputs(notebook)
    size = len(json.dumps(outputs))
    assert size <= MAX_COMMITTED_OUTPUT_BYTES, f"demonstration.ipynb carries {size} bytes of outputs; make them smaller"
    if outputs:
        assert not [output for output in outputs if output.output_type == "error"], "an executed cell failed"
        pictures = sum("image/png" in output.get("data", {}) for output in outputs)
        assert pictures >= MIN_PICTURES, f"the committed notebook shows {pictures} pictures; run `make notebook`"


def test_notebook_outputs_show_no_machine_path_and_no_warning():
    """What a reader sees holds no folder of the machine that ran it and no library warning."""
    import re

    texts = []
    for output in _outputs(_notebook()):
        texts.append(output.get("text", ""))
        texts.append(str(output.get("data", {}).get("text/plain", "")))
    shown = "\n".join(texts)
    paths = re.findall(r"(?:/work/|/home/|/root/|/tmp/|/Users/|\.venv/)\S*", shown)
    assert not paths, f"outputs show machine paths: {paths[:3]}"
    warnings = re.findall(r"\w*Warning\b.*", shown)
    assert not warnings, f"outputs show warnings: {warnings[:3]}"


def test_notebook_uses_only_the_public_api():
    cells = [cell.source for cell in _notebook().cells if cell.cell_type == "code"]
    assert cells, "demonstration.ipynb has no code cells"
    for index, source in enumerate(cells):
        private = _private_uses(ast.parse(_python(source)))
        assert not private, f"code cell {index} uses private names: {', '.join(private)}"


def test_private_name_check_catches_private_imports_and_attributes():
    code = "from explainnn.causal import _kind\nfrom explainnn._x import y\nimport explainnn.causal._x\ng._layer_depth('a')"
    assert _private_uses(ast.parse(code)) == [
        "from explainnn.causal import _kind", "from explainnn._x import y", "import explainnn.causal._x", "._layer_depth"
    ]
    assert _private_uses(ast.parse("import explainnn\nexplainnn.__version__")) == []


def _runner():
    """``scripts/run_notebook.py`` (what ``make notebook`` runs), loaded as a module."""
    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "scripts" / "run_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    notebook = _notebook()
    # First, in the kernel itself: fail fast unless it runs this interpreter.
    check = f"import sys\nassert sys.executable == {sys.executable!r} and sys.prefix == {sys.prefix!r}, sys.executable"
    notebook.cells.insert(0, nbformat.v4.new_code_cell(check))
    started = time.perf_counter()
    try:
        _runner().execute(notebook, ROOT, timeout=600)
    finally:
        nbformat.write(notebook, tmp_path / "executed.ipynb")
    seconds = time.perf_counter() - started
    print(f"demonstration.ipynb ran in {seconds:.0f} s; executed copy: {tmp_path / 'executed.ipynb'}")

    outputs = _outputs(notebook)
    assert not [output for output in outputs if output.output_type == "error"]
    pictures = sum("image/png" in output.get("data", {}) for output in outputs)
    assert pictures >= MIN_PICTURES, f"only {pictures} figures were drawn inline; is '%matplotlib inline' first?"
    tables = [output for output in outputs if "text/markdown" in output.get("data", {})]
    assert tables and "causal" in tables[0]["data"]["text/markdown"], "the Quantus table is missing"
