"""Every client call against the real ``aft-sidecar`` binary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from conftest import CLIENT_ROOT, Sidecar

from aft_client import (
    AnnaIpcClient,
    Client,
    HandoffToken,
    LWWValue,
    SidecarUnavailable,
    TransactionAborted,
    TransactionStateError,
    ValueTooLarge,
)
from aft_client._proto import aft_pb2

SIXTEEN_MIB = 16 * 1024 * 1024


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(sidecar: Sidecar, fresh_thread_id: int) -> Iterator[Client]:
    c = Client(sidecar.ipc_dir, thread_id=fresh_thread_id, timeout=5.0, txn_timeout=10.0)
    yield c
    c.close()


def test_plain_put_and_get(client: Client) -> None:
    k1, k2, missing = unique("plain"), unique("plain"), unique("missing")
    assert client.get(missing) == {missing: None}
    assert client.put(k1, LWWValue(42, b"\x00binary\xff")) is True
    assert client.put([k2], [LWWValue(43, b"")]) == {k2: True}
    got = client.get([k1, k2, missing])
    # Stored and returned byte for byte: the writer's timestamp and value.
    assert got == {k1: LWWValue(42, b"\x00binary\xff"), k2: LWWValue(43, b""), missing: None}


def test_transaction_commit_read_your_writes_and_visibility(client: Client) -> None:
    x, y = unique("x"), unique("y")
    txn = client.transaction()
    assert txn.tid
    txn.put(x, b"1")
    txn.put_many({y: b"2"})
    assert txn.get(x) == b"1"  # read your writes
    assert txn.get_many([x, y]) == {x: b"1", y: b"2"}
    stamped = LWWValue(12345, b"stamped")
    txn.put(x, stamped)  # an LWWValue is stored as given
    assert txn.get_value(x) == stamped
    txn.put(x, b"1")
    with client.transaction() as other:  # not visible before the commit
        assert other.get_many([x, y]) == {x: None, y: None}
    assert client.get([x, y]) == {x: None, y: None}
    txn.commit()
    assert txn.status == "committed"
    with client.transaction() as after:
        assert after.get_many([x, y]) == {x: b"1", y: b"2"}
    plain = client.get([x, y])  # published to the plain keys for outside readers
    assert plain[x] is not None and plain[x].value == b"1"
    assert plain[y] is not None and plain[y].value == b"2"


def test_empty_value_is_not_missing(client: Client) -> None:
    k = unique("empty")
    with client.transaction() as txn:
        txn.put(k, b"")
        assert txn.get(k) == b""
    with client.transaction() as txn:
        assert txn.get(k) == b""


def test_abort_discards_and_is_idempotent(client: Client) -> None:
    k = unique("aborted")
    txn = client.transaction()
    txn.put(k, b"never")
    txn.abort()
    txn.abort()  # idempotent
    assert txn.status == "aborted"
    with pytest.raises(TransactionAborted):
        txn.get(k)
    with client.transaction() as check:
        assert check.get(k) is None
    assert client.get(k) == {k: None}


def test_context_manager_commits_or_aborts(client: Client) -> None:
    good, bad = unique("good"), unique("bad")
    with client.transaction() as txn:
        txn.put(good, b"yes")
    assert txn.status == "committed"
    with pytest.raises(RuntimeError):
        with client.transaction() as failed:
            failed.put(bad, b"no")
            raise RuntimeError("function failed")
    assert failed.status == "aborted"
    with client.transaction() as check:
        assert check.get_many([good, bad]) == {good: b"yes", bad: None}


def test_read_atomicity_and_repeatable_reads(client: Client, sidecar: Sidecar) -> None:
    x, y = unique("ra-x"), unique("ra-y")
    reader = client.transaction()
    assert reader.get(x) is None  # reads the initial state of x
    with Client(sidecar.ipc_dir, thread_id=None) as other, other.transaction() as writer:
        writer.put_many({x: b"new-x", y: b"new-y"})
    # writer also wrote x, which the reader saw older: y must not come from writer.
    assert reader.get(y) is None
    assert reader.get(x) is None  # repeatable
    reader.commit()
    with client.transaction() as fresh:
        assert fresh.get_many([x, y]) == {x: b"new-x", y: b"new-y"}


def test_commit_of_unknown_transaction_is_aborted(sidecar: Sidecar, fresh_thread_id: int) -> None:
    with AnnaIpcClient(fresh_thread_id, ipc_dir=sidecar.ipc_dir, timeout=5.0) as c:
        with pytest.raises(TransactionAborted) as info:
            c.commit(aft_pb2.TransactionTag(id="no-such-transaction"))
        assert info.value.tid == "no-such-transaction"
        c.abort(aft_pb2.TransactionTag(id="no-such-transaction"))  # answered, idempotent


def test_get_and_put_with_unknown_transaction(client: Client) -> None:
    k = unique("unknown-tid")
    # The sidecar answers KEY_DNE with the reason as payload (Cloudburst's client reads
    # None); this client raises with the reason instead. A put fails every tuple.
    with pytest.raises(TransactionAborted, match="unknown transaction"):
        client.get(k, txn_id="no-such-transaction")
    with pytest.raises(TransactionAborted, match="unknown transaction"):
        client.put(k, b"v", txn_id="no-such-transaction")


def test_commit_after_abort_and_double_commit(client: Client) -> None:
    txn = client.transaction()
    txn.put(unique("k"), b"v")
    txn.commit()
    txn.commit()  # a no-op locally once committed
    # A retried commit of a committed transaction gets the same answer from the sidecar.
    client._commit(txn.tid, [])
    aborted = client.transaction()
    aborted.abort()
    with pytest.raises(TransactionAborted):
        client._commit(aborted.tid, [])


def test_oversize_value_is_refused_clearly(client: Client) -> None:
    k = unique("big")
    big = b"x" * (SIXTEEN_MIB + 1)
    with pytest.raises(ValueTooLarge) as info:
        client.put(k, big)
    assert info.value.sizes == {k: SIXTEEN_MIB + 1}
    txn = client.transaction()
    with pytest.raises(ValueTooLarge):
        txn.put(k, big)
    txn.abort()
    # The sidecar is still serving.
    assert client.put(k, b"small") is True


def test_handoff_and_resume_on_the_same_node(client: Client, sidecar: Sidecar) -> None:
    a, b = unique("dag-a"), unique("dag-b")
    up = client.transaction()
    up.put(a, b"from-upstream")
    token = up.handoff()
    assert token.tid == up.tid and token.address == sidecar.node_address
    with Client(sidecar.ipc_dir, thread_id=None) as other:
        with other.resume(token.encode()) as down:
            assert down.get(a) == b"from-upstream"
            down.put(b, b"from-downstream")
        assert down.status == "committed"
    with client.transaction() as check:
        assert check.get_many([a, b]) == {a: b"from-upstream", b: b"from-downstream"}


def test_dag_handoff_between_processes_example(sidecar: Sidecar) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(CLIENT_ROOT / "examples" / "dag_handoff.py"),
            "--ipc-dir",
            sidecar.ipc_dir,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "downstream: committed" in result.stdout
    assert "invoice for 2 x espresso" in result.stdout


def test_chain_of_three_functions_in_three_processes(sidecar: Sidecar) -> None:
    keys = [unique(f"chain{i}") for i in range(3)]
    script = CLIENT_ROOT / "tests" / "chain_step.py"
    token = ""
    for i, key in enumerate(keys):
        proc = subprocess.run(
            [sys.executable, str(script), sidecar.ipc_dir, str(i), key, ",".join(keys[:i]), token],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        token = proc.stdout.strip().splitlines()[-1]
    assert token == "committed"
    with Client(sidecar.ipc_dir, thread_id=None) as c, c.transaction() as txn:
        assert txn.get_many(keys) == {k: f"step{i}".encode() for i, k in enumerate(keys)}


def test_threads_share_one_client(client: Client) -> None:
    errors: list[BaseException] = []
    prefix = unique("thread")

    def work(i: int) -> None:
        try:
            for j in range(10):
                with client.transaction() as txn:
                    txn.put(f"{prefix}-{i}", str(j).encode())
                    assert txn.get(f"{prefix}-{i}") == str(j).encode()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with client.transaction() as txn:
        assert all(txn.get(f"{prefix}-{i}") == b"9" for i in range(4))


def test_anna_ipc_client_flow(sidecar: Sidecar, fresh_thread_id: int) -> None:
    k = unique("compat")
    with AnnaIpcClient(fresh_thread_id, ipc_dir=sidecar.ipc_dir) as c:
        tag = c.start()
        assert tag.status == aft_pb2.RUNNING and tag.address == sidecar.node_address
        assert c.put([k], [LWWValue(7, b"v")], txn_id=tag.id) == {k: True}
        assert c.get(k, txn_id=tag.id) == {k: LWWValue(7, b"v")}
        c.continue_txn(tag.id, tag.address, tag.address)
        c.commit(tag, tag.address)
        assert c.get(k)[k] is not None
        # The sidecar answers an abort of a committed transaction with COMMITTED.
        with pytest.raises(TransactionStateError):
            c.abort(tag)


def test_sidecar_stopped_then_restarted(own_sidecar: Sidecar) -> None:
    c = Client(own_sidecar.ipc_dir, thread_id=0, timeout=1.0, txn_timeout=1.0)
    k = unique("restart")
    assert c.put(k, LWWValue(1, b"v")) is True
    running = c.transaction()
    own_sidecar.stop()
    for call in (
        lambda: c.get(k),
        lambda: c.put(k, b"v"),
        c.transaction,
        lambda: running.get(k),
        running.commit,
        running.abort,
        lambda: c.resume(HandoffToken(running.tid, own_sidecar.node_address)),
    ):
        started = time.monotonic()
        with pytest.raises(SidecarUnavailable):
            call()
        assert time.monotonic() - started < 3.0
    # The same client reconnects to a new sidecar on the same directory.
    own_sidecar.start()
    deadline = time.monotonic() + 5
    while True:
        try:
            got = c.get(k)
            break
        except SidecarUnavailable:
            if time.monotonic() > deadline:
                raise
    assert got[k] == LWWValue(1, b"v")  # durable in the file store
    c.close()


def test_killed_sidecar_times_out_then_restarts(own_sidecar: Sidecar) -> None:
    c = Client(own_sidecar.ipc_dir, thread_id=0, timeout=0.5, txn_timeout=0.5)
    k = unique("killed")
    assert c.put(k, LWWValue(1, b"v")) is True
    own_sidecar.stop(signal.SIGKILL)  # leaves its socket files behind: nobody listens
    assert os.path.exists(os.path.join(own_sidecar.ipc_dir, "get"))
    for call in (lambda: c.get(k), c.transaction):
        started = time.monotonic()
        with pytest.raises(SidecarUnavailable):
            call()
        assert 0.4 < time.monotonic() - started < 3.0
    own_sidecar.start()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert c.get(k)[k] == LWWValue(1, b"v")
            break
        except SidecarUnavailable:
            if time.monotonic() > deadline:
                raise
    c.close()


def test_late_reply_from_a_stalled_sidecar_is_not_misread(own_sidecar: Sidecar) -> None:
    c = Client(own_sidecar.ipc_dir, thread_id=0, timeout=0.5, txn_timeout=0.5)
    a, b = unique("late-a"), unique("late-b")
    assert c.put(a, LWWValue(1, b"A")) is True
    assert c.put(b, LWWValue(2, b"B")) is True
    assert own_sidecar.proc is not None
    own_sidecar.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(SidecarUnavailable):
            c.get(a)  # the sidecar answers this only after SIGCONT
    finally:
        own_sidecar.proc.send_signal(signal.SIGCONT)
    # The late answer about `a` must not be taken for the answer about `b`.
    for _ in range(5):
        assert c.get(b) == {b: LWWValue(2, b"B")}
        assert c.get(a) == {a: LWWValue(1, b"A")}
    c.close()


def test_reply_files_are_removed_on_close(sidecar: Sidecar) -> None:
    c = Client(sidecar.ipc_dir, thread_id=None)
    c.get(unique("k"))
    path = os.path.join(sidecar.ipc_dir, f"get_{c.reply_suffix}")
    assert os.path.exists(path)
    c.close()
    assert not os.path.exists(path)
