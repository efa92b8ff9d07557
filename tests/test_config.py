"""Configs: TOML round trip, overrides, and one-line errors for wrong keys and values."""
import subprocess
import sys

import pytest

from ddpmlab.cli import main
from ddpmlab.config.schema import CONFIG_DIR, load_config
from ddpmlab.config.toml_writer import to_toml
from ddpmlab.core.utils import DDPMLabError


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
def test_packaged_configs_load_and_round_trip(name, tmp_path):
    try:
        cfg = load_config(name)
    except DDPMLabError as exc:  # a config that distils a teacher is given one where it is used
        assert "needs a teacher" in str(exc)
        cfg = load_config(name, [f"train.teacher={tmp_path}"])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(str(path)) == cfg


def test_overrides_apply_with_types():
    cfg = load_config("default", ["train.lr=0.5", "train.iters=7", "model.mean_type=v", "train.ema_decay=0"])
    assert cfg.train.lr == 0.5 and cfg.train.iters == 7 and cfg.model.mean_type == "v"
    assert isinstance(cfg.train.ema_decay, float)


@pytest.mark.parametrize("override, needle", [
    ("train.lrr=1", "unknown config key train.lrr"),
    ("trian.lr=1", "unknown config section [trian]"),
    ("train.lr=-1", "train.lr must be > 0"),
    ("train.iters=1.5", "train.iters must be an integer"),
    ("model.mean_type=noise", "model.mean_type"),
    ("schedule.beta=2", "schedule.beta must be < 1"),
    ("train.lr", "--set expects section.key=value"),
    ("train.objective=simple", None),
])
def test_bad_values_are_errors(override, needle):
    if needle is None:  # a valid override must not raise
        load_config("default", [override])
        return
    with pytest.raises(DDPMLabError, match=None) as exc:
        load_config("default", [override])
    assert needle in str(exc.value)


def test_cli_dry_run_and_errors(tmp_path, capsys):
    ok = subprocess.run([sys.executable, "-m", "ddpmlab", "train", "--config", "default", "--dry-run",
                         "--set", "train.iters=3"], capture_output=True, text=True)
    assert ok.returncode == 0 and "iters = 3" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\niters = 3\n")
    for args in (["--config", str(bad)], ["--set", "train.nope=1"], ["--config", "missing-config"]):
        capsys.readouterr()  # refused in this process: main() is what `python -m ddpmlab` runs
        code = main(["train", "--out", str(tmp_path / "o"), *args])  # an exception here fails the test
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
