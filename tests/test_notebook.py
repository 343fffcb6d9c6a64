"""The guided tour ``demonstration.ipynb``: it runs top to bottom, stays small, and uses only the public API."""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "demonstration.ipynb"
MAX_COMMITTED_OUTPUT_BYTES = 20_000
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


def test_notebook_is_committed_without_large_outputs():
    notebook = _notebook()
    nbformat.validate(notebook)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    size = len(json.dumps(outputs))
    assert size <= MAX_COMMITTED_OUTPUT_BYTES, (
        f"demonstration.ipynb carries {size} bytes of outputs; clear them before committing "
        "(Kernel > Restart Kernel and Clear Outputs)"
    )


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


def _kernel_manager(folder: Path):
    """A kernel that runs on this interpreter (the project's virtualenv), whatever kernelspecs are installed."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec = folder / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "explainnn (test)",
        "language": "python",
    }))
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    from nbclient import NotebookClient

    notebook = _notebook()
    # First, in the kernel itself: fail fast unless it runs this interpreter.
    check = f"import sys\nassert sys.executable == {sys.executable!r} and sys.prefix == {sys.prefix!r}, sys.executable"
    notebook.cells.insert(0, nbformat.v4.new_code_cell(check))
    client = NotebookClient(
        notebook,
        km=_kernel_manager(tmp_path / "kernels"),
        timeout=600,
        resources={"metadata": {"path": str(ROOT)}},
    )
    started = time.perf_counter()
    try:
        client.execute(cleanup_kc=True)  # the client shuts down the kernel it did not create
    finally:
        nbformat.write(notebook, tmp_path / "executed.ipynb")
    seconds = time.perf_counter() - started
    print(f"demonstration.ipynb ran in {seconds:.0f} s; executed copy: {tmp_path / 'executed.ipynb'}")

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    pictures = sum("image/png" in output.get("data", {}) for output in outputs)
    assert pictures >= 12, f"only {pictures} figures were drawn inline; is '%matplotlib inline' still the first line?"
    tables = [output for output in outputs if "text/markdown" in output.get("data", {})]
    assert tables and "causal" in tables[0]["data"]["text/markdown"], "the Quantus table is missing"
