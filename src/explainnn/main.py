"""Command-line entry point: parse the arguments, load the config, run the pipeline.

    python src/explainnn/main.py [--config config.yaml] [section.key=value ...]

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

EXIT_USER_ERROR = 2


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="explainnn",
        description="Learn which hidden units cause a class prediction, explain inputs with them, "
        "and compare the explanations with the standard methods.",
        epilog="Example: python src/explainnn/main.py discovery.target_class=7 discovery.intervention=soft",
    )
    parser.add_argument("--config", help="YAML config file (default: ./config.yaml when present, else the defaults)")
    parser.add_argument("--sweep", metavar="FILE", help="run a sweep file (many runs, on Ray when installed)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override any config key, e.g. discovery.target_class=7 training.epochs=3")
    return parser.parse_args(argv)


def _config_path(given: str | None) -> Path | None:
    default = Path("config.yaml")
    return Path(given) if given is not None else (default if default.is_file() else None)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every enabled step, and map user mistakes to one line and exit code 2."""
    args = _parse_args(argv)
    started = time.perf_counter()
    try:
        if args.sweep is not None:
            return _sweep(args)
        from explainnn.config import load_config
        from explainnn.pipeline import run

        context = run(load_config(_config_path(args.config), args.overrides))
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
