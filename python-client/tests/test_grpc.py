"""The gRPC transport (``Client(grpc=...)``) against the real ``aft-sidecar`` binary.

The module's sidecar serves both its IPC endpoints and a gRPC front (``--grpc-addr
127.0.0.1:0``) that requires a bearer token (``--grpc-token-file``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("grpc", reason="the gRPC transport needs grpcio (the [grpc] extra)")

import grpc
from conftest import GRPC_TOKEN, Sidecar, short_tmpdir, write_token_file

from aft_client import (
    AftError,
    AuthenticationFailed,
    Client,
    CommitOutcomeUnknown,
    GrpcCallFailed,
    HandoffToken,
    InvalidRequest,
    LWWValue,
    SidecarUnavailable,
    TransactionAborted,
    TransactionNotFound,
    TransactionStateError,
    UnsupportedOperation,
    ValueTooLarge,
)
from aft_client._grpc import raise_for_status

SIXTEEN_MIB = 16 * 1024 * 1024
# A well-formed id (`<uuid>@<node>`) that no sidecar handed out.
UNKNOWN_TID = "0190f3a2-7b1c-7def-8000-0123456789ab@127.0.0.1"


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def grpc_addr(sidecar: Sidecar) -> str:
    assert sidecar.grpc_addr is not None
    return sidecar.grpc_addr


@pytest.fixture
def gclient(grpc_sidecar: Sidecar) -> Iterator[Client]:
    c = Client(grpc=grpc_addr(grpc_sidecar), grpc_token=GRPC_TOKEN, timeout=5.0, txn_timeout=10.0)
    yield c
    c.close()


@pytest.fixture
def ipc_client(grpc_sidecar: Sidecar, fresh_thread_id: int) -> Iterator[Client]:
    c = Client(grpc_sidecar.ipc_dir, thread_id=fresh_thread_id, timeout=5.0, txn_timeout=10.0)
    yield c
    c.close()


def test_round_trip_read_your_writes_commit_then_visible(gclient: Client) -> None:
    assert gclient.transport == "grpc"
    x, y, missing = unique("x"), unique("y"), unique("missing")
    txn = gclient.transaction()
    assert isinstance(txn.tid, str) and txn.tid
    assert txn.status == "running"
    txn.put(x, b"\x00one\xff")
    txn.put_many({y: b"two"})
    assert txn.get(x) == b"\x00one\xff"  # read your writes
    assert txn.get_many([x, y, missing]) == {x: b"\x00one\xff", y: b"two", missing: None}
    with gclient.transaction() as other:  # not visible before the commit
        assert other.get_many([x, y]) == {x: None, y: None}
    txn.commit()
    assert txn.status == "committed"
    txn.commit()  # a no-op once committed
    with gclient.transaction() as after:
        assert after.get_many([x, y]) == {x: b"\x00one\xff", y: b"two"}
    # The node's address, as the start reply reports it.
    assert gclient.node_address == "127.0.0.1"


def test_context_manager_commits_or_aborts(gclient: Client) -> None:
    kept, dropped = unique("kept"), unique("dropped")
    with gclient.transaction() as txn:
        txn.put(kept, b"yes")
    assert txn.status == "committed"
    with pytest.raises(RuntimeError, match="boom"), gclient.transaction() as failing:
        failing.put(dropped, b"no")
        raise RuntimeError("boom")
    assert failing.status == "aborted"
    with gclient.transaction() as check:
        assert check.get_many([kept, dropped]) == {kept: b"yes", dropped: None}


def test_abort_leaves_nothing(gclient: Client) -> None:
    k = unique("aborted")
    txn = gclient.transaction()
    txn.put(k, b"never")
    assert txn.get(k) == b"never"
    txn.abort()
    assert txn.status == "aborted"
    txn.abort()  # idempotent
    with pytest.raises(TransactionAborted):
        txn.get(k)
    with pytest.raises(TransactionAborted):
        txn.put(k, b"again")
    with pytest.raises(TransactionAborted):
        txn.commit()
    with gclient.transaction() as after:
        assert after.get(k) is None
    # The sidecar agrees: another handle on the same id cannot use it either.
    stale = gclient.resume(HandoffToken(txn.tid, ""))
    with pytest.raises(TransactionAborted):
        stale.get(k)
    assert stale.status == "aborted"


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"grpc_token": "not-the-token-0123456789"}, id="wrong-token"),
        pytest.param({"grpc_token": GRPC_TOKEN + "x"}, id="token-plus-one"),
    ],
)
def test_wrong_or_missing_token_is_refused(
    grpc_sidecar: Sidecar, credentials: dict[str, str]
) -> None:
    with Client(grpc=grpc_addr(grpc_sidecar), **credentials) as client:  # type: ignore[arg-type]
        with pytest.raises(AuthenticationFailed) as info:
            client.transaction()
        assert info.value.code == "UNAUTHENTICATED"
        assert isinstance(info.value, AftError)
        # Every call carries the token, not only start.
        with pytest.raises(AuthenticationFailed):
            client.resume(HandoffToken(UNKNOWN_TID, "")).get("k")


def test_token_from_the_sidecars_token_file(grpc_sidecar: Sidecar) -> None:
    token_file = os.path.join(grpc_sidecar.ipc_dir, "grpc.token")
    assert Path(token_file).read_text().startswith("#")  # the comment line is skipped
    k = unique("file-token")
    with Client(grpc=grpc_addr(grpc_sidecar), grpc_token_file=token_file) as client:
        with client.transaction() as txn:
            txn.put(k, b"v")
        with client.transaction() as txn:
            assert txn.get(k) == b"v"


def test_unknown_transaction_id(gclient: Client) -> None:
    unknown = gclient.resume(HandoffToken(UNKNOWN_TID, "127.0.0.1"))
    with pytest.raises(TransactionNotFound) as info:
        unknown.get("k")
    assert isinstance(info.value, TransactionAborted)  # `except TransactionAborted` covers it
    assert info.value.tid == UNKNOWN_TID
    assert info.value.reason is not None and "unknown transaction" in info.value.reason
    assert unknown.status == "aborted"
    unknown.abort()  # nothing to abort: not an error

    other_tid = "0190f3a2-7b1c-7def-8000-0123456789ac@127.0.0.1"
    with pytest.raises(TransactionNotFound):
        gclient.resume(HandoffToken(other_tid, "")).commit()
    third_tid = "0190f3a2-7b1c-7def-8000-0123456789ad@127.0.0.1"
    with pytest.raises(TransactionNotFound):
        gclient.resume(HandoffToken(third_tid, "")).put("k", b"v")

    # Not an id this service hands out: bad input, not an unknown transaction.
    with pytest.raises(InvalidRequest) as bad:
        gclient.resume(HandoffToken("not-a-grpc-id", "")).get("k")
    assert bad.value.code == "INVALID_ARGUMENT"
    assert isinstance(bad.value, ValueError)


def test_ended_transactions_on_the_sidecar(gclient: Client) -> None:
    k = unique("ended")
    committed = gclient.transaction()
    committed.put(k, b"v")
    committed.commit()
    again = gclient.resume(HandoffToken(committed.tid, ""))
    again.commit()  # a commit retried after a lost answer gets the same answer
    late = gclient.resume(HandoffToken(committed.tid, ""))
    with pytest.raises(TransactionStateError, match="already ended"):
        late.get(k)
    with pytest.raises(TransactionStateError, match="already committed"):
        gclient.resume(HandoffToken(committed.tid, "")).abort()

    aborted = gclient.transaction()
    aborted.abort()
    with pytest.raises(TransactionAborted):
        gclient.resume(HandoffToken(aborted.tid, "")).commit()


def test_grpc_writes_are_visible_over_ipc_and_back(gclient: Client, ipc_client: Client) -> None:
    from_grpc, from_ipc = unique("from-grpc"), unique("from-ipc")
    with gclient.transaction() as txn:
        txn.put(from_grpc, b"written over gRPC")
    with ipc_client.transaction() as txn:
        assert txn.get(from_grpc) == b"written over gRPC"
        stored = txn.get_value(from_grpc)  # stored as a Cloudburst LWWValue
        assert stored is not None and stored.value == b"written over gRPC" and stored.timestamp > 0
        txn.put(from_ipc, LWWValue.now(b"written over IPC"))
    plain = ipc_client.get(from_grpc)[from_grpc]
    assert plain is not None and plain.value == b"written over gRPC"
    with gclient.transaction() as txn:
        assert txn.get_many([from_grpc, from_ipc]) == {
            from_grpc: b"written over gRPC",
            from_ipc: b"written over IPC",
        }


def test_uncommitted_grpc_writes_are_invisible_over_ipc(
    gclient: Client, ipc_client: Client
) -> None:
    k = unique("pending")
    txn = gclient.transaction()
    txn.put(k, b"pending")
    with ipc_client.transaction() as reader:
        assert reader.get(k) is None
    txn.abort()
    with ipc_client.transaction() as reader:
        assert reader.get(k) is None


def test_handoff_and_resume_with_another_client(grpc_sidecar: Sidecar, gclient: Client) -> None:
    k1, k2 = unique("stage1"), unique("stage2")
    upstream = gclient.transaction()
    upstream.put(k1, b"order")
    token = upstream.handoff()
    assert token.tid == upstream.tid and token.address == "127.0.0.1"
    with upstream:
        pass  # handed off: the end of the block does not commit
    assert upstream.status == "running"
    with Client(grpc=grpc_addr(grpc_sidecar), grpc_token=GRPC_TOKEN) as downstream_client:
        with downstream_client.resume(token.encode()) as downstream:
            assert downstream.get(k1) == b"order"  # the upstream's buffered write
            downstream.put(k2, b"invoice")
    with gclient.transaction() as after:
        assert after.get_many([k1, k2]) == {k1: b"order", k2: b"invoice"}


def test_values_over_the_default_grpc_message_limit_and_over_the_cap(gclient: Client) -> None:
    big, too_big, other = unique("big"), unique("too-big"), unique("other")
    value = os.urandom(6 * 1024 * 1024)  # over gRPC's default 4 MiB receive limit
    with gclient.transaction() as txn:
        txn.put(big, value)
        assert txn.get(big) == value
    with gclient.transaction() as txn:
        assert txn.get(big) == value

    txn = gclient.transaction()
    txn.put(other, b"small")
    with pytest.raises(ValueTooLarge) as info:
        txn.put(too_big, b"x" * (SIXTEEN_MIB + 1))
    assert info.value.limit == SIXTEEN_MIB
    assert info.value.sizes == {too_big: SIXTEEN_MIB + 1}
    assert txn.get(other) == b"small"  # reads still work...
    with pytest.raises(TransactionAborted, match="ABORTED"):
        txn.commit()  # ...but the sidecar never commits a transaction that lost a write
    with gclient.transaction() as after:
        assert after.get_many([other, too_big]) == {other: None, too_big: None}


def test_ipc_only_calls_are_refused_clearly(gclient: Client) -> None:
    with pytest.raises(UnsupportedOperation):
        gclient.get("k")
    with pytest.raises(UnsupportedOperation):
        gclient.put("k", b"v")
    with pytest.raises(UnsupportedOperation):
        gclient.reply_suffix  # noqa: B018
    with gclient.transaction() as txn:
        with pytest.raises(UnsupportedOperation):
            txn.get_value("k")
        assert isinstance(UnsupportedOperation("x"), NotImplementedError)


def test_client_side_size_cap(grpc_sidecar: Sidecar) -> None:
    with Client(grpc=grpc_addr(grpc_sidecar), grpc_token=GRPC_TOKEN, max_value_size=10) as c:
        with c.transaction() as txn:
            with pytest.raises(ValueTooLarge):
                txn.put("k", b"x" * 11)
            txn.put("k", b"x" * 10)


def test_unreachable_sidecar_fails_fast() -> None:
    with Client(grpc="127.0.0.1:1", grpc_token=GRPC_TOKEN, timeout=2.0) as client:
        started = time.monotonic()
        with pytest.raises(SidecarUnavailable, match="UNAVAILABLE"):
            client.transaction()
        assert time.monotonic() - started < 2.5


def test_closed_client_refuses_calls(grpc_sidecar: Sidecar) -> None:
    client = Client(grpc=grpc_addr(grpc_sidecar), grpc_token=GRPC_TOKEN)
    txn = client.transaction()
    client.close()
    client.close()  # idempotent
    with pytest.raises(AftError, match="closed"):
        client.transaction()
    with pytest.raises(AftError, match="closed"):
        txn.get("k")


def test_bad_grpc_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="printable"):
        Client(grpc="127.0.0.1:1", grpc_token="has space")
    with pytest.raises(ValueError, match="printable"):
        Client(grpc="127.0.0.1:1", grpc_token="")
    token_file = write_token_file(str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        Client(grpc="127.0.0.1:1", grpc_token=GRPC_TOKEN, grpc_token_file=token_file)
    empty = tmp_path / "empty.token"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="no token"):
        Client(grpc="127.0.0.1:1", grpc_token_file=empty)
    with pytest.raises(ValueError, match="need grpc="):
        Client(grpc_token=GRPC_TOKEN)
    with pytest.raises(ValueError, match="go together"):
        Client(grpc="127.0.0.1:1", grpc_tls_cert=b"pem")
    with pytest.raises(ValueError, match="host:port"):
        Client(grpc="")


# ---------------------------------------------------------------------------------------
# TLS and mutual TLS (certificates made with the openssl command line tool)
# ---------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(directory: Path) -> None:
    """A CA; a server certificate for 127.0.0.1 and localhost; a client certificate."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=aft test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (directory / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            + ext
            + "\n"
        )
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN=aft test {name}",
            cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
            cwd=directory,
        )  # fmt: skip


@pytest.fixture(scope="module")
def tls_sidecar() -> Iterator[tuple[Sidecar, Path]]:
    """A sidecar whose gRPC front needs TLS, a client certificate (mutual TLS) and a token."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line tool makes the test certificates")
    path = short_tmpdir("aft-tls-")
    pki = Path(path) / "pki"
    pki.mkdir()
    try:
        _make_pki(pki)
        sc = Sidecar(
            path,
            extra_args=[
                "--grpc-addr", "127.0.0.1:0",
                "--grpc-token-file", write_token_file(path),
                "--grpc-tls-cert", str(pki / "server.pem"),
                "--grpc-tls-key", str(pki / "server.key"),
                "--grpc-tls-client-ca", str(pki / "ca.pem"),
            ],
        ).start()  # fmt: skip
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    yield sc, pki
    sc.stop()
    shutil.rmtree(path, ignore_errors=True)


def test_mutual_tls(tls_sidecar: tuple[Sidecar, Path]) -> None:
    sidecar, pki = tls_sidecar
    k = unique("tls")
    # Paths and PEM bytes are both accepted.
    with Client(
        grpc=grpc_addr(sidecar),
        grpc_token=GRPC_TOKEN,
        grpc_tls_ca=pki / "ca.pem",
        grpc_tls_cert=str(pki / "client.pem"),
        grpc_tls_key=(pki / "client.key").read_bytes(),
    ) as client:
        with client.transaction() as txn:
            txn.put(k, b"over mutual TLS")
        with client.transaction() as txn:
            assert txn.get(k) == b"over mutual TLS"

    # No client certificate: the TLS handshake fails, nothing reaches the service.
    with Client(
        grpc=grpc_addr(sidecar), grpc_token=GRPC_TOKEN, grpc_tls_ca=pki / "ca.pem", timeout=3.0
    ) as client:
        with pytest.raises(SidecarUnavailable):
            client.transaction()
    # Plaintext against a TLS port.
    with Client(grpc=grpc_addr(sidecar), grpc_token=GRPC_TOKEN, timeout=3.0) as client:
        with pytest.raises(SidecarUnavailable):
            client.transaction()
    # The right certificate but no token: still refused.
    with Client(
        grpc=grpc_addr(sidecar),
        grpc_tls_ca=pki / "ca.pem",
        grpc_tls_cert=pki / "client.pem",
        grpc_tls_key=pki / "client.key",
    ) as client:
        with pytest.raises(AuthenticationFailed):
            client.transaction()


# ---------------------------------------------------------------------------------------
# status codes the real sidecar rarely answers, mapped without a server
# ---------------------------------------------------------------------------------------


class _Status(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _raised(code: grpc.StatusCode, details: str, operation: str, tid: str | None) -> AftError:
    status = _Status(code, details)
    with pytest.raises(AftError) as info:
        raise_for_status(status, operation, "127.0.0.1:1", tid, [("k", b"v")], 5.0)
    assert info.value.__cause__ is status  # the gRPC error stays reachable
    return info.value


def test_status_code_mapping() -> None:
    tid = "t@127.0.0.1"
    prefix = f"transaction `{tid}`: "
    codes = grpc.StatusCode

    unsure = _raised(codes.UNAVAILABLE, prefix + "the outcome is not known yet", "commit", tid)
    assert isinstance(unsure, CommitOutcomeUnknown)
    gone = _raised(codes.UNAVAILABLE, "failed to connect", "write", tid)
    assert isinstance(gone, SidecarUnavailable) and "outcome is unknown" in str(gone)
    slow = _raised(codes.DEADLINE_EXCEEDED, "Deadline Exceeded", "read", tid)
    assert isinstance(slow, SidecarUnavailable) and "within 5 s" in str(slow)

    refused = _raised(codes.RESOURCE_EXHAUSTED, "too many open transactions", "start", None)
    assert isinstance(refused, TransactionAborted)
    write_set = _raised(
        codes.RESOURCE_EXHAUSTED,
        prefix + "would buffer 9 bytes, over the limit of 8 bytes",
        "write",
        tid,
    )
    assert isinstance(write_set, ValueTooLarge) and write_set.limit == 8
    message = _raised(codes.OUT_OF_RANGE, "decoded message length too large", "write", tid)
    assert isinstance(message, ValueTooLarge) and message.limit is None

    failed = _raised(codes.ABORTED, prefix + "has failed: lease expired", "read", tid)
    assert isinstance(failed, TransactionAborted) and not isinstance(failed, TransactionNotFound)
    assert failed.reason == "has failed: lease expired"  # the id prefix is dropped
    ended = _raised(codes.FAILED_PRECONDITION, prefix + "has already ended (aborted)", "read", tid)
    assert isinstance(ended, TransactionAborted)
    done = _raised(codes.FAILED_PRECONDITION, prefix + "has already ended (committed)", "read", tid)
    assert isinstance(done, TransactionStateError)

    for code in (codes.INTERNAL, codes.UNIMPLEMENTED, codes.DATA_LOSS, codes.CANCELLED):
        other = _raised(code, "something else", "commit", tid)
        assert type(other) is GrpcCallFailed
        assert (other.operation, other.code, other.details) == (
            "commit",
            code.name,
            "something else",
        )
    denied = _raised(codes.PERMISSION_DENIED, "no", "start", None)
    assert isinstance(denied, AuthenticationFailed)
