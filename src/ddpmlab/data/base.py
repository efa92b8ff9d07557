"""``TrainingData``: where training batches come from, and how samples map back to data units.

A user's file is split once into training rows and a held-out share (``HELDOUT_FRACTION`` of the rows,
chosen by a fixed permutation that does not depend on the run's seed, so every run on the same file
holds out the same rows); ``ddpmlab evaluate`` measures the samples against the held-out rows, the
floor being the training rows against the same held-out rows. The run's data description states it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from ddpmlab.data.named import DECLARED, LABELLED, NAMED, declared_mixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import check_examples, check_labels


class TrainingData:
    """A fixed training set (N, *dims), or fresh draws from a distribution every batch (``stream``).

    ``dist`` is the true distribution when known (exact evaluation); ``shift``/``scale`` map model space
    to data units: data = model * scale + shift (identity unless the data were standardised).
    """

    def __init__(self, name: str, data_shape: tuple, train: torch.Tensor | None = None, dist=None,
                 shift: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, classes: list[str] | None = None, heldout: dict | None = None,
                 heldout_rows: torch.Tensor | None = None):
        self.name, self.data_shape, self.train, self.dist = name, tuple(data_shape), train, dist
        self.shift, self.scale = shift, scale
        self.labels = labels  # (N,) per-example condition of a fixed training set, or None
        self.classes = classes  # class c's name (a file's label value, a mixture's component), or None
        self.heldout = heldout  # what ``split_heldout`` held out of a file or tensor (its description), or None
        self.heldout_rows = heldout_rows  # those rows (data units), or None

    @property
    def num_classes(self) -> int:
        """K for class-labelled data (labels 0..K-1), else 0."""
        return len(self.classes) if self.classes is not None else 0

    @classmethod
    def from_tensor(cls, x: torch.Tensor, labels: torch.Tensor | None = None, name: str = "tensor",
                    data_shape: tuple | None = None, dtype: torch.dtype | None = None,
                    num_classes: int = 0) -> "TrainingData":
        """Your own training set (N, *dims) (a tensor or NumPy array), with optional integer labels (N,),
        checked at the boundary (``ddpmlab.core.validate``): finite, N >= 2, one example of ``data_shape``
        and labels in 0..num_classes - 1 when given, converted to ``dtype`` (the model's) when given. Rows
        are held out of training as a file's are (``split_heldout``); a saved run keeps them
        (``kept_rows``), so that evaluation measures the samples against them."""
        x = check_examples(x, "data", data_shape, dtype, min_rows=2).detach()
        if labels is not None:
            labels = check_labels(labels, x.shape[0], num_classes)[~heldout_mask(x.shape[0])]
        train, held, desc = split_heldout(x)
        return cls(name, tuple(x.shape[1:]), train, labels=labels, heldout=desc, heldout_rows=held)

    @property
    def stream(self) -> bool:
        return self.train is None

    def batch(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A training batch in model space; ``batch_size = 0`` means the whole training set."""
        if self.stream:
            return self.dist.sample(batch_size, generator)
        n = self.train.shape[0]
        if batch_size == 0 or batch_size == n:
            return self.train
        return self.train[torch.randint(n, (batch_size,), generator=generator)]

    def draw(self, batch_size: int, generator: torch.Generator | None = None):
        """(batch, its labels or None): like ``batch``, with the same random draws."""
        if self.stream and self.classes is not None:  # fresh labelled draws: the component is the class
            return self.dist.sample_labelled(batch_size, generator)
        if self.labels is None or self.stream:
            return self.batch(batch_size, generator), None
        n = self.train.shape[0]
        if batch_size == 0 or batch_size == n:
            return self.train, self.labels
        idx = torch.randint(n, (batch_size,), generator=generator)
        return self.train[idx], self.labels[idx]

    def moments(self, seed: int, n_draws: int = 100_000) -> tuple[float, float]:
        """Scalar mean and standard deviation of the data in model space (over examples and features):
        of the training set, or of ``n_draws`` draws from a generator of its own seeded with ``seed``
        (the training stream's random numbers are left untouched)."""
        x = self.train if not self.stream else self.dist.sample(n_draws, torch.Generator().manual_seed(seed))
        x = x.double()
        return float(x.mean()), float(x.std())

    def to_data_units(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            return x
        return x * self.scale + self.shift

    def kept_rows(self) -> dict | None:
        """What a run on your own data keeps for evaluation (``KEPT_ROWS_FILE``): its training rows and
        held-out rows in data units; None for streamed data."""
        if self.stream:
            return None
        rows = {"train": self.to_data_units(self.train).contiguous()}
        if self.heldout_rows is not None:
            rows["heldout"] = self.heldout_rows.contiguous()
        return rows

    def describe(self) -> dict:
        """What ``run.json`` records to rebuild the distribution and the mapping at load time."""
        d = {"name": self.name, "data_shape": list(self.data_shape),
             "n_train": 0 if self.train is None else int(self.train.shape[0])}
        if self.dist is not None and hasattr(self.dist, "to_dict"):
            d["mixture"] = self.dist.to_dict()
        if self.scale is not None:
            d["shift"], d["scale"] = self.shift.tolist(), self.scale.tolist()
        if self.heldout is not None:
            d["heldout"] = self.heldout
        if self.classes is not None:
            d["classes"] = list(self.classes)  # class c <-> label value, kept with the run
        return d


HELDOUT_FRACTION = 0.1  # share of a file's rows kept out of training, for evaluation
HELDOUT_MIN_ROWS = 20  # a file with fewer rows is trained on whole (nothing held out)
HELDOUT_SEED = 0  # the split's own seed: the same rows for every run on the same file


def rows_sha256(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def heldout_mask(n: int) -> torch.Tensor:
    """Which of n rows ``split_heldout`` holds out (bool (n,)): a fixed random share, at least 2 rows,
    none below ``HELDOUT_MIN_ROWS`` rows."""
    held = torch.zeros(n, dtype=torch.bool)
    if n >= HELDOUT_MIN_ROWS:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(HELDOUT_SEED))
        held[perm[:max(2, round(HELDOUT_FRACTION * n))]] = True
    return held


def split_heldout(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """(training rows, held-out rows or None, description) of a file's samples x (N, *dims): a fixed
    random ``HELDOUT_FRACTION`` of the rows (at least 2) when N >= ``HELDOUT_MIN_ROWS``, rows kept in
    file order. The description (recorded in run.json) names the rule and hashes the held-out rows and
    the whole file's rows (so a changed file is noticed at evaluation)."""
    n = x.shape[0]
    if n < HELDOUT_MIN_ROWS:
        return x, None, {"fraction": 0.0, "n": 0, "reason": f"fewer than {HELDOUT_MIN_ROWS} rows: none held out"}
    held = heldout_mask(n)
    k = int(held.sum())
    desc = {"fraction": HELDOUT_FRACTION, "n": k, "seed": HELDOUT_SEED,
            "rule": f"a fixed random {HELDOUT_FRACTION:.0%} of the file's rows (permutation seed {HELDOUT_SEED}), "
                    "never trained on", "sha256": rows_sha256(x[held]), "file_sha256": rows_sha256(x)}
    return x[~held], x[held], desc


def make_training_data(cfg, generator: torch.Generator) -> TrainingData:
    """Build the training data a ``DataConfig`` describes.

    A file is standardised per column (``standardize``, on by default) and samples are mapped back with
    ``to_data_units``. Named distributions are used as defined (the 2-D sets and the digits are already at
    unit scale), so their exact densities hold in model space and exact evaluation applies unchanged.
    """
    if cfg.name == "file":
        x, labels, classes = load_file_rows(cfg)
        if labels is not None:
            labels = labels[~heldout_mask(x.shape[0])]  # the training rows' labels
        x, held_rows, held = split_heldout(x)
        if not cfg.standardize:
            check_float32_scale(x, cfg.path)
            return TrainingData(f"file:{cfg.path}", tuple(x.shape[1:]), x, labels=labels, classes=classes,
                                heldout=held, heldout_rows=held_rows)
        shift, scale = standardisation(x)  # of the training rows only
        return TrainingData(f"file:{cfg.path}", tuple(x.shape[1:]), ((x.double() - shift) / scale).float(),
                            shift=shift.float(), scale=scale.float(), labels=labels, classes=classes, heldout=held,
                            heldout_rows=held_rows)
    if cfg.name in NAMED or cfg.name == DECLARED:
        dist = declared_mixture(cfg.mixture) if cfg.name == DECLARED else NAMED[cfg.name]()
        if getattr(cfg, "labels", False):
            return _labelled_named(cfg, dist, generator)
        train = dist.sample(cfg.n_train, generator) if cfg.n_train > 0 else None
        return TrainingData(cfg.name, dist.event_shape, train, dist)
    raise DDPMLabError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(sorted(NAMED))}")


def load_file_rows(cfg) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """(every row x (N, *dims) float32 in data units, labels (N,) or None, class names or None) of the
    file a ``DataConfig`` names: its features only when ``label_column`` is set (the labels apart). The one
    reader of a file run's data, for training and for evaluating, figures and reports alike; a bad file
    or bad labels raise ``DDPMLabError``."""
    from ddpmlab.data.files import load_data_file
    from ddpmlab.data.labels import load_labelled_file

    if getattr(cfg, "label_column", ""):
        return load_labelled_file(cfg.path, cfg.label_column, cfg.max_classes)
    return load_data_file(cfg.path), None, None


FLOAT32_SQRT_MAX = float(torch.finfo(torch.float32).max) ** 0.5  # 1.8e19: squares above it overflow float32


def standardisation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) per feature of rows x (N, *dims): their mean and standard deviation, computed in
    float64 (float32 sums of values near 1e38 overflow), a constant feature's scale set to 1."""
    x = x.double()
    shift, scale = x.mean(0), x.std(0)
    return shift, torch.where(scale > 0, scale, torch.ones_like(scale))


def check_float32_scale(x: torch.Tensor, path) -> None:
    """Refuse unstandardised training rows whose squares overflow float32 (|x| > ``FLOAT32_SQRT_MAX``):
    the losses square the data (an x_0 target, a network fed 1e38), so training would only report NaN."""
    largest = float(x.abs().max()) if x.numel() else 0.0
    if largest > FLOAT32_SQRT_MAX:
        raise DDPMLabError(f"{path}: values up to {largest:.3g} are too large for float32 training without "
                           f"standardising (their squares overflow above {FLOAT32_SQRT_MAX:.2g}); set "
                           "data.standardize = true")


def file_split(cfg, recorded: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows) of the file a run was trained on (``cfg``: the run's ``DataConfig``;
    the features only, read by ``load_file_rows`` as training read them), in data units, split again by
    ``split_heldout`` and checked against the run's record (``recorded``: its data description's
    ``heldout``): a changed file, or a run that held nothing out, is a ``DDPMLabError``."""
    path = cfg.path
    _check_heldout_recorded(path, recorded)
    train, held, desc = split_heldout(load_file_rows(cfg)[0])
    if held is None or any(desc[k] != recorded.get(k) for k in ("sha256", "file_sha256")):
        raise DDPMLabError(f"{path}: the file differs from the one the run was trained on (its held-out rows "
                           "do not match the run's record)")
    return train, held


def _check_heldout_recorded(where, recorded: dict | None) -> None:
    """Refuse a run whose record (its data description's ``heldout``) held no rows out of training."""
    if not recorded or not recorded.get("n"):
        why = (recorded or {}).get("reason", "the run was trained before ddpmlab kept held-out rows")
        raise DDPMLabError(f"{where}: no held-out rows to evaluate against ({why})")


KEPT_ROWS_FILE = "data.safetensors"  # in the run directory: the rows of a run on your own tensor (``kept_rows``)


def kept_split(run_dir, recorded: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows) float32 in data units that a run trained on your own tensor keeps in
    its directory (``KEPT_ROWS_FILE``, written with the run), checked against the run's record
    (``recorded``: its data description's ``heldout``) as ``file_split`` checks a file."""
    _check_heldout_recorded("the run's data", recorded)
    if run_dir is None:
        raise DDPMLabError("the run's directory is unknown: load it with load_run(path)")
    path = Path(run_dir) / KEPT_ROWS_FILE
    try:
        rows = st_load(path.read_bytes())
    except FileNotFoundError:
        raise DDPMLabError(f"{path} is missing: the run keeps no rows of its data to evaluate against (saved "
                           "before ddpmlab kept them)") from None
    except (SafetensorError, ValueError, OSError) as exc:
        raise DDPMLabError(f"{path}: unreadable ({' '.join(str(exc).split())})") from None
    train, held = rows.get("train"), rows.get("heldout")
    if train is None or held is None or rows_sha256(held) != recorded.get("sha256"):
        raise DDPMLabError(f"{path}: the rows differ from the ones the run was trained on (its held-out rows do "
                           "not match the run's record)")
    return train.float(), held.float()


def _labelled_named(cfg, dist, generator: torch.Generator) -> TrainingData:
    """Named data with class labels (a mixture's component, a digit's value): the same draws as without."""
    if not hasattr(dist, "sample_labelled"):
        raise DDPMLabError(f"data.labels = true: {cfg.name!r} has no class labels (labelled: "
                           f"{', '.join(LABELLED)}; or a file with data.label_column)")
    k = getattr(dist, "num_classes", None) or dist.num_components  # a digit, or a mixture's component
    if k > cfg.max_classes:
        raise DDPMLabError(f"data.labels = true: {cfg.name!r} has {k} classes, more than "
                           f"data.max_classes = {cfg.max_classes}")
    train = labels = None
    if cfg.n_train > 0:
        train, labels = dist.sample_labelled(cfg.n_train, generator)
    return TrainingData(cfg.name, dist.event_shape, train, dist, labels=labels, classes=[str(c) for c in range(k)])
