"""Shared by the hostile-use tests: tiny runs built once, a workspace per case, and a byte-level snapshot
of a directory tree (to show that a refused command changed nothing and left nothing behind)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import stat
from pathlib import Path

import numpy as np

from ddpmlab.cli import main
from faults import injected

TINY = ["--no-progress", "--set", "train.iters=5", "--set", "train.batch_size=64", "--set", "schedule.steps=20",
        "--set", "model.width=16"]


def run_main(*argv) -> tuple[int, str, str]:
    """``ddpmlab ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def tree(root) -> dict:
    """Every file (sha256 of its bytes) and directory under ``root``, hidden ones included; a symbolic
    link as ``link -> TARGET`` (never followed) and a FIFO, device or socket by its kind (never opened)."""
    root = Path(root)
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            found[os.path.relpath(p, root)] = _entry(p)
    return found


def _entry(path: str) -> str:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return f"link -> {os.readlink(path)}"
    if stat.S_ISDIR(mode):
        return "dir"
    if not stat.S_ISREG(mode):
        return f"special {stat.S_IFMT(mode):o}"
    with io.FileIO(path, "rb") as fh:  # not open() or Path.read_bytes, which a case may make fail
        return hashlib.sha256(fh.read()).hexdigest()


def build_runs(root: Path) -> dict:
    """The runs and files the cases start from (each case works on copies)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(root / "data.npy", rng.normal(0.0, 1.0, (300, 2)))
    np.save(root / "big.npy", rng.normal(5.0, 1000.0, (300, 2)))
    runs = {}

    def train(name, *args, signal_at=0, expect=0):
        with injected(signal_at=signal_at):
            code, _, err = run_main("train", "--out", root / name, *TINY, *args)
        assert code == expect, err
        runs[name] = root / name

    train("train", "--set", "train.iters=6", "--checkpoint-every", "2")  # checkpoints 2, 4, 6
    train("unfinished", "--set", "train.iters=8", "--checkpoint-every", "2", signal_at=5, expect=143)  # 2, 4, 5
    train("wide", "--set", "model.width=24", "--set", "train.iters=9")  # another run's checkpoint 9
    train("moons", "--config", "moons", "--set", "model.depth=1")
    code, _, err = run_main("tutorial", "--out", root / "tutorial", "--iters", "3", "--steps", "20", "--samples",
                            "200", "--no-progress")
    assert code == 0, err
    runs["tutorial"] = root / "tutorial"
    runs["root"] = root
    return runs


def fixed_memory(monkeypatch) -> None:
    """The same verdicts on any machine: sizes are judged against 16 GB, whatever this one has."""
    monkeypatch.setattr("ddpmlab.core.resources.available_memory", lambda: 16 * 10 ** 9)


def case_workspace(tmp_path: Path, runs: dict, monkeypatch) -> "Workspace":
    """A case's new, empty workspace under ``tmp_path``, made the working directory, with ``fixed_memory``."""
    ws = Workspace(tmp_path / "ws", runs, monkeypatch)
    ws.root.mkdir()
    monkeypatch.chdir(ws.root)
    fixed_memory(monkeypatch)
    return ws


class Workspace:
    """A case's own directory (``root``), with copies of the built runs and ways to break things."""

    def __init__(self, root: Path, runs: dict, monkeypatch):
        self.root, self.runs, self.mp = root, runs, monkeypatch
        self._fds: list[int] = []

    def copy(self, name: str, as_name: str | None = None) -> Path:
        src = self.runs["root"] / name
        dst = self.root / (as_name or name)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
        return dst

    def path(self, *parts) -> Path:
        return self.root.joinpath(*parts)

    def write(self, rel: str, content: bytes | str = b"mine\n") -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        return p

    def mkdir(self, rel: str) -> Path:
        p = self.root / rel
        p.mkdir(parents=True)
        return p

    def hold_lock(self, run_dir: Path, pid: int = 4242) -> None:
        """Lock ``run_dir`` as another ddpmlab command would (flock is per open file, so this process's
        own later attempt is refused just like another process's)."""
        import fcntl

        fd = os.open(run_dir / ".ddpmlab.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{pid}\n".encode())
        self._fds.append(fd)

    def env(self, **values) -> None:
        for k, v in values.items():
            self.mp.setenv(k, v)

    def fail_os(self, target, attr: str, err: int, when=lambda *a, **k: True, after: int = 0) -> None:
        """Make ``target.attr`` raise ``OSError(err)`` when ``when(*args)`` holds, from its ``after + 1``-th
        such call on (else behave normally)."""
        original = getattr(target, attr)
        calls = [0]

        def failing(*args, **kwargs):
            if when(*args, **kwargs):
                calls[0] += 1
                if calls[0] > after:
                    raise OSError(err, os.strerror(err), str(args[0]) if args else None)
            return original(*args, **kwargs)

        self.mp.setattr(target, attr, failing)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)


def spoil_weights_with_nan(run_dir: Path) -> None:
    """Replace every weight of a finished run by NaN (names, shapes and dtypes kept)."""
    from safetensors.torch import load, save

    tensors = load((run_dir / "model.safetensors").read_bytes())
    (run_dir / "model.safetensors").write_bytes(save({k: v.clone().fill_(float("nan")) if v.is_floating_point()
                                                      else v for k, v in tensors.items()}))


def lying_npy(path: Path, shape=(100_000_000_000, 2), zip_it: bool = False) -> Path:
    """An .npy header declaring ``shape`` float64 over 64 bytes of data (193 bytes in all)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    blob = buf.getvalue() + b"\0" * 64
    if zip_it:
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data.npy", blob)
    else:
        path.write_bytes(blob)
    return path


ENOSPC, EIO, EACCES = errno.ENOSPC, errno.EIO, errno.EACCES
