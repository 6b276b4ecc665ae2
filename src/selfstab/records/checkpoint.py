"""Checkpoint files: a nested state saved with ``torch.save``, loaded with ``weights_only=True``.

A state is a tree of dicts, lists and tuples whose leaves are tensors, numpy
arrays and scalars, python numbers, strings, bytes, ``None``, torch dtypes and
devices — enough for θ, solver warm starts and the RNG states
(``torch.get_rng_state()`` is a uint8 tensor, ``np.random.get_state()`` a
tuple, ``Generator.bit_generator.state`` a dict of big ints).

Numpy values and ``bytes`` are stored as uint8 tensors of their raw bytes
(plus dtype and shape), so they come back bit for bit and the file loads with
``torch.load(weights_only=True)``, which runs no arbitrary code.  Anything else is refused *when saving*, with the key
path in the message, so a checkpoint that was written can always be read.

A checkpoint also carries a byte copy of ``records.h5`` as it was when the
checkpoint was taken (``records_file``; absent from checkpoints written before
it was added), so that damaged records can be rebuilt up to it (:mod:`.repair`).

Files are ``checkpoints/ckpt-<seq>-step<step>.pt``.  ``seq`` counts every
checkpoint of the run and orders them; ``step`` is informational, since the
training phase and the tracking phase each count steps from 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .io import atomic_write

FORMAT = "selfstab-checkpoint"
VERSION = 1
_TAG = "__selfstab__"
_NAME_RE = re.compile(r"^ckpt-(\d+)-step(-?\d+)\.pt$")
_PLAIN = (type(None), bool, int, float, complex, str, torch.dtype, torch.device)


def checkpoint_name(seq: int, step: int) -> str:
    return f"ckpt-{seq:06d}-step{step}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, int, Path]]:
    """``(seq, step, path)`` of every checkpoint file in ``folder``, oldest first; temp files are skipped."""
    found = []
    if folder.is_dir():
        for entry in folder.iterdir():
            m = _NAME_RE.match(entry.name)
            if m is not None:
                found.append((int(m.group(1)), int(m.group(2)), entry))
    return sorted(found)


def _byte_tensor(arr: np.ndarray) -> torch.Tensor:
    """The raw bytes of ``arr`` as a uint8 tensor (a plain ``bytes`` b"" would not pass weights_only)."""
    return torch.from_numpy(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).copy())


def encode_state(obj: Any, where: str = "state") -> Any:
    """Turn ``obj`` into a tree that ``torch.load(weights_only=True)`` reads back; refuse anything else."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        # torch.save writes a view's whole storage: copy small views of big tensors.
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        return t
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.hasobject or arr.dtype.fields is not None:
            raise ConfigError(f"checkpoint: {where} is a numpy array of objects or records; store plain arrays")
        kind = "ndarray" if isinstance(obj, np.ndarray) else "npscalar"
        return {_TAG: kind, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": _byte_tensor(arr)}
    if isinstance(obj, bytes):
        return {_TAG: "bytes", "data": _byte_tensor(np.frombuffer(obj, dtype=np.uint8))}
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, dict):
        if _TAG in obj:
            raise ConfigError(f"checkpoint: {where} uses the reserved key {_TAG!r}; rename it")
        for k in obj:
            if type(k) not in (str, int, bool, float, type(None)):
                raise ConfigError(f"checkpoint: {where} has a key {k!r} of type {type(k).__name__}; use str or int keys")
        return {k: encode_state(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if type(obj) in (list, tuple):
        items = [encode_state(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if type(obj) is list else tuple(items)
    raise ConfigError(
        f"checkpoint: {where} has unsupported type {type(obj).__name__}; "
        "use tensors, numpy arrays, numbers, strings, bytes, None, and dicts/lists/tuples of them"
    )


def decode_state(obj: Any) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, dict):
        kind = obj.get(_TAG)
        if kind in ("ndarray", "npscalar", "bytes"):
            raw = obj["data"].numpy().tobytes()
            if kind == "bytes":
                return raw
            arr = np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
            return arr if kind == "ndarray" else arr[()]
        return {k: decode_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_state(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(decode_state(v) for v in obj)
    return obj


def save_checkpoint_file(path: Path, seq: int, step: int, state: dict, rows: dict[str, int], *,
                         world_size: int = 1, records_file: bytes | None = None) -> None:
    """Atomically write a checkpoint; ``rows`` is each recorder's length when it was taken, ``world_size``
    the number of data-parallel ranks whose reductions made ``state`` (files without it read as 1),
    ``records_file`` the bytes of ``records.h5`` holding exactly those rows (None: not carried)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "seq": int(seq),
        "step": int(step),
        "records": {str(k): int(v) for k, v in rows.items()},
        "world_size": int(world_size),
        "state": encode_state(state),
    }
    if records_file is not None:
        payload["records_file"] = torch.frombuffer(bytearray(records_file), dtype=torch.uint8)
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint_file(path: Path, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint_file`; raise on anything unreadable."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a selfstab checkpoint")
    payload["state"] = decode_state(payload["state"])
    if "records_file" in payload:
        payload["records_file"] = payload["records_file"].numpy().tobytes()
    return payload
