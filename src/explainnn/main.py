"""Command-line entry point: parse the arguments, load the config, run the pipeline.

    python src/explainnn/main.py [--config config.yaml] [section.key=value ...]

Without ``--config`` the run reads ``./config.yaml``, or, when the current folder
has none, the built-in defaults, and says so on stderr. Relative paths in a config
file are relative to the file's folder; in overrides, to the current folder.
The steps and their order live in :mod:`explainnn.pipeline`. A
:class:`~explainnn.errors.UserError` anywhere becomes one line on stderr and
exit code 2; the config is validated completely before any step starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a script: the package folder itself must not shadow top-level modules.
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]

import argparse
import time

from explainnn.errors import UserError
from explainnn.progress import show_log_lines

EXIT_USER_ERROR = 2


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="explainnn",
        description="Learn which hidden units cause a class prediction, explain inputs with them, "
        "and compare the explanations with the standard methods.",
        epilog="Example: python src/explainnn/main.py discovery.target_class=7 discovery.intervention=soft",
    )
    parser.add_argument("--config", help="YAML config file; its relative paths are relative to its folder "
                        "(default: ./config.yaml when present, else the built-in defaults, with a notice)")
    parser.add_argument("--sweep", metavar="FILE", help="run a sweep file (many runs, on Ray when installed)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override any config key, e.g. discovery.target_class=7 training.epochs=3")
    return parser.parse_args(argv)


DEFAULT_CONFIG = "config.yaml"


def _config_path(given: str | None) -> Path | None:
    """``--config`` (a missing file is an error when loaded), else ``./config.yaml`` when present, else None."""
    if given is not None:
        return Path(given)
    default = Path(DEFAULT_CONFIG)
    return default if default.is_file() else None


def no_config_notice() -> str:
    """The line printed on stderr when no ``--config`` is given and the current folder has no ``config.yaml``."""
    return f"explainnn: no {DEFAULT_CONFIG} in {Path.cwd()}; using the built-in defaults (pass --config FILE)"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every enabled step, and map user mistakes to one line and exit code 2."""
    args = _parse_args(argv)
    started = time.perf_counter()
    show_log_lines()  # the library's log messages (info and above) as lines on stderr
    try:
        if args.sweep is not None:
            return _sweep(args)
        from explainnn.config import load_config
        from explainnn.pipeline import run

        path = _config_path(args.config)
        config = load_config(path, args.overrides)
        if path is None:
            print(no_config_notice(), file=sys.stderr)
        context = run(config)
    except UserError as exc:
        print(f"explainnn: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("explainnn: interrupted", file=sys.stderr)
        return 130
    print(f"done in {time.perf_counter() - started:.1f} s; results in {context.run_dir}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """Run a sweep file; print its summary, and its folder last. Exit code 1 when a run failed."""
    from explainnn.sweep import run_sweep

    result = run_sweep(args.sweep, args.overrides, config_given=args.config is not None)
    print(f"{result.summary()}\n{result.folder}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
