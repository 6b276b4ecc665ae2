"""CIFAR-10 from the standard python archive (Krizhevsky 2009), read from disk only.

Looks under ``data_root`` (or ``$SELFSTAB_DATA``) for the extracted folder
``cifar-10-batches-py/`` (or ``data_root`` being that folder), else for
``cifar-10-python.tar.gz``.  Each batch is a pickled dict with ``b'data'``
(uint8 ``(N, 3072)``: 1024 red, then green, then blue values, each a row-major
32×32 image) and ``b'labels'``.  Nothing is downloaded unless
:func:`fetch_cifar10` is called explicitly.

``cifar10`` (the paper's 5k CIFAR-10 subset, section 6): the first ``n`` training images (default 5,000) in
file order (``data_batch_1`` onwards), or with ``balanced=True`` the first
``n/10`` of each class; test: the first ``n_test`` images of ``test_batch``.
``cifar10-catdog``: the first ``n/2`` cats (class 3 → label 0, −1) and dogs
(class 5 → label 1, +1), and likewise ``n_test/2`` of each from the test batch.
Pixels are scaled to [0, 1] and standardized per channel with the training
subset's mean and (population) std, applied to the test split as well.
Selections are in file order, so ``seed`` plays no role here.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, DataError

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_FIX = f"download {URL} there (or call selfstab.problem.data.cifar10.fetch_cifar10) or set SELFSTAB_DATA"


class _Unpickler(pickle.Unpickler):
    """Only what a CIFAR batch holds (dicts, lists, bytes, numpy arrays): a corrupt or hostile file cannot run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


class _Source:
    """The batches of one copy of CIFAR-10: an extracted folder or the .tar.gz (read in one streaming pass)."""

    def __init__(self, root: Path | None):
        if root is None:
            raise DataError(f"cifar10: no data_root given and SELFSTAB_DATA is not set; {_FIX}")
        self.folder = next((p for p in (root / FOLDER, root) if (p / "data_batch_1").is_file()), None)
        self.archive = next((p for p in (root / ARCHIVE, root) if p.is_file() and p.name == ARCHIVE), None)
        if self.folder is None and self.archive is None:
            raise DataError(f"cifar10: no {ARCHIVE} or {FOLDER}/ under {root}; {_FIX}")
        self._members: dict[str, bytes] | None = None

    def _read_archive(self) -> dict[str, bytes]:
        members = {}
        try:
            with tarfile.open(self.archive, "r|gz") as tar:
                for info in tar:
                    name = info.name.split("/")[-1]
                    if info.isfile() and (name in TRAIN_BATCHES or name in ("test_batch", "batches.meta")):
                        members[name] = tar.extractfile(info).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"cifar10: {self.archive} is not a readable .tar.gz ({type(exc).__name__}: {exc}); "
                            f"delete it and download {URL} again") from None
        return members

    def where(self, name: str) -> str:
        return str(self.folder / name) if self.folder else f"{self.archive} (member {FOLDER}/{name})"

    def load(self, name: str, required: bool = True) -> dict | None:
        if self.folder is not None:
            path = self.folder / name
            if not path.is_file():
                if not required:
                    return None
                raise DataError(f"cifar10: missing {path}; the folder is incomplete: extract {ARCHIVE} again ({URL})")
            raw = path.read_bytes()
        else:
            if self._members is None:
                self._members = self._read_archive()
            if name not in self._members:
                if not required:
                    return None
                raise DataError(f"cifar10: {self.archive} has no member {FOLDER}/{name}; download {URL} again")
            raw = self._members[name]
        try:
            obj = _Unpickler(io.BytesIO(raw), encoding="bytes").load()
        except Exception as exc:  # any unpickling failure means the same thing: a damaged file
            raise DataError(f"cifar10: {self.where(name)} is corrupt ({type(exc).__name__}: {exc}); "
                            f"download {URL} again") from None
        if not isinstance(obj, dict):
            raise DataError(f"cifar10: {self.where(name)} is not a CIFAR-10 batch (a {type(obj).__name__}, not a dict)")
        return obj

    def batch(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images uint8 (N, 3, 32, 32), labels int64 (N,))`` of one batch, checked."""
        d = self.load(name)
        data, labels = d.get(b"data"), d.get(b"labels")
        try:
            data = np.asarray(data, dtype=np.uint8)
            labels = np.asarray(labels, dtype=np.int64)
            ok = data.ndim == 2 and data.shape[1] == 3072 and labels.shape == (data.shape[0],) and \
                labels.size > 0 and labels.min() >= 0 and labels.max() < 10
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"cifar10: {self.where(name)} is not a CIFAR-10 batch (needs b'data' uint8 (N, 3072) "
                            f"and N b'labels' in 0..9); download {URL} again")
        return data.reshape(-1, 3, 32, 32), labels

    def classes(self) -> tuple[str, ...]:
        meta = self.load("batches.meta", required=False)
        names = (meta or {}).get(b"label_names")
        return tuple(s.decode() if isinstance(s, bytes) else str(s) for s in names) if names else CLASSES


def _select(source: _Source, names: tuple[str, ...], quota: dict[int, int] | None, total: int, split: str):
    """Images and labels in file order: the first ``total`` (quota None) or the first ``quota[c]`` of each class c."""
    xs, ys, need = [], [], dict(quota) if quota else None
    for name in names:
        x, y = source.batch(name)
        if need is None:
            take = np.arange(min(total - sum(len(a) for a in ys), len(y)))
        else:
            take = np.sort(np.concatenate([np.flatnonzero(y == c)[:k] for c, k in need.items()]))
            for c in need:
                need[c] -= int((y[take] == c).sum())
        xs.append(x[take])
        ys.append(y[take])
        if sum(len(a) for a in ys) >= total:
            break
    got = sum(len(a) for a in ys)
    if got < total:
        raise ConfigError(f"n: the CIFAR-10 {split} split has only {got} images of this selection, {total} asked")
    return np.concatenate(xs), np.concatenate(ys)


def _finish(x_train, y_train, x_test, y_test, classes, task, standardize: bool) -> dict:
    x_train, x_test = x_train.astype(np.float64) / 255.0, x_test.astype(np.float64) / 255.0
    meta: dict = {"standardize": standardize}
    if standardize:
        mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
        std = x_train.std(axis=(0, 2, 3), keepdims=True)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        meta.update(mean=mean.reshape(3), std=std.reshape(3))
    as_t = (lambda a: torch.from_numpy(a).to(torch.float32))
    has_test = len(y_test) > 0
    return {"inputs": as_t(x_train), "labels": torch.from_numpy(y_train), "task": task, "classes": classes,
            "input_shape": (3, 32, 32), "test_inputs": as_t(x_test) if has_test else None,
            "test_labels": torch.from_numpy(y_test) if has_test else None, "meta": meta}


def _quota(total: int, classes: list[int], what: str) -> dict[int, int]:
    if total % len(classes):
        raise ConfigError(f"{what}: a balanced selection needs a multiple of {len(classes)}, got {total}")
    return {c: total // len(classes) for c in classes}


def load(n: int = 5000, seed: int = 0, data_root: Path | None = None, *, n_test: int = 1000,
         balanced: bool = False, standardize: bool = True) -> dict:
    """The first ``n`` CIFAR-10 training images (10 classes); see the module docstring."""
    source = _Source(data_root)
    classes = source.classes()
    q = (lambda k, what: _quota(k, list(range(10)), what)) if balanced else (lambda k, what: None)
    x, y = _select(source, TRAIN_BATCHES, q(n, "n"), n, "training")
    xt, yt = _select(source, ("test_batch",), q(n_test, "n_test"), n_test, "test") if n_test else (x[:0], y[:0])
    return _finish(x, y, xt, yt, classes, "multiclass", standardize)


def load_catdog(n: int = 5000, seed: int = 0, data_root: Path | None = None, *, n_test: int = 1000,
                standardize: bool = True) -> dict:
    """Cats (label 0, target −1) vs dogs (label 1, target +1), balanced; see the module docstring."""
    source = _Source(data_root)
    names = source.classes()
    cat, dog = names.index("cat") if "cat" in names else 3, names.index("dog") if "dog" in names else 5
    x, y = _select(source, TRAIN_BATCHES, _quota(n, [cat, dog], "n"), n, "training")
    if n_test:
        xt, yt = _select(source, ("test_batch",), _quota(n_test, [cat, dog], "n_test"), n_test, "test")
    else:
        xt, yt = x[:0], y[:0]
    return _finish(x, (y == dog).astype(np.int64), xt, (yt == dog).astype(np.int64), ("cat", "dog"), "binary",
                   standardize)


def fetch_cifar10(root: str | Path) -> Path:
    """Download ``cifar-10-python.tar.gz`` into ``root`` (only when called) and check its MD5; returns the path."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    path = root / ARCHIVE
    if path.is_file():
        target = path
    else:  # download beside it and move into place only once complete and checked
        target = root / (ARCHIVE + ".part")
        urllib.request.urlretrieve(URL, target)
    digest = hashlib.md5(target.read_bytes()).hexdigest()
    if digest != MD5:
        raise DataError(f"cifar10: {target} has MD5 {digest}, expected {MD5}; delete it and download {URL} again")
    if target != path:
        target.rename(path)
    return path
