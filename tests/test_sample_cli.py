"""``ddpmlab train`` then ``ddpmlab sample`` with each sampler; refusals of bad runs and arguments."""
import numpy as np
import pytest

from ddpmlab.cli import main

TINY = ["--set", "schedule.steps=10", "--set", "model.width=16", "--set", "model.depth=1",
        "--set", "train.iters=3", "--set", "train.batch_size=32"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--config", "default", "--out", str(out), "--no-progress", *TINY]) == 0
    return out


@pytest.mark.parametrize("args", [[], ["--sampler", "ddim", "--steps", "5"], ["--sampler", "ode", "--steps", "4"],
                                  ["--sampler", "ancestral", "--steps", "5"]])
def test_sample_writes_npy(run_dir, tmp_path, args):
    out = tmp_path / "s.npy"
    assert main(["sample", str(run_dir), "-n", "50", "--out", str(out), *args]) == 0
    x = np.load(out)
    assert x.shape == (50, 1) and np.isfinite(x).all()


def test_sample_is_reproducible(run_dir, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    for p in (a, b):
        assert main(["sample", str(run_dir), "-n", "20", "--seed", "3", "--out", str(p)]) == 0
    assert np.array_equal(np.load(a), np.load(b))


def test_sample_refuses_bad_input(run_dir, tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nothing"), "-n", "5", "--out", str(tmp_path / "x.npy")]) == 2
    assert main(["sample", str(run_dir), "-n", "0", "--out", str(tmp_path / "x.npy")]) == 2
    assert main(["sample", str(run_dir), "-n", "5", "--out", str(tmp_path / "x.txt")]) == 2
    assert main(["sample", str(run_dir), "-n", "5", "--steps", "99", "--out", str(tmp_path / "x.npy")]) == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"\x00" * 10)
    assert main(["sample", str(broken), "-n", "5", "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("ddpmlab sample: error:") for line in err)
    assert not (tmp_path / "x.npy").exists()
