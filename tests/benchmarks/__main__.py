"""Run the benchmarks: ``make bench`` or ``python -m tests.benchmarks [NAME ...]``.

Each ``bench_<name>.py`` module is run in its own process (so one benchmark's
memory and threads cannot skew the next) and prints its own table. Results are
recorded by hand in docs/BENCHMARKS.md with the machine and date.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmarks {unknown}; available: {available()}", file=sys.stderr)
        return 2
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {cpu}, {len(__import__('os').sched_getaffinity(0))} cores, "
          f"Python {platform.python_version()}")
    failed = []
    for name in names:
        print(f"\n## {name}", flush=True)
        result = subprocess.run([sys.executable, "-m", f"tests.benchmarks.bench_{name}"], cwd=HERE.parent.parent)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
