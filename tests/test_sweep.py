"""``ddpmlab sweep``: the commands it prints are the commands it runs, each a valid ``ddpmlab train``
command line; its summary's means and spreads are those of the runs' metrics.json; a failed job is
reported in one line and makes the exit code non-zero while the others finish."""
import csv
import json
import shlex
import statistics
import sys
from types import SimpleNamespace

import pytest

from ddpmlab.cli import build_parser, main
from ddpmlab.config.schema import load_config
from ddpmlab.workflows.sweep_plan import parse_grid, parse_seeds
from hostile_support import run_main

TINY = ["schedule.steps=10", "model.width=16", "model.depth=1", "train.iters=3", "train.batch_size=32"]
TINY_SETS = [a for s in TINY for a in ("--set", s)]


def sweep_cli(*args):
    """``ddpmlab sweep ARGS`` in this process (its jobs run in their own processes, as always)."""
    code, out, err = run_main("sweep", "--no-progress", *args)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """2 configs x 2 seeds, run for real, and the same sweep's --print-commands."""
    out = tmp_path_factory.mktemp("sweep") / "grid"
    args = ["--config", "default", "--config", "hybrid", "--seeds", "3-4", "--jobs", "2", "--out", str(out),
            *TINY_SETS]
    printed = sweep_cli(*args, "--print-commands")
    assert printed.returncode == 0, printed.stderr
    assert not out.exists()  # printing runs nothing
    ran = sweep_cli(*args)
    assert ran.returncode == 0, ran.stderr
    return out, printed.stdout.splitlines(), ran


def test_printed_commands_are_the_commands_run(grid):
    out, printed, _ = grid
    jobs = read_csv(out / "jobs.csv")
    assert [j["command"] for j in jobs] == printed and len(printed) == 4
    expected = {("default", 3), ("default", 4), ("hybrid", 3), ("hybrid", 4)}
    seen = set()
    for line in printed:
        argv = shlex.split(line)
        assert argv[:3] == [sys.executable, "-m", "ddpmlab"]
        args = build_parser().parse_args(argv[3:])  # a valid `ddpmlab train` command line
        assert args.command == "train" and args.threads == 1 and args.config in ("default", "hybrid")
        cfg = load_config(args.config, args.set)
        assert cfg.train.iters == 3 and cfg.model.width == 16
        seen.add((args.config, cfg.train.seed))
        assert json.loads((out.parent / args.out / "metrics.json").read_text())["seed"] == cfg.train.seed
    assert seen == expected


def test_summary_is_the_mean_and_spread_of_the_runs(grid):
    out, _, ran = grid
    rows = {r["config"]: r for r in read_csv(out / "summary.csv")}
    assert set(rows) == {"default", "hybrid"}
    for config, row in rows.items():
        runs = [json.loads(p.read_text()) for p in sorted((out / config).glob("seed_*/metrics.json"))]
        assert len(runs) == 2 and int(row["seeds"]) == 2 and int(row["failed"]) == 0
        for key in ("final_loss", "train_seconds"):
            values = [r[key] for r in runs]
            assert float(row[f"{key}_mean"]) == pytest.approx(sum(values) / 2, rel=1e-12)
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-9)
        assert float(row["threads_mean"]) == 1.0  # each job ran single-threaded
    md = (out / "summary.md").read_text()
    assert md.count("\n| default |") + md.count("\n| hybrid |") == 2 and "final_loss" in md
    assert md in ran.stdout


def test_running_again_runs_nothing(grid):
    out, _, _ = grid
    before = (out / "summary.csv").read_text()
    assert main(["sweep", "--no-progress", "--config", "default", "--config", "hybrid", "--seeds", "3-4",
                 "--out", str(out), *TINY_SETS]) == 0
    assert {j["status"] for j in read_csv(out / "jobs.csv")} == {"done earlier"}
    assert (out / "summary.csv").read_text() == before


def test_a_failed_job_is_reported_and_the_others_finish(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[data]\nname = "file"\npath = "{tmp_path / "missing.csv"}"\n')
    out = tmp_path / "sweep"
    r = sweep_cli("--config", "default", "--config", str(broken), "--seeds", "0", "--jobs", "2", "--out", str(out),
                  *TINY_SETS)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    log = out / "broken" / "seed_0.log"
    assert lines[0].startswith("sweep: job broken/seed_0 failed (exit 2):") and "missing.csv" in lines[0]
    assert lines[0].endswith(f"log: {log}") and log.is_file()
    assert len(lines) == 2 and "1 of 2 jobs failed" in lines[1] and "Traceback" not in r.stderr
    assert (out / "default" / "seed_0" / "metrics.json").is_file()
    rows = {r["config"]: r for r in read_csv(out / "summary.csv")}
    assert (rows["broken"]["seeds"], rows["broken"]["failed"]) == ("0", "1")
    assert (rows["default"]["seeds"], rows["default"]["failed"]) == ("1", "0")


def test_grid_points_and_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("2,0-1,2") == [2, 0, 1]
    assert parse_grid(["train.lr=1e-3,2e-3", "model.width=32,64"]) == [
        ("train.lr=1e-3", "model.width=32"), ("train.lr=1e-3", "model.width=64"),
        ("train.lr=2e-3", "model.width=32"), ("train.lr=2e-3", "model.width=64")]
    assert parse_grid([]) == [()]


def test_grid_directories_and_print_commands(tmp_path, capsys):
    assert main(["sweep", "--config", "default", "--grid", "train.lr=1e-3,2e-3", "--seeds", "0-1",
                 "--out", str(tmp_path / "g"), "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    args = build_parser().parse_args(shlex.split(lines[3])[3:])
    assert args.out == str(tmp_path / "g" / "default" / "train.lr=2e-3" / "seed_1")
    assert load_config(args.config, args.set).train.lr == 2e-3


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "4-1"], "--seeds"),
    (["--grid", "lr=1,2"], "--grid"),
    (["--grid", "train.nope=1,2"], "train.nope"),
    (["--set", "train.lr=-1"], "train.lr"),
    (["--config", "no_such_config"], "no_such_config"),
    (["--jobs", "-1"], "--jobs"),
])
def test_bad_sweeps_are_one_line_exit_2(tmp_path, capsys, args, needle):
    assert main(["sweep", "--out", str(tmp_path / "s"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ddpmlab sweep: error:") and needle in err[0]
    assert not (tmp_path / "s").exists()
