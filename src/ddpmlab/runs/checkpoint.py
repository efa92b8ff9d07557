"""Checkpoints of a training run, and its ``metrics.csv``: written atomically, checked on load, never pickled.

    RUN/checkpoints/step_000120/state.safetensors  every tensor: model.*, ema.*, optimizer.<i>.<name>
                                                    (AdamW moments and step counts of parameter i),
                                                    rank<r>.generator / rank<r>.torch_rng (RNG states,
                                                    uint8), rank<r>.timesteps.* (importance sampler)
    RUN/checkpoints/step_000120/state.json         format, version, step, number of processes, config,
                                                    data description, optimizer hyper-parameters, loss
                                                    history, seconds trained, sha256 of the tensors
                                                    file, and a checksum of the JSON itself
    RUN/metrics.csv                                 step,loss,lr,elapsed_s: one row per step

A checkpoint is written into a temporary directory (each file: temporary file, fsync, rename) that is
then renamed to ``step_NNNNNN``, so a crash leaves a whole checkpoint or none; the newest ``keep`` are
kept. Reading one checks JSON, format, version, both checksums (a truncated or edited file is refused),
the config, and each tensor's name, shape and dtype; every problem is one ``DDPMLabError`` line naming
the file. The checksums catch accidents (truncation, bit rot, hand edits), not a forger.

Which checkpoint a resume takes, and which it refuses: ``ddpmlab.runs.resume``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ddpmlab.config.schema import from_dict
from ddpmlab.config.sections import Config
from ddpmlab.core.fileio import atomic_write_bytes, file_kind, finite_json, fsync_dir, os_error, strict_json
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.metrics_log import MetricsLog

CHECKPOINT_DIR, TENSORS_FILE, META_FILE, METRICS_FILE = "checkpoints", "state.safetensors", "state.json", "metrics.csv"
FORMAT, VERSION = "ddpmlab-checkpoint", 1
# what --resume may change: how long to train, how often to checkpoint, where to run; nothing that
# changes the computation of the steps already taken
RESUMABLE_KEYS = ("train.iters", "train.checkpoint_every", "train.keep_checkpoints", "train.device",
                  "train.threads")
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


@dataclass
class Checkpoint:
    path: Path  # the step_NNNNNN directory
    tensors: dict  # name -> CPU tensor
    meta: dict  # state.json
    cfg: Config

    @property
    def step(self) -> int:
        return self.meta["step"]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_checksum(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return _sha256(json.dumps(finite_json(body), sort_keys=True, separators=(",", ":")).encode())  # as written


# ----------------------------------------------------------------------------------------- writing

def checkpoint_dirs(run_dir) -> list[tuple[int, Path]]:
    """(step, directory) of each checkpoint in ``run_dir``, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def dir_step(path) -> int | None:
    """The step a checkpoint directory's name says (``step_000120`` -> 120), else ``None``."""
    m = _STEP_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


def latest_checkpoint(run_dir) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1][1] if dirs else None


def own_checkpoint_root(run_dir) -> Path:
    """``RUN/checkpoints``, refused in one line when it is a symbolic link: checkpoints are written, renamed
    and pruned there, which must never happen in a directory elsewhere."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if root.is_symlink():
        raise DDPMLabError(f"{root} is {file_kind(root)}; ddpmlab writes, renames and deletes checkpoints only "
                           f"inside the run directory itself: replace the link by a directory and run again")
    return root


def save_checkpoint(run_dir, tensors: dict, meta: dict, keep: int) -> Path:
    """Write ``RUN/checkpoints/step_<meta['step']>`` atomically, then delete all but the newest ``keep``."""
    root = own_checkpoint_root(run_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a file named ``checkpoints`` in the run directory
        raise os_error(root, exc, "create the directory") from None
    blob = st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    meta = {"format": FORMAT, "version": VERSION, **meta, "tensors_sha256": _sha256(blob)}
    meta["checksum"] = _json_checksum(meta)
    final = root / f"step_{meta['step']:06d}"
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{final.name}-"))
    except OSError as exc:
        raise os_error(final, exc) from None
    try:
        atomic_write_bytes(tmp / TENSORS_FILE, blob)
        atomic_write_bytes(tmp / META_FILE, (strict_json(meta, indent=1) + "\n").encode())
        if final.exists():  # only after a resume from an older checkpoint: replace it whole
            old = root / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error(final, exc) from None
    except DDPMLabError as exc:  # a file of it could not be written
        shutil.rmtree(tmp, ignore_errors=True)
        raise DDPMLabError(f"cannot write {final}: {getattr(exc, 'reason', exc)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temporaries(run_dir) -> None:
    """Delete half-written checkpoint directories left by a crash (never a finished one)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)


def set_aside_newer(run_dir, step: int) -> list[Path]:
    """Rename checkpoints newer than ``step`` (damaged ones that resuming skipped) to
    ``step_NNNNNN.unreadable``: kept for inspection, never taken for a checkpoint or pruned over."""
    moved = []
    for s, path in checkpoint_dirs(run_dir):
        if s > step:
            target = path.with_name(f"{path.name}.unreadable")
            n = 1
            while target.exists():
                target, n = path.with_name(f"{path.name}.unreadable{n}"), n + 1
            try:
                os.rename(path, target)
            except OSError as exc:
                raise os_error(path, exc, "rename") from None
            moved.append(target)
    return moved


# ----------------------------------------------------------------------------------------- reading

def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def read_meta(path, trust_code: bool = False) -> tuple[dict, Config]:
    """``state.json`` of the checkpoint directory ``path``, checked (JSON, format, checksum, keys, config;
    ``trust_code``: the config may import the code it names, ``ddpmlab.config.plugins``)."""
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        raise DDPMLabError(f"{meta_file}: missing (not a checkpoint directory)")
    try:
        meta = json.loads(meta_file.read_bytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DDPMLabError(f"{meta_file}: not valid JSON (truncated or corrupt?): {exc}") from None
    except OSError as exc:
        raise DDPMLabError(f"{meta_file}: cannot read ({exc.strerror or exc})") from None
    except RecursionError:
        raise DDPMLabError(f"{meta_file}: nested too deeply to be a checkpoint description") from None
    try:
        _need(isinstance(meta, dict), "not a JSON object")
        _need(meta.get("format") == FORMAT, f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        _need(meta.get("version") == VERSION, f"version {meta.get('version')!r} is not supported (expected {VERSION})")
        _need(meta.get("checksum") == _json_checksum(meta), "checksum does not match its content (edited or corrupt)")
        for key, typ in (("step", int), ("world_size", int), ("config", dict), ("data", dict), ("loss_history", list),
                         ("train_seconds", (int, float)), ("param_groups", list), ("tensors_sha256", str)):
            value = meta.get(key)
            _need(isinstance(value, typ) and not isinstance(value, bool), f"{key!r} missing or malformed")
        _need(meta["step"] >= 0 and meta["world_size"] >= 1, "step or world_size out of range")
        _need(len(meta["loss_history"]) == meta["step"], f"loss history has {len(meta['loss_history'])} entries "
              f"for step {meta['step']}")
        _need(all(isinstance(v, (int, float)) for v in meta["loss_history"]), "loss history holds non-numbers")
        cfg = from_dict(meta["config"], trust_code)
    except DDPMLabError as exc:
        raise DDPMLabError(f"{meta_file}: config: {exc}") from None
    except ValueError as exc:
        raise DDPMLabError(f"{meta_file}: {exc}") from None
    return meta, cfg


def read_checkpoint(path, trust_code: bool = False) -> Checkpoint:
    """Read and check a checkpoint directory (both files and their checksums; tensors not yet matched
    against a model: ``check_tensors`` does that)."""
    path = Path(path)
    meta, cfg = read_meta(path, trust_code)
    tensors_file = path / TENSORS_FILE
    try:
        blob = tensors_file.read_bytes()
    except OSError as exc:
        raise DDPMLabError(f"{tensors_file}: cannot read ({exc.strerror or exc})") from None
    if _sha256(blob) != meta["tensors_sha256"]:
        raise DDPMLabError(f"{tensors_file}: sha256 differs from the one recorded in {META_FILE} "
                           f"(truncated or modified)")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise DDPMLabError(f"{tensors_file}: unreadable ({str(exc).splitlines()[0]})") from None
    return Checkpoint(path, tensors, meta, cfg)


def check_tensors(ckpt: Checkpoint, expected: dict) -> None:
    """Refuse a checkpoint whose tensors are not exactly ``expected``: name -> (shape, dtype)."""
    f = ckpt.path / TENSORS_FILE
    missing = sorted(set(expected) - set(ckpt.tensors))
    extra = sorted(set(ckpt.tensors) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else []) + \
                ([f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"] if extra else [])
        raise DDPMLabError(f"{f}: tensors do not match this run's model and optimiser ({'; '.join(parts)})")
    for name, (shape, dtype) in expected.items():
        t = ckpt.tensors[name]
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise DDPMLabError(f"{f}: tensor {name} is {tuple(t.shape)} {t.dtype}, this run needs "
                               f"{tuple(shape)} {dtype}")


def config_differences(a: Config, b: Config) -> list[str]:
    """'section.key' names whose values differ between two configs."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{s}.{k}" for s in da for k in da[s] if da[s][k] != db[s][k]]


def check_resume_config(ckpt_cfg: Config, cfg: Config, where) -> None:
    """Only ``RESUMABLE_KEYS`` may differ between the checkpoint's config and the resumed run's."""
    changed = [k for k in config_differences(ckpt_cfg, cfg) if k not in RESUMABLE_KEYS]
    if changed:
        raise DDPMLabError(f"{where}: the checkpoint was trained with a different config ({', '.join(changed)} "
                           f"differ); --resume keeps the checkpoint's config and may change only "
                           f"{', '.join(RESUMABLE_KEYS)}")


class RunWriter:
    """What a training run writes while it trains: metrics rows and checkpoints. Every rank holds one
    (checkpoints are gathered collectively); only rank 0's writes."""

    def __init__(self, run_dir, keep: int, is_main: bool, start_step: int):
        self.run_dir, self.keep, self.is_main = Path(run_dir), keep, is_main
        self.last_saved: Path | None = latest_checkpoint(run_dir) if start_step > 0 and is_main else None
        self.last_saved_step = start_step if start_step > 0 else None  # the same on every rank
        self.metrics = None
        if is_main:
            own_checkpoint_root(run_dir)  # before anything is renamed or deleted there
            self.metrics = MetricsLog(self.run_dir / METRICS_FILE, start_step)  # refuses unreadable rows first
            remove_stale_temporaries(run_dir)
            if start_step > 0:
                set_aside_newer(run_dir, start_step)

    def log(self, step: int, loss: float, lr: float, elapsed: float) -> None:
        if self.metrics is not None:
            self.metrics.log(step, loss, lr, elapsed)

    def save(self, tensors: dict, meta: dict) -> None:
        if self.is_main:
            self.metrics.flush()
            self.last_saved = save_checkpoint(self.run_dir, tensors, meta, self.keep)
        self.last_saved_step = meta["step"]

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
