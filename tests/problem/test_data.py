"""Data sets (the paper's §6 experiments; docs/theory.md §1): file formats on small fakes written in the real
formats, target encodings, errors."""

import io
import pickle
import socket
import tarfile
import urllib.request

import numpy as np
import pytest
import torch

from selfstab.errors import ConfigError, DataError
from selfstab.problem.data import DATASETS, describe_datasets, load_dataset
from selfstab.problem.models import build_model

# ---------------------------------------------------------------- CIFAR-10 --------------------------------------
PER_BATCH, N_TEST = 20, 20
CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _batch(seed, n, name):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 200, size=(n, 3072), dtype=np.uint8)
    labels = [int(c) for c in rng.permutation(np.arange(n) % 10)]
    return {b"batch_label": name.encode(), b"labels": labels, b"data": data,
            b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)]}


def _cifar_files():
    files = {f"data_batch_{i}": _batch(i, PER_BATCH, f"training batch {i} of 5") for i in range(1, 6)}
    files["test_batch"] = _batch(0, N_TEST, "testing batch 1 of 1")
    # The known pixel: image 3 of batch 1, green channel (the second 1024 values), row 5, column 7.
    files["data_batch_1"][b"data"][3, 1 * 1024 + 5 * 32 + 7] = 255
    files["batches.meta"] = {b"label_names": CIFAR_NAMES, b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072}
    return files


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """The same fake CIFAR-10 as an extracted folder and as a .tar.gz, each in its own root."""
    files = _cifar_files()
    folder_root, archive_root = tmp_path_factory.mktemp("folder"), tmp_path_factory.mktemp("archive")
    (folder_root / "cifar-10-batches-py").mkdir()
    with tarfile.open(archive_root / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, obj in files.items():
            raw = pickle.dumps(obj, protocol=2)
            (folder_root / "cifar-10-batches-py" / name).write_bytes(raw)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return files, folder_root, archive_root


def test_cifar_pixels_land_at_channel_row_column(cifar):
    files, root, _ = cifar
    d = load_dataset("cifar10", n=30, n_test=10, data_root=root, standardize=False)
    assert d.inputs.shape == (30, 3, 32, 32) and d.input_shape == (3, 32, 32)
    assert d.inputs[3].flatten().argmax().item() == np.ravel_multi_index((1, 5, 7), (3, 32, 32))
    assert d.inputs[3, 1, 5, 7] == 1.0
    first = files["data_batch_1"][b"data"][0]
    assert d.inputs[0, 2, 31, 0] == pytest.approx(first[2 * 1024 + 31 * 32 + 0] / 255)
    labels = files["data_batch_1"][b"labels"] + files["data_batch_2"][b"labels"][:10]  # first 30 across batches
    assert d.labels.tolist() == labels
    assert d.classes[3] == "cat" and d.n_outputs == 10 and d.targets.shape == (30, 10)


def test_cifar_standardizes_per_channel_with_training_statistics(cifar):
    _, root, _ = cifar
    raw = load_dataset("cifar10", n=40, n_test=10, data_root=root, standardize=False)
    d = load_dataset("cifar10", n=40, n_test=10, data_root=root)
    x = d.inputs.double()
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    mean = torch.as_tensor(d.meta["mean"]).view(1, 3, 1, 1)
    std = torch.as_tensor(d.meta["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(d.test_inputs.double(), (raw.test_inputs.double() - mean) / std, rtol=0, atol=1e-5)


def test_cifar_archive_reads_like_the_folder(cifar, monkeypatch):
    _, folder_root, archive_root = cifar
    a = load_dataset("cifar10", n=25, n_test=10, data_root=folder_root)
    monkeypatch.setenv("SELFSTAB_DATA", str(archive_root))
    b = load_dataset("cifar10", n=25, n_test=10)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.test_labels, b.test_labels)


def test_cifar_balanced_and_catdog_subsets(cifar):
    _, root, archive_root = cifar
    d = load_dataset("cifar10", n=30, n_test=10, data_root=root, balanced=True)
    assert torch.bincount(d.labels, minlength=10).tolist() == [3] * 10
    for r in (root, archive_root):
        cd = load_dataset("cifar10-catdog", n=8, n_test=4, data_root=r)
        assert cd.task == "binary" and cd.classes == ("cat", "dog") and cd.n_outputs == 1
        assert torch.bincount(cd.labels).tolist() == [4, 4] and torch.bincount(cd.test_labels).tolist() == [2, 2]
        assert sorted(cd.targets.tolist()) == [-1.0] * 4 + [1.0] * 4
        assert torch.equal(cd.targets, cd.labels.float() * 2 - 1)  # dog (+1), cat (−1)
    ce = load_dataset("cifar10-catdog", loss="ce", n=8, n_test=4, data_root=root)
    assert ce.n_outputs == 2 and ce.targets.dtype == torch.int64
    with pytest.raises(ConfigError, match="n: the CIFAR-10 training split has only"):
        load_dataset("cifar10-catdog", n=40, data_root=root)  # 10 cats in the fake training set


def test_cifar_missing_files_say_what_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"no cifar-10-python\.tar\.gz or cifar-10-batches-py/ under .*download https"):
        load_dataset("cifar10", data_root=tmp_path)
    monkeypatch.delenv("SELFSTAB_DATA", raising=False)
    with pytest.raises(DataError, match="SELFSTAB_DATA is not set"):
        load_dataset("cifar10")
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(_batch(1, 10, "x"), protocol=2))
    with pytest.raises(DataError, match="missing .*test_batch"):
        load_dataset("cifar10", n=5, n_test=5, data_root=tmp_path)


class _Hostile:
    def __reduce__(self):
        return (socket.gethostname, ())


@pytest.mark.parametrize("content, message", [
    (b"\x00garbage bytes\xff" * 10, "data_batch_1 is corrupt"),
    (pickle.dumps({b"labels": [1, 2]}), "data_batch_1 is not a CIFAR-10 batch"),
    (pickle.dumps(_Hostile()), "data_batch_1 is corrupt .*socket.gethostname"),
])
def test_cifar_corrupt_batch_is_a_data_error(tmp_path, content, message):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_dataset("cifar10", n=5, data_root=tmp_path)


def test_cifar_corrupt_archive_is_a_data_error(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a gzip file at all" * 100)
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz is not a readable \.tar\.gz"):
        load_dataset("cifar10", n=5, data_root=tmp_path)


# ---------------------------------------------------------------- SST-2 -----------------------------------------
TRAIN = ["a great movie\t1", "a bad movie\t0", "Great fun\t1", "bad bad acting\t0", "the movie is great\t1",
         "not good\t0"]
DEV = ["great acting\t1", "a terrible film\t0"]


def _write_sst2(folder, train=TRAIN, dev=DEV):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(train) + "\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(dev) + "\n")


def test_sst2_vocabulary_padding_and_mask(tmp_path):
    _write_sst2(tmp_path / "SST-2")
    d = load_dataset("sst2", n=6, data_root=tmp_path)
    # Counts: bad, great, movie 3; a 2; the rest 1 — most frequent first, ties alphabetical, after <pad>, <unk>.
    assert d.meta["vocab"] == ["<pad>", "<unk>", "bad", "great", "movie", "a", "acting", "fun", "good", "is",
                               "not", "the"]
    assert d.meta["vocab_size"] == 12 and d.input_shape == (4,)
    tokens, mask = d.inputs
    assert tokens[0].tolist() == [5, 3, 4, 0] and mask[0].tolist() == [True, True, True, False]
    assert tokens[4].tolist() == [11, 4, 9, 3] and mask[4].all()
    assert torch.equal(mask, tokens != 0)
    t_tokens, t_mask = d.test_inputs
    assert t_tokens.tolist() == [[3, 6, 0, 0], [5, 1, 1, 0]]  # "terrible" and "film" are unknown
    assert d.test_labels.tolist() == [1, 0] and d.test_targets.tolist() == [1.0, -1.0]


def test_sst2_options_and_balance(tmp_path):
    _write_sst2(tmp_path)  # directly under data_root also works
    d = load_dataset("sst2", n=4, data_root=tmp_path, seed=3)
    assert torch.bincount(d.labels).tolist() == [2, 2] and d.n_outputs == 1
    assert load_dataset("sst2", n=6, data_root=tmp_path, min_count=2).meta["vocab_size"] == 6
    short = load_dataset("sst2", n=6, data_root=tmp_path, max_len=2)
    assert short.inputs[0].shape == (6, 2) and short.inputs[1].all()
    assert load_dataset("sst2", n=6, data_root=tmp_path, loss="ce").n_outputs == 2
    with pytest.raises(ConfigError, match="even number"):
        load_dataset("sst2", n=5, data_root=tmp_path)
    with pytest.raises(ConfigError, match="only 3 sentences with label 0"):
        load_dataset("sst2", n=8, data_root=tmp_path)
    model = build_model("transformer", d.input_shape, d.n_outputs, vocab_size=d.meta["vocab_size"], hidden=8)
    assert model(*d.inputs).shape == (4, 1)


def test_sst2_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match=r"no SST-2/train\.tsv or train\.tsv under"):
        load_dataset("sst2", data_root=tmp_path)
    _write_sst2(tmp_path)
    (tmp_path / "dev.tsv").unlink()
    with pytest.raises(DataError, match=r"missing .*dev\.tsv"):
        load_dataset("sst2", n=2, data_root=tmp_path)
    _write_sst2(tmp_path, train=TRAIN[:1] + ["no label here"])
    with pytest.raises(DataError, match=r"train\.tsv line 3 is not"):
        load_dataset("sst2", n=2, data_root=tmp_path)
    (tmp_path / "train.tsv").write_bytes(b"\xff\xfe\x00\x81 binary junk")
    with pytest.raises(DataError, match=r"train\.tsv is not UTF-8"):
        load_dataset("sst2", n=2, data_root=tmp_path)


# ---------------------------------------------------------------- digits, MNIST-1D, synthetic -------------------
def test_digits_split_standardization_and_targets():
    d = load_dataset("digits", n=100, n_test=50, seed=1)
    assert d.inputs.shape == (100, 1, 8, 8) and d.test_inputs.shape == (50, 1, 8, 8)
    assert d.n_outputs == 10 and d.targets.shape == (100, 10) and torch.equal(d.targets.argmax(1), d.labels)
    assert d.inputs.reshape(100, -1).mean(0).abs().max() < 1e-5  # per pixel, on the training split
    assert set(d.meta["train_index"]).isdisjoint(d.meta["test_index"])
    again, other = load_dataset("digits", n=100, n_test=50, seed=1), load_dataset("digits", n=100, n_test=50, seed=2)
    assert torch.equal(d.inputs, again.inputs) and not torch.equal(d.inputs, other.inputs)
    b = load_dataset("digits", n=100, binary=True, loss="logistic")
    assert b.task == "binary" and b.n_outputs == 1 and set(b.targets.tolist()) == {-1.0, 1.0}
    assert load_dataset("digits", n=20, loss="ce").targets.dtype == torch.int64
    with pytest.raises(ConfigError, match="'logistic' is for binary tasks"):
        load_dataset("digits", n=20, loss="logistic")
    with pytest.raises(ConfigError, match="1797 images"):
        load_dataset("digits", n=1700)


def test_mnist1d_is_generated_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    requests = pytest.importorskip("requests")
    monkeypatch.setattr(requests, "get", no_network)
    state = np.random.get_state()[1].copy()
    d = load_dataset("mnist1d", n=50, n_test=10, seed=4)
    assert np.array_equal(np.random.get_state()[1], state)  # the package's global seeding is undone
    assert d.inputs.shape == (50, 1, 40) and d.input_shape == (1, 40) and d.test_inputs.shape == (10, 1, 40)
    assert d.n_outputs == 10 and set(d.labels.tolist()) <= set(range(10))
    assert torch.equal(d.inputs, load_dataset("mnist1d", n=50, n_test=10, seed=4).inputs)


@pytest.mark.parametrize("kind, options, task, shape", [
    ("teacher", {"dim": 5}, "regression", (5,)),
    ("mixture", {"classes": 3}, "multiclass", (10,)),
    ("mixture", {"classes": 2}, "binary", (10,)),
    ("images", {"channels": 2, "size": 6}, "multiclass", (2, 6, 6)),
    ("tokens", {"vocab": 9, "max_len": 7}, "binary", (7,)),
])
def test_synthetic_kinds_and_encodings(kind, options, task, shape):
    losses = {"regression": ["mse", "half_mse"], "multiclass": ["mse", "ce"],
              "binary": ["mse", "half_mse", "ce", "logistic"]}[task]
    for loss in losses:
        d = load_dataset("synthetic", kind=kind, loss=loss, n=24, n_test=6, **options)
        assert d.task == task and d.input_shape == shape
        inputs = d.inputs if isinstance(d.inputs, tuple) else (d.inputs,)
        assert all(x.shape[0] == 24 for x in inputs) and d.test_labels.shape[0] == 6
        if task == "regression":
            assert d.n_outputs == 1 and d.targets.dtype == torch.float32 and torch.equal(d.targets, d.labels)
        elif loss == "ce":
            assert d.targets.dtype == torch.int64 and d.n_outputs == (2 if task == "binary" else 3)
        elif task == "binary":
            assert d.n_outputs == 1 and set(d.targets.tolist()) == {-1.0, 1.0}
        else:
            assert d.targets.shape == (24, 3)
    if kind == "tokens":
        tokens, mask = d.inputs
        assert torch.equal(mask, tokens != 0) and mask[:, :3].all() and tokens.max() < 9
    if task != "binary":
        with pytest.raises(ConfigError, match="loss"):
            load_dataset("synthetic", kind=kind, loss="logistic", n=8, **options)


def test_unknown_names_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="dataset: unknown dataset 'imagenet'; choose one of digits, cifar10"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError, match="'binray': not an option of 'digits'; valid options: n_test, binary"):
        load_dataset("digits", binray=True)
    with pytest.raises(ConfigError, match="kind: unknown synthetic kind 'spiral'"):
        load_dataset("synthetic", kind="spiral")
    with pytest.raises(ConfigError, match="'vocab': not used by synthetic kind 'teacher'"):
        load_dataset("synthetic", kind="teacher", vocab=5)
    with pytest.raises(ConfigError, match="loss: unknown loss 'hinge'"):
        load_dataset("digits", loss="hinge")


def test_describe_datasets():
    rows = describe_datasets()
    assert [r["name"] for r in rows] == list(DATASETS)
    assert all(r["description"] and r["source"] and r["input_shape"] and r["n"] > 0 for r in rows)
    assert {r["name"]: r["n"] for r in rows}["cifar10"] == 5000
