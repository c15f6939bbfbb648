"""The gRPC transport: AFT's ``service Aft`` as the sidecar's gRPC front serves it.

Used by :class:`aft_client.Client` when it is given ``grpc="host:port"``; needs
``grpcio`` (``pip install 'aft-client[grpc]'``). One channel per client (gRPC channels are
thread-safe); every call carries ``authorization: Bearer <token>`` when a token is set,
and a deadline, so no call blocks forever. Failed calls raise the exceptions of
:mod:`aft_client.errors` (see :func:`raise_for_status`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import empty_pb2

from aft_client._proto import aft_pb2, aft_service_pb2_grpc
from aft_client.errors import (
    AftError,
    AuthenticationFailed,
    CommitOutcomeUnknown,
    GrpcCallFailed,
    InvalidRequest,
    ProtocolError,
    SidecarUnavailable,
    TransactionAborted,
    TransactionNotFound,
    TransactionStateError,
    ValueTooLarge,
)

PathOrPem = str | os.PathLike[str] | bytes

_LIMIT_RE = re.compile(r"limit of (\d+) bytes")
_KEY_RE = re.compile(r"for key `(.*?)` exceeds the limit")

# The sidecar caps requests itself (four times its value cap, 64 MiB by default) and
# replies may carry several values near the cap: gRPC's default 4 MiB receive limit would
# refuse reads the sidecar answers, so the client lifts it.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in a ``--grpc-token-file``: its first line neither blank nor a ``#`` comment."""
    text = Path(path).read_text(encoding="utf-8")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    raise ValueError(f"gRPC token file {os.fspath(path)!r} holds no token")


def check_token(token: str) -> str:
    """``token`` if it can travel as ``Bearer <token>`` (printable ASCII, no spaces)."""
    if not isinstance(token, str):
        raise TypeError(f"a gRPC token is a str, not {type(token).__name__}")
    if not token or not all("!" <= c <= "~" for c in token):
        raise ValueError("a gRPC token is non-empty printable ASCII without spaces")
    return token


def _pem(value: PathOrPem | None, what: str) -> bytes | None:
    """PEM bytes given as such, or read from a file path."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)):
        return Path(value).read_bytes()
    raise TypeError(f"{what} is a file path or PEM bytes, not {type(value).__name__}")


class GrpcTransport:
    """One channel to a sidecar's gRPC front and the five calls of ``service Aft``."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        txn_timeout: float,
        token: str | None = None,
        tls: bool = False,
        tls_ca: PathOrPem | None = None,
        tls_cert: PathOrPem | None = None,
        tls_key: PathOrPem | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not isinstance(target, str) or not target:
            raise ValueError(f"grpc= takes a 'host:port' address, got {target!r}")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("grpc_tls_cert and grpc_tls_key go together (mutual TLS)")
        self.target = target
        self.timeout = timeout
        self.txn_timeout = txn_timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {check_token(token)}"),) if token is not None else ()
        )
        self.tls = bool(tls or tls_ca is not None or tls_cert is not None)
        self._credentials = (
            grpc.ssl_channel_credentials(
                root_certificates=_pem(tls_ca, "grpc_tls_ca"),
                private_key=_pem(tls_key, "grpc_tls_key"),
                certificate_chain=_pem(tls_cert, "grpc_tls_cert"),
            )
            if self.tls
            else None
        )
        given = dict(options)
        self._options = [(k, v) for k, v in DEFAULT_CHANNEL_OPTIONS if k not in given]
        self._options += list(given.items())
        self._lock = threading.Lock()
        self._pid = -1
        self._channel: grpc.Channel | None = None
        self._stub: Any = None
        self._closed = False

    # channel -----------------------------------------------------------------------------
    def _aft(self) -> Any:
        """The stub, on a channel of this process (a forked child makes its own)."""
        with self._lock:
            if self._closed:
                raise AftError("the client is closed")
            if self._stub is None or self._pid != os.getpid():
                if self._credentials is not None:
                    channel = grpc.secure_channel(self.target, self._credentials, self._options)
                else:
                    channel = grpc.insecure_channel(self.target, self._options)
                self._channel = channel
                stub_class: Any = aft_service_pb2_grpc.AftStub  # generated, untyped
                self._stub = stub_class(channel)
                self._pid = os.getpid()
            return self._stub

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = None
            self._stub = None

    def _call(
        self,
        operation: str,
        method: str,
        request: Any,
        timeout: float,
        tid: str | None = None,
        values: Sequence[tuple[str, bytes]] = (),
    ) -> Any:
        rpc = getattr(self._aft(), method)
        try:
            return rpc(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise_for_status(exc, operation, self.target, tid, values, timeout)

    # service Aft -------------------------------------------------------------------------
    def start(self) -> aft_pb2.TransactionTag:
        tag: aft_pb2.TransactionTag = self._call(
            "start", "StartTransaction", empty_pb2.Empty(), self.timeout
        )
        if not tag.id:
            raise ProtocolError("StartTransaction answered a tag without a transaction id")
        return tag

    def read(self, tid: str, keys: Sequence[str]) -> dict[str, bytes | None]:
        request = aft_pb2.AftKeyRequest(
            tid=tid, pairs=[aft_pb2.AftKeyRequest.KeyPair(key=k) for k in keys]
        )
        reply = self._call("read", "Read", request, self.timeout, tid)
        values: dict[str, bytes | None] = {}
        for pair in reply.pairs:
            # AFT's Read answers a key without a value with empty bytes.
            values[pair.key] = pair.value or None
        missing = [k for k in keys if k not in values]
        if missing:
            raise ProtocolError(f"Read of {tid} answered no pair for {missing!r:.200}")
        return {k: values[k] for k in keys}

    def write(self, tid: str, items: Sequence[tuple[str, bytes]]) -> None:
        request = aft_pb2.AftKeyRequest(
            tid=tid, pairs=[aft_pb2.AftKeyRequest.KeyPair(key=k, value=v) for k, v in items]
        )
        self._call("write", "Write", request, self.timeout, tid, items)

    def commit(self, tid: str) -> None:
        tag = self._call(
            "commit", "CommitTransaction", aft_pb2.TransactionTag(id=tid), self.txn_timeout, tid
        )
        if tag.status != aft_pb2.COMMITTED:
            name = aft_pb2.TransactionStatus.Name(tag.status)
            raise TransactionAborted(tid, f"commit answered {name}")

    def abort(self, tid: str) -> None:
        try:
            tag = self._call(
                "abort", "AbortTransaction", aft_pb2.TransactionTag(id=tid), self.txn_timeout, tid
            )
        except TransactionNotFound:
            return  # unknown to the sidecar: it can never commit, which is all abort asks
        if tag.status == aft_pb2.COMMITTED:
            raise TransactionStateError(f"transaction {tid} is already committed")
        if tag.status != aft_pb2.ABORTED:
            name = aft_pb2.TransactionStatus.Name(tag.status)
            raise ProtocolError(f"abort of {tid} answered {name}")


def raise_for_status(
    exc: grpc.RpcError,
    operation: str,
    target: str,
    tid: str | None,
    values: Sequence[tuple[str, bytes]] = (),
    timeout: float | None = None,
) -> NoReturn:
    """Raise the :mod:`aft_client.errors` exception for a failed call (``from exc``).

    ========================================  ==============================================
    status code                               exception
    ========================================  ==============================================
    ``UNAUTHENTICATED``, ``PERMISSION_DENIED``  :class:`AuthenticationFailed`
    ``NOT_FOUND``                             :class:`TransactionNotFound`
    ``ABORTED``                               :class:`TransactionAborted`
    ``FAILED_PRECONDITION`` (already ended)   :class:`TransactionStateError`, or
                                              :class:`TransactionAborted` if it aborted
    ``INVALID_ARGUMENT``                      :class:`ValueTooLarge` for a value over the
                                              cap, else :class:`InvalidRequest`
    ``OUT_OF_RANGE`` (request too large)      :class:`ValueTooLarge` (a write), else
                                              :class:`InvalidRequest`
    ``RESOURCE_EXHAUSTED``                    :class:`ValueTooLarge` (write set over the
                                              cap); :class:`TransactionAborted` (start: too
                                              many open transactions)
    ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``    :class:`SidecarUnavailable` (outcome unknown);
                                              :class:`CommitOutcomeUnknown` when the
                                              sidecar says the commit is being settled
    anything else                             :class:`GrpcCallFailed`
    ========================================  ==============================================
    """
    code_obj = exc.code() if callable(getattr(exc, "code", None)) else None
    code = code_obj.name if code_obj is not None else "UNKNOWN"
    details = (exc.details() if callable(getattr(exc, "details", None)) else None) or str(exc)
    reason = details
    if tid is not None:
        # The sidecar prefixes the client's id; the exceptions name it already.
        reason = reason.removeprefix(f"transaction `{tid}`: ")
    keys = [k for k, _ in values]
    # The sidecar's word for a commit whose storage write failed at the commit point.
    unsettled = "outcome is not known" in reason

    def too_large(limit_from_reason: bool = True) -> ValueTooLarge:
        m = _LIMIT_RE.search(reason) if limit_from_reason else None
        limit = int(m.group(1)) if m else None
        named = _KEY_RE.search(reason)
        culprits = [named.group(1)] if named and named.group(1) in keys else keys
        sizes = {k: len(v) for k, v in values if k in culprits}
        return ValueTooLarge(
            f"put in transaction {tid}",
            {k: code for k in culprits},
            sizes,
            limit,
            {k: reason for k in culprits},
        )

    error: AftError
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        error = AuthenticationFailed(operation, code, details)
    elif code == "NOT_FOUND" and tid is not None:
        error = TransactionNotFound(tid, reason)
    elif code == "ABORTED" and tid is not None:
        error = TransactionAborted(tid, reason)
    elif code == "FAILED_PRECONDITION" and tid is not None:
        if "(aborted)" in reason:
            error = TransactionAborted(tid, reason)
        else:
            error = TransactionStateError(f"transaction {tid}: {reason}")
    elif code == "INVALID_ARGUMENT" and operation == "write" and _KEY_RE.search(reason):
        error = too_large()
    elif code == "OUT_OF_RANGE" and operation == "write":
        error = too_large(limit_from_reason=False)  # its limit is the message's, not a value's
    elif code in ("INVALID_ARGUMENT", "OUT_OF_RANGE"):
        error = InvalidRequest(operation, code, details)
    elif code == "RESOURCE_EXHAUSTED" and operation == "write" and _LIMIT_RE.search(reason):
        error = too_large()
    elif code == "RESOURCE_EXHAUSTED" and operation == "start":
        error = TransactionAborted("", f"the sidecar refused to start a transaction: {reason}")
    elif code == "UNAVAILABLE" and operation == "commit" and tid is not None and unsettled:
        error = CommitOutcomeUnknown(tid, reason)
    elif code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        what = f"gRPC {operation}" + (f" of {tid}" if tid else "") + f" at {target}"
        if code == "DEADLINE_EXCEEDED" and timeout is not None:
            message = f"{what}: no answer within {timeout:g} s"
        else:
            message = f"{what}: {code}: {details}"
        if operation in ("write", "commit", "abort"):
            message += " (its outcome is unknown; commit and abort may be retried)"
        error = SidecarUnavailable(message)
    else:
        error = GrpcCallFailed(operation, code, details)
    raise error from exc
