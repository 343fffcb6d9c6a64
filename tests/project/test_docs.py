"""The documentation: generated pages equal what their generators write, every config key is documented, the
README stays short, the extending page's examples run, and no page names a file that is not there."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from explainnn.config import Config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["config_reference", "methods_reference"])
def test_generated_page_is_what_its_generator_writes(name):
    module = _script(name)
    assert module.OUTPUT.read_text() == module.render(), (
        f"{module.OUTPUT.relative_to(ROOT)} is out of date: run .venv/bin/python scripts/{name}.py (or make docs)")


def _schema_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(f"{prefix}{name}")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += _schema_keys(field.annotation, f"{prefix}{name}.")
    return keys


def test_configuration_reference_has_one_row_per_key_of_the_schema():
    rows = [row.split("|")[1].strip().strip("`") for row in (DOCS / "configuration.md").read_text().splitlines()
            if row.startswith("| `")]
    assert sorted(rows) == sorted(_schema_keys())


def test_configuration_reference_reads_meanings_from_config_yaml():
    module = _script("config_reference")
    comments = module.yaml_comments("a: 1   # one\nb:\n  c: x   # see\n         # more\n")
    assert comments == {"a": "one", "b": "", "b.c": "see more"}
    page = module.render()
    assert "| `discovery.alpha` | float | `0.05` | > 0.0; < 1.0 |" in page


def test_methods_reference_lists_every_method_and_metric():
    from explainnn.attributions import available_methods
    from explainnn.evaluation.metrics import METRICS, metric_spec

    page = (DOCS / "methods.md").read_text()
    for name in available_methods():
        assert f"| `{name}` |" in page, name
    for name in METRICS:
        assert f"| `{name}` | {metric_spec(name).family} | {metric_spec(name).direction} |" in page, name


def test_readme_is_short_and_links_into_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make demo" in readme and "make test" in readme and "### Explain your own model from Python" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link


def test_docs_pages_link_only_to_files_that_exist():
    for page in DOCS.rglob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+\.(?:md|png))(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / link).resolve().is_file(), f"{page.relative_to(ROOT)} -> {link}"


def test_no_page_tells_the_projects_history():
    words = re.compile(r"\b(this session|last session|earlier session|this round|was lent|helper)\b", re.I)
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        found = words.search(page.read_text())
        assert found is None, f"{page.relative_to(ROOT)}: {found.group(0)!r}"


def test_extending_examples_run():
    """The method and metric examples of docs/extending.md, as printed (each touches one registry)."""
    from explainnn.attributions.registry import METHODS
    from explainnn.evaluation.metrics import METRICS

    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "extending.md").read_text(), re.S)
    try:
        for block in blocks[:2]:
            exec(compile(block, "docs/extending.md", "exec"), {})
        assert "gradient_power" in METHODS and "EffectiveComplexity" in METRICS
    finally:
        METHODS.pop("gradient_power", None)
        METRICS.pop("EffectiveComplexity", None)
