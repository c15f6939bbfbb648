"""Building and parsing the executor <-> sidecar IPC messages (PROTOCOL.md section 2).

Pure functions, no sockets: the client composes them with ``_sockets``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from aft_client._proto import aft_pb2, anna_pb2
from aft_client.errors import ProtocolError
from aft_client.lattice import LWWValue

#: The six request endpoints the sidecar binds (``ipc://<ipc_dir>/<name>``); reply
#: sockets are ``<name>_<suffix>``.
ENDPOINTS = ("get", "put", "start", "commit", "abort", "continue")

#: Key of the trailing ``KeyTuple`` that makes a get/put transactional.
TRANSACTION_ID_KEY = "TRANSACTION_ID"

_NO_VALUE_ERRORS = (anna_pb2.NO_ERROR, anna_pb2.KEY_DNE)


def error_name(code: int) -> str:
    """The ``AnnaError`` name of ``code`` (or ``"ERROR_<n>"`` for an unknown number)."""
    try:
        return anna_pb2.AnnaError.Name(code)
    except ValueError:
        return f"ERROR_{code}"


M = TypeVar("M", bound=Message)


def _parse(message_type: type[M], data: bytes, what: str) -> M:
    msg = message_type()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed {what} reply ({len(data)} bytes): {exc}") from exc
    return msg


def _append_tid(request: anna_pb2.KeyRequest, tid: str | None) -> None:
    if tid is not None:
        request.tuples.add(key=TRANSACTION_ID_KEY, payload=tid.encode("utf-8"))


# get ------------------------------------------------------------------------------------


def get_request(
    keys: Sequence[str], response_address: str, request_id: str, tid: str | None = None
) -> bytes:
    """A ``KeyRequest`` asking for ``keys`` (transactional when ``tid`` is given)."""
    request = anna_pb2.KeyRequest(response_address=response_address, request_id=request_id)
    for key in keys:
        request.tuples.add(key=key)
    _append_tid(request, tid)
    return request.SerializeToString()


def reason_text(payload: bytes) -> str:
    """The human-readable reason the sidecar puts in an error tuple's payload."""
    return payload.decode("utf-8", errors="replace").strip()


@dataclass
class GetResult:
    """A parsed get reply: found values; for failed keys, error names and reasons."""

    values: dict[str, LWWValue | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def parse_get_response(data: bytes, keys: Sequence[str], request_id: str) -> GetResult | None:
    """Parse the ``KeyResponse`` to a get of ``keys``.

    Returns ``None`` when the reply carries a ``response_id`` that is not ``request_id``
    (a late reply to an earlier request: the caller drops it and keeps waiting). Missing
    keys, ``KEY_DNE`` tuples and ``NONE``-lattice tuples all read as ``None`` -- except a
    ``KEY_DNE`` tuple whose payload holds a reason: that is how the sidecar reports a
    failed or unknown transaction (Cloudburst's client would read it as "no value"), so it
    is an error here.
    """
    response = _parse(anna_pb2.KeyResponse, data, "get")
    if response.response_id and response.response_id != request_id:
        return None
    wanted = set(keys)
    result = GetResult(values={key: None for key in keys})
    answered: set[str] = set()
    for tup in response.tuples:
        if tup.key not in wanted or tup.key in answered:
            continue
        answered.add(tup.key)
        failed_read = tup.error == anna_pb2.KEY_DNE and tup.payload
        if tup.error not in _NO_VALUE_ERRORS or failed_read:
            result.errors[tup.key] = error_name(tup.error)
            if tup.payload:
                result.reasons[tup.key] = reason_text(tup.payload)
        elif tup.error == anna_pb2.KEY_DNE or tup.lattice_type == anna_pb2.NONE:
            continue
        elif tup.lattice_type == anna_pb2.LWW:
            try:
                result.values[tup.key] = LWWValue.deserialize(tup.payload)
            except (DecodeError, ValueError, TypeError) as exc:
                raise ProtocolError(f"malformed LWW payload for key {tup.key!r}: {exc}") from exc
        else:
            raise ProtocolError(
                f"key {tup.key!r} came back as a "
                f"{anna_pb2.LatticeType.Name(tup.lattice_type)} lattice; only LWW is supported"
                if tup.lattice_type in anna_pb2.LatticeType.values()
                else f"key {tup.key!r} has unknown lattice type {tup.lattice_type}"
            )
    if response.error not in _NO_VALUE_ERRORS:
        for key in keys:
            if key not in answered:
                result.errors[key] = error_name(response.error)
    return result


# put ------------------------------------------------------------------------------------


def put_request(
    items: Iterable[tuple[str, LWWValue]],
    response_address: str,
    request_id: str,
    tid: str | None = None,
) -> bytes:
    """A ``KeyRequest`` storing LWW ``items`` (transactional when ``tid`` is given)."""
    request = anna_pb2.KeyRequest(response_address=response_address, request_id=request_id)
    for key, value in items:
        request.tuples.add(key=key, lattice_type=anna_pb2.LWW, payload=value.serialize())
    _append_tid(request, tid)
    return request.SerializeToString()


@dataclass(frozen=True)
class PutAck:
    """One key's answer to a put: its ``AnnaError`` code and the sidecar's reason text."""

    key: str
    code: int
    reason: str = ""


def parse_put_response(data: bytes, request_id: str) -> list[PutAck] | None:
    """The per-key answers in one put ``KeyResponse``; ``None`` if it is stale.

    ``NO_ERROR`` means the key was stored; an error tuple's payload holds the reason. A
    response-level error with no tuples comes back as one ack with an empty key, which the
    caller applies to every key.
    """
    response = _parse(anna_pb2.KeyResponse, data, "put")
    if response.response_id and response.response_id != request_id:
        return None
    acks = [
        PutAck(t.key, int(t.error), reason_text(t.payload) if t.error else "")
        for t in response.tuples
        if t.key != TRANSACTION_ID_KEY
    ]
    if not acks and response.error != anna_pb2.NO_ERROR:
        return [PutAck("", int(response.error))]
    return acks


# transactions ---------------------------------------------------------------------------


def start_request(response_address: str) -> bytes:
    """Body of ``start``: the raw reply address."""
    return response_address.encode("utf-8")


def commit_request(tid: str, response_address: str, addresses: Iterable[str]) -> bytes:
    """Body of ``commit``: a ``CommitRequest``."""
    return aft_pb2.CommitRequest(
        tid=tid, responseAddress=response_address, addresses=list(addresses)
    ).SerializeToString()


def abort_request(tid: str, response_address: str) -> bytes:
    """Body of ``abort``: ``"<tid>~<reply address>"``."""
    if "~" in tid:
        raise ValueError(f"transaction id {tid!r} contains '~', which abort cannot carry")
    return f"{tid}~{response_address}".encode()


def continue_request(tid: str, response_address: str, upstream_address: str) -> bytes:
    """Body of ``continue``: a ``MetadataRequest``."""
    return aft_pb2.MetadataRequest(
        tid=tid, responseAddress=response_address, address=upstream_address
    ).SerializeToString()


def parse_tag(data: bytes, what: str) -> aft_pb2.TransactionTag:
    """Parse a ``TransactionTag`` reply (start, commit, abort)."""
    tag = _parse(aft_pb2.TransactionTag, data, what)
    if tag.status not in aft_pb2.TransactionStatus.values():
        raise ProtocolError(f"{what} reply has unknown transaction status {tag.status}")
    return tag


def status_name(status: int) -> str:
    """The ``TransactionStatus`` name of ``status``."""
    return aft_pb2.TransactionStatus.Name(status)
