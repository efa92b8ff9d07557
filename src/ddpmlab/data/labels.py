"""Class labels for the user's own data: one column of a ``.csv`` (by header name or 0-based index) or of
an ``.npy`` / ``.npz`` table (by index), mapped to classes 0..K-1.

The label column's values are categories: every distinct value is a class, ordered numerically when all
values are numbers and as text otherwise; the names in that order (``classes``) are stored with the run so
that class c means the same value at sampling time. Refused in one line: a missing (empty) or NaN label, a
class with a single row, more than ``max_classes`` classes, a single class, an unknown column.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.files import (_check, _delimiter, _first_line, _lines, _parse, _read_npy, _read_npz, SUFFIXES,
                               load_data_file)


def load_labelled_file(path, column: str, max_classes: int = 100):
    """(x (N, *dims) float32, labels (N,) long in 0..K-1, classes: the K label values as text)."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in SUFFIXES or p.stat().st_size == 0:
        load_data_file(path)  # its one-line error: missing, not a file, unsupported type, empty
    if p.suffix.lower() == ".csv":
        x, raw, where = _labelled_csv(p, path, column)
    else:
        x, raw, where = _labelled_array(p, path, column)
    labels, classes = categorical(raw, where, path, max_classes)
    return x, labels, classes


def categorical(values: list[str], where: list[str], path, max_classes: int):
    """Map label texts to classes 0..K-1 (numeric order when all are numbers); refuse bad labels."""
    for v, loc in zip(values, where):
        if v == "":
            raise DDPMLabError(f"{path}: missing label at {loc}")
        f = _parse(v)
        if f is not None and math.isnan(f):
            raise DDPMLabError(f"{path}: NaN label at {loc}")
    numbers = [_parse(v) for v in values]
    numeric = all(f is not None for f in numbers)
    keys = numbers if numeric else values
    distinct = sorted(set(keys))
    if len(distinct) > max_classes:
        raise DDPMLabError(f"{path}: the label column holds {len(distinct)} classes, more than data.max_classes = "
                           f"{max_classes} (is it a numeric feature?)")
    if len(distinct) < 2:
        raise DDPMLabError(f"{path}: the label column holds a single class; class-conditional training needs >= 2")
    index = {k: i for i, k in enumerate(distinct)}
    labels = torch.tensor([index[k] for k in keys], dtype=torch.long)
    counts = torch.bincount(labels, minlength=len(distinct))
    names = [_name(k) for k in distinct]
    lonely = [names[i] for i in range(len(distinct)) if counts[i] < 2]
    if lonely:
        raise DDPMLabError(f"{path}: class {lonely[0]!r} has a single row ({len(lonely)} such class(es)); "
                           "every class needs at least 2")
    return labels, names


def _name(k) -> str:
    if isinstance(k, float):
        return str(int(k)) if k.is_integer() else repr(k)
    return str(k)


def _column_index(column: str, header: list[str] | None, width: int, path) -> int:
    col = str(column).strip()
    if header is not None and col in [h.strip() for h in header]:
        return [h.strip() for h in header].index(col)
    try:
        i = int(col)
    except ValueError:
        names = ", ".join(h.strip() for h in header) if header else "none (the file has no header row)"
        raise DDPMLabError(f"{path}: no label column {col!r} (column names: {names}; or a 0-based index)") from None
    if not 0 <= i < width:
        raise DDPMLabError(f"{path}: label column index {i} out of range (the rows have {width} columns)")
    if width < 2:
        raise DDPMLabError(f"{path}: the label column is the only column; no features are left")
    return i


def _labelled_csv(p: Path, path, column: str):
    """Features (N, D - 1) through ``files._check``, label texts, and each row's line number."""
    try:
        first = _first_line(p)
    except UnicodeDecodeError:
        raise DDPMLabError(f"{path}: not a text (UTF-8) file") from None
    if first is None:
        raise DDPMLabError(f"{path}: empty file (no rows)")
    rows, line_numbers, header = [], [], None
    with open(p, encoding="utf-8-sig") as f:
        reader = csv.reader(_lines(f), delimiter=_delimiter(first[1]))
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if header is None and not rows and all(_parse(c) is None for c in row):
                    header = row
                    continue
                rows.append(row)
                line_numbers.append(reader.line_num)
        except csv.Error as exc:
            raise DDPMLabError(f"{path}: unreadable CSV at line {reader.line_num} ({exc})") from None
    if not rows:
        raise DDPMLabError(f"{path}: no data rows")
    width = len(header) if header is not None else len(rows[0])
    col = _column_index(column, header, width, path)
    feats = np.empty((len(rows), width - 1), dtype=np.float64)
    labels = []
    for i, (row, lineno) in enumerate(zip(rows, line_numbers)):
        if len(row) != width:
            raise DDPMLabError(f"{path}: ragged rows: line {lineno} has {len(row)} cells, expected {width}")
        labels.append(row[col].strip())
        for j, cell in enumerate(row[:col] + row[col + 1:]):
            v = _parse(cell)
            if v is None:
                raise DDPMLabError(f"{path}: non-numeric cell {cell.strip()!r} at line {lineno}, column "
                                   f"{j + 1 + (j >= col)}")
            feats[i, j] = v
    return _check(feats, path, line_numbers), labels, [f"line {n}" for n in line_numbers]


def _labelled_array(p: Path, path, column: str):
    arr = _read_npy(p, path) if p.suffix.lower() == ".npy" else _read_npz(p, path)
    if arr.ndim != 2:
        raise DDPMLabError(f"{path}: a label column needs a table (N rows x D columns), got array shape {arr.shape}")
    col = _column_index(column, None, arr.shape[1], path)
    raw = arr[:, col]
    feats = np.delete(arr, col, axis=1)
    texts = ["nan" if isinstance(v, float) and math.isnan(v) else _name(float(v)) if arr.dtype.kind in "biuf"
             else str(v) for v in raw.tolist()]
    return _check(feats, path, None), texts, [f"row {i}" for i in range(len(texts))]
