"""The user's own data: ``.csv`` (an optional header row), ``.npy`` and ``.npz`` files.

A file holds N samples: a table of N rows and D columns, a single column (N,), or N samples of two
dimensions (N, H, W). Every problem is one ``DDPMLabError`` line that names the file and the problem:
missing, empty, one row, non-numeric cells, ragged rows, NaN or infinity, an unreadable array, more
than 2 dimensions per sample, an array header declaring more data than the file holds (checked before
anything is allocated), an operating-system failure while reading (EIO, EACCES).

A CSV is read by numpy's C parser straight into float32 (about numpy.loadtxt's time and memory); a file
it refuses or cannot vouch for is scanned cell by cell, as before, to name the bad line and column.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
import zipfile
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ddpmlab.core.resources import check_memory, format_bytes
from ddpmlab.core.utils import DDPMLabError

SUFFIXES = (".csv", ".npy", ".npz")
MAX_SAMPLE_DIMS = 2  # a sample is a scalar, a row of columns, or a 2-D array
NPZ_KEYS = ("data", "x", "X", "samples")  # tried in this order when an .npz holds several arrays
# Line breaks of ``str.splitlines`` that a file's lines (and numpy) do not break at, as UTF-8 bytes.
_ODD_BREAKS = (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")


def load_data_file(path) -> torch.Tensor:
    """The samples in ``path`` as a float32 tensor (N, *dims), N >= 2, every value finite."""
    p = Path(path)
    if not p.exists():
        raise DDPMLabError(f"{path}: no such file")
    if not p.is_file():
        raise DDPMLabError(f"{path}: not a file")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise DDPMLabError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv, .npy or .npz")
    try:
        if p.stat().st_size == 0:
            raise DDPMLabError(f"{path}: empty file")
        if suffix == ".csv":
            arr, locate = _read_csv(p, path)
        else:
            arr = _read_npy(p, path) if suffix == ".npy" else _read_npz(p, path)
            locate = None
    except OSError as exc:
        raise DDPMLabError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _check(arr, path, locate)


def _delimiter(first_line: str) -> str:
    """The first of ``,`` ``;`` tab found in the file's first non-blank line (``,`` if none)."""
    for d in (",", ";", "\t"):
        if d in first_line:
            return d
    return ","


def _parse(cell: str) -> float | None:
    """The cell as Python reads a float (surrounding whitespace allowed), None if it is not one."""
    try:
        return float(cell.strip())
    except ValueError:
        return None


def _read_csv(p: Path, path) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of numbers (a first row of only non-numeric cells is a header); returns the (N, D) array and
    each row's line number in the file (None from the fast reader, whose arrays need no locating).

    numpy's C reader reads a good file; any file it refuses or cannot vouch for (a bad cell, ragged rows,
    NaN, a quoted number, ...) goes to ``_scan_csv``, which reports the problem's line and column, or
    reads the file cell by cell where it is good after all."""
    try:
        first = _first_line(p)
    except UnicodeDecodeError:
        raise DDPMLabError(f"{path}: not a text (UTF-8) file") from None
    if first is None:  # every line was read (and decoded) to find none that is not blank
        raise DDPMLabError(f"{path}: empty file (no rows)")
    arr = _fast_csv(p, *first)
    return (arr, None) if arr is not None else _scan_csv(p, path, first[1])


def _lines(f) -> Iterator[str]:
    """The lines of text file ``f`` as ``str.splitlines`` would cut its whole text, one at a time."""
    for line in f:
        yield from line.splitlines()


def _first_line(p: Path) -> tuple[int, str] | None:
    """The index and text of the first line that is not only whitespace, None if there is none."""
    with open(p, encoding="utf-8-sig") as f:
        return next(((i, line) for i, line in enumerate(_lines(f)) if line.strip()), None)


def _odd_breaks(p: Path) -> bool:
    """Whether the file holds a line break that ``str.splitlines`` honours but a file's lines do not
    (vertical tab, form feed, separators \\x1c-\\x1e, NEL, U+2028/9): numpy would read such a line whole."""
    tail = b""
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 18), b""):
            block = tail + chunk
            if any(b in block for b in (_ODD_BREAKS[:5] if block.isascii() else _ODD_BREAKS)):
                return True
            tail = chunk[-2:]  # a multi-byte break may straddle two chunks
    return False


def _header(line: str, delimiter: str) -> int | None:
    """The width of ``line`` if it is a header row (every cell non-numeric), 0 if it is a data row,
    None if the fast reader cannot judge (no cells, or a quote left open into the next line)."""
    rows = list(csv.reader([line, "0"], delimiter=delimiter))
    if len(rows) != 2 or not any(cell.strip() for cell in rows[0]):
        return None
    return len(rows[0]) if all(_parse(cell) is None for cell in rows[0]) else 0


def _fast_csv(p: Path, index: int, first: str) -> np.ndarray | None:
    """The (N, D) float32 array of a good file, read by numpy's C reader (``np.loadtxt``) straight from
    the file; None where it fails or where ``_scan_csv`` must judge (no rows, one row, NaN/inf, ...)."""
    delimiter = _delimiter(first)
    width = _header(first, delimiter)
    if width is None or _odd_breaks(p):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": the scan words it
            # a path (not an open file): numpy then reads large blocks, not line by line; a .csv name
            # opens as plain text with universal newlines, as ``open`` would
            arr = np.loadtxt(os.fspath(p), dtype=np.float32, delimiter=delimiter, comments=None,
                             quotechar=None, skiprows=index + (width > 0), ndmin=2, encoding="utf-8-sig")
    except ValueError:  # a bad cell, ragged rows, not UTF-8 (UnicodeDecodeError)
        return None
    if arr.shape[0] < 2 or (width and arr.shape[1] != width) or not np.isfinite(arr).all():
        return None
    return arr


def _check_utf8(p: Path, path) -> None:
    """Raise unless the whole file decodes as UTF-8 (as the scan's first step: a binary file is one
    error, whatever its first lines hold)."""
    try:
        with open(p, encoding="utf-8-sig") as f:
            while f.read(1 << 20):
                pass
    except UnicodeDecodeError:
        raise DDPMLabError(f"{path}: not a text (UTF-8) file") from None


def _scan_csv(p: Path, path, first: str) -> tuple[np.ndarray, np.ndarray]:
    """The plain cell-by-cell reader: the first problem as one error naming its line (and column), or
    the (N, D) float64 array and each row's line number."""
    _check_utf8(p, path)
    values, line_numbers, width, header_seen = array("d"), array("q"), None, False
    with open(p, encoding="utf-8-sig") as f:
        reader = csv.reader(_lines(f), delimiter=_delimiter(first))
        try:
            for row in reader:
                lineno = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                row_values = [_parse(cell) for cell in row]
                if not line_numbers and not header_seen and all(v is None for v in row_values):
                    header_seen, width = True, len(row)
                    continue
                if width is not None and len(row) != width:
                    raise DDPMLabError(f"{path}: ragged rows: line {lineno} has {len(row)} cells, expected {width}")
                width = len(row)
                for j, v in enumerate(row_values):
                    if v is None:
                        cell = row[j].strip()
                        what = f"non-numeric cell {cell!r}" if cell else "non-numeric (empty) cell"
                        raise DDPMLabError(f"{path}: {what} at line {lineno}, column {j + 1}")
                values.extend(row_values)
                line_numbers.append(lineno)
        except csv.Error as exc:
            raise DDPMLabError(f"{path}: unreadable CSV at line {reader.line_num} ({exc})") from None
    if not line_numbers:
        raise DDPMLabError(f"{path}: no data rows (only a header)")
    return np.array(values, dtype=np.float64).reshape(len(line_numbers), width), np.asarray(line_numbers)


def _unreadable(path, kind: str, exc: Exception) -> DDPMLabError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DDPMLabError(f"{path}: unreadable {kind} array ({msg})")


def _declared(f, path, kind: str) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes of data) an .npy header at ``f``'s position declares (the stream is left
    after the header); one line if the header itself is unreadable."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        elif version == (3, 0):  # a UTF-8 header; numpy reads it only through a private function
            shape, _, dtype = np.lib._format_impl._read_array_header(f, version)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError, AttributeError) as exc:
        raise _unreadable(path, kind, exc) from None
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise DDPMLabError(f"{path}: unreadable {kind} array (header declares shape {shape})")
    return tuple(shape), dtype, math.prod(shape) * dtype.itemsize


def _check_declared(path, kind: str, shape, dtype, nbytes: int, available: int) -> None:
    """Refuse an array whose header declares more data than the file holds, or than memory can hold,
    before anything is allocated (a 193-byte file may claim shape (1e11, 2))."""
    if nbytes > available:
        raise DDPMLabError(f"{path}: the {kind} header declares shape {shape} {dtype} ({format_bytes(nbytes)}) "
                           f"but the file holds only {format_bytes(available)} of data (truncated or corrupt)")
    check_memory(2 * nbytes, f"{path} (shape {shape} {dtype})", "reading the data")


def _read_npy(p: Path, path) -> np.ndarray:
    with open(p, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            f.seek(0)
            shape, dtype, nbytes = _declared(f, path, ".npy")
            if not dtype.hasobject:
                _check_declared(path, ".npy", shape, dtype, nbytes, p.stat().st_size - f.tell())
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise _unreadable(path, ".npy", exc) from None
    except MemoryError:
        raise DDPMLabError(f"{path}: too large to load into memory") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise DDPMLabError(f"{path}: an .npz archive, not an .npy array; rename it to .npz")
    return arr


def _check_npz_member(p: Path, path, key: str) -> None:
    """The declared size of the archive's member ``key`` against its stored (uncompressed) size."""
    try:
        with zipfile.ZipFile(p) as z:
            info = z.getinfo(f"{key}.npy")
            with z.open(info) as f:
                shape, dtype, nbytes = _declared(f, path, ".npz")
                if not dtype.hasobject:
                    _check_declared(path, ".npz", shape, dtype, nbytes, info.file_size - f.tell())
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError) as exc:
        raise _unreadable(path, ".npz", exc) from None


def _read_npz(p: Path, path) -> np.ndarray:
    """The one array in the archive, or the first of ``NPZ_KEYS`` when there are several."""
    try:
        archive = np.load(p, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise _unreadable(path, ".npz", exc) from None
    if isinstance(archive, np.ndarray):
        raise DDPMLabError(f"{path}: a single .npy array, not an .npz archive; rename it to .npy")
    with archive:
        keys = list(archive.files)
        if not keys:
            raise DDPMLabError(f"{path}: empty archive (no arrays)")
        key = keys[0] if len(keys) == 1 else next((k for k in NPZ_KEYS if k in keys), None)
        if key is None:
            raise DDPMLabError(f"{path}: holds several arrays ({', '.join(keys)}); name the data array "
                               f"one of {', '.join(NPZ_KEYS)}")
        _check_npz_member(p, path, key)
        try:
            return archive[key]
        except (ValueError, EOFError, zipfile.BadZipFile, OSError, KeyError) as exc:
            raise _unreadable(path, ".npz", exc) from None
        except MemoryError:
            raise DDPMLabError(f"{path}: too large to load into memory") from None


def _check(arr: np.ndarray, path, line_numbers: Sequence[int] | None) -> torch.Tensor:
    """Numeric dtype, shape (N, *dims) with N >= 2 and at most 2 dims per sample, every value finite."""
    if arr.dtype.kind == "c":
        raise DDPMLabError(f"{path}: complex values are not supported")
    if arr.dtype.kind not in "biuf":
        raise DDPMLabError(f"{path}: non-numeric array (dtype {arr.dtype})")
    if arr.ndim == 0:
        raise DDPMLabError(f"{path}: a single value, not an array of samples")
    if arr.ndim == 1:
        arr = arr[:, None]  # one column
    if arr.ndim - 1 > MAX_SAMPLE_DIMS:
        raise DDPMLabError(f"{path}: each sample has {arr.ndim - 1} dimensions (array shape {arr.shape}); "
                           f"at most {MAX_SAMPLE_DIMS} are supported (a table is N rows x D columns)")
    if arr.size == 0:
        raise DDPMLabError(f"{path}: empty (array shape {arr.shape})")
    if arr.shape[0] < 2:
        raise DDPMLabError(f"{path}: only one row; at least 2 samples are needed")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64, copy=False)  # float32 stays as it is: no 2x copy of a large file
    finite = np.isfinite(arr)
    if not finite.all():
        bad = ~finite
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(arr[where]) else "infinity"
        if line_numbers is not None:
            loc = f"line {line_numbers[where[0]]}, column {where[1] + 1}"
        else:
            loc = f"element {list(where)}"
        raise DDPMLabError(f"{path}: {what} at {loc} ({int(bad.sum())} non-finite value(s) in all)")
    x = torch.from_numpy(np.ascontiguousarray(arr)).float()
    if arr.dtype != np.float32 and not bool(torch.isfinite(x).all()):  # float32 was checked above
        raise DDPMLabError(f"{path}: values too large for float32 (largest magnitude {np.abs(arr).max():.3g})")
    return x
