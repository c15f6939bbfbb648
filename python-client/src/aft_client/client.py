"""The sidecar client: :class:`Client`, :class:`Transaction`, :class:`HandoffToken`.

See the package docstring (``aft_client``) and ``python-client/README.md`` for a tour.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import zmq

from aft_client import _wire
from aft_client._proto import aft_pb2, anna_pb2
from aft_client._sockets import REGISTRY, SocketSet, held_by_live_socket, ipc_path
from aft_client.errors import (
    AftError,
    CommitOutcomeUnknown,
    ProtocolError,
    RequestFailed,
    SidecarUnavailable,
    TransactionAborted,
    TransactionStateError,
    UnsupportedOperation,
    ValueTooLarge,
    describe,
)
from aft_client.lattice import LWWValue, to_lww

if TYPE_CHECKING:
    from aft_client._grpc import GrpcTransport, PathOrPem

log = logging.getLogger("aft_client")

#: The sidecar's default cap on one value (``--max-value-size``), in bytes.
DEFAULT_MAX_VALUE_SIZE = 16 * 1024 * 1024

#: Default wait for a get, put or start reply (Cloudburst's executors use 5 s).
DEFAULT_TIMEOUT = 5.0

#: Default wait for a commit, abort or continue reply (these may involve other nodes).
DEFAULT_TXN_TIMEOUT = 30.0

_SUFFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LIMIT_RE = re.compile(r"limit of (\d+) bytes")

ThreadId = int | str | None
R = TypeVar("R")


# ---------------------------------------------------------------------------------------
# hand-off token
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandoffToken:
    """What a DAG function passes to the next one so that it can join the transaction.

    ``tid`` is the transaction id; ``address`` is the node address of the sidecar that
    handed it off (the upstream node: for the first function it is the ``address`` of the
    ``TransactionTag`` that ``start`` returned); ``participants`` are all node addresses
    the transaction has run on so far (the commit tells the sidecar about the others).

    Tokens are immutable, picklable, and convert to and from a short JSON string with
    :meth:`encode` / :meth:`decode` for any other transport.
    """

    tid: str
    address: str
    participants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.tid, str) or not self.tid:
            raise ValueError("a hand-off token needs a non-empty transaction id")
        if not isinstance(self.address, str):
            raise ValueError("a hand-off token's address must be a string")
        object.__setattr__(self, "participants", tuple(sorted(set(self.participants))))

    def encode(self) -> str:
        """A compact JSON string (``decode`` reads it back)."""
        body = {"tid": self.tid, "address": self.address, "participants": list(self.participants)}
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, data: str | bytes) -> HandoffToken:
        """Parse the output of :meth:`encode`."""
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode("utf-8")
        try:
            body = json.loads(data)
            return cls(
                tid=body["tid"],
                address=body["address"],
                participants=tuple(body.get("participants", ())),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a hand-off token: {data!r:.200}") from exc


# ---------------------------------------------------------------------------------------
# transaction
# ---------------------------------------------------------------------------------------

RUNNING = "running"
COMMITTED = "committed"
ABORTED = "aborted"


class Transaction:
    """One read-atomic transaction (a DAG run), driven through a :class:`Client`.

    Obtain one from :meth:`Client.transaction` (starts a new transaction) or
    :meth:`Client.resume` (joins one handed off by an upstream function). Values are
    bytes; a put stores them as an LWW value with a fresh timestamp (an :class:`LWWValue`
    is stored as given).

    As a context manager it commits when the block ends normally and aborts when it
    raises. A transaction whose :meth:`handoff` was called is *not* committed at the end
    of the block: its downstream function owns it now (it is still aborted on an
    exception, which fails the whole DAG run).

    A transaction may be used from any thread of its client (one at a time).
    """

    def __init__(
        self, client: Client, tid: str, participants: Iterable[str] = (), address: str = ""
    ) -> None:
        self._client = client
        self._tid = tid
        self._address = address  # this node's address when known from start
        self._participants = set(p for p in participants if p)
        self._status = RUNNING
        self._abort_reason: str | None = None
        self._handed_off = False

    def __repr__(self) -> str:
        return f"<Transaction {self._tid} {self._status}>"

    @property
    def tid(self) -> str:
        """The transaction id."""
        return self._tid

    @property
    def status(self) -> str:
        """``"running"``, ``"committed"`` or ``"aborted"`` (as far as this client knows)."""
        return self._status

    @property
    def handed_off(self) -> bool:
        """Whether :meth:`handoff` was called (the block's end then does not commit)."""
        return self._handed_off

    # reads and writes ------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        """The value of ``key`` as this transaction sees it, or ``None`` if it has none."""
        return self.get_many([key])[key]

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Read several keys in one request: a dict ``key -> bytes or None``."""
        keys = _check_keys(keys)
        self._check_running()
        if not keys:
            return {}
        try:
            return self._client._read(keys, self._tid)
        except TransactionAborted as exc:
            self._mark_aborted(exc.reason)
            raise

    def get_value(self, key: str) -> LWWValue | None:
        """Like :meth:`get` but returns the stored :class:`LWWValue` (with its timestamp).

        IPC only: over gRPC values carry no timestamp
        (:class:`~aft_client.UnsupportedOperation`).
        """
        keys = _check_keys([key])
        self._check_running()
        try:
            return self._client._get(keys, self._tid)[key]
        except TransactionAborted as exc:
            self._mark_aborted(exc.reason)
            raise

    def put(self, key: str, value: bytes | LWWValue | Any) -> None:
        """Write ``value`` (bytes, or an LWW value) to ``key`` inside the transaction."""
        self.put_many({key: value})

    def put_many(self, items: Mapping[str, bytes | LWWValue | Any]) -> None:
        """Write several keys in one request."""
        lww = [(k, to_lww(v)) for k, v in _check_items(items)]
        self._check_running()
        if not lww:
            return
        try:
            self._client._put_checked(lww, self._tid)
        except TransactionAborted as exc:
            self._mark_aborted(exc.reason)
            raise

    # hand-off ------------------------------------------------------------------------------
    def handoff(self) -> HandoffToken:
        """A token that lets a downstream function join this transaction (``Client.resume``).

        May be called several times (one token per downstream function of a DAG).
        """
        self._check_running()
        if self._client.transport == "grpc":
            # The id names the node that holds the transaction; addresses are informative.
            address = self._address or self._client._node_address or ""
        else:
            address = self._address or self._client.node_address
        if address:
            self._participants.add(address)
        self._handed_off = True
        return HandoffToken(self._tid, address, tuple(self._participants))

    # ending ----------------------------------------------------------------------------------
    def commit(self, addresses: Iterable[str] | None = None) -> None:
        """Commit the transaction; raises :class:`TransactionAborted` if it did not, and
        :class:`CommitOutcomeUnknown` if the sidecar cannot tell yet (storage failed at the
        commit point; commit again later to learn the outcome).

        ``addresses``: the other nodes the DAG ran on. By default, the participants
        gathered from hand-off tokens, without this node. Not used over gRPC (the node
        that holds a gRPC transaction commits it alone).
        """
        if self._status == COMMITTED:
            return
        self._check_running()
        if self._client.transport == "grpc":
            others: list[str] = []
        elif addresses is None:
            own = self._address or (self._client.node_address if self._participants else "")
            others = sorted(p for p in self._participants if p != own)
        else:
            others = list(addresses)
        try:
            self._client._commit(self._tid, others)
        except TransactionAborted as exc:
            self._mark_aborted(exc.reason)
            raise
        self._status = COMMITTED

    def abort(self) -> None:
        """Abort the transaction (idempotent; a no-op on the sidecar if it already ended)."""
        if self._status == COMMITTED:
            raise TransactionStateError(f"transaction {self._tid} is already committed")
        self._client._abort(self._tid)
        self._mark_aborted(self._abort_reason or "aborted by the client")

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if self._status == RUNNING and not self._handed_off:
                self.commit()
            return
        if self._status == COMMITTED:
            return
        try:
            self.abort()
        except AftError as abort_error:  # keep the original exception
            log.warning(
                "abort of %s after %s failed: %s", self._tid, exc_type.__name__, abort_error
            )

    # internals ---------------------------------------------------------------------------
    def _check_running(self) -> None:
        if self._status == ABORTED:
            raise TransactionAborted(self._tid, self._abort_reason)
        if self._status == COMMITTED:
            raise TransactionStateError(f"transaction {self._tid} is already committed")

    def _mark_aborted(self, reason: str | None) -> None:
        self._status = ABORTED
        if reason and not self._abort_reason:
            self._abort_reason = reason


# ---------------------------------------------------------------------------------------
# client
# ---------------------------------------------------------------------------------------


class Client:
    """A connection to an ``aft-sidecar``: the node's, over ZeroMQ IPC (the default), or
    any sidecar's gRPC front (``grpc="host:port"``).

    Args:
        ipc_dir: directory holding the sidecar's sockets (``/requests`` in Cloudburst's
            executor containers; the sidecar's ``--ipc-dir``).
        thread_id: this process's reply-address suffix, Cloudburst's ``THREAD_ID``. The
            first thread that uses the client binds ``<ipc_dir>/get_<thread_id>`` and so
            on; every further thread of this process gets ``<thread_id>.1``,
            ``<thread_id>.2``... (each thread has its own sockets). Processes sharing one
            sidecar must use distinct ids (an id held by another live process raises
            :class:`~aft_client.AddressInUse`). ``None`` derives the id from the process
            id (``p<pid>``), which is distinct per process, also after ``fork``.
        timeout: seconds to wait for a get, put or start reply. No call waits forever:
            a missing reply raises :class:`~aft_client.SidecarUnavailable`.
        txn_timeout: seconds to wait for a commit, abort or continue reply.
        node_address: this node's address as the sidecar reports it (the ``address`` of
            a started transaction). Learned from the first ``start`` when not given.
        context: a ``zmq.Context`` to use (default: a private one, closed by
            :meth:`close`).
        max_value_size: if set, puts of larger values raise
            :class:`~aft_client.ValueTooLarge` without contacting the sidecar. The sidecar
            enforces its own cap (16 MiB by default) either way.
        grpc: ``"host:port"`` of a sidecar's gRPC front (its ``--grpc-addr``): talk to it
            over gRPC (AFT's ``service Aft``) instead of IPC; needs ``grpcio`` (the
            ``[grpc]`` extra). ``ipc_dir``, ``thread_id`` and ``context`` are then unused.
            :meth:`transaction`, :meth:`resume` and the whole :class:`Transaction` API work
            the same; plain :meth:`get`/:meth:`put` and :meth:`Transaction.get_value` are
            IPC only (:class:`~aft_client.UnsupportedOperation`).
        grpc_token: the bearer token of the sidecar's ``--grpc-token-file``, sent as
            ``authorization: Bearer <token>`` with every call.
        grpc_token_file: read the token from such a file instead (its first line that is
            neither blank nor a ``#`` comment).
        grpc_tls: use TLS (implied by any ``grpc_tls_*``); without ``grpc_tls_ca`` the
            server certificate is checked against the system's roots.
        grpc_tls_ca: CA certificate(s) the server's certificate must chain to (a PEM file
            path, or PEM bytes).
        grpc_tls_cert, grpc_tls_key: this client's certificate chain and private key for
            mutual TLS (paths or PEM bytes; both or neither).
        grpc_options: extra gRPC channel options, ``[(name, value), ...]`` (e.g.
            ``("grpc.ssl_target_name_override", "sidecar.internal")``).

    The plain :meth:`get` and :meth:`put` match Cloudburst's ``AnnaIpcClient`` (see also
    :class:`~aft_client.AnnaIpcClient` for its constructor and transaction methods).
    """

    def __init__(
        self,
        ipc_dir: str | os.PathLike[str] = "/requests",
        thread_id: ThreadId = 0,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        txn_timeout: float = DEFAULT_TXN_TIMEOUT,
        node_address: str | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        max_value_size: int | None = None,
        grpc: str | None = None,
        grpc_token: str | None = None,
        grpc_token_file: str | os.PathLike[str] | None = None,
        grpc_tls: bool = False,
        grpc_tls_ca: PathOrPem | None = None,
        grpc_tls_cert: PathOrPem | None = None,
        grpc_tls_key: PathOrPem | None = None,
        grpc_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if isinstance(thread_id, bool) or not (
            thread_id is None
            or (isinstance(thread_id, int) and thread_id >= 0)
            or (isinstance(thread_id, str) and _SUFFIX_RE.match(thread_id))
        ):
            raise ValueError(
                f"thread_id must be a non-negative int, a name of [A-Za-z0-9_.-], or None; "
                f"got {thread_id!r}"
            )
        if timeout <= 0 or txn_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.ipc_dir = os.fspath(ipc_dir)
        self.thread_id = thread_id
        self.timeout = float(timeout)
        self.txn_timeout = float(txn_timeout)
        self.max_value_size = max_value_size
        self._node_address = node_address
        self._given_context = context
        self._lock = threading.Lock()
        self._closed = False
        self.grpc_target = grpc
        self._grpc: GrpcTransport | None = None
        if grpc is not None:
            self._grpc = _grpc_transport(
                grpc,
                timeout=self.timeout,
                txn_timeout=self.txn_timeout,
                token=grpc_token,
                token_file=grpc_token_file,
                tls=grpc_tls,
                tls_ca=grpc_tls_ca,
                tls_cert=grpc_tls_cert,
                tls_key=grpc_tls_key,
                options=grpc_options,
            )
        else:
            grpc_files = (grpc_token, grpc_token_file, grpc_tls_ca, grpc_tls_cert, grpc_tls_key)
            if grpc_tls or grpc_options or any(v is not None for v in grpc_files):
                raise ValueError("grpc_* options need grpc='host:port'")
        self._setup_process_state()

    @property
    def transport(self) -> str:
        """``"ipc"`` or ``"grpc"``: how this client reaches its sidecar."""
        return "ipc" if self._grpc is None else "grpc"

    # process / thread plumbing -----------------------------------------------------------
    def _setup_process_state(self, forked: bool = False) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        self._sets: weakref.WeakSet[SocketSet] = weakref.WeakSet()
        if self._given_context is not None and not forked:
            self._context = self._given_context
            self._owns_context = False
        else:
            # A ZeroMQ context must not cross a fork: the child gets a private one.
            self._context = zmq.Context()
            self._owns_context = True

    def _base_suffix(self) -> str:
        if self.thread_id is None:
            return f"p{os.getpid()}"
        return str(self.thread_id)

    def _sockets(self) -> SocketSet:
        if self._closed:
            raise AftError("the client is closed")
        if self._grpc is not None:
            raise UnsupportedOperation("a gRPC client has no IPC sockets")
        if os.getpid() != self._pid:
            # Forked: the parent's sockets and context are unusable here. Start afresh
            # (pyzmq makes closing the inherited ones a no-op in the child).
            with self._lock:
                if os.getpid() != self._pid:
                    self._setup_process_state(forked=True)
        sockets: SocketSet | None = getattr(self._local, "sockets", None)
        if sockets is not None and not sockets.closed:
            return sockets
        sockets = SocketSet(self._context, self.ipc_dir, self._allocate_suffix())
        self._local.sockets = sockets
        with self._lock:
            self._sets.add(sockets)
        return sockets

    def _allocate_suffix(self) -> str:
        base = self._base_suffix()
        for n in range(0, 100_000):
            suffix = base if n == 0 else f"{base}.{n}"
            if not REGISTRY.reserve(self.ipc_dir, suffix):
                continue
            # Another process may hold it (the base id: the caller's mistake, reported
            # when the first reply socket is bound; a derived id: just take the next).
            if n > 0 and held_by_live_socket(ipc_path(self.ipc_dir, f"get_{suffix}")):
                REGISTRY.release(self.ipc_dir, suffix)
                continue
            return suffix
        raise AftError("no free reply address suffix")  # pragma: no cover

    @property
    def reply_suffix(self) -> str:
        """The reply-address suffix the calling thread uses (allocating it if needed)."""
        return self._sockets().suffix

    def close(self) -> None:
        """Close the sockets of every thread and the private ZeroMQ context.

        Call it when no other thread is using the client. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sets = list(self._sets)
        if self._grpc is not None:
            self._grpc.close()
        if os.getpid() != self._pid:
            return
        for sockets in sets:
            sockets.close()
        if self._owns_context:
            self._context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # request/reply helpers -------------------------------------------------------------
    def _exchange_kv(
        self, name: str, body: bytes, parse: Callable[[bytes], R | None], deadline: float
    ) -> R:
        """Send ``body`` on ``name``; return the first reply ``parse`` accepts (not None)."""
        sockets = self._sockets()
        sockets.send(name, body, deadline)
        while True:
            reply = sockets.recv(name, deadline)
            parsed = parse(reply)
            if parsed is not None:
                return parsed
            log.debug("dropped a %s reply for another request", name)

    def _deadline(self, timeout: float) -> float:
        return time.monotonic() + timeout

    # plain & transactional data ------------------------------------------------------------
    def _read(self, keys: Sequence[str], tid: str) -> dict[str, bytes | None]:
        """A transaction's read: ``key -> bytes or None``."""
        if self._grpc is not None:
            self._check_open()
            return self._grpc.read(tid, keys)
        values = self._get(keys, tid)
        return {k: (v.value if v is not None else None) for k, v in values.items()}

    def _check_open(self) -> None:
        if self._closed:
            raise AftError("the client is closed")

    def _check_sizes(self, items: Sequence[tuple[str, LWWValue]]) -> None:
        if self.max_value_size is not None:
            big = {k: len(v.value) for k, v in items if len(v.value) > self.max_value_size}
            if big:
                raise ValueTooLarge("put", {k: "TOO_LARGE" for k in big}, big, self.max_value_size)

    def _get(self, keys: Sequence[str], tid: str | None) -> dict[str, LWWValue | None]:
        if self._grpc is not None:
            raise UnsupportedOperation(
                "over gRPC, values carry no LWW timestamp and there are no reads outside a "
                "transaction: use txn.get / txn.get_many"
            )
        sockets = self._sockets()
        request_id = sockets.next_request_id()
        body = _wire.get_request(keys, sockets.reply_address("get"), request_id, tid)
        result = self._exchange_kv(
            "get",
            body,
            lambda data: _wire.parse_get_response(data, keys, request_id),
            self._deadline(self.timeout),
        )
        if result.errors:
            if tid is not None and set(result.errors.values()) == {"KEY_DNE"}:
                # The sidecar's answer for an unknown or failed transaction.
                raise TransactionAborted(tid, _first_reason(result.reasons) or "read refused")
            operation = "get" + (f" in transaction {tid}" if tid else "")
            raise RequestFailed(operation, result.errors, result.reasons)
        return result.values

    def _put(
        self, items: Sequence[tuple[str, LWWValue]], tid: str | None
    ) -> dict[str, _wire.PutAck]:
        """Send one put; return every key's ack (``code`` 0 = stored)."""
        if self._grpc is not None:
            raise UnsupportedOperation(
                "over gRPC there are no writes outside a transaction: use txn.put / txn.put_many"
            )
        self._check_sizes(items)
        sockets = self._sockets()
        request_id = sockets.next_request_id()
        body = _wire.put_request(items, sockets.reply_address("put"), request_id, tid)
        deadline = self._deadline(self.timeout)
        sockets.send("put", body, deadline)
        pending: dict[str, int] = {}
        for key, _ in items:
            pending[key] = pending.get(key, 0) + 1
        outcome: dict[str, _wire.PutAck] = {}
        while pending:
            try:
                reply = sockets.recv("put", deadline)
            except SidecarUnavailable as exc:
                sizes = {k: len(v.value) for k, v in items if k in pending}
                if any(n > DEFAULT_MAX_VALUE_SIZE for n in sizes.values()):
                    raise SidecarUnavailable(
                        f"{exc}; the put carried values over {DEFAULT_MAX_VALUE_SIZE} bytes "
                        f"({sizes}), which the sidecar may have refused"
                    ) from None
                raise
            acks = _wire.parse_put_response(reply, request_id)
            if acks is None:
                log.debug("dropped a put reply for another request")
                continue
            for ack in acks:
                targets = list(pending) if ack.key == "" else [ack.key]
                for target in targets:
                    if target not in pending:
                        continue
                    pending[target] -= 1
                    if pending[target] == 0:
                        del pending[target]
                    previous = outcome.get(target)
                    if previous is None or previous.code == anna_pb2.NO_ERROR:
                        outcome[target] = _wire.PutAck(target, ack.code, ack.reason)
        return outcome

    def _put_checked(self, items: Sequence[tuple[str, LWWValue]], tid: str | None) -> None:
        """Put; raise on any key the sidecar did not store."""
        if self._grpc is not None and tid is not None:
            self._check_open()
            self._check_sizes(items)
            # The sidecar stamps gRPC writes with its own clock.
            self._grpc.write(tid, [(k, v.value) for k, v in items])
            return
        failed = {k: a for k, a in self._put(items, tid).items() if a.code != anna_pb2.NO_ERROR}
        if failed:
            self._raise_put_failure(items, failed, tid)

    def _raise_put_failure(
        self,
        items: Sequence[tuple[str, LWWValue]],
        failed: dict[str, _wire.PutAck],
        tid: str | None,
    ) -> None:
        errors = {k: _wire.error_name(a.code) for k, a in failed.items()}
        reasons = {k: a.reason for k, a in failed.items() if a.reason}
        operation = "put" + (f" in transaction {tid}" if tid else "")
        # The sidecar refuses oversized values (and write sets) with LATTICE and a reason
        # naming the limit; a value over the default cap is a safe guess without one.
        limits = [
            int(m.group(1))
            for a in failed.values()
            if a.code == anna_pb2.LATTICE
            for m in [_LIMIT_RE.search(a.reason)]
            if m
        ]
        sizes = {k: len(v.value) for k, v in items if k in failed}
        over_default = {k: n for k, n in sizes.items() if n > DEFAULT_MAX_VALUE_SIZE}
        if limits or over_default:
            limit = min(limits) if limits else None
            # The sidecar's limit applies to the serialized LWWValue (a few bytes more).
            too_big = {
                k: len(v.value)
                for k, v in items
                if k in failed and limit is not None and len(v.serialize()) > limit
            }
            raise ValueTooLarge(operation, errors, too_big or over_default or sizes, limit, reasons)
        if tid is not None and set(errors.values()) == {"KEY_DNE"}:
            # The sidecar's answer for a put in an unknown or failed transaction.
            raise TransactionAborted(tid, _first_reason(reasons) or describe(errors, reasons))
        raise RequestFailed(operation, errors, reasons)

    # transactions -----------------------------------------------------------------------
    def _start(self) -> aft_pb2.TransactionTag:
        if self._grpc is not None:
            self._check_open()
            tag = self._grpc.start()
            if tag.address and self._node_address is None:
                with self._lock:
                    self._node_address = tag.address
            return tag
        sockets = self._sockets()
        deadline = self._deadline(self.timeout)
        sockets.send("start", _wire.start_request(sockets.reply_address("start")), deadline)
        tag = _wire.parse_tag(sockets.recv("start", deadline, "start"), "start")
        if tag.status == aft_pb2.ABORTED:
            # The sidecar answers {"", ABORTED} when it cannot start one (too many open).
            raise TransactionAborted(
                tag.id, "the sidecar refused to start a transaction (too many open, or overloaded)"
            )
        if not tag.id:
            raise ProtocolError("start reply has no transaction id")
        if tag.address and self._node_address is None:
            with self._lock:
                self._node_address = tag.address
        return tag

    def _tag_exchange(self, name: str, tid: str, body: bytes) -> aft_pb2.TransactionTag:
        def parse(data: bytes) -> aft_pb2.TransactionTag | None:
            tag = _wire.parse_tag(data, name)
            if tag.id and tag.id != tid:
                return None  # a late reply for another transaction
            return tag

        return self._exchange_kv(name, body, parse, self._deadline(self.txn_timeout))

    def _commit(self, tid: str, addresses: Sequence[str]) -> None:
        if self._grpc is not None:
            self._check_open()
            self._grpc.commit(tid)
            return
        sockets = self._sockets()
        body = _wire.commit_request(tid, sockets.reply_address("commit"), addresses)
        tag = self._tag_exchange("commit", tid, body)
        if tag.status == aft_pb2.RUNNING:
            raise CommitOutcomeUnknown(tid, "storage failed at the commit point")
        if tag.status != aft_pb2.COMMITTED:
            raise TransactionAborted(tid, f"commit answered {_wire.status_name(tag.status)}")

    def _abort(self, tid: str) -> None:
        if self._grpc is not None:
            self._check_open()
            self._grpc.abort(tid)
            return
        sockets = self._sockets()
        body = _wire.abort_request(tid, sockets.reply_address("abort"))
        tag = self._tag_exchange("abort", tid, body)
        if tag.status == aft_pb2.COMMITTED:
            raise TransactionStateError(f"transaction {tid} is already committed")
        if tag.status == aft_pb2.RUNNING:
            raise CommitOutcomeUnknown(tid, "a commit of it is being settled")
        if tag.status != aft_pb2.ABORTED:
            raise ProtocolError(f"abort of {tid} answered {_wire.status_name(tag.status)}")

    def _continue(self, tid: str, upstream_address: str) -> None:
        sockets = self._sockets()
        deadline = self._deadline(self.txn_timeout)
        body = _wire.continue_request(tid, sockets.reply_address("continue"), upstream_address)
        sockets.send("continue", body, deadline)
        sockets.recv("continue", deadline, "continue")  # an empty frame; content ignored

    @property
    def node_address(self) -> str:
        """This node's address as its sidecar reports it.

        Taken from the constructor or the first ``start``; if neither happened yet, found
        out by starting and aborting a throw-away transaction.
        """
        if self._node_address is None:
            tag = self._start()
            try:
                self._abort(tag.id)
            except AftError as exc:  # pragma: no cover - the probe txn just times out
                log.warning("abort of address probe transaction %s failed: %s", tag.id, exc)
            if self._node_address is None:
                raise ProtocolError("the sidecar's start reply carries no node address")
        return self._node_address

    # public API --------------------------------------------------------------------------
    def transaction(self) -> Transaction:
        """Start a new transaction (``start``)."""
        tag = self._start()
        return Transaction(self, tag.id, participants=[tag.address], address=tag.address)

    def resume(
        self, token: HandoffToken | str | bytes, *more: HandoffToken | str | bytes
    ) -> Transaction:
        """Join a transaction handed off by upstream function(s) (``continue``).

        Pass one token per upstream function (several for a fan-in); all must name the same
        transaction. A ``continue`` is sent for each distinct upstream address, also when
        it is this node's own (the sidecar handles that case). Over gRPC nothing is sent:
        the id names the node that holds the transaction, and any sidecar forwards its
        calls there.
        """
        tokens = [_as_token(t) for t in (token, *more)]
        tid = tokens[0].tid
        if any(t.tid != tid for t in tokens):
            raise ValueError(
                "hand-off tokens of different transactions: "
                + ", ".join(sorted({t.tid for t in tokens}))
            )
        participants: set[str] = set()
        sent: set[str] = set()
        for t in tokens:
            participants.update(t.participants)
            participants.add(t.address)
            if self._grpc is None and t.address not in sent:
                sent.add(t.address)
                self._continue(tid, t.address)
        if self._grpc is not None:
            self._check_open()
        return Transaction(self, tid, participants=participants)

    def get(
        self, keys: str | Sequence[str], txn_id: str | None = None
    ) -> dict[str, LWWValue | None]:
        """Read keys: a dict ``key -> LWWValue or None`` (Cloudburst's ``get``).

        ``keys`` is one key or a list. With ``txn_id`` the read belongs to that
        transaction (as Cloudburst's AFT executors do it); without, it is a plain read of
        the newest committed value. Unlike Cloudburst's client, a timeout raises
        :class:`~aft_client.SidecarUnavailable` instead of answering ``None`` for every key,
        a read in a failed or unknown transaction raises
        :class:`~aft_client.TransactionAborted` (with the sidecar's reason), and any other
        error the sidecar reports for a key raises :class:`~aft_client.RequestFailed`.
        IPC only (:class:`~aft_client.UnsupportedOperation` over gRPC).
        """
        key_list = _check_keys([keys] if isinstance(keys, str) else keys)
        if not key_list:
            return {}
        return self._get(key_list, txn_id)

    @overload
    def put(self, key: str, value: Any, txn_id: str | None = None) -> bool: ...

    @overload
    def put(
        self, key: list[str], value: list[Any], txn_id: str | None = None
    ) -> dict[str, bool]: ...

    def put(
        self, key: str | list[str], value: Any, txn_id: str | None = None
    ) -> bool | dict[str, bool]:
        """Store LWW values (Cloudburst's ``put``).

        ``put(key, value)`` returns ``True`` if the sidecar stored it, ``False`` if it
        answered the key with an error code. ``put([k1, k2], [v1, v2])`` returns a dict
        ``key -> bool`` (Cloudburst's AFT branch). A value is an :class:`LWWValue`, any
        object with ``.ts`` and ``.reveal()`` (Anna's ``LWWPairLattice``), or bytes
        (stamped now). With ``txn_id`` the write belongs to that transaction and a
        rejection raises :class:`~aft_client.TransactionAborted`. A value over the size
        cap raises :class:`~aft_client.ValueTooLarge`; a timeout raises
        :class:`~aft_client.SidecarUnavailable`. IPC only
        (:class:`~aft_client.UnsupportedOperation` over gRPC).
        """
        if isinstance(key, str):
            items = [(key, to_lww(value))]
        else:
            keys = list(key)
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if len(keys) != len(values):
                raise ValueError(f"{len(keys)} keys but {len(values)} values")
            items = [(k, to_lww(v)) for k, v in zip(keys, values, strict=True)]
        for k, _ in items:
            _check_key(k)
        if not items:
            return {}
        outcome = self._put(items, txn_id)
        failed = {k: a for k, a in outcome.items() if a.code != anna_pb2.NO_ERROR}
        if failed and (
            txn_id is not None
            or any(_names_a_limit(a) for a in failed.values())
            or any(len(v.value) > DEFAULT_MAX_VALUE_SIZE for k, v in items if k in failed)
        ):
            self._raise_put_failure(items, failed, txn_id)
        if failed:
            log.warning(
                "put refused: %s",
                describe(
                    {k: _wire.error_name(a.code) for k, a in failed.items()},
                    {k: a.reason for k, a in failed.items() if a.reason},
                ),
            )
        if isinstance(key, str):
            return key not in failed
        return {k: k not in failed for k, _ in items}


def _grpc_transport(
    target: str,
    *,
    token: str | None,
    token_file: str | os.PathLike[str] | None,
    **kwargs: Any,
) -> GrpcTransport:
    try:
        from aft_client import _grpc
    except ImportError as exc:
        raise ImportError(
            f"Client(grpc=...) needs grpcio: pip install 'aft-client[grpc]' ({exc})"
        ) from exc
    if token is not None and token_file is not None:
        raise ValueError("give grpc_token or grpc_token_file, not both")
    if token_file is not None:
        token = _grpc.read_token_file(token_file)
    return _grpc.GrpcTransport(target, token=token, **kwargs)


def _names_a_limit(ack: _wire.PutAck) -> bool:
    return ack.code == anna_pb2.LATTICE and _LIMIT_RE.search(ack.reason) is not None


def _first_reason(reasons: dict[str, str]) -> str | None:
    return next(iter(sorted(set(reasons.values()))), None)


def _as_token(token: HandoffToken | str | bytes) -> HandoffToken:
    if isinstance(token, HandoffToken):
        return token
    if isinstance(token, (str, bytes, bytearray)):
        return HandoffToken.decode(token)
    raise TypeError(f"expected a HandoffToken or its encoding, got {type(token).__name__}")


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"keys must be str, got {type(key).__name__}")
    if key == _wire.TRANSACTION_ID_KEY:
        raise ValueError(f"{_wire.TRANSACTION_ID_KEY!r} is reserved by the protocol")
    return key


def _check_keys(keys: Iterable[str]) -> list[str]:
    """Validate keys and drop repeats (first occurrence kept)."""
    if isinstance(keys, str):
        raise TypeError("expected a list of keys, got one str")
    out: list[str] = []
    seen: set[str] = set()
    for key in keys:
        _check_key(key)
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _check_items(items: Mapping[str, Any]) -> list[tuple[str, Any]]:
    if not isinstance(items, Mapping):
        raise TypeError(f"expected a mapping of key -> value, got {type(items).__name__}")
    pairs = list(items.items())
    _check_keys([k for k, _ in pairs])
    return pairs
