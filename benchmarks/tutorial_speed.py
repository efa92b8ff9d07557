"""Training speed of the seed's faithful recipe: this project against the seed's own code, one run.

    python benchmarks/tutorial_speed.py [--iters N] [--seed S] [--threads K]

Both sides do the same work per iteration: a fresh forward trajectory of all 1000 points, the bound
over all 250 steps, the seed's network sizes, AdamW (lr 1e-2, weight decay 1e-6). The seed's code
(``../shared/reference/seed_tutorial.py``) runs in a subprocess with the same thread count; its own
timer covers its training loop only, and so does ours. Prints one JSON line ending in
``"ratio": seed_seconds / project_seconds``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ddpmlab.config.schema import load_config
from ddpmlab.workflows.pipeline import fit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEED_SCRIPT = ROOT.parent / "shared" / "reference" / "seed_tutorial.py"


def project_seconds(iters: int, seed: int) -> float:
    """Training seconds of the packaged ``tutorial`` config (the loop only, as the seed's timer)."""
    threads = f"train.threads={torch.get_num_threads()}"  # the benchmark's --threads, not the policy's choice
    cfg = load_config("tutorial", [f"train.iters={iters}", f"train.seed={seed}", threads])
    return fit(cfg, progress=False).train_seconds


def seed_seconds(script: Path, iters: int, seed: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, str(script), tmp, "--iters", str(iters), "--seed", str(seed)],
                           capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"seed script failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seed-script", type=Path, default=DEFAULT_SEED_SCRIPT)
    a = ap.parse_args()
    if not a.seed_script.is_file():
        raise SystemExit(f"seed script not found: {a.seed_script} (pass --seed-script)")
    torch.set_num_threads(a.threads)
    ours = project_seconds(a.iters, a.seed)
    theirs = seed_seconds(a.seed_script, a.iters, a.seed, a.threads)
    print(json.dumps({"iters": a.iters, "threads": a.threads, "project_seconds": round(ours, 3),
                      "seed_seconds": theirs["train_s"], "ratio": round(theirs["train_s"] / ours, 2)}))


if __name__ == "__main__":
    main()
