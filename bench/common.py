"""What the benchmarks share: the checks on their timing options (each bench is also run as a script)."""

from __future__ import annotations

import argparse


def check_timing_args(parser: argparse.ArgumentParser, args: argparse.Namespace, counts: tuple[str, ...]) -> None:
    """Exit through ``parser.error`` unless every option in ``counts`` is >= 1, ``--threads`` (when given) is
    >= 1 and ``--min-run-time`` is > 0: the message names the option and the value, before anything is timed."""
    for flag in counts:
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.min_run_time <= 0:
        parser.error(f"--min-run-time must be > 0, got {args.min_run_time}")
