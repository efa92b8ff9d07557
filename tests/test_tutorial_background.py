"""The recommended recipe in a child process beside the seed's (``ddpmlab.workflows.tutorial_background``):
the same result as in this process, bit for bit, and a failure in the child is the same one-line error."""
import json

import pytest
import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.workflows import tutorial_background
from ddpmlab.workflows.tutorial_recipes import recommended_recipe

OVERRIDES = ["train.iters=15", "sample.n=300", "train.seed=4"]


@pytest.fixture
def free(monkeypatch):
    """A free core, whatever the machine's load: the child process starts."""
    monkeypatch.setattr(tutorial_background, "free_cores", lambda: 2.0)


def test_child_process_gives_the_same_result(tmp_path, free):
    with tutorial_background.recommended_beside(tmp_path / "child", OVERRIDES) as result:
        # here, while the child runs (as the tutorial trains the seed's recipe beside it)
        here = recommended_recipe(tmp_path / "here", OVERRIDES, progress=False)
        child = result()
    assert torch.equal(child["samples"], here["samples"]) and torch.equal(child["oracle_samples"],
                                                                          here["oracle_samples"])
    drop = ("train_seconds", "sample_seconds")
    assert {k: v for k, v in child["metrics"].items() if k not in drop} == \
           {k: v for k, v in here["metrics"].items() if k not in drop}
    assert (tmp_path / "child" / "model.safetensors").read_bytes() == (tmp_path / "here" / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "child" / "metrics.json").read_text())["iters"] == 15


def test_child_error_is_one_line_here(tmp_path, free):
    with pytest.raises(DDPMLabError, match="sampler"):
        with tutorial_background.recommended_beside(tmp_path / "o", ["sample.sampler=nonsense"]) as result:
            result()


def test_busy_machine_runs_it_here(tmp_path, monkeypatch):
    monkeypatch.setattr(tutorial_background, "free_cores", lambda: 0.3)
    started = []
    monkeypatch.setattr(tutorial_background.multiprocessing, "get_context", lambda *a: started.append(a))
    with tutorial_background.recommended_beside(tmp_path / "o", OVERRIDES) as result:
        part = result()
    assert not started and part["metrics"]["iters"] == 15
