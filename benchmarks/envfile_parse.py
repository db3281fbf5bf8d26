"""How long wsguard takes to read a big `.env`, next to python-dotenv alone. A script, not a test.

    .venv/bin/python benchmarks/envfile_parse.py [--sizes 0.25,0.5,1,2] [--rounds 3]

For each size (MB) a generated file of ordinary assignments, comments, blank lines, quoted, escaped and
multi-line values is read by python-dotenv's own parser, then by wsguard's read_values (the same parser
plus the line numbers of every statement) and set_flags (one value changed). Best of --rounds, in
seconds; the last column is wsguard's read time per MB, which stays flat when the work is linear.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dotenv.parser import parse_stream  # noqa: E402

from remediations.edit.envfile import read_values, set_flags

LINES = (
    "PLAIN_{i}=value-{i}",
    "export SINGLE_{i}='single {i}'  # a note",
    'DOUBLE_{i}="escaped \\"{i}\\" and \\\\ backslash"',
    "# a comment about {i}",
    "",
    'MULTI_{i}="first line {i}\nsecond line\nthird line"',
    "SPACED_{i} = spaced value {i} # trailing",
)


def generate(size: int) -> str:
    """About `size` characters of .env text, every line kind in turn."""
    out: list[str] = []
    total = i = 0
    while total < size:
        line = LINES[i % len(LINES)].format(i=i) + "\n"
        out.append(line)
        total += len(line)
        i += 1
    return "".join(out)


def best(fn: Callable[..., object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.25,0.5,1,2", help="file sizes in MB, comma separated")
    ap.add_argument("--rounds", type=int, default=3, help="runs per measure; the best counts (default 3)")
    args = ap.parse_args()
    print(f"{'MB':>5} {'lines':>8} {'dotenv s':>9} {'read s':>8} {'set s':>8} {'read s/MB':>10}")
    for mb in (float(s) for s in args.sizes.split(",")):
        text = generate(int(mb * 1024 * 1024))
        dotenv = best(lambda t=text: list(parse_stream(io.StringIO(t))), args.rounds)
        read = best(lambda t=text: read_values(t), args.rounds)
        change = best(lambda t=text: set_flags(t, {"PLAIN_0": "changed"}), args.rounds)
        print(f"{mb:>5g} {text.count(chr(10)):>8} {dotenv:>9.3f} {read:>8.3f} {change:>8.3f} {read / mb:>10.3f}",
              flush=True)


if __name__ == "__main__":
    main()
