"""Who may write a directory: one ddpmlab command at a time, and only into a directory that is new, empty,
or holds what that kind of command writes.

    DIR/.ddpmlab.lock   an exclusive ``fcntl.flock`` lock, held for the whole command (it holds the pid);
                        removed when the command ends
    DIR/.ddpmlab.json   what the directory holds: {"format": "ddpmlab-directory", "version": 1, "kind": K}
                        with K "train" (``ddpmlab train``), "tutorial", "figures" (``figures --out``) or
                        "sweep" (``ddpmlab sweep --out``)

A directory without the marker is judged by its content: empty (new); a run written before the marker
existed (``run.json``, ``checkpoints/``); or files ddpmlab did not write, which no command overwrites.
A command that ends without writing anything (refused, or failed before its first file) leaves the
directory as it found it: its marker, its lock file and the directories it created are removed.

The lock is advisory (it stops other ddpmlab commands, not other programs) and needs a file system with
``flock`` (local disks do; some network file systems do not, and say so in one line). The lock file is
opened without following a link (O_NOFOLLOW): a lock file that is a link, or anything but a regular file,
is refused in one line, so no file elsewhere is ever truncated to hold the pid.
"""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

from ddpmlab.core.fileio import NOFOLLOW, atomic_write_json, file_kind, os_error, read_bytes
from ddpmlab.core.utils import DDPMLabError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, the rest still applies
    fcntl = None

LOCK_FILE, MARKER_FILE = ".ddpmlab.lock", ".ddpmlab.json"
MARKER_FORMAT = "ddpmlab-directory"
KINDS = ("train", "tutorial", "figures", "sweep")
FOREIGN = "foreign"  # the kind of a directory holding files ddpmlab did not write
_HELD: set[tuple[str, int]] = set()  # (real path, thread) of the claims this process holds


def _entries(path: Path) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError as exc:
        raise os_error(path, exc, "list") from None


def _legacy_kind(path: Path, entries: set[str]) -> str:
    """The kind of a directory written before the marker existed, from what it holds."""
    if "run.json" in entries:
        try:
            info = json.loads(read_bytes(path / "run.json").decode())
            summary = info.get("summary", {}) if isinstance(info, dict) else {}
        except (DDPMLabError, ValueError, RecursionError):
            summary = {}
        return "tutorial" if isinstance(summary, dict) and "vlb_nats" in summary else "train"
    if (path / "checkpoints").is_dir() and any(p.name.startswith("step_") for p in (path / "checkpoints").iterdir()):
        return "train"
    return FOREIGN


def directory_kind(path) -> str | None:
    """None for an empty directory, else its kind (``KINDS``) or ``FOREIGN``."""
    path = Path(path)
    entries = _entries(path) - {LOCK_FILE}
    if not entries - {MARKER_FILE}:
        return None
    if MARKER_FILE not in entries:
        return _legacy_kind(path, entries)
    try:
        marker = json.loads(read_bytes(path / MARKER_FILE).decode())
        kind = marker["kind"] if marker.get("format") == MARKER_FORMAT else None
    except (DDPMLabError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        kind = None
    if kind not in KINDS:
        raise DDPMLabError(f"{path / MARKER_FILE}: unreadable directory marker; if ddpmlab wrote this directory, "
                           f"delete the marker and run again")
    return kind


def make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; returns the ones created, outermost first."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue  # made meanwhile by another process: not ours to remove
        except OSError as exc:
            remove_dirs(created)
            raise DDPMLabError(f"cannot create output directory {str(path)!r}: {exc.strerror or exc}") from None
        created.append(d)
    return created


def remove_dirs(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return  # not empty any more (another command uses it): leave it


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _lock(path: Path) -> int | None:
    """An open descriptor of ``path/LOCK_FILE`` holding an exclusive lock; refuses, in one line, when
    another command holds it. Safe against the holder removing the file as it ends (retries)."""
    if fcntl is None:
        return None
    lock = path / LOCK_FILE
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as exc:
            kind = file_kind(lock)
            if kind not in (None, "a regular file"):  # ELOOP (a link), ENXIO (a socket), ...
                raise _not_a_lock(lock, kind) from None
            raise os_error(lock, exc, "create the lock file") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device opens without blocking
            os.close(fd)
            raise _not_a_lock(lock, file_kind(lock))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DDPMLabError(f"{str(path)!r} is in use by another ddpmlab command{f' (pid {pid})' if pid else ''}; "
                               f"wait for it to end or choose another directory") from None
        except OSError as exc:
            os.close(fd)
            raise os_error(lock, exc, "lock") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(lock))
        except OSError:
            same = False
        if same:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass  # the pid is only for the message of a second command
            return fd
        os.close(fd)  # the holder removed the file as we locked it: lock the new one
    raise DDPMLabError(f"cannot lock {lock}: it keeps being replaced")


def _not_a_lock(lock: Path, kind) -> DDPMLabError:
    return DDPMLabError(f"{lock} is {kind or 'not a regular file'}, not a ddpmlab lock file (ddpmlab never writes "
                        f"through it): remove it and run again")


class DirectoryClaim:
    """``with DirectoryClaim(path, kind, accept): ...``: create ``path`` if missing (``create``), lock it,
    and refuse unless what it holds (``directory_kind``) is in ``accept`` (``None`` = new or empty). A
    new directory gets the marker of ``kind``. On leaving, the lock is released; if nothing was written
    into the directory, it is left as it was found.

    A ``reentrant`` claim of a directory this thread already holds (the library's ``Trainer`` inside
    ``ddpmlab train``) only checks what it holds: the outer claim keeps the lock and decides what is left
    on leaving. Any other second claim is refused, as another process's would be.

    ``adopt(path)``, if given, may take a directory without a marker that holds only what this command
    would have written itself (a sweep's run directories, trained elsewhere from ``--print-commands``) as
    new: it gets the marker."""

    def __init__(self, path, kind: str, accept=(None,), create: bool = True, command: str = "", adopt=None,
                 reentrant: bool = False):
        self.path, self.kind, self.accept, self.create = Path(path), kind, tuple(accept), create
        self.adopt = adopt
        self.command = command or f"ddpmlab {kind}"
        self.fd, self.created, self.new_marker, self.before = None, [], False, set()
        self.key, self.nested, self.reentrant = None, False, reentrant

    def __enter__(self) -> Path:
        key = (os.path.realpath(self.path), threading.get_ident())
        if self.reentrant and key in _HELD:
            found = directory_kind(self.path)
            if found not in self.accept:
                raise DDPMLabError(self._refusal(found))
            self.nested = True
            return self.path
        if self.path.exists() and not self.path.is_dir():
            raise DDPMLabError(f"output path {str(self.path)!r} is not a directory")
        if not self.create and not self.path.is_dir():
            raise DDPMLabError(f"{str(self.path)!r} is not a directory")
        self.created = make_dirs(self.path)
        try:
            self.fd = _lock(self.path)
            self.before = _entries(self.path)
            found = directory_kind(self.path)
            if found == FOREIGN and MARKER_FILE not in self.before and self.adopt is not None \
                    and self.adopt(self.path):
                found = None
            if found not in self.accept:
                raise DDPMLabError(self._refusal(found))
            if found is None:
                atomic_write_json(self.path / MARKER_FILE, {"format": MARKER_FORMAT, "version": 1, "kind": self.kind})
                self.new_marker = True
            self.key = key
            _HELD.add(key)
        except BaseException:
            self._release(keep=False)
            raise
        return self.path

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.nested:
            return False
        try:
            wrote = bool(_entries(self.path) - self.before - {MARKER_FILE, LOCK_FILE})
        except DDPMLabError:
            wrote = True  # cannot tell: keep everything
        self._release(keep=wrote)
        return False

    def _refusal(self, found) -> str:
        where = repr(str(self.path))
        if found is None:
            return f"{where} holds no ddpmlab run"
        if found == FOREIGN:
            names = sorted(_entries(self.path) - {LOCK_FILE, MARKER_FILE})
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            return (f"{where} holds files ddpmlab did not write ({shown}); {self.command} writes only into a new "
                    f"or empty directory: choose another")
        what = "sweep" if found == "sweep" else f"{found} run"
        return f"{where} holds a {what}; {self.command} would overwrite its files: choose another directory"

    def _release(self, keep: bool) -> None:
        _HELD.discard(self.key)
        if not keep and self.new_marker:
            try:
                os.unlink(self.path / MARKER_FILE)
            except OSError:
                pass
        if self.fd is not None:
            try:
                os.unlink(self.path / LOCK_FILE)  # while still holding it, so no one locks a dead file
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
        if not keep:
            remove_dirs(self.created)
