"""Per-step records of one process, kept in memory as growable numpy columns.

A :class:`Recorder` holds an int64 ``step`` column and one float64 column per
field, all of the same length, with NaN where a field was not given at a step;
so a field may start late, or appear every k steps only.  Columns double in
capacity when full, so an append costs O(fields given) amortized and a flush
can hand views of the columns to h5py without copying.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError


def _as_float(value: Any, where: str) -> float:
    if type(value) is float:
        return value
    if value is None:
        return math.nan
    if isinstance(value, (str, bytes)):
        raise ConfigError(f"records: {where} = {value!r} is text; records hold numbers only (put text in the summary)")
    try:
        return float(value)  # int, bool, numpy scalar, one-element tensor or array
    except (TypeError, ValueError, RuntimeError):
        shown = " ".join(repr(value).split())[:60]
        raise ConfigError(f"records: {where} must be a number, got {type(value).__name__} {shown}") from None


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or name.startswith("."):
        raise ConfigError(f"records: {what} {name!r} is not a valid name (non-empty, no '/', no leading '.')")
    return name


def _check_field(key: str, process: str) -> None:
    if key == "step":
        raise ConfigError(f"records: {process}: 'step' is the index, not a field")
    check_name(key, f"{process} field")


class Recorder:
    """One process's per-step fields, as growable float64 columns with NaN where a field is missing."""

    def __init__(
        self,
        name: str,
        steps: np.ndarray | None = None,
        cols: Mapping[str, np.ndarray] | None = None,
        first_rows: Mapping[str, int] | None = None,
    ):
        self.name = name
        n = 0 if steps is None else len(steps)
        self._cap = max(64, 2 * n)
        self._n = n
        self.version = 0  # bumped by every change; RunDir.flush skips a rewrite when nothing changed
        self._steps = np.zeros(self._cap, dtype=np.int64)
        self._steps[:n] = steps if steps is not None else []
        self._cols: dict[str, np.ndarray] = {}
        # Row at which each field first appeared: a truncation forgets the fields born after
        # it, so a resumed run has the same columns, in the same order, as an uninterrupted one.
        self._first: dict[str, int] = {}
        for key, values in (cols or {}).items():
            self._new_column(key, (first_rows or {}).get(key, 0))[:n] = values

    def __len__(self) -> int:
        return self._n

    @property
    def fields(self) -> list[str]:
        return list(self._cols)

    def _new_column(self, key: str, first_row: int) -> np.ndarray:
        _check_field(key, self.name)
        self._first[key] = first_row
        col = self._cols[key] = np.full(self._cap, np.nan)
        return col

    def _grow(self) -> None:
        self._cap *= 2
        self._steps = np.resize(self._steps, self._cap)
        for key, col in self._cols.items():
            new = np.full(self._cap, np.nan)
            new[: self._n] = col[: self._n]
            self._cols[key] = new

    def append(self, step: int, **fields: Any) -> None:
        """Record ``fields`` at ``step``.  Steps never decrease; a repeated step adds to its row.

        Values: python/numpy numbers, one-element tensors, or None (stored as NaN).
        NaN and inf are stored as given: deciding about divergence is the caller's job.
        """
        try:
            step = operator.index(step)
        except TypeError:
            raise ConfigError(f"records: {self.name}: step must be an int, got {step!r}") from None
        last = int(self._steps[self._n - 1]) if self._n else None
        if last is not None and step < last:
            raise ConfigError(f"records: {self.name}: step {step} after step {last}; steps must not decrease")
        values = {k: _as_float(v, f"{self.name}.{k}") for k, v in fields.items()}
        for key in values:  # check every new name before changing anything: an append is all or nothing
            if key not in self._cols:
                _check_field(key, self.name)
        if step != last:
            if self._n == self._cap:
                self._grow()
            self._steps[self._n] = step
            self._n += 1
        row = self._n - 1
        self.version += 1
        for key, value in values.items():
            col = self._cols.get(key)
            if col is None:
                col = self._new_column(key, row)
            col[row] = value

    def truncate(self, rows: int) -> None:
        """Keep the first ``rows`` rows, and only the fields that had appeared in them."""
        rows = max(0, min(int(rows), self._n))
        self.version += 1
        for key in list(self._cols):
            if self._first[key] >= rows:
                del self._cols[key], self._first[key]
            else:
                self._cols[key][rows : self._n] = np.nan  # free space again, NaN as append expects
        self._n = rows

    def rows_through(self, step: int) -> int:
        """How many rows have ``step`` ≤ the given one."""
        return int(np.searchsorted(self._steps[: self._n], step, side="right"))

    def table(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Views ``(step[T], {field: values[T]})`` of the stored rows (no copy)."""
        return self._steps[: self._n], {k: c[: self._n] for k, c in self._cols.items()}

    def first_rows(self) -> dict[str, int]:
        """``{field: row where it first appeared}``."""
        return dict(self._first)

    def frame(self) -> pd.DataFrame:
        """A copy of the records as a DataFrame indexed by ``step``, columns in order of appearance."""
        steps, cols = self.table()
        return to_frame(steps, cols)


def to_frame(steps: np.ndarray, cols: Mapping[str, np.ndarray]) -> pd.DataFrame:
    index = pd.Index(np.array(steps, dtype=np.int64), name="step")
    return pd.DataFrame({k: np.array(v, dtype=np.float64) for k, v in cols.items()}, index=index)
