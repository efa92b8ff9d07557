"""The transcript of ``ddpmlab tutorial`` on seed 0 that README.md quotes.

    python benchmarks/tutorial_transcript.py [--out benchmarks/results/tutorial_transcript.txt]

Runs ``ddpmlab tutorial --out runs/tutorial`` (every default: both recipes, seed 0) in an empty temporary
directory, so the paths it prints are the README's, and writes what it printed on stdout to ``--out``.
Training and sampling times vary with the host's load; every other figure is fixed by the seed.
``tests/test_readme_figures.py`` checks that the README's transcript is this file.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from ddpmlab.core.fileio import atomic_write_bytes

RESULT = Path(__file__).resolve().parent / "results" / "tutorial_transcript.txt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(RESULT))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "ddpmlab", "tutorial", "--out", "runs/tutorial"], cwd=tmp,
                           stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"tutorial_transcript: ddpmlab tutorial failed with exit code {r.returncode}")
    atomic_write_bytes(args.out, r.stdout.encode())
    print(r.stdout, end="")


if __name__ == "__main__":
    main()
