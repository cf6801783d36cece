"""Write a bench store's report: Markdown with its PNGs, and one self-contained HTML page.

The report shows what the sweep measured (curves with seed bands, learning-rate sensitivity,
expected best after k trials, time to target, performance profiles, win probabilities, one-shot
vs tuned, pairwise claims with bootstrap intervals) and a fairness lint. Selection was made on
validation only; test metrics are reported, never used to choose.

examples:
  ravine report bench.sqlite --out report/
  ravine report postgresql://user@db/ravine --study study-1a2b3c4d5e --out report/
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="the store: a SQLite file or a postgresql:// URL")
    p.add_argument("--out", default="bench-report", help="folder for report.md, report.html, PNGs")
    p.add_argument("--study", help="which study (default: the store's newest)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ravine.bench.report import write_report

    if "://" not in args.store and not Path(args.store).is_file():
        print(f"ravine report: error: store {args.store!r}: no such file", file=sys.stderr)
        return 2
    try:
        files = write_report(args.store, args.out, study=args.study)
    except ValueError as e:
        print(f"ravine report: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {files.markdown} (+ {len(files.images)} PNG files beside it)")
    print(f"wrote {files.html} (self-contained: PNGs embedded)")
    return 0
