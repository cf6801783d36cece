"""fit() on every data kind (issue 15 point 1) and on a chosen device (points 1 and 11)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import ravine
from fit_tiny import make_data, make_model
from ravine.train import CHECKPOINT_NAME, fit, load_checkpoint

N = 24

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(n, seed)


_model = make_model


class Pairs(Dataset):
    """A map-style dataset of (x, y) examples; ``noise`` adds augmentation from torch's RNG."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, noise: float = 0.0) -> None:
        self.x, self.y, self.noise = x, y, noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        if self.noise:
            x = x + self.noise * torch.randn(x.shape)
        return x, self.y[i]


class Records(Pairs):
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"image": self.x[i], "label": self.y[i]}


class Stream(IterableDataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self):
        return zip(self.x, self.y)


class Fresh:
    """A re-iterable of batches without a length: __iter__ gives a fresh iterator."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def _batches(x, y, bs=6):
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(x), bs)]


x, y = _data()
# Rows per batch in KINDS: 16 rows of 5 float32 are 320 bytes, so every batch sliced from x
# starts on a 64-byte boundary like the fresh tensors a DataLoader collates. The CPU's matrix
# kernels round differently for unaligned rows (x[6:12] and its copy give outputs 6e-8 apart),
# which would make batches of 6 differ in the last bit by where they live, not by fit.
BS = 16
# name, train data, fit's batch_size argument (absent: left out), whether fit's shuffle applies
KINDS = [
    ("tensors", (x, y), BS, True),
    ("numpy-float64", (x.double().numpy(), y.numpy()), BS, True),
    ("numpy-int32-targets", (x.numpy(), y.int().numpy()), BS, True),
    ("TensorDataset", TensorDataset(x, y), BS, True),
    ("Dataset", Pairs(x, y), BS, True),
    ("Dataset-dicts", Records(x, y), BS, True),
    ("DataLoader", DataLoader(TensorDataset(x, y), batch_size=BS), None, False),
    ("DataLoader-dicts", DataLoader(Records(x, y), batch_size=BS), None, False),
    ("list-of-batches", _batches(x, y, BS), None, False),
    ("re-iterable", Fresh(_batches(x, y, BS)), None, False),
    ("IterableDataset", Stream(x, y), BS, False),
]


@pytest.mark.parametrize(
    ("name", "data", "batch_size", "shuffles"), KINDS, ids=[k[0] for k in KINDS]
)
def test_every_data_kind_takes_the_same_steps_as_the_tensor_path(name, data, batch_size, shuffles):
    """Same batches in the same order give bit-identical weights, whatever carries them."""
    ref_model = _model()
    fit(ref_model, torch.optim.SGD(ref_model.parameters(), lr=0.1), (x, y), (x, y),
        batch_size=BS, epochs=2, shuffle=shuffles, verbose=0)  # fmt: skip
    model = _model()
    kwargs = {} if batch_size is None and not shuffles else {"batch_size": batch_size}
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data, data, epochs=2, verbose=0,
            **kwargs)  # fmt: skip
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b), name
    assert h.steps == 4 and len(h.step_loss) == 4 and len(h.val_loss) == 2  # 16 + 8 an epoch
    assert len(h.train_accuracy) == 2 and len(h.val_accuracy) == 2


def test_unpack_reads_other_batch_layouts():
    batches = [{"pixels": xb, "cls": yb} for xb, yb in _batches(x, y)]
    model = _model()
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, epochs=1, verbose=0,
            unpack=lambda b: (b["pixels"], b["cls"]))  # fmt: skip
    assert h.steps == 4


class Interrupt(Exception):
    pass


def _interrupt_after(epoch: int):
    def callback(e: int, history) -> None:
        if e == epoch:
            raise Interrupt

    return callback


def _loader():
    return DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)


RESUME_KINDS = [
    ("Dataset-augmented", lambda: Pairs(x, y, noise=0.1), 5),
    ("DataLoader-shuffled", _loader, None),
    ("list-of-batches", lambda: _batches(x, y, 5), None),
]


@pytest.mark.parametrize(
    ("name", "make", "batch_size"), RESUME_KINDS, ids=[k[0] for k in RESUME_KINDS]
)
def test_resume_is_bit_identical_where_the_docs_promise_it(tmp_path, name, make, batch_size):
    kw = {"epochs": 5, "verbose": 0, **({} if batch_size is None else {"batch_size": batch_size})}
    torch.manual_seed(1)
    model = _model()
    h_ref = fit(model, torch.optim.Adam(model.parameters(), lr=0.01), make(), **kw)
    ref = [p.clone() for p in model.parameters()]

    model = _model()
    with pytest.raises(Interrupt):
        fit(model, torch.optim.Adam(model.parameters(), lr=0.01), make(), checkpoint_dir=tmp_path,
            callbacks=[_interrupt_after(2)], **kw)  # fmt: skip
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 2
    torch.manual_seed(999)  # a new process: its RNG is whatever it is
    model = _model()
    h = fit(model, torch.optim.Adam(model.parameters(), lr=0.01), make(), checkpoint_dir=tmp_path,
            resume=True, **kw)  # fmt: skip
    for a, b in zip(model.parameters(), ref):
        assert torch.equal(a, b), name
    assert h.train_loss == h_ref.train_loss and h.step_loss == h_ref.step_loss


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_with_worker_processes_is_bit_identical(tmp_path):
    """Workers seed themselves from torch's global RNG, which the checkpoint restores."""

    def make():
        return DataLoader(Pairs(x, y, noise=0.1), batch_size=5, shuffle=True, num_workers=2)

    test_resume_is_bit_identical_where_the_docs_promise_it(tmp_path, "workers", make, None)


def _gen():
    yield x, y


BAD = [
    ({"train": _gen()}, "train is a one-shot iterator"),
    ({"train": iter(_batches(x, y))}, "train is a one-shot iterator"),
    ({"train": Pairs(x, y)}, "batch_size is required when train is a Pairs"),
    ({"train": _loader(), "batch_size": 4}, "batch_size must be None .* DataLoader"),
    ({"train": Stream(x, y), "batch_size": None}, "IterableDataset of examples"),
    ({"train": [{"a": x, "b": y}]}, r"train batch 0 is a dict with keys \['a', 'b'\]"),
    ({"train": [(x, y, y)]}, "train must be .* list whose item 0 is a tuple of length 3"),
    ({"train": [(x, y[:5])]}, r"train batch 0: inputs of shape \(24, 5\) and targets of shape"),
    ({"train": [(x, 3)]}, "train batch 0: the targets must be a tensor, got a int"),
    ({"train": [(x, y)], "unpack": lambda b: b[0]}, "unpack.batch. must return an"),
    ({"train": TensorDataset(x, y, y), "batch_size": 4}, "TensorDataset of 3 tensors, expected 2"),
    ({"train": x, "batch_size": 4}, "train must be an .inputs, targets. pair.*got a tensor"),
    (
        {"train": ([1.0], [0]), "batch_size": 4},
        "train must hold tensors or numpy arrays, got list, list",
    ),
    ({"train": Pairs(x[:0], y[:0]), "batch_size": 4}, "train is an empty Dataset"),
    ({"train": _loader(), "curriculum": "naive"}, "curriculum='naive' needs tensors or a Dataset"),
    (
        {"train": Pairs(x, y), "batch_size": 4, "curriculum": "naive"},
        "needs difficulty= as a tensor",
    ),
    ({"train": Fresh([]), "batch_size": None}, "train yielded no batches in epoch 1"),
    (
        {"train": [], "batch_size": None},
        "train is an empty list: expected batches",
    ),
    ({"val": _gen()}, "val is a one-shot iterator"),
    ({"device": "gpu"}, "device must be a torch device such as 'cpu' or 'cuda', got 'gpu'"),
    ({"verbose": 3}, "verbose must be 'auto', 0, 1 or 2, got 3"),
    ({"verbose": 1, "progress": False}, "progress=False and verbose=1 were both given"),
    ({"sync_every": 0}, "sync_every must be an integer >= 1 or None, got 0"),
    ({"metrics": {"loss": torch.nn.functional.l1_loss}}, "metrics names must be identifiers"),
    ({"metrics": {"f1": 1.0}}, r"metrics\['f1'\] must be a function"),
    ({"callbacks": [ravine.callbacks.Callback]}, "callbacks.0. is the class Callback"),
    ({"callbacks": [3]}, r"callbacks\[0\] must be a Callback or a function"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD, ids=[m for _, m in BAD])
def test_bad_data_and_arguments_are_named_before_anything_changes(kwargs, match):
    model = _model()
    before = [p.clone() for p in model.parameters()]
    args = {"epochs": 1, "verbose": 0, **kwargs}
    if "train" not in args:  # the tensor pair needs a batch_size; the others say theirs
        args = {"train": (x, y), "batch_size": 6, **args}
    train = args.pop("train")
    with pytest.raises(ValueError, match=match):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), train, **args)
    for a, b in zip(model.parameters(), before):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is absent")
def test_device_cuda_without_cuda_is_named():
    model = _model()
    with pytest.raises(ValueError, match="device='cuda': CUDA is not available"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), batch_size=6, epochs=1,
            device="cuda")  # fmt: skip


def test_device_is_refused_once_the_optimizer_holds_state_elsewhere():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    fit(model, opt, (x, y), batch_size=6, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="optimizer already holds state there"):
        fit(model, opt, (x, y), batch_size=6, epochs=1, device="meta", verbose=0)
    assert next(model.parameters()).device.type == "cpu"


def test_device_cpu_is_the_default_and_accepted_by_name():
    model = _model()
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), batch_size=6, epochs=1,
            device="cpu", verbose=0)  # fmt: skip
    assert h.steps == 4


EVAL_KINDS = [
    ("tensors", (x, y)),
    ("numpy", (x.numpy(), y.numpy())),
    ("Dataset", Pairs(x, y)),
    ("DataLoader", DataLoader(Records(x, y), batch_size=7)),
]


@pytest.mark.parametrize(("name", "data"), EVAL_KINDS, ids=[k[0] for k in EVAL_KINDS])
def test_evaluate_reads_every_kind_alike(name, data):
    model = _model()
    with torch.no_grad():
        out = model(x)
    loss, acc = ravine.evaluate(model, data, batch_size=5)
    assert loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-6)
    assert acc == pytest.approx((out.argmax(1) == y).double().mean().item())
    wrong = lambda o, t: (o.argmax(1) != t).double().mean()  # noqa: E731
    result = ravine.evaluate(model, data, metrics={"error": wrong}, return_dict=True)
    assert result["error"] == pytest.approx(1 - acc) and result["loss"] == pytest.approx(loss)
    with pytest.raises(ValueError, match="metrics need return_dict=True"):
        ravine.evaluate(model, data, metrics={"error": wrong})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_moves_model_and_batches():
    model = _model()
    loader = DataLoader(Pairs(x, y), batch_size=6, pin_memory=True)
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, Pairs(x, y),
            epochs=1, device="cuda", verbose=0)  # fmt: skip
    assert next(model.parameters()).is_cuda and h.steps == 4 and len(h.val_loss) == 1

    # "cuda" names the device the model is on now: a second call is no move, state or not
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    fit(model, opt, (x, y), batch_size=6, epochs=1, device="cuda", verbose=0)
    fit(model, opt, (x, y), batch_size=6, epochs=1, device="cuda", verbose=0)
