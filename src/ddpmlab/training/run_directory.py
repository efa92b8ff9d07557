"""The trainer's run directory: the files a trainer writes there (``TRAINER_FILES``), their removal
(``remove_run``), and ``RunDirectoryOwner``, the part of ``Trainer`` that owns ``out`` as ``ddpmlab train
--out`` does (``ddpmlab.runs.ownership``) and refuses a run it may not write over."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ddpmlab.core.fileio import os_error
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.base import KEPT_ROWS_FILE
from ddpmlab.runs.checkpoint import CHECKPOINT_DIR, METRICS_FILE, checkpoint_dirs
from ddpmlab.runs.format import CONFIG_FILE, RUN_FILE, WEIGHTS_FILE
from ddpmlab.runs.ownership import LOCK_FILE, MARKER_FILE, DirectoryClaim


SUMMARY_FILE = "metrics.json"
TRAINER_FILES = (RUN_FILE, WEIGHTS_FILE, CONFIG_FILE, KEPT_ROWS_FILE, SUMMARY_FILE, METRICS_FILE,
                 CHECKPOINT_DIR)  # a trainer's, in out


def remove_run(out: Path) -> None:
    """Delete what a trainer wrote into ``out`` (``TRAINER_FILES``; run.json first, so that a run half
    removed never looks finished). A link in place of one is removed, never followed."""
    for name in TRAINER_FILES:
        path = out / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.is_symlink() or path.exists():
                os.unlink(path)
        except OSError as exc:
            raise os_error(path, exc, "remove") from None


class RunDirectoryOwner:
    """``Trainer``'s ownership of its directories. Uses the trainer's ``ctx``, ``out``, ``overwrite``,
    ``resumed`` and ``_written`` (the directories it has written: its own runs)."""

    @contextlib.contextmanager
    def _claim(self, out: Path, write: bool = True):
        """Own ``out`` as ``ddpmlab train`` does (``DirectoryClaim``, kind "train"; on the main rank) while
        the trainer reads or writes it, refusing a run it may not write over (``_refuse_to_replace``).
        Before the trainer's first write there, with ``overwrite``, the old run's files are deleted."""
        if not self.ctx.is_main:
            yield
            return
        with DirectoryClaim(out, "train", accept=(None, "train"), command="dl.Trainer", reentrant=True):
            key = os.path.realpath(out)
            if key not in self._written:
                self._refuse_to_replace(out)
                if write:
                    if self.overwrite:
                        remove_run(out)
                    self._written.add(key)
            yield

    def _refuse_to_replace(self, out: Path) -> None:
        """Refuse a run in ``out`` that this trainer did not write and does not continue: a finished or
        interrupted run without ``overwrite``; with it, a directory holding more than a trainer's files."""
        if self.resumed and os.path.realpath(out) == os.path.realpath(self.out):
            return
        held = set(os.listdir(out)) - {LOCK_FILE, MARKER_FILE}
        where = repr(str(out))
        if self.overwrite:
            others = sorted(held - set(TRAINER_FILES))
            if others:
                raise DDPMLabError(f"{where} holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''} "
                                   f"besides a run's files; overwrite=True deletes only what a trainer wrote: move "
                                   f"them away or choose another directory")
        elif RUN_FILE in held:
            raise DDPMLabError(f"{where} holds a finished run; pass overwrite=True to replace it (or resume=True to "
                               f"train it further), or choose another directory")
        elif checkpoint_dirs(out):
            raise DDPMLabError(f"{where} holds checkpoints of an unfinished run; pass resume=True to continue it "
                               f"(or overwrite=True to replace it), or choose another directory")
