"""Files on disk: writes that a crash never leaves half-done (temporary file, fsync, rename), strict JSON,
and every operating-system failure (a full disk, an I/O error, no permission, a name taken by a directory)
turned into one ``DDPMLabError`` line naming the file and the system's reason.

No file is written through a symbolic link: every file is created under a new temporary name (O_EXCL,
O_NOFOLLOW) and renamed into place, and a link or a special file (FIFO, device, socket) where a file is to
be written is refused in one line (``check_replaceable``; ``check_output_file`` for ``--out``). Only the
last component of a path is checked: a run directory that is itself a link to a directory is fine."""
from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path

from ddpmlab.core.utils import DDPMLabError

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # open() of a link fails (ELOOP) instead of following it


def os_error(path, exc: OSError, doing: str = "write") -> DDPMLabError:
    """One line for an ``OSError`` met while ``doing`` (read, write, create, ...) ``path``; the system's
    reason is kept as ``.reason`` for a caller that names a bigger thing (a checkpoint)."""
    err = DDPMLabError(f"cannot {doing} {path}: {exc.strerror or exc}")
    err.reason = exc.strerror or str(exc)
    return err


def read_bytes(path) -> bytes:
    """The bytes of ``path``; a missing or unreadable file (EIO, EACCES, a directory) is one line, and so
    is a FIFO, a device or a socket (never opened: reading a FIFO would wait for a writer forever)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a directory: the system's own reason
            return Path(path).read_bytes()
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    raise DDPMLabError(f"cannot read {path}: it is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}")


def file_kind(path) -> str | None:
    """What is at ``path`` itself (a link is not followed): None when nothing is, "a regular file", or
    "a directory", "a FIFO", "a character device", ..., and "a symbolic link to <what it points to>"."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(path, exc, "inspect") from None
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISLNK(mode):
        try:
            target = os.stat(path).st_mode
        except OSError:
            return "a symbolic link to nothing"
        return "a symbolic link to " + ("a regular file" if stat.S_ISREG(target)
                                        else _KINDS.get(stat.S_IFMT(target), "something else"))
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_replaceable(path) -> None:
    """Refuse, in one line, to write ``path`` when a link or a special file is there: ddpmlab never writes
    through a symbolic link (to a file elsewhere, or /dev/null) nor replaces a link, a FIFO, a device or a
    socket. Nothing there, or a regular file, passes; so does a directory, which no rename
    replaces (the write then fails with the system's own reason, "Is a directory")."""
    kind = file_kind(path)
    if kind not in (None, "a regular file", "a directory"):
        raise DDPMLabError(f"{path} is {kind}; ddpmlab writes only regular files and never writes through or "
                           f"replaces a link or a special file: remove it or choose another name")


def check_output_file(path, force: bool, option: str = "--out") -> None:
    """The one check of a file named by ``--out`` (``report``, ``sample``, ...), before any work: a new
    name passes; an existing regular file only with ``force``; a directory, a FIFO, a device, a socket or
    a symbolic link (to anything) never, ``force`` or not."""
    kind = file_kind(path)
    if kind is None:
        return
    if kind != "a regular file":
        raise DDPMLabError(f"{option} {str(path)!r} is {kind}; {option} names a regular file (a new name, or an "
                           f"existing file replaced with --force): choose another")
    if not force:
        raise DDPMLabError(f"{option} {str(path)!r} exists; pass --force to replace it")


def ensure_writable_dir(path) -> Path:
    """Create ``path`` if needed and check that files can be written there (one-line error if not)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DDPMLabError(f"cannot create output directory {str(path)!r}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise DDPMLabError(f"output path {str(path)!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DDPMLabError(f"output directory {str(path)!r} is not writable: {exc.strerror or exc}") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(path) -> None:
    """Make renames inside the directory ``path`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _temporary_beside(path: Path, data: bytes) -> tuple[int, str]:
    """A new file beside ``path`` (``mkstemp``: O_CREAT | O_EXCL | O_NOFOLLOW, so a name planted there by
    someone else is never opened) holding ``data``, fsynced: (its open descriptor, its name). ``path``
    must be replaceable (``check_replaceable``)."""
    check_replaceable(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise os_error(path, exc) from None
    with _discarded_on_failure(fd, tmp, path):
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a normal file respects the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    return fd, tmp


@contextlib.contextmanager
def _discarded_on_failure(fd: int, tmp: str, path: Path):
    """On any failure inside, ``fd`` is closed and ``tmp`` removed; an ``OSError`` becomes one line."""
    try:
        yield
    except OSError as exc:
        os.close(fd)
        _unlink_quietly(tmp)
        raise os_error(path, exc) from None
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise


def _rename_into_place(fd: int, tmp: str, path: Path) -> None:
    """Rename ``tmp`` over ``path`` (a rename replaces the name, it never writes through a link); on
    failure ``fd`` is closed, ``tmp`` removed and the failure is one line."""
    with _discarded_on_failure(fd, tmp, path):
        os.replace(tmp, path)
    fsync_dir(path.parent)  # make the rename itself durable


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, then rename.

    On any failure (ENOSPC, EIO, EACCES, ``path`` being a directory, ...) the temporary file is removed,
    ``path`` keeps its old content, and the failure is one ``DDPMLabError`` line. A symbolic link or a
    special file at ``path`` is refused (``check_replaceable``): nothing is written through it."""
    path = Path(path)
    fd, tmp = _temporary_beside(path, data)
    _rename_into_place(fd, tmp, path)
    os.close(fd)


def new_file_for_append(path, data: bytes = b"", text: bool = False):
    """A new regular file at ``path`` that starts with ``data``, open for appending (binary, or text with
    ``text``): written under a temporary name like ``atomic_write_bytes`` and renamed over ``path``, so
    the appends go to the file ddpmlab created, never through a link or into another file's inode."""
    path = Path(path)
    fd, tmp = _temporary_beside(path, data)
    _rename_into_place(fd, tmp, path)
    os.lseek(fd, 0, os.SEEK_END)
    return os.fdopen(fd, "a", newline="") if text else os.fdopen(fd, "ab")


def finite_json(obj):
    """``obj`` with every non-finite float (NaN, +-inf) replaced by ``None``: JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def strict_json(obj, **kwargs) -> str:
    """``json.dumps`` that never writes the non-standard ``NaN`` / ``Infinity`` (they become ``null``)."""
    return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (strict_json(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_npy(path, array) -> None:
    """Write a NumPy array as a ``.npy`` file atomically (``atomic_write_bytes``)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def atomic_savefig(fig, path, **kwargs) -> None:
    """Save a matplotlib figure atomically (format taken from the file name)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())
