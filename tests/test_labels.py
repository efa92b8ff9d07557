"""Class labels (issue 14): named mixtures labelled by component with the same draws, a user's CSV/NPY with
--label-column mapped to classes (mapping kept with the run), bad labels refused in one line, and a
labelled config that trains a class-conditional network and reloads as one."""
import numpy as np
import pytest
import torch

from ddpmlab.config.schema import load_config
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.base import make_training_data
from ddpmlab.data.labels import load_labelled_file
from ddpmlab.runs.format import load_run
from ddpmlab.training.trainer import Trainer
from conftest import gen

TINY = ["schedule.kind='linear'", "schedule.steps=10", "model.width=16", "model.depth=1", "model.time_dim=8",
        "train.iters=5", "train.batch_size=16"]


@pytest.mark.parametrize("name, k", [("seed_mixture", 2), ("eight_gaussians", 8)])
def test_named_mixture_labels_are_components_with_the_same_draws(name, k):
    plain = make_training_data(load_config(None, [f"data.name='{name}'", "data.n_train=500"]).data, gen(0))
    cfg = load_config(None, [f"data.name='{name}'", "data.n_train=500", "data.labels=true"]).data
    data = make_training_data(cfg, gen(0))
    assert torch.equal(data.train, plain.train) and data.num_classes == k
    # each point's label is the component that explains it best (the components barely overlap)
    best = data.dist.responsibilities(data.train).argmax(1)
    assert (best == data.labels).double().mean() > 0.97
    assert data.describe()["classes"] == [str(i) for i in range(k)]
    stream = make_training_data(load_config(None, [f"data.name='{name}'", "data.n_train=0", "data.labels=true"]).data,
                                gen(0))
    x, y = stream.draw(64, gen(1))
    assert x.shape == (64, stream.dist.dim) and y.shape == (64,) and int(y.max()) < k


def test_digits_labels_are_their_digits_with_the_same_draws():
    from ddpmlab.data.digits import Digits

    d = Digits()
    x, y = d.sample_labelled(50, gen(2))
    assert torch.equal(x, d.sample(50, gen(2)))
    for img, lab in zip(x[:10], y[:10]):  # each drawn image is a training image of that digit
        match = (d.images == img).flatten(1).all(1)
        assert bool((d.labels[match] == lab).all()) and bool(match.any())


def test_unlabelled_named_data_refuse_labels():
    with pytest.raises(DDPMLabError, match="no class labels"):
        make_training_data(load_config(None, ["data.name='moons'", "data.labels=true"]).data, gen(0))


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_label_column_by_name_and_index(tmp_path):
    rows = "".join(f"{i * 0.1},{-i * 0.2},{['cat', 'dog', 'emu'][i % 3]}\n" for i in range(12))
    p = _csv(tmp_path, "a,b,kind\n" + rows)
    x, y, classes = load_labelled_file(p, "kind")
    assert classes == ["cat", "dog", "emu"] and y.tolist() == [i % 3 for i in range(12)]
    np.testing.assert_allclose(x[:, 0].numpy(), [i * 0.1 for i in range(12)], rtol=1e-6)
    x2, y2, _ = load_labelled_file(p, "2")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # numeric labels in numeric order (10 after 2), the label column anywhere
    p = _csv(tmp_path, "".join(f"{[2, 10][i % 2]},{i}\n" for i in range(6)), "n.csv")
    x, y, classes = load_labelled_file(p, "0")
    assert classes == ["2", "10"] and y.tolist() == [0, 1] * 3 and x[:, 0].tolist() == list(range(6))


def test_npy_label_column(tmp_path):
    arr = np.column_stack([np.arange(8.0), np.repeat([5.0, 7.0], 4)])
    np.save(tmp_path / "d.npy", arr)
    x, y, classes = load_labelled_file(tmp_path / "d.npy", "1")
    assert classes == ["5", "7"] and y.tolist() == [0] * 4 + [1] * 4 and x.shape == (8, 1)


@pytest.mark.parametrize("text, column, match", [
    ("a,y\n1,x\n2,\n3,x\n", "y", "missing label at line 3"),
    ("a,y\n1,1\n2,nan\n3,1\n", "y", "NaN label at line 3"),
    ("a,y\n1,u\n2,u\n3,v\n", "y", "class 'v' has a single row"),
    ("a,y\n1,u\n2,u\n", "y", "single class"),
    ("a,y\n1,u\n2,u\n", "z", "no label column 'z'"),
    ("a,y\n1,u\n2,u\n", "5", "out of range"),
    ("a,y\n1,u\nq,u\n", "y", "non-numeric cell 'q' at line 3, column 1"),
])
def test_bad_labels_refused_in_one_line(tmp_path, text, column, match):
    with pytest.raises(DDPMLabError, match=match) as exc:
        load_labelled_file(_csv(tmp_path, text), column)
    assert "\n" not in str(exc.value)


def test_too_many_classes_refused(tmp_path):
    p = _csv(tmp_path, "".join(f"{i},{i // 2}\n" for i in range(40)))
    with pytest.raises(DDPMLabError, match="20 classes, more than data.max_classes = 10"):
        load_labelled_file(p, "1", max_classes=10)


@pytest.mark.parametrize("overrides, match", [
    (["model.arch='seed'", "model.mean_type='previous_x'", "model.var_type='learned'", "model.num_classes=3",
      "train.objective='trajectory_bound'"], "only model.arch = 'mlp' or 'unet'"),
    (["model.arch='seed'", "model.mean_type='previous_x'", "model.var_type='learned'", "data.labels=true",
      "train.objective='trajectory_bound'"], "class-conditional network"),
    (["data.label_column='y'"], "for data.name = 'file'"),
    (["data.name='file'", "data.path='x.csv'", "data.labels=true"], "give data.label_column"),
    (["train.label_dropout=1.0"], "label_dropout must be < 1"),
    (["model.num_classes=-1"], "num_classes must be >= 0"),
])
def test_config_refuses_labels_where_they_cannot_go(overrides, match):
    with pytest.raises(DDPMLabError, match=match):
        load_config(None, overrides)


def test_labelled_file_trains_a_conditional_run_that_reloads_with_its_classes(tmp_path):
    rng = np.random.default_rng(0)
    rows = "".join(f"{v:.4f},{lab}\n" for v, lab in
                   [(rng.normal(-2 if i % 2 else 2), "left" if i % 2 else "right") for i in range(60)])
    p = _csv(tmp_path, "x,side\n" + rows)
    cfg = load_config(None, TINY + ["data.name='file'", f"data.path='{p}'", "data.label_column='side'",
                                    "train.label_dropout=0.2"])
    trainer = Trainer.from_config(cfg, out=tmp_path / "run")
    trainer.run(progress=False)
    trainer.save()
    assert trainer.cfg.model.num_classes == 2
    run = load_run(tmp_path / "run")
    assert run.model.net.num_classes == 2 and run.info["data"]["classes"] == ["left", "right"]
