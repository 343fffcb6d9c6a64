"""Rebuild the report of a finished run: ``python -m explainnn.reports RUN_DIR``."""

from __future__ import annotations

import argparse
import sys

from explainnn.errors import UserError
from explainnn.reports import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainnn.reports", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder, e.g. output/mnist/lenet")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.run_dir)
    except UserError as exc:
        print(f"explainnn: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {paths['html']} and {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
