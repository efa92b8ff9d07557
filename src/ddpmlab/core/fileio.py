"""Files on disk: writes that a crash never leaves half-done (temporary file, fsync, rename), strict JSON,
and every operating-system failure (a full disk, an I/O error, no permission, a name taken by a directory)
turned into one ``DDPMLabError`` line naming the file and the system's reason."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from ddpmlab.core.utils import DDPMLabError


def os_error(path, exc: OSError, doing: str = "write") -> DDPMLabError:
    """One line for an ``OSError`` met while ``doing`` (read, write, create, ...) ``path``; the system's
    reason is kept as ``.reason`` for a caller that names a bigger thing (a checkpoint)."""
    err = DDPMLabError(f"cannot {doing} {path}: {exc.strerror or exc}")
    err.reason = exc.strerror or str(exc)
    return err


def read_bytes(path) -> bytes:
    """The bytes of ``path``; a missing or unreadable file (EIO, EACCES, a directory) is one line."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise os_error(path, exc, "read") from None


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


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, then rename.

    On any failure (ENOSPC, EIO, EACCES, ``path`` being a directory, ...) the temporary file is removed,
    ``path`` keeps its old content, and the failure is one ``DDPMLabError`` line."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise os_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; a normal file respects the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise os_error(path, exc) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)  # make the rename itself durable


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


def atomic_savefig(fig, path, **kwargs) -> None:
    """Save a matplotlib figure atomically (format taken from the file name)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())
