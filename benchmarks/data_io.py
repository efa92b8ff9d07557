"""Reading a user's CSV: ``ddpmlab.data.files.load_data_file`` against ``numpy.loadtxt``, time and memory.

    python benchmarks/data_io.py [--rows N] [--repeats R] [--seed S]

Writes an N-row x 2-column CSV (a header row, seeded normal floats written with '%.8g', as a user's
exported file) to a temporary folder, then reads it R times each way, every read in a fresh
subprocess (interleaved: numpy, ddpmlab, numpy, ...), one thread. A child measures its read's wall
time and its peak resident memory above its own baseline after imports: Linux's peak (VmHWM) is reset
to the current RSS just before the read (``/proc/self/clear_refs``), so what imports once touched does
not hide the read's peak; elsewhere ``ru_maxrss`` minus its value after imports. Prints the load average,
a JSON line and a Markdown table: best times, their ratio (ddpmlab / numpy; the target is <= 1.5),
and each peak over the float32 data's size (the target for ddpmlab is <= 3).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def write_csv(path: Path, rows: int, seed: int) -> None:
    """An N x 2 table of seeded normal floats (columns of different scales) with a header row."""
    data = np.random.default_rng(seed).normal(size=(rows, 2)) * [1.0, 30.0] + [0.0, 5.0]
    np.savetxt(path, data, fmt="%.8g", delimiter=",", header="x,y", comments="")


def _proc_status(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in bytes, None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset Linux's peak RSS (VmHWM) to the current RSS; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status("VmHWM") is not None


def _maxrss() -> int:
    import resource
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def child(mode: str, path: str) -> dict:
    """One read in this fresh process: seconds, peak bytes above the post-import baseline, a digest."""
    import gc
    if mode == "ddpmlab":
        from ddpmlab.data.files import load_data_file
        read = lambda: load_data_file(path).numpy()  # noqa: E731
    else:
        read = lambda: np.loadtxt(path, dtype=np.float32, delimiter=",", skiprows=1, ndmin=2)  # noqa: E731
    gc.collect()
    hwm = _reset_peak()
    base = _proc_status("VmRSS") if hwm else _maxrss()
    t0 = time.perf_counter()
    arr = read()
    seconds = time.perf_counter() - t0
    peak = (_proc_status("VmHWM") if hwm else _maxrss()) - base
    return {"mode": mode, "seconds": seconds, "peak_bytes": peak, "method": "VmHWM" if hwm else "ru_maxrss",
            "shape": list(arr.shape), "dtype": str(arr.dtype), "sha1": hashlib.sha1(arr.tobytes()).hexdigest()}


def run_child(mode: str, path: Path) -> dict:
    """``child`` in a subprocess with one thread and this checkout's ``src`` on the path."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        raise SystemExit(f"{mode} child failed: {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarise(rows: int, file_bytes: int, runs: list[dict]) -> dict:
    """Best time and largest peak of each side, their ratios, and whether both read the same array."""
    out = {"rows": rows, "file_MiB": round(file_bytes / MIB, 1), "repeats": len(runs) // 2}
    data_bytes = rows * 2 * 4
    out["float32_MiB"] = round(data_bytes / MIB, 1)
    for mode in ("numpy", "ddpmlab"):
        mine = [r for r in runs if r["mode"] == mode]
        out[f"{mode}_best_s"] = round(min(r["seconds"] for r in mine), 3)
        out[f"{mode}_peak_MiB"] = round(max(r["peak_bytes"] for r in mine) / MIB, 1)
        out[f"{mode}_peak_over_data"] = round(max(r["peak_bytes"] for r in mine) / data_bytes, 2)
    out["time_ratio"] = round(out["ddpmlab_best_s"] / out["numpy_best_s"], 2)
    out["same_array"] = len({(r["sha1"], tuple(r["shape"]), r["dtype"]) for r in runs}) == 1
    out["memory_method"] = runs[0]["method"]
    return out


def markdown(s: dict) -> str:
    """The summary as a small Markdown table."""
    return "\n".join([
        "| reader | best s | peak MiB above baseline | peak / float32 data |",
        "|---|---|---|---|",
        f"| numpy.loadtxt(float32) | {s['numpy_best_s']} | {s['numpy_peak_MiB']} | {s['numpy_peak_over_data']} |",
        f"| ddpmlab load_data_file | {s['ddpmlab_best_s']} | {s['ddpmlab_peak_MiB']} | "
        f"{s['ddpmlab_peak_over_data']} |",
        "",
        f"{s['rows']} rows x 2 columns, {s['file_MiB']} MiB file, float32 data {s['float32_MiB']} MiB; "
        f"time ratio ddpmlab / numpy = {s['time_ratio']} (target <= 1.5); ddpmlab peak / data = "
        f"{s['ddpmlab_peak_over_data']} (target <= 3); same array both ways: {s['same_array']}; "
        f"best of {s['repeats']}, memory by {s['memory_method']}.",
    ])


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        write_csv(path, a.rows, a.seed)
        runs = [run_child(mode, path) for _ in range(a.repeats) for mode in ("numpy", "ddpmlab")]
        s = summarise(a.rows, path.stat().st_size, runs)
    s["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(s))
    print(markdown(s))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
