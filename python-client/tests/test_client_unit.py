"""Client behaviour against a scriptable fake sidecar: wire format, errors, timeouts."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
import zmq
from fake_sidecar import FakeSidecar

from aft_client import (
    AddressInUse,
    AnnaIpcClient,
    Client,
    CommitOutcomeUnknown,
    HandoffToken,
    LWWPairLattice,
    LWWValue,
    ProtocolError,
    RequestFailed,
    SidecarUnavailable,
    TransactionAborted,
    TransactionStateError,
    ValueTooLarge,
)
from aft_client._proto import aft_pb2, anna_pb2


@pytest.fixture
def fake(ipc_dir: str) -> Iterator[FakeSidecar]:
    with FakeSidecar(ipc_dir) as sidecar:
        yield sidecar


@pytest.fixture
def client(fake: FakeSidecar) -> Iterator[Client]:
    c = Client(fake.ipc_dir, thread_id=3, timeout=1.0, txn_timeout=1.0)
    yield c
    c.close()


def test_plain_get_put_round_trip(client: Client, fake: FakeSidecar) -> None:
    assert client.get("missing") == {"missing": None}
    assert client.put("k", LWWValue(7, b"v")) is True
    assert client.get(["k", "missing"]) == {"k": LWWValue(7, b"v"), "missing": None}
    # Wire: plain requests carry no TRANSACTION_ID tuple; the reply address is get_3/put_3.
    req = anna_pb2.KeyRequest.FromString(fake.requests_on("put")[-1])
    assert [t.key for t in req.tuples] == ["k"]
    assert req.tuples[0].lattice_type == anna_pb2.LWW
    assert anna_pb2.LWWValue.FromString(req.tuples[0].payload).value == b"v"
    assert req.response_address == f"ipc://{fake.ipc_dir}/put_3"
    req = anna_pb2.KeyRequest.FromString(fake.requests_on("get")[-1])
    assert req.response_address == f"ipc://{fake.ipc_dir}/get_3"
    assert req.request_id


def test_put_list_form_and_lattice_duck_typing(client: Client) -> None:
    class AnnaLattice:  # what Anna's LWWPairLattice looks like
        def __init__(self, ts: int, val: bytes) -> None:
            self.ts, self.val = ts, val

        def reveal(self) -> bytes:
            return self.val

    result = client.put(["a", "b"], [AnnaLattice(1, b"x"), LWWPairLattice(2, b"y")])
    assert result == {"a": True, "b": True}
    got = client.get(["a", "b"])
    assert got["a"] is not None and got["a"].ts == 1 and got["a"].reveal() == b"x"
    assert got["b"] == LWWValue(2, b"y")
    with pytest.raises(TypeError):
        client.put("c", "not bytes")
    with pytest.raises(ValueError):
        client.put(["a", "b"], [b"1"])


def test_transaction_wire_format(client: Client, fake: FakeSidecar) -> None:
    txn = client.transaction()
    start_body = fake.requests_on("start")[-1]
    assert start_body == f"ipc://{fake.ipc_dir}/start_3".encode()
    txn.put("x", b"1")
    assert txn.get("x") == b"1"
    assert txn.get_many(["x", "y"]) == {"x": b"1", "y": None}
    for name in ("get", "put"):
        req = anna_pb2.KeyRequest.FromString(fake.requests_on(name)[-1])
        assert req.tuples[-1].key == "TRANSACTION_ID"
        assert req.tuples[-1].payload == txn.tid.encode()
    txn.commit()
    commit = aft_pb2.CommitRequest.FromString(fake.requests_on("commit")[-1])
    assert commit.tid == txn.tid
    assert commit.responseAddress == f"ipc://{fake.ipc_dir}/commit_3"
    assert list(commit.addresses) == []  # only this node took part
    assert txn.status == "committed"
    assert client.get("x")["x"] is not None


def test_abort_wire_format_and_context_manager(client: Client, fake: FakeSidecar) -> None:
    with pytest.raises(KeyError):
        with client.transaction() as txn:
            txn.put("gone", b"1")
            raise KeyError("boom")
    assert txn.status == "aborted"
    assert fake.requests_on("abort")[-1] == f"{txn.tid}~ipc://{fake.ipc_dir}/abort_3".encode()
    assert client.get("gone") == {"gone": None}
    with pytest.raises(TransactionAborted):
        txn.put("gone", b"2")
    with client.transaction() as ok:
        ok.put("kept", b"1")
    assert ok.status == "committed"
    with pytest.raises(TransactionStateError):
        ok.abort()
    with pytest.raises(TransactionStateError):
        ok.get("kept")


def test_commit_not_committed_raises_transaction_aborted(client: Client, fake: FakeSidecar) -> None:
    txn = client.transaction()
    fake.txns[txn.tid].status = aft_pb2.ABORTED
    with pytest.raises(TransactionAborted) as info:
        txn.commit()
    assert info.value.tid == txn.tid
    assert "ABORTED" in str(info.value)
    assert txn.status == "aborted"


def test_commit_with_unknown_outcome_raises_and_can_be_retried(
    client: Client, fake: FakeSidecar
) -> None:
    txn = client.transaction()
    txn.put("maybe", b"1")
    fake.txns[txn.tid].outcome_unknown = True
    with pytest.raises(CommitOutcomeUnknown) as info:
        txn.commit()
    assert info.value.tid == txn.tid
    assert txn.status == "running", "neither committed nor aborted yet"
    fake.txns[txn.tid].outcome_unknown = False
    txn.commit()
    assert txn.status == "committed"


def test_handoff_resume_sends_continue(fake: FakeSidecar) -> None:
    up = Client(fake.ipc_dir, thread_id=10, timeout=1.0)
    down = Client(fake.ipc_dir, thread_id=11, timeout=1.0)
    try:
        txn = up.transaction()
        txn.put("a", b"1")
        token = txn.handoff()
        assert token == HandoffToken(txn.tid, "127.0.0.1", ("127.0.0.1",))
        assert HandoffToken.decode(token.encode()) == token
        assert pickle.loads(pickle.dumps(token)) == token
        resumed = down.resume(token.encode())
        meta = aft_pb2.MetadataRequest.FromString(fake.requests_on("continue")[-1])
        assert meta.tid == txn.tid
        assert meta.address == "127.0.0.1"
        assert meta.responseAddress == f"ipc://{fake.ipc_dir}/continue_11"
        assert resumed.tid == txn.tid
        # A token names the upstream node; the downstream's own hand-off names its node.
        fake.node_address = "127.0.0.1"
        assert resumed.handoff().address == "127.0.0.1"
        # Fan-in: tokens of one transaction from two nodes -> one continue per node.
        before = len(fake.requests_on("continue"))
        down.resume(token, HandoffToken(txn.tid, "10.9.9.9", ("10.9.9.9",)))
        assert len(fake.requests_on("continue")) == before + 2
        with pytest.raises(ValueError):
            down.resume(token, HandoffToken("other", "127.0.0.1"))
        joined = down.resume(token, HandoffToken(txn.tid, "10.9.9.9", ("10.9.9.9",)))
        joined.commit()
        commit = aft_pb2.CommitRequest.FromString(fake.requests_on("commit")[-1])
        assert list(commit.addresses) == ["10.9.9.9"]  # the others, not this node
    finally:
        up.close()
        down.close()


def test_handed_off_transaction_is_not_committed_by_with(client: Client, fake: FakeSidecar) -> None:
    with client.transaction() as txn:
        txn.put("a", b"1")
        txn.handoff()
    assert txn.status == "running"
    assert fake.requests_on("commit") == []


def test_no_sidecar_fails_fast(ipc_dir: str) -> None:
    c = Client(ipc_dir, thread_id=0, timeout=5.0)
    started = time.monotonic()
    with pytest.raises(SidecarUnavailable, match="does not exist"):
        c.get("k")
    with pytest.raises(SidecarUnavailable):
        c.transaction()
    assert time.monotonic() - started < 2.0
    c.close()


def test_stale_socket_file_times_out(ipc_dir: str) -> None:
    # A socket file nobody listens on (a sidecar killed with SIGKILL leaves these).
    import socket

    for name in ("get", "start", "commit"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(ipc_dir, name))
        s.close()
    c = Client(ipc_dir, thread_id=0, timeout=0.3, txn_timeout=0.3)
    for call in (lambda: c.get("k"), c.transaction):
        started = time.monotonic()
        with pytest.raises(SidecarUnavailable):
            call()
        assert 0.2 < time.monotonic() - started < 2.0
    c.close()


def test_silent_sidecar_times_out_every_call(fake: FakeSidecar) -> None:
    client = Client(fake.ipc_dir, thread_id=12, timeout=0.25, txn_timeout=0.25)
    txn = client.transaction()
    fake.hook = lambda name, body: []
    calls = {
        "get": lambda: client.get("k"),
        "put": lambda: client.put("k", b"v"),
        "start": client.transaction,
        "txn get": lambda: txn.get("k"),
        "txn put": lambda: txn.put("k", b"v"),
        "commit": txn.commit,
        "abort": txn.abort,
        "continue": lambda: client.resume(HandoffToken(txn.tid, "127.0.0.1")),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(SidecarUnavailable):
            call()
        assert 0.2 < time.monotonic() - started < 2.0, name
    client.close()


def test_late_replies_are_not_taken_for_the_next_request(client: Client, fake: FakeSidecar) -> None:
    client.put("k", LWWValue(1, b"new"))
    held: list[tuple[str, bytes]] = []
    real_hook = None

    def hold_first_get(name: str, body: bytes) -> list[tuple[str, bytes]] | None:
        if name == "get" and not held:
            req = anna_pb2.KeyRequest.FromString(body)
            resp = anna_pb2.KeyResponse(response_id=req.request_id)
            resp.tuples.add(
                key="k", lattice_type=anna_pb2.LWW, payload=LWWValue(0, b"stale").serialize()
            )
            held.append((req.response_address, resp.SerializeToString()))
            return []  # too late: sent with the next request's answer
        if name == "get" and held:
            return [held.pop(), *fake._handle(name, body)]
        return real_hook

    fake.hook = hold_first_get
    with pytest.raises(SidecarUnavailable):
        client.get("k")
    assert client.get("k") == {"k": LWWValue(1, b"new")}


def test_stale_reply_in_queue_is_dropped_before_sending(client: Client, fake: FakeSidecar) -> None:
    # A reply that arrives after its request timed out sits in the reply socket; the next
    # request must not read it (commit/abort check the transaction id too).
    txn = client.transaction()
    other = client.transaction()
    stale = aft_pb2.TransactionTag(id=other.tid, status=aft_pb2.ABORTED).SerializeToString()

    def late_then_real(name: str, body: bytes) -> list[tuple[str, bytes]] | None:
        if name == "commit":
            req = aft_pb2.CommitRequest.FromString(body)
            return [(req.responseAddress, stale), *fake._handle(name, body)]
        return None

    fake.hook = late_then_real
    txn.put("a", b"1")
    txn.commit()  # the ABORTED tag for `other` is ignored
    assert txn.status == "committed"


def test_malformed_replies_raise_protocol_error(client: Client, fake: FakeSidecar) -> None:
    def garbage(name: str, body: bytes) -> list[tuple[str, bytes]] | None:
        if name in ("get", "put"):
            address = anna_pb2.KeyRequest.FromString(body).response_address
        elif name == "start":
            address = body.decode()
        else:
            return None
        return [(address, b"\xff\xff\xff not protobuf")]

    fake.hook = garbage
    with pytest.raises(ProtocolError):
        client.get("k")
    with pytest.raises(ProtocolError):
        client.put("k", b"v")
    with pytest.raises(ProtocolError):
        client.transaction()


def test_get_errors_and_lattices(client: Client, fake: FakeSidecar) -> None:
    def reply(tuples: list[anna_pb2.KeyTuple]):  # type: ignore[no-untyped-def]
        def hook(name: str, body: bytes) -> list[tuple[str, bytes]] | None:
            req = anna_pb2.KeyRequest.FromString(body)
            resp = anna_pb2.KeyResponse(response_id=req.request_id, tuples=tuples)
            return [(req.response_address, resp.SerializeToString())]

        return hook

    # KEY_DNE and NONE lattice both read as None; unknown keys in the reply are ignored.
    fake.hook = reply(
        [
            anna_pb2.KeyTuple(key="a", error=anna_pb2.KEY_DNE),
            anna_pb2.KeyTuple(key="b", lattice_type=anna_pb2.NONE),
            anna_pb2.KeyTuple(
                key="zzz", lattice_type=anna_pb2.LWW, payload=LWWValue(1, b"").serialize()
            ),
        ]
    )
    assert client.get(["a", "b", "c"]) == {"a": None, "b": None, "c": None}
    fake.hook = reply([anna_pb2.KeyTuple(key="a", error=anna_pb2.TIMEOUT)])
    with pytest.raises(RequestFailed) as info:
        client.get(["a", "b"])
    assert info.value.errors == {"a": "TIMEOUT"}
    fake.hook = reply([anna_pb2.KeyTuple(key="a", lattice_type=anna_pb2.SET, payload=b"")])
    with pytest.raises(ProtocolError, match="SET"):
        client.get("a")


def test_put_split_over_several_responses(client: Client, fake: FakeSidecar) -> None:
    def split(name: str, body: bytes) -> list[tuple[str, bytes]] | None:
        if name != "put":
            return None
        req = anna_pb2.KeyRequest.FromString(body)
        frames = []
        for tup in req.tuples:
            resp = anna_pb2.KeyResponse(response_id=req.request_id)
            resp.tuples.add(key=tup.key, error=anna_pb2.NO_ERROR)
            frames.append((req.response_address, resp.SerializeToString()))
        return frames

    fake.hook = split
    assert client.put(["a", "b", "c"], [b"1", b"2", b"3"]) == {"a": True, "b": True, "c": True}


def test_plain_put_rejection_returns_false(client: Client, fake: FakeSidecar) -> None:
    # Cloudburst's return shape: False for a key the sidecar did not store.
    def storage_down(name: str, body: bytes) -> list[tuple[str, bytes]] | None:
        if name != "put":
            return None
        req = anna_pb2.KeyRequest.FromString(body)
        resp = anna_pb2.KeyResponse(response_id=req.request_id, error=anna_pb2.TIMEOUT)
        for tup in req.tuples:
            resp.tuples.add(key=tup.key, error=anna_pb2.TIMEOUT, payload=b"storage is down")
        return [(req.response_address, resp.SerializeToString())]

    fake.hook = storage_down
    assert client.put("k", b"x") is False
    assert client.put(["a", "b"], [b"1", b"2"]) == {"a": False, "b": False}
    with pytest.raises(RequestFailed, match="storage is down"):
        client.transaction().put("k", b"v")  # in a transaction it raises


def test_sidecar_size_limit_raises_value_too_large(client: Client, fake: FakeSidecar) -> None:
    fake.max_value = 20  # the sidecar's reason names its limit
    with pytest.raises(ValueTooLarge) as info:
        client.put("big", b"x" * 30)
    assert info.value.limit == 20 and info.value.sizes == {"big": 30}
    assert "exceeds the limit" in str(info.value)
    txn = client.transaction()
    with pytest.raises(ValueTooLarge):
        txn.put("big", b"x" * 30)
    assert txn.status == "running"  # a refused value does not end the transaction
    txn.put("small", b"x")


def test_failed_transaction_read_raises_with_reason(client: Client, fake: FakeSidecar) -> None:
    txn = client.transaction()
    fake.txns[txn.tid].status = aft_pb2.ABORTED
    with pytest.raises(TransactionAborted, match=txn.tid):
        txn.get("k")
    assert txn.status == "aborted"
    # Plain API with an unknown id: the same (Cloudburst's client would say None).
    with pytest.raises(TransactionAborted):
        client.get("k", txn_id="nope")


def test_put_rejection_in_transaction_raises_transaction_aborted(
    client: Client, fake: FakeSidecar
) -> None:
    txn = client.transaction()
    fake.txns[txn.tid].status = aft_pb2.ABORTED  # the sidecar failed it
    with pytest.raises(TransactionAborted) as info:
        txn.put("k", b"v")
    assert "has ended" in str(info.value)
    assert txn.status == "aborted"


def test_client_side_size_cap(fake: FakeSidecar) -> None:
    c = Client(fake.ipc_dir, thread_id=4, timeout=1.0, max_value_size=4)
    with pytest.raises(ValueTooLarge) as info:
        c.put("k", b"12345")
    assert info.value.sizes == {"k": 5}
    assert fake.requests_on("put") == []
    c.close()


def test_threads_get_distinct_reply_addresses(fake: FakeSidecar) -> None:
    c = Client(fake.ipc_dir, thread_id=5, timeout=2.0)
    suffixes: list[str] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            suffixes.append(c.reply_suffix)
            for j in range(20):
                with c.transaction() as txn:
                    txn.put(f"t{i}", str(j).encode())
                    assert txn.get(f"t{i}") == str(j).encode()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(suffixes) == ["5", "5.1", "5.2", "5.3"] or len(set(suffixes)) == 4
    assert c.get("t0")["t0"] == LWWValue(c.get("t0")["t0"].ts, b"19")  # type: ignore[union-attr]
    c.close()


def test_same_thread_id_in_one_process_gets_next_suffix(fake: FakeSidecar) -> None:
    a = Client(fake.ipc_dir, thread_id=6)
    b = Client(fake.ipc_dir, thread_id=6)
    assert a.reply_suffix == "6"
    assert b.reply_suffix == "6.1"
    a.put("k", b"1")
    b.put("k", b"2")
    a.close()
    b.close()
    c = Client(fake.ipc_dir, thread_id=6)  # freed on close
    assert c.reply_suffix == "6"
    c.close()


def test_thread_id_held_by_another_process_is_refused(fake: FakeSidecar) -> None:
    # Simulate another process: a foreign ZeroMQ socket bound at get_7.
    ctx = zmq.Context()
    foreign = ctx.socket(zmq.PULL)
    foreign.bind(f"ipc://{fake.ipc_dir}/get_7")
    try:
        c = Client(fake.ipc_dir, thread_id=7)
        with pytest.raises(AddressInUse, match="thread_id"):
            c.get("k")
        c.close()
    finally:
        foreign.close(0)
        ctx.term()


def test_thread_id_none_derives_from_pid(fake: FakeSidecar) -> None:
    c = Client(fake.ipc_dir, thread_id=None)
    assert c.reply_suffix == f"p{os.getpid()}"
    c.put("k", b"v")
    c.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_uses_fresh_sockets(fake: FakeSidecar) -> None:
    c = Client(fake.ipc_dir, thread_id=None, timeout=2.0)
    c.put("parent", b"1")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 1
        try:
            ok = c.get("parent")["parent"] == LWWValue(c.get("parent")["parent"].ts, b"1")  # type: ignore[union-attr]
            ok = ok and c.reply_suffix == f"p{os.getpid()}" and c.put("child", b"2")
            status = 0 if ok else 2
        finally:
            os.write(w, bytes([status]))
            os._exit(0)
    os.close(w)
    status = os.read(r, 1)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    assert c.get("child")["child"] is not None  # the parent's sockets still work
    c.close()


def test_closed_client_refuses_calls(fake: FakeSidecar) -> None:
    c = Client(fake.ipc_dir, thread_id=8)
    c.get("k")
    c.close()
    c.close()
    with pytest.raises(Exception, match="closed"):
        c.get("k")
    assert not os.path.exists(os.path.join(fake.ipc_dir, "get_8"))  # socket file removed


def test_anna_ipc_client_compat(fake: FakeSidecar) -> None:
    class Schedule:
        locations = {"f1": "10.0.0.2:5000", "f2": "127.0.0.1:5001", "f3": "10.0.0.2:5002"}  # noqa: RUF012

    c = AnnaIpcClient(9, ipc_dir=fake.ipc_dir, timeout=1.0)
    tag = c.start()
    assert tag.status == aft_pb2.RUNNING and tag.address == "127.0.0.1"
    assert c.put("k", LWWPairLattice(5, b"v"), txn_id=tag.id) is True
    assert c.get("k", txn_id=tag.id)["k"] == LWWValue(5, b"v")
    assert c.continue_txn(tag.id, "127.0.0.1", "127.0.0.1").id == tag.id
    c.commit(tag, "127.0.0.1", Schedule())
    commit = aft_pb2.CommitRequest.FromString(fake.requests_on("commit")[-1])
    assert list(commit.addresses) == ["10.0.0.2"]
    tag2 = c.start()
    c.abort(tag2)
    with pytest.raises(TransactionAborted):
        c.commit(tag2)
    c.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Client("/tmp", thread_id=-1)
    with pytest.raises(ValueError):
        Client("/tmp", thread_id="a/b")
    with pytest.raises(ValueError):
        Client("/tmp", timeout=0)
    with pytest.raises(ValueError):
        HandoffToken.decode("{not json")
    with pytest.raises(ValueError):
        HandoffToken("", "127.0.0.1")
    c = Client("/tmp/" + "x" * 120, thread_id=0)
    with pytest.raises(ValueError, match="longer"):
        c.get("k")
    with pytest.raises(ValueError):
        c.get("TRANSACTION_ID")


def test_ipc_client_works_without_grpcio_and_grpc_asks_for_it() -> None:
    """grpcio is an extra: importing and using the IPC client never needs it."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["grpc"] = None          # as if grpcio were not installed
        import aft_client
        from aft_client import Client
        Client("/tmp", thread_id=0).close()
        try:
            Client(grpc="127.0.0.1:1")
        except ImportError as exc:
            assert "aft-client[grpc]" in str(exc), exc
            print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
