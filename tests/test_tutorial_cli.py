"""``ddpmlab tutorial`` end to end, and its refusals of bad arguments."""
import json
import subprocess
import sys

import pytest

from ddpmlab.workflows.tutorial import FIGURES


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ddpmlab", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_tutorial_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = run_cli("tutorial", "--out", str(out), "--iters", "20", "--seed", "3", "--no-progress")
    assert r.returncode == 0, r.stderr
    for name in FIGURES + ("metrics.json", "run.json", "model.safetensors"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("train_seconds", "final_loss", "vlb_nats", "w1", "w1_noise_floor", "component_fractions"):
        assert key in m
    assert m["threads"] == 1  # the seed's tiny networks train single-threaded (ddpmlab.core.threads)
    assert len(m["component_fractions"]) == 2 and abs(sum(m["component_fractions"]) - 1) < 1e-9
    assert m["w1_noise_floor"] < 0.2 and m["vlb_nats"] > 2.0  # no model beats the entropy (2.0554)
    assert "W1" in r.stdout
    assert not list(out.glob(".*tmp"))  # no temporary files left behind


@pytest.mark.parametrize("args, needle", [
    (["--iters", "-5"], "iters"),
    (["--beta", "1.5"], "beta"),
    (["--beta", "0"], "beta"),
    (["--iters", "ten"], "invalid int"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, args, needle):
    r = run_cli("tutorial", "--out", str(tmp_path / "o"), *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_unwritable_out_is_refused(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    r = run_cli("tutorial", "--out", str(blocker / "sub"), "--iters", "1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "output directory" in lines[0]
    assert blocker.read_text() == "not a directory"
