"""The behaviour ravine.parallel's transport relies on, pinned on this torch (gloo + TCPStore)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
import torch

from ravine.parallel.runtime import Children, atomic_save, load_checkpoint
from ravine.parallel.transport import (
    SPLIT_BYTES,
    Kind,
    Pair,
    ShardChannel,
    ShardEndpoint,
    TransportError,
    connect_store,
    echo_main,
    wait_change,
    wait_key,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def store():
    return connect_store("127.0.0.1", 0, 10.0, master=True)


def _echo(pair: Pair, value: float, n: int = 8) -> torch.Tensor:
    out, back = torch.full((n,), value), torch.zeros(n)
    pair.send(out).wait()
    pair.recv(back).wait()
    return back


@pytest.mark.timeout(120)
def test_a_killed_peer_errs_its_pair_at_once_and_the_other_pairs_go_on(store):
    with Children() as children:
        peers = [
            children.start(echo_main, "127.0.0.1", store.port, f"p{i}/", 8, 8, 100, 60.0, name="e")
            for i in range(2)
        ]
        # the pairs' timeout is long: an error within seconds can only be the dead peer's
        pairs = [Pair(store, f"p{i}/", 0, 60.0) for i in range(2)]
        for i, pair in enumerate(pairs):
            assert torch.equal(_echo(pair, i + 1.0), torch.full((8,), i + 1.0))
        os.kill(peers[1].pid, signal.SIGKILL)
        peers[1].join(10)
        start = time.monotonic()
        with pytest.raises(RuntimeError):
            _echo(pairs[1], 5.0)
        assert time.monotonic() - start < 10.0
        assert torch.equal(_echo(pairs[0], 7.0), torch.full((8,), 7.0))  # still served
        # a replacement joins under a new prefix
        children.start(echo_main, "127.0.0.1", store.port, "p1.1/", 8, 8, 1, 60.0, name="e")
        assert torch.equal(_echo(Pair(store, "p1.1/", 0, 60.0), 9.0), torch.full((8,), 9.0))
        peers[0].kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "n, split",
    [(5, False), (SPLIT_BYTES // 4 + 1, True)],
    ids=["packed", "payload-split"],
)
def test_shard_protocol_round_trips_one_message_each_way_unless_split(store, n, split):
    """One message each way; a payload past SPLIT_BYTES travels as its own message instead of
    being copied into the request (and a pull in between leaves its receive posted)."""
    results = {}

    def shard_side() -> None:
        # its own client: a TCPStore client is one socket, and the rendezvous waits on it
        own = connect_store("127.0.0.1", store.port, 10.0)
        end = ShardEndpoint(Pair(own, "proto/", 0, 20.0), n)
        for _ in range(3):
            kind, arg, payload = end.receive()
            results[kind] = (arg, None if payload is None else payload.clone())
            if kind is Kind.PULL:
                end.respond(kind, 7, 0, torch.arange(n, dtype=torch.float32))
            elif kind is Kind.PUSH:
                end.respond(kind, 8, 3)
            else:
                end.respond(kind, 9, 0, payload * 2)

    thread = threading.Thread(target=shard_side, daemon=True)
    thread.start()
    channel = ShardChannel(Pair(store, "proto/", 1, 20.0), n)
    sends = []
    send = channel.pair.send
    channel.pair.send = lambda tensor, tag=0: (
        sends.append(tensor.numel() * tensor.element_size()) or send(tensor, tag)
    )
    channel.start(Kind.PULL)
    version, staleness, x = channel.finish()
    assert (version, staleness) == (7, 0) and torch.equal(x, torch.arange(n, dtype=torch.float32))
    channel.start(Kind.PUSH, 6, torch.ones(n))
    assert channel.finish()[:2] == (8, 3)
    channel.start(Kind.ELASTIC, 0, torch.full((n,), 1.5))
    assert torch.equal(channel.finish()[2], torch.full((n,), 3.0))
    thread.join(10)
    if split:
        assert sends == [16, 16, 4 * n, 16, 4 * n]
    else:
        assert sends == [16, 16 + 4 * n, 16 + 4 * n]  # a request is one message: header + payload
    assert results[Kind.PUSH][0] == 6 and torch.equal(results[Kind.PUSH][1], torch.ones(n))
    sent = channel.pair.bytes
    assert sent["push:sent"] == 16 + 4 * n and sent["push:received"] == 16
    assert sent["pull:sent"] == 16 and sent["pull:received"] == 16 + 4 * n


@pytest.mark.timeout(60)
def test_a_shorter_message_lands_in_the_first_bytes_of_a_longer_posted_receive(store):
    """The protocol posts one receive of the longest request and relies on this gloo behaviour;
    the message after a short one must arrive whole."""

    def sender() -> None:
        own = connect_store("127.0.0.1", store.port, 10.0)
        pair = Pair(own, "short/", 1, 20.0)
        pair.send(torch.arange(1.0, 5.0)).wait()
        pair.send(torch.arange(1.0, 17.0)).wait()

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    pair = Pair(store, "short/", 0, 20.0)
    inbox = torch.full((16,), -1.0)
    pair.recv(inbox).wait()
    assert torch.equal(inbox[:4], torch.arange(1.0, 5.0))
    assert torch.equal(inbox[4:], torch.full((12,), -1.0))  # the rest untouched
    pair.recv(inbox).wait()
    assert torch.equal(inbox, torch.arange(1.0, 17.0))
    thread.join(10)


@pytest.mark.timeout(60)
def test_a_request_of_the_wrong_length_or_kind_is_refused_before_it_is_sent(store):
    def shard_side() -> None:
        own = connect_store("127.0.0.1", store.port, 10.0)
        ShardEndpoint(Pair(own, "bad/", 0, 20.0), 4).receive()  # the BYE at the end

    thread = threading.Thread(target=shard_side, daemon=True)
    thread.start()
    channel = ShardChannel(Pair(store, "bad/", 1, 20.0), 4)
    with pytest.raises(ValueError, match=re.escape("5 torch.float32 (expected 4 torch.float32")):
        channel.start(Kind.PUSH, 0, torch.ones(5))
    with pytest.raises(ValueError, match=re.escape("4 torch.float64 (expected 4 torch.float32")):
        channel.start(Kind.PUSH, 0, torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="PULL with a payload"):
        channel.start(Kind.PULL, 0, torch.ones(4))
    with pytest.raises(ValueError, match="PUSH without a payload"):
        channel.start(Kind.PUSH, 0)
    assert channel.pair.bytes == {}  # nothing went out
    channel.start(Kind.BYE)
    channel.finish()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.timeout(30)
def test_store_waits_are_bounded_and_name_what_they_waited_for(store):
    start = time.monotonic()
    with pytest.raises(TransportError, match="waiting for shard 3 to accept workers"):
        wait_key(store, "shard/3/ready", 0.3, "shard 3 to accept workers")
    store.set("k", "a")
    with pytest.raises(TransportError, match="new incarnation"):
        wait_change(store, "k", b"a", 0.3, "new incarnation")
    assert time.monotonic() - start < 5
    store.set("k", "b")
    assert wait_change(store, "k", b"a", 1.0, "x") == b"b"


@pytest.mark.timeout(60)
def test_a_pair_whose_peer_never_comes_fails_within_its_timeout(store):
    start = time.monotonic()
    with pytest.raises(TransportError, match="peer did not join within 1 s"):
        Pair(store, "nobody/", 0, 1.0)
    assert time.monotonic() - start < 20


@pytest.mark.timeout(60)
def test_unreachable_store_fails_with_its_address():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransportError, match=f"127.0.0.1:{port} within 1 s"):
        connect_store("127.0.0.1", port, 1.0)


def test_checkpoint_is_written_atomically_and_read_with_weights_only(tmp_path):
    path = tmp_path / "shard0.pt"
    atomic_save({"param": torch.ones(3), "version": 5}, path)
    atomic_save({"param": torch.zeros(3), "version": 6}, path)
    state = load_checkpoint(path)
    assert state["version"] == 6 and torch.equal(state["param"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["shard0.pt"]  # no temporary left behind


@pytest.mark.timeout(90)
@pytest.mark.parametrize("n_features", [7, SPLIT_BYTES // 4 + 9], ids=["packed", "payload-split"])
def test_a_shard_replies_to_a_push_before_its_step_and_nothing_sees_it_in_between(
    store, tmp_path, n_features
):
    """Pushes are asynchronous (server.ShardServer.push_then_apply): the reply comes while the
    step is held back here. Meanwhile the pushing worker's next push lands in the other receive
    buffer (the held step still reads its own gradient), and another worker's pull and a
    checkpoint wait for the step: each sees the update with the version the reply gave."""
    from ravine.parallel import Config
    from ravine.parallel.algorithms import Pull, Push
    from ravine.parallel.runtime import Recorder, RunSpec
    from ravine.parallel.server import ShardServer, checkpoint_path
    from ravine.parallel.worker import ServerClient

    config = Config(algo="downpour", workers=2, shards=1, n_features=n_features, n_samples=100,
                    server_optimizer="sgd", lr=0.5)  # fmt: skip
    n = n_features + 1
    spec = RunSpec("127.0.0.1", store.port, str(tmp_path), time.time(), pair_timeout=30.0)
    server = ShardServer(config, spec, 0, 0)
    stepping, release = threading.Event(), threading.Event()
    push = server.shard.push

    def held_back(grad: torch.Tensor, base: int) -> int:
        stepping.set()
        assert release.wait(30)
        return push(grad, base)

    server.shard.push = held_back
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    clients = [
        ServerClient(config, spec, spec.store(), w, 0, Recorder("worker", w, 0, 0.0))
        for w in range(2)
    ]
    g1, g2 = torch.arange(n, dtype=torch.float32), torch.full((n,), 3.0)
    after = {1: -0.5 * g1, 2: -0.5 * g1 - 0.5 * g2}  # sgd, lr 0.5, from zeros: exact
    assert clients[0].serve(Push(g1, [0])) == [0]  # the reply, while the step is held
    assert stepping.wait(10)
    assert torch.equal(server.shard.param.detach(), torch.zeros(n))  # not applied yet
    # requests sent after the reply, in flight while the step is held
    clients[0].channels[0].start(Kind.PUSH_PULL, 1, g2)
    clients[1].channels[0].start(Kind.PULL)
    saving = threading.Thread(target=server.checkpoint, daemon=True)
    saving.start()
    time.sleep(0.3)
    assert saving.is_alive()
    assert not any(c.channels[0].works[0].is_completed() for c in clients)  # replies held
    stepping.clear()
    release.set()
    version, staleness, x = clients[0].channels[0].finish()
    assert (version, staleness) == (2, 0) and torch.equal(x, after[2])
    version, _, x = clients[1].channels[0].finish()  # served before or after that push-pull
    assert version in after and torch.equal(x, after[version])
    saving.join(10)
    saved = load_checkpoint(checkpoint_path(str(tmp_path), 0))
    assert saved["version"] in after and torch.equal(saved["param"], after[saved["version"]])
    # served after both steps: staleness 2 against version 0, then a pull sees version 3
    assert clients[1].serve(Push(g2, [0])) == [2]
    x, versions = clients[1].serve(Pull())
    assert versions == [3] and torch.equal(x, after[2] - 0.5 * g2)
    for client in clients:
        client.bye()
    spec.store().set("stop", "1")
    serving.join(20)
    assert not serving.is_alive() and not server.rec.faults
