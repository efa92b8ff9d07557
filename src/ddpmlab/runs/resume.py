"""Which checkpoint ``--resume`` continues from, and the config it continues with.

Resuming takes the newest intact checkpoint: a damaged newer one (truncated, edited, unreadable) is
skipped, reported in one line, and set aside as ``step_NNNNNN.unreadable`` when training continues
(``checkpoint.set_aside_newer``). An intact checkpoint that belongs to another run is refused, never
skipped: its config (beyond ``RESUMABLE_KEYS``) or its data differ from the run's run.json or its other
checkpoints, or its directory name and its recorded step disagree.
"""
from __future__ import annotations

import json
from pathlib import Path

from ddpmlab.config.budget import AUTO
from ddpmlab.config.schema import from_dict, parse_override
from ddpmlab.config.sections import Config
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.checkpoint import (CHECKPOINT_DIR, META_FILE, RESUMABLE_KEYS, Checkpoint, checkpoint_dirs,
                                     config_differences, dir_step, read_checkpoint, read_meta)

RUN_JSON = "run.json"  # a finished run's description (``ddpmlab.runs.format``)


class CheckpointMismatch(DDPMLabError):
    """An intact checkpoint that does not belong to this run: refused, never skipped."""


def resumable_checkpoint(run_dir, trust_code: bool = False) -> tuple[Checkpoint, list[tuple[Path, str]]]:
    """The newest intact checkpoint of ``run_dir`` and the damaged newer ones skipped, each with the
    reason. A checkpoint that belongs to another run (``check_belongs_to_run``) is refused, not skipped;
    when every checkpoint is damaged, the newest's problem is the error. ``trust_code``: its config may
    import the code it names (``ddpmlab.config.plugins``)."""
    run_dir = Path(run_dir)
    dirs = checkpoint_dirs(run_dir)
    if not dirs:
        raise DDPMLabError(f"{str(run_dir)!r} holds no checkpoint to resume from (looked in "
                           f"{run_dir / CHECKPOINT_DIR})")
    skipped: list[tuple[Path, str]] = []
    for _, path in reversed(dirs):
        try:
            ckpt = read_checkpoint(path, trust_code)
        except DDPMLabError as exc:
            skipped.append((path, str(exc)))
            continue
        check_belongs_to_run(run_dir, ckpt)
        return ckpt, skipped
    more = f" (and the {len(skipped) - 1} older checkpoint(s) too)" if len(skipped) > 1 else ""
    raise DDPMLabError(f"{skipped[0][1]}{more}")


def _references(run_dir: Path, ckpt: Checkpoint):
    """(file, config dict, data dict) of what else records this run: run.json, the other checkpoints."""
    run_file = run_dir / RUN_JSON
    if run_file.is_file():
        try:
            info = json.loads(run_file.read_bytes().decode())
            yield run_file, info["config"], info["data"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            pass  # a damaged run.json is reported by whatever reads the run
    for _, path in checkpoint_dirs(run_dir):
        if path != ckpt.path:
            try:
                meta, _ = read_meta(path)
            except DDPMLabError:
                continue
            yield path / META_FILE, meta["config"], meta["data"]


def check_belongs_to_run(run_dir, ckpt: Checkpoint) -> None:
    """Refuse (``CheckpointMismatch``) a checkpoint copied in from another run: its config (beyond
    ``RESUMABLE_KEYS``) or data must match run.json's and every other checkpoint's, and its directory
    name must be its recorded step."""
    where = ckpt.path / META_FILE
    for ref, cfg_dict, data in _references(Path(run_dir), ckpt):
        try:
            changed = [k for k in config_differences(ckpt.cfg, from_dict(cfg_dict)) if k not in RESUMABLE_KEYS]
        except (DDPMLabError, AttributeError, TypeError):
            continue
        if changed:
            raise CheckpointMismatch(f"{where} and {ref} disagree on the config ({', '.join(changed)}): they "
                                     f"come from different runs; move the one that does not belong out of "
                                     f"{ckpt.path.parent}")
        if isinstance(data, dict):
            differ = sorted(k for k in data if k in ckpt.meta["data"] and data[k] != ckpt.meta["data"][k])
            if differ:
                raise CheckpointMismatch(f"{where} and {ref} disagree on the data ({', '.join(differ)}): they "
                                         f"come from different runs; move the one that does not belong out of "
                                         f"{ckpt.path.parent}")
    named = dir_step(ckpt.path)
    if named is not None and named != ckpt.step:
        raise CheckpointMismatch(f"{where}: records step {ckpt.step} but its directory is {ckpt.path.name} "
                                 f"(copied or renamed?); rename it step_{ckpt.step:06d} or move it away")


def resume_config(run_dir, overrides=(), checkpoint: Checkpoint | None = None, trust_code: bool = False) -> Config:
    """The config to continue ``run_dir`` with: its newest intact checkpoint's (or ``checkpoint``'s), with
    ``--set`` overrides of ``RESUMABLE_KEYS`` applied (any other override that changes a value is refused)."""
    meta = (checkpoint or resumable_checkpoint(run_dir, trust_code)[0]).meta
    d = json.loads(json.dumps(meta["config"]))
    for text in overrides:
        section, key, value = parse_override(text)
        if f"{section}.{key}" not in RESUMABLE_KEYS and d.get(section, {}).get(key, object()) != value:
            raise DDPMLabError(f"--resume keeps the checkpoint's config; {section}.{key} cannot change "
                               f"(allowed: {', '.join(RESUMABLE_KEYS)})")
        if (section, key, value) == ("train", "iters", AUTO):
            raise DDPMLabError("--resume continues a run whose budget is a number; pass --set train.iters=N")
        d.setdefault(section, {})[key] = value
    return from_dict(d, trust_code)
