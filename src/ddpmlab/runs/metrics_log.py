"""``RUN/metrics.csv``: step,loss,lr,elapsed_s, one row per step, appended while training runs.

The rows of steps 1..k are flushed and fsynced before checkpoint k is written, so continuing from
checkpoint k keeps exactly those rows (later rows belong to steps that will be trained again). A row of a
step up to k that cannot be read (a bad byte, an edit) is never dropped: the resume is refused in one line
naming the line, so the user can repair it.
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

from ddpmlab.core.fileio import check_replaceable, new_file_for_append, os_error, read_bytes
from ddpmlab.core.utils import DDPMLabError

METRICS_HEADER = ("step", "loss", "lr", "elapsed_s")


def _parse_row(line: str) -> list[str] | None:
    """The four cells of a well-formed row (an integer step, three numbers), else ``None``."""
    cells = line.split(",")
    if len(cells) != len(METRICS_HEADER) or not cells[0].isdigit():
        return None
    try:
        [float(c) for c in cells[1:]]
    except ValueError:
        return None
    return cells


def rows_up_to(path: Path, step: int) -> list[list[str]]:
    """The rows of steps 1..``step`` in ``path`` (none when the file is missing). Refuses, in one line,
    a file with a row it cannot read before the row of ``step``."""
    if not path.exists():
        return []  # nothing to lose; the resumed run writes the file afresh
    text = read_bytes(path).decode("utf-8", errors="replace")
    kept: list[list[str]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if lineno == 1 and line == ",".join(METRICS_HEADER):
            continue
        if line == "" and lineno > 1:
            continue
        cells = _parse_row(line)
        if cells is not None and int(cells[0]) > step:
            break  # a step after the checkpoint: trained again
        if cells is None:
            if lineno == 1:
                continue  # a damaged header holds no data; a new one is written
            if kept and int(kept[-1][0]) >= step:
                break  # after the checkpoint's last row: a row cut short by a crash
            raise DDPMLabError(f"{path}: line {lineno} cannot be read ({line[:40]!r}) and precedes step {step}'s "
                               f"row; repair or delete that line, then resume (its rows are never dropped)")
        kept.append(cells)
    return kept


class MetricsLog:
    """Appends rows to ``metrics.csv``. Continuing from step k reads and checks the rows of steps 1..k at
    once (``rows_up_to``); the file is rewritten with them at the first new row, so a run that fails
    before its first step changes nothing. Every write failure (a full disk, EIO) is one line; a link or a
    special file in place of ``metrics.csv`` is refused at once (never read, written through or replaced)."""

    def __init__(self, path, start_step: int):
        self.path, self.start_step = Path(path), start_step
        check_replaceable(self.path)
        self._kept = rows_up_to(self.path, start_step) if start_step > 0 else []
        self._file = None
        self._last_flush = time.monotonic()

    def _open(self) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(METRICS_HEADER)
        w.writerows(self._kept)
        self._file = new_file_for_append(self.path, buf.getvalue().encode(), text=True)

    def log(self, step: int, loss: float, lr: float, elapsed: float) -> None:
        if self._file is None:
            self._open()
        try:
            self._file.write(f"{step},{loss!r},{lr!r},{elapsed:.4f}\n")
        except OSError as exc:
            raise os_error(self.path, exc) from None
        if time.monotonic() - self._last_flush > 1.0:
            self.flush()

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise os_error(self.path, exc) from None
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            try:
                self.flush()
            finally:
                try:
                    self._file.close()
                except OSError:
                    pass  # the flush above already reported the failure


def read_metrics(path) -> list[dict]:
    """metrics.csv as a list of {step, loss, lr, elapsed_s} (numbers)."""
    f = io.StringIO(read_bytes(path).decode(), newline="")  # a FIFO is refused, never waited on
    return [{"step": int(r["step"]), "loss": float(r["loss"]), "lr": float(r["lr"]),
             "elapsed_s": float(r["elapsed_s"])} for r in csv.DictReader(f)]
