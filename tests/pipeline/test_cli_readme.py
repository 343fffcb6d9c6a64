"""The commands of the README and the docs run in the project's environment as pasted (after ``make demo``), never a
bare ``python``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _shell_lines() -> list[str]:
    """Every command line of the bash blocks of the README and the docs pages, and every inline run of main.py."""
    readme = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])
    lines = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", readme, re.S)
             for line in block.splitlines()]
    inline = re.findall(r"`([^`\n]*src/explainnn/main\.py[^`\n]*)`", readme)
    return [line for line in lines + inline if line]


def test_readme_commands_name_the_projects_python():
    runs = [line for line in _shell_lines() if "main.py" in line or line.startswith("make run")]
    assert len(runs) >= 8, runs
    for line in _shell_lines():
        words = line.split()
        python = [word for word in words if word == "python" or word.endswith("/python")]
        if python:
            assert python[0] == ".venv/bin/python" or words[:2] == ["poetry", "run"], line
    assert "make demo" in _shell_lines() and "make test" in _shell_lines()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_passes_its_arguments_to_main_in_the_venv():
    # Under ``make test`` the suite itself runs inside make: drop the outer make's variables so this make prints only
    # its recipe (no "Entering/Leaving directory" lines).
    env = {key: value for key, value in os.environ.items() if key not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEFILES"}}
    result = subprocess.run(["make", "--no-print-directory", "-n", "run",
                             'ARGS=--config configs/lstm_mnist_rows.yaml discovery.target_class=7'],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    recipe = [line for line in result.stdout.splitlines() if "main.py" in line]
    assert recipe == [
        ".venv/bin/python src/explainnn/main.py --config configs/lstm_mnist_rows.yaml discovery.target_class=7"]
