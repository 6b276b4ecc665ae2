"""GLUE SST-2 (Socher et al. 2013) as word tokens with a padding mask, read from disk only.

Reads ``train.tsv`` and ``dev.tsv`` (tab-separated, header ``sentence\\tlabel``,
labels 0 = negative, 1 = positive) from ``data_root/SST-2/`` or ``data_root/``
(default ``$SELFSTAB_DATA``).  GLUE's ``test.tsv`` has no labels, so ``dev.tsv``
is the test split.

Training set: ``n`` sentences (default 5,000), half of each class,
drawn with ``seed`` and kept in file order.  Vocabulary: lower-cased
whitespace-separated words (GLUE's text is already tokenized) of those training
sentences that occur at least ``min_count`` times, most frequent first (ties
alphabetical), after ``<pad>`` = 0 and ``<unk>`` = 1.  Sequences are padded to
the longest training sentence, or cut to ``max_len`` if given; test sentences
are cut to the same length.  Inputs are ``(tokens int64 (n, T), mask bool
(n, T))`` with mask True on real tokens.  ``n_test``: None for all of
``dev.tsv``, else a balanced seeded subset.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, DataError

PAD, UNK = 0, 1
_FIX = "put GLUE's SST-2 train.tsv and dev.tsv (https://gluebenchmark.com/tasks) in data_root/SST-2/ or set SELFSTAB_DATA"


def _folder(root: Path | None) -> Path:
    if root is None:
        raise DataError(f"sst2: no data_root given and SELFSTAB_DATA is not set; {_FIX}")
    for folder in (root / "SST-2", root):
        if (folder / "train.tsv").is_file():
            return folder
    raise DataError(f"sst2: no SST-2/train.tsv or train.tsv under {root}; {_FIX}")


def read_tsv(path: Path) -> list[tuple[list[str], int]]:
    """``(lower-cased words, label)`` per line of a GLUE SST-2 file; a malformed file is a DataError."""
    if not path.is_file():
        raise DataError(f"sst2: missing {path}; {_FIX}")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"sst2: {path} is not UTF-8 text ({exc}); download SST-2 again") from None
    header = lines[0].split("\t") if lines else []
    if "sentence" not in header or "label" not in header:
        raise DataError(f"sst2: {path} must start with the header 'sentence<TAB>label', got {lines[:1]}")
    i_s, i_l = header.index("sentence"), header.index("label")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != len(header) or cols[i_l].strip() not in ("0", "1"):
            raise DataError(f"sst2: {path} line {lineno} is not '<sentence><TAB><0 or 1>': {line[:60]!r}")
        rows.append((cols[i_s].lower().split(), int(cols[i_l])))
    if not rows:
        raise DataError(f"sst2: {path} has no sentences")
    return rows


def _balanced(rows, k: int | None, rng: np.random.Generator, what: str) -> list:
    """``k`` rows, half per label, drawn at random and kept in file order (all rows when k is None)."""
    rows = [r for r in rows if r[0]]  # an empty sentence has nothing to pool over
    if k is None:
        return rows
    if k % 2:
        raise ConfigError(f"{what}: a balanced SST-2 selection needs an even number, got {k}")
    picked = []
    for label in (0, 1):
        idx = [i for i, r in enumerate(rows) if r[1] == label]
        if len(idx) < k // 2:
            raise ConfigError(f"{what}: only {len(idx)} sentences with label {label}, {k // 2} asked")
        picked += list(rng.choice(idx, size=k // 2, replace=False))
    return [rows[i] for i in sorted(picked)]


def _encode(rows, vocab: dict[str, int], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tokens = torch.full((len(rows), length), PAD, dtype=torch.int64)
    for i, (words, _) in enumerate(rows):
        ids = [vocab.get(w, UNK) for w in words[:length]]
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    lengths = torch.tensor([min(len(w), length) for w, _ in rows])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return tokens, mask, torch.tensor([y for _, y in rows], dtype=torch.int64)


def load(n: int = 5000, seed: int = 0, data_root: Path | None = None, *, n_test: int | None = None,
         min_count: int = 1, max_len: int | None = None) -> dict:
    """Balanced SST-2 sentences as ``(tokens, mask)``; see the module docstring."""
    folder = _folder(data_root)
    rng = np.random.default_rng(seed)
    train = _balanced(read_tsv(folder / "train.tsv"), n, rng, "n")
    test = _balanced(read_tsv(folder / "dev.tsv"), n_test, rng, "n_test")
    counts = Counter(w for words, _ in train for w in words)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    vocab = {w: i for i, w in enumerate(words, start=2)}
    length = max(len(w) for w, _ in train)
    if max_len is not None:
        length = min(length, int(max_len))
    tokens, mask, labels = _encode(train, vocab, length)
    t_tokens, t_mask, t_labels = _encode(test, vocab, length)
    return {"inputs": (tokens, mask), "labels": labels, "task": "binary", "classes": ("negative", "positive"),
            "input_shape": (length,), "test_inputs": (t_tokens, t_mask), "test_labels": t_labels,
            "meta": {"vocab_size": len(vocab) + 2, "max_len": length, "pad_id": PAD, "unk_id": UNK,
                     "vocab": ["<pad>", "<unk>"] + words}}
