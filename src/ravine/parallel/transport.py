"""Messages between parameter-server shards and workers: gloo point-to-point + a TCPStore.

Why this shape (checked on torch 2.13, pinned by tests/test_parallel_transport.py): in gloo a
crashed peer closes only its own pair, but a timeout on one wait closes every pair of the group
and a receive-from-any is not woken by a dead peer, so one big group cannot survive a dead or hung
worker. Here every (shard, worker incarnation) gets its own two-process gloo group under its own
PrefixStore prefix of one TCPStore, which is also the control plane: the join queue, heartbeats,
readiness of each shard incarnation, progress and the stop flag. A SIGKILLed worker's pair errs
at once and the shard keeps serving the others; a replacement joins under a new prefix.

Wire protocol on a pair (rank 0 the shard, rank 1 the worker), one request at a time, one
message each way:

    worker -> shard   int64[2] = (kind, arg), packed with the shard's n floats for PUSH, ELASTIC
                      and PUSH_PULL; the 16 bytes alone for PULL and BYE
    shard -> worker   int64[2] = (version, staleness), packed with the n floats for PULL,
                      ELASTIC and PUSH_PULL; the 16 bytes alone for PUSH

n, the shard's slice length, is known to both ends from the run's config before they join, so
each end posts one receive of the longest message and gloo delivers a shorter one into its first
bytes (pinned by the transport tests); no message says how long the next one is.
Both ends post the receive of the next message before they send, so a message lands in a posted
buffer instead of waiting for the receiver's gloo rendezvous.

Packing copies the worker's payload into the request buffer. Past ``SPLIT_BYTES`` that copy
costs more than a second message, so a pair whose slice is that long (both ends know) sends a
request's payload as a message of its own (tag 1) straight from the worker's tensor, after the
header (tag 0); the shard has both receives posted.

Every wait is bounded: gloo ops by the pair's timeout, store waits by ``wait_key``'s.
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from enum import IntEnum

import torch
import torch.distributed as dist

HEADER_BYTES = 16
# Measured on the loaded 2-core machine: copying 100000 floats (400 kB) took 40-60 us, a fifth
# of the raw round trip, more than a second small message; copying 1001 floats took 3-8 us.
SPLIT_BYTES = 64 * 1024


class Kind(IntEnum):
    PULL = 1
    PUSH = 2
    ELASTIC = 3
    BYE = 4
    PUSH_PULL = 5  # a push, then the parameters after it: one round trip per Downpour step


WITH_PAYLOAD = (Kind.PUSH, Kind.ELASTIC, Kind.PUSH_PULL)  # requests that carry floats


class TransportError(RuntimeError):
    """A pair or the control plane failed: the message names the peer or key waited for."""


def connect_store(host: str, port: int, timeout: float, *, master: bool = False) -> dist.TCPStore:
    """The control plane: a TCPStore client (or the server, ``master=True``; port 0 picks a free
    one, read it back from ``.port``)."""
    try:
        return dist.TCPStore(
            host,
            port,
            is_master=master,
            timeout=datetime.timedelta(seconds=timeout),
            wait_for_workers=False,
        )
    except (RuntimeError, dist.DistStoreError) as e:
        raise TransportError(
            f"cannot reach the control-plane store at {host}:{port} within {timeout:g} s: {e}"
        ) from e


def wait_key(store: dist.Store, key: str, timeout: float, what: str) -> bytes:
    """``store[key]`` once it is set, or TransportError naming ``what`` after ``timeout`` s."""
    try:
        store.wait([key], datetime.timedelta(seconds=timeout))
        return store.get(key)
    except (RuntimeError, dist.DistStoreError) as e:
        raise TransportError(
            f"timed out after {timeout:g} s waiting for {what} (store key {key!r})"
        ) from e


def wait_change(store: dist.Store, key: str, old: bytes, timeout: float, what: str) -> bytes:
    """``store[key]`` once it differs from ``old`` (polled), bounded like ``wait_key``."""
    deadline = time.monotonic() + timeout
    while True:
        value = wait_key(store, key, max(0.01, deadline - time.monotonic()), what)
        if value != old:
            return value
        if time.monotonic() > deadline:
            raise TransportError(f"timed out after {timeout:g} s waiting for {what} ({key!r})")
        time.sleep(0.05)


class Pair:
    """A gloo group of exactly two processes under its own prefix of the control-plane store.

    Construction is the rendezvous (bounded by ``timeout``); so is every send/recv. After an
    error the pair is dead for good: make a new one under a new prefix.
    """

    def __init__(self, store: dist.Store, prefix: str, rank: int, timeout: float) -> None:
        self.prefix, self.rank, self.peer = prefix, rank, 1 - rank
        self.bytes: Counter[str] = Counter()
        try:
            self.group = dist.ProcessGroupGloo(
                dist.PrefixStore(prefix, store), rank, 2, datetime.timedelta(seconds=timeout)
            )
        except RuntimeError as e:
            raise TransportError(
                f"pair {prefix!r}: peer did not join within {timeout:g} s: {e}"
            ) from e

    def send(self, tensor: torch.Tensor, tag: int = 0) -> dist.Work:
        return self.group.send([tensor], self.peer, tag)

    def recv(self, tensor: torch.Tensor, tag: int = 0) -> dist.Work:
        return self.group.recv([tensor], self.peer, tag)


def pair_prefix(shard: int, shard_incarnation: int, worker: int, worker_incarnation: int) -> str:
    return f"pair/{shard}.{shard_incarnation}/{worker}.{worker_incarnation}/"


class Message:
    """A header int64[2] and ``n`` floats in one contiguous byte buffer: sent as one message
    (``raw``), or the header alone (``header_only``)."""

    def __init__(self, n: int, dtype: torch.dtype = torch.float32) -> None:
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.raw = torch.zeros(HEADER_BYTES + n * itemsize, dtype=torch.uint8)
        self.header = self.raw[:HEADER_BYTES].view(torch.int64)
        self.payload = self.raw[HEADER_BYTES:].view(dtype)
        self.header_only = self.raw[:HEADER_BYTES]
        self.header_np = self.header.numpy()  # numpy item access costs ~0.1 us, torch's ~3 us

    @property
    def split(self) -> bool:
        """Whether a payload this long travels as a message of its own (``SPLIT_BYTES``)."""
        return self.raw.numel() - HEADER_BYTES > SPLIT_BYTES

    def check(self, payload: torch.Tensor | None) -> None:
        if payload is None:
            return
        if payload.shape != self.payload.shape or payload.dtype != self.payload.dtype:
            raise ValueError(
                f"Invalid payload: {payload.numel()} {payload.dtype} (expected "
                f"{self.payload.numel()} {self.payload.dtype}, the shard's slice)"
            )

    def pack(self, a: int, b: int, payload: torch.Tensor | None) -> torch.Tensor:
        """Fill the header (and the payload unless it is ``self.payload`` already filled) and
        return the bytes to send."""
        self.check(payload)
        self.header_np[0], self.header_np[1] = a, b
        if payload is None:
            return self.header_only
        if payload.data_ptr() != self.payload.data_ptr():
            self.payload.copy_(payload)
        return self.raw


class ShardChannel:
    """The worker's end of one shard's pair: requests in flight, replies read back.

    ``start`` posts the reply's receive and sends the request without waiting, so a worker talks
    to all its shards at once; ``finish`` waits (bounded by the pair timeout) and returns the
    reply.
    """

    def __init__(self, pair: Pair, n: int) -> None:
        self.pair, self.n = pair, n
        self.request = Message(n)
        self.reply = Message(n)
        self.works: list[dist.Work] = []
        self.kind = Kind.PULL
        self.outgoing: torch.Tensor | None = None  # a split payload, alive until it is sent

    def start(self, kind: Kind, arg: int = 0, payload: torch.Tensor | None = None) -> None:
        if (payload is not None) != (kind in WITH_PAYLOAD):
            raise ValueError(
                f"Invalid request: {kind.name} {'with' if payload is not None else 'without'} "
                f"a payload (only {', '.join(k.name for k in WITH_PAYLOAD)} carry one)"
            )
        self.request.check(payload)
        split = payload is not None and self.request.split
        buf = self.request.pack(int(kind), arg, None if split else payload)
        self.kind = kind
        name = kind.name.lower()
        works = []
        # the reply's receive is posted first: a reply that finds none posted waits for gloo's
        # rendezvous (measured: a push of 1001 floats took ~3.5 ms median instead of ~0.3 ms)
        if kind is not Kind.BYE:
            reply = self.reply.header_only if kind is Kind.PUSH else self.reply.raw
            works.append(self.pair.recv(reply, 2))
            self.pair.bytes[f"{name}:received"] += reply.numel()
        works.append(self.pair.send(buf, 0))
        sent = buf.numel()
        if split:
            self.outgoing = payload.contiguous()
            works.append(self.pair.send(self.outgoing, 1))
            sent += self.outgoing.numel() * self.outgoing.element_size()
        self.pair.bytes[f"{name}:sent"] += sent
        self.works = works

    def finish(self) -> tuple[int, int, torch.Tensor | None]:
        """(version, staleness, payload or None) of the request started last. The payload is
        the reply buffer: valid until the next ``start``."""
        for work in self.works:
            work.wait()
        self.works, self.outgoing = [], None
        version, staleness = int(self.reply.header_np[0]), int(self.reply.header_np[1])
        payload = None if self.kind is Kind.PUSH else self.reply.payload
        return version, staleness, payload


class ShardEndpoint:
    """The shard's end of one worker's pair: receive a request, send its reply.

    The receive of the next request (both of a split one) is posted before the reply goes out,
    so the request lands in a posted buffer instead of waiting for this thread to wake up and
    ask for it. The worker sends its next request only after this reply, so one buffer would
    suffice if the shard were done with a request when it replies; but a shard replies to a
    push before it applies it (asynchronous pushes, :mod:`ravine.parallel.server`), so a
    request's payload stays valid until the ``receive`` after its ``respond``: payloads land
    in two buffers in turn, and the next one is posted in the buffer not being read.
    """

    def __init__(self, pair: Pair, n: int) -> None:
        self.pair, self.n = pair, n
        self.requests = (Message(n), Message(n))
        self.slot = 1  # the buffer the next request's payload lands in (after _post flips it)
        self.reply = Message(n)
        self.split = self.requests[0].split
        self.kind = Kind.PULL
        self.next_payload: dist.Work | None = None
        self.next = self._post(payload=True)

    @property
    def request(self) -> Message:
        """The buffer the request posted last lands in."""
        return self.requests[self.slot]

    def _post(self, payload: bool) -> dist.Work:
        """Post the next request's receive. ``payload``: the last request's payload was handed
        out, so its buffer is in use until the next ``receive``: post in the other one (and,
        split, post the payload's own receive again; an unused one stays posted where it is)."""
        if payload:
            self.slot = 1 - self.slot
        if not self.split:
            return self.pair.recv(self.request.raw, 0)
        if payload:
            self.next_payload = self.pair.recv(self.request.payload, 1)
        # the header is read at once in receive(): any buffer will do, this one is free
        return self.pair.recv(self.request.header_only, 0)

    def receive(self) -> tuple[Kind, int, torch.Tensor | None]:
        """The next request: (kind, arg, payload or None). Blocks up to the pair timeout.
        The payload is valid until the next ``receive``, after ``respond`` too."""
        self.next.wait()
        header = self.request.header_np
        kind, arg = Kind(int(header[0])), int(header[1])
        self.kind = kind
        if kind not in WITH_PAYLOAD:
            return kind, arg, None
        if self.next_payload is not None:
            self.next_payload.wait()
        return kind, arg, self.request.payload

    def respond(
        self, kind: Kind, version: int, staleness: int = 0, payload: torch.Tensor | None = None
    ) -> None:
        """Reply; ``payload`` may be ``self.reply.payload`` already filled (no copy then)."""
        buf = self.reply.pack(version, staleness, payload)
        self.next = self._post(payload=self.kind in WITH_PAYLOAD)
        self.pair.send(buf, 2).wait()


def echo_main(
    host: str, port: int, prefix: str, n_in: int, n_out: int, rounds: int, timeout: float
) -> None:
    """The far end of a raw pair (rank 1): ``rounds`` times, receive ``n_in`` floats and answer
    with ``n_out``. The raw-gloo baseline of benchmarks/parallel_speed.py (the same bytes as a
    pull or a push) and the peer of the transport tests. Like the protocol's ends it posts the
    next receive before it answers, so that the baseline is raw gloo used as well as the
    protocol uses it (a message that finds no receive posted can wait for gloo's rendezvous)."""
    torch.set_num_threads(1)
    store = connect_store(host, port, timeout)
    pair = Pair(store, prefix, 1, timeout)
    inbox, outbox = torch.zeros(n_in), torch.zeros(n_out)
    incoming = pair.recv(inbox) if rounds > 0 else None
    for r in range(rounds):
        incoming.wait()
        outbox[: min(n_in, n_out)] = inbox[: min(n_in, n_out)]
        if r + 1 < rounds:  # the next message comes only after this answer: inbox is free
            incoming = pair.recv(inbox)
        pair.send(outbox).wait()
