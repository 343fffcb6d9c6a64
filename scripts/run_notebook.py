"""Execute a notebook in place with this interpreter's kernel, so its committed outputs are current.

    python scripts/run_notebook.py demonstration.ipynb      (or: make notebook)

Outputs are kept (pictures included); the test ``tests/project/test_notebook.py`` bounds
their size and executes the notebook again.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

KERNEL = "explainnn-notebook"


def kernel_manager(folder: Path) -> AsyncKernelManager:
    """A kernel that runs on this interpreter (the project's virtualenv), whatever kernelspecs are installed."""
    spec = folder / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "explainnn",
        "language": "python",
    }))
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


def execute(notebook: nbformat.NotebookNode, cwd: Path, timeout: int = 1200) -> nbformat.NotebookNode:
    """Run every cell of ``notebook`` top to bottom with ``cwd`` as working folder; its outputs are filled in."""
    with tempfile.TemporaryDirectory() as folder:
        client = NotebookClient(notebook, km=kernel_manager(Path(folder)), timeout=timeout,
                                resources={"metadata": {"path": str(cwd)}})
        client.execute(cleanup_kc=True)  # the client shuts down the kernel it did not create
    return notebook


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "demonstration.ipynb")
    notebook = execute(nbformat.read(path, as_version=4), path.resolve().parent)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timings change on every run; keep the diff to real changes
    nbformat.write(notebook, path)
    print(f"executed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
