"""Write docs/configuration.md, the configuration reference, from the pydantic schema in ``explainnn.config``.

Every key of :class:`explainnn.config.Config` gets one row: its dotted name, type, default, constraints
(ranges, choices) and meaning. The meaning is the field's ``description`` where the schema gives
one, else the comment beside the key in ``config.yaml`` (the commented default config), so the page
says what the file says. Each section starts with its model's docstring. The valid dataset, model,
attribution-method and metric names come from the registries.

    .venv/bin/python scripts/config_reference.py           # write docs/configuration.md
    .venv/bin/python scripts/config_reference.py --check   # exit 1 when the committed page differs

``make docs`` regenerates the page (the mkdocs hook ``docs/hooks.py``), and ``tests/project/test_docs.py`` checks
that the committed page equals what this script writes, so the reference cannot drift from the schema.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.append(str(ROOT / "src"))  # a checkout without the package installed

import annotated_types  # noqa: E402
import yaml  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

OUTPUT = ROOT / "docs" / "configuration.md"
CONFIG_FILE = ROOT / "config.yaml"

# Keys whose values are names from a registry: the key -> the heading of the "Valid names" list.
REGISTRY_KEYS = {
    "data.name": "datasets",
    "model.name": "models",
    "attribution.methods": "attribution methods",
    "attribution.options": "attribution methods",
    "evaluation.metrics": "metrics",
    "evaluation.methods": "attribution methods",
    "evaluation.options": "metrics",
    "analyses.text.methods": "attribution methods",
    "analyses.clustering.method": "attribution methods",
}


def yaml_comments(text: str) -> dict[str, str]:
    """Dotted key -> its comment in a commented YAML file (a comment continued on the lines below it included)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    last: str | None = None
    last_indent = -1
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            last = None
            continue
        indent = len(line) - len(line.lstrip(" "))
        if stripped.startswith("#"):
            if last is not None and indent > last_indent:  # a continuation of the comment of the key above
                comments[last] = f"{comments.get(last, '')} {stripped.lstrip('#').strip()}".strip()
            continue
        match = re.match(r"([A-Za-z_][\w-]*)\s*:(.*)$", stripped)
        if not match:
            last = None
            continue
        key, rest = match.groups()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        value, _, comment = rest.partition(" #")
        comments[path] = comment.strip().lstrip("#").strip()
        if not value.strip():
            stack.append((indent, key))
        last, last_indent = path, indent
    return comments


def type_name(annotation: Any) -> str:
    """A field's type in words a config file writer reads: ``int``, ``str | null``, ``list[str]``, ``one of ...``."""
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        names = [type_name(arg) for arg in typing.get_args(annotation)]
        return " | ".join(dict.fromkeys(names))
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return f"list[{type_name(item)}]"
    if origin is dict:
        key, value = typing.get_args(annotation) or (Any, Any)
        return f"mapping[{type_name(key)}, {type_name(value)}]"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def literal_choices(annotation: Any) -> list[Any]:
    """Every value a ``Literal`` inside ``annotation`` allows."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [choice for arg in typing.get_args(annotation) for choice in literal_choices(arg)]


def inline_yaml(value: Any) -> str:
    """A value as it is written in ``config.yaml``."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text[: -len("\n...")].strip() if text.endswith("...") else text


def default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def constraints(field: FieldInfo) -> list[str]:
    """Ranges, choices and other names of a field."""
    found: list[str] = []
    words = {annotated_types.Ge: (">=", "ge"), annotated_types.Gt: (">", "gt"), annotated_types.Le: ("<=", "le"),
             annotated_types.Lt: ("<", "lt")}
    for item in field.metadata:
        for kind, (word, attribute) in words.items():
            if isinstance(item, kind):
                found.append(f"{word} {getattr(item, attribute):_}".replace("_", ","))
    choices = literal_choices(field.annotation)
    if choices:
        found.append("one of " + ", ".join(f"`{inline_yaml(choice)}`" for choice in choices))
    return found


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section_models(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """The section models of the schema in config order: ``("", Config)``, ``("data", DataConfig)``, ..."""
    found = [(prefix, model)]
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += section_models(annotation, f"{prefix}{name}.")
    return found


def anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def markdown(text: str) -> str:
    """Sphinx-flavoured docstring text as Markdown: ``code`` -> `code`, :func:`~a.b` -> `b`."""
    text = re.sub(r":(?:func|class|meth|attr|mod|data):`~?\.?([^`]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`",
                  text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def docstring_keys(model: type[BaseModel]) -> dict[str, str]:
    """Key -> text of the ````key``: text`` entries of a section's docstring (up to the next such entry)."""
    doc = re.sub(r"\s+", " ", inspect.getdoc(model) or "")
    found: dict[str, str] = {}
    for match in re.finditer(r"``(\w+)``: (.*?)(?= ``\w+``: |$)", doc):
        found[match.group(1)] = markdown(match.group(2).strip())
    return found


def rows(prefix: str, model: type[BaseModel], comments: dict[str, str]) -> list[str]:
    documented = docstring_keys(model)
    lines = ["| key | type | default | constraints | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            target = f"{key}"
            lines.append(f"| `{key}` | section | | | see [`{target}`](#{anchor(target)}) |")
            continue
        meaning = field.description or comments.get(key, "") or documented.get(name, "")
        extra = [f"`{child[len(key) + 1:]}`: {text}" for child, text in comments.items()
                 if child.startswith(key + ".") and text]
        if extra:
            meaning = f"{meaning}. Entries: {'; '.join(extra)}".strip()
        rules = constraints(field)
        if key in REGISTRY_KEYS:
            heading = REGISTRY_KEYS[key]
            rules.append(f"names: [{heading}](#{anchor(heading)})")
        default = inline_yaml(default_of(field))
        lines.append(f"| `{key}` | {cell(type_name(annotation))} | `{cell(default)}` | {cell('; '.join(rules))} "
                     f"| {cell(meaning)} |")
    return lines


def registry_names() -> list[tuple[str, list[str]]]:
    from explainnn.attributions import available_methods
    from explainnn.data import available_datasets
    from explainnn.evaluation.metrics import available_metrics
    from explainnn.models import MODELS

    return [("datasets", list(available_datasets())), ("models", sorted(MODELS)),
            ("attribution methods", list(available_methods())), ("metrics", list(available_metrics()))]


def render() -> str:
    """The whole page."""
    from explainnn.config import Config

    comments = yaml_comments(CONFIG_FILE.read_text()) if CONFIG_FILE.is_file() else {}
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/config_reference.py from src/explainnn/config.py and the comments of",
        "     config.yaml. Do not edit: `make docs` rewrites it, and tests/project/test_docs.py compares the two. -->",
        "",
        "Every key is optional; the default is the value in `config.yaml`. Set a key in a config file, or on the",
        "command line as a dotted override (`make run ARGS=\"discovery.target_class=7 training.epochs=5\"`).",
        "The whole config is checked when it is loaded: an unknown key, a wrong type, a value out of range or a",
        "name that no registry holds stops the run with one line and exit code 2, before anything is trained or",
        "written. `null` is YAML's empty value; sections are mappings of the keys listed under them.",
        "",
    ]
    for prefix, model in section_models(Config):
        title = prefix[:-1] if prefix else "Top level"
        out.append(f"## {'`' + title + '`' if prefix else title}")
        out.append("")
        doc = inspect.getdoc(model) or ""
        if doc:
            out.append(markdown(re.sub(r"\s+", " ", doc).strip()))
            out.append("")
        out += rows(prefix, model, comments)
        out.append("")
    out += ["## Valid names", "",
            "Names the registries hold (a package that registers more extends these lists; see",
            "[Extending explainnn](extending.md)).", ""]
    for heading, names in registry_names():
        out += [f"### {heading[0].upper() + heading[1:]}", "", ", ".join(f"`{name}`" for name in names), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed page differs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.output.is_file() and args.output.read_text() == text
        if not same:
            print(f"{args.output} is out of date; run .venv/bin/python scripts/config_reference.py", file=sys.stderr)
        return 0 if same else 1
    if not args.output.is_file() or args.output.read_text() != text:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
