"""Exceptions raised by :mod:`aft_client`.

Every exception derives from :class:`AftError`, so ``except aft_client.AftError`` catches
anything the client raises on purpose. Argument mistakes (a non-bytes value, a bad token)
raise the usual ``TypeError`` / ``ValueError``.
"""

from __future__ import annotations


class AftError(Exception):
    """Base class of every error raised by the client."""


class SidecarUnavailable(AftError):
    """No usable sidecar: nothing listens at the IPC path, or a reply did not come in time.

    After a timeout the outcome of the request is unknown (a put or commit may still take
    effect). Commit and abort are idempotent in the sidecar, so retrying them with the same
    transaction is safe.
    """


class ProtocolError(AftError):
    """The sidecar sent something this client cannot understand (malformed reply)."""


class TransactionAborted(AftError):
    """The transaction is aborted (by request, by the sidecar, or because it failed).

    ``tid`` is the transaction id; ``reason`` is a human-readable explanation when one is
    known (otherwise ``None``).
    """

    def __init__(self, tid: str, reason: str | None = None) -> None:
        self.tid = tid
        self.reason = reason
        message = f"transaction {tid} aborted"
        if reason:
            message += f": {reason}"
        super().__init__(message)


class TransactionNotFound(TransactionAborted):
    """The sidecar does not know the transaction id (gRPC ``NOT_FOUND``).

    Never started, already forgotten, or lost when its node restarted; the sidecar
    records it as failed, so it can never commit. A subclass of
    :class:`TransactionAborted`: ``except TransactionAborted`` covers it. Only the gRPC
    transport can tell this case apart (the IPC protocol answers it like a failed
    transaction).
    """

    def __init__(self, tid: str, reason: str | None = None) -> None:
        super().__init__(tid, reason)
        message = f"transaction {tid} is not known to the sidecar"
        if reason:
            message += f": {reason}"
        self.args = (message,)


class CommitOutcomeUnknown(AftError):
    """The sidecar could not tell whether the commit took effect: storage failed at the
    commit point. The sidecar settles it (committed if the commit record landed,
    otherwise never); commit again later to learn which.

    ``tid`` is the transaction id; ``reason`` says what failed.
    """

    def __init__(self, tid: str, reason: str | None = None) -> None:
        self.tid = tid
        self.reason = reason
        message = f"outcome of the commit of {tid} is not known yet"
        if reason:
            message += f": {reason}"
        super().__init__(message)


class TransactionStateError(AftError):
    """An operation does not fit the transaction's state (e.g. a put after commit)."""


class RequestFailed(AftError):
    """The sidecar answered a get or put with an error code for some keys.

    ``errors`` maps each failed key to the name of its ``AnnaError`` code (e.g.
    ``"TIMEOUT"``); ``reasons`` maps keys to the sidecar's explanation, where it gave one.
    """

    def __init__(
        self, operation: str, errors: dict[str, str], reasons: dict[str, str] | None = None
    ) -> None:
        self.operation = operation
        self.errors = dict(errors)
        self.reasons = dict(reasons or {})
        super().__init__(f"sidecar rejected {operation}: {describe(self.errors, self.reasons)}")


class ValueTooLarge(RequestFailed, ValueError):
    """A put carried a value larger than the sidecar accepts (16 MiB by default).

    ``sizes`` maps the offending keys to their value sizes; ``limit`` is the limit in
    bytes when known.
    """

    def __init__(
        self,
        operation: str,
        errors: dict[str, str],
        sizes: dict[str, int],
        limit: int | None,
        reasons: dict[str, str] | None = None,
    ) -> None:
        self.sizes = dict(sizes)
        self.limit = limit
        super().__init__(operation, errors, reasons)
        detail = ", ".join(f"{k!r} ({n} bytes)" for k, n in sorted(self.sizes.items()))
        where = f" (limit {limit} bytes)" if limit is not None else ""
        message = f"value too large for {operation}: {detail}{where}"
        distinct = sorted(set(self.reasons.values()))
        if distinct:
            message += "; sidecar: " + "; ".join(distinct)
        self.args = (message,)


def describe(errors: dict[str, str], reasons: dict[str, str]) -> str:
    """``errors``/``reasons`` as one line, grouping keys that failed the same way."""
    groups: dict[tuple[str, str], list[str]] = {}
    for key, code in sorted(errors.items()):
        groups.setdefault((code, reasons.get(key, "")), []).append(repr(key))
    parts = []
    for (code, reason), keys in groups.items():
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        parts.append(f"{shown}: {code}" + (f" ({reason})" if reason else ""))
    return "; ".join(parts)


class AddressInUse(AftError):
    """A reply address this client wants to bind is held by another live process.

    Each process talking to one sidecar needs its own ``thread_id`` (see ``Client``).
    """


class UnsupportedOperation(AftError, NotImplementedError):
    """The call has no equivalent on this client's transport.

    The gRPC transport (``Client(grpc=...)``) speaks AFT's ``service Aft``, which has
    transactional reads and writes of bare bytes only: no plain ``get``/``put`` outside a
    transaction and no LWW timestamps (``get_value``).
    """


class GrpcCallFailed(AftError):
    """A gRPC call failed with a status code no more specific exception describes.

    ``operation`` is the call (``"start"``, ``"read"``, ``"write"``, ``"commit"``,
    ``"abort"``); ``code`` the status code's name (e.g. ``"INTERNAL"``, or
    ``"UNIMPLEMENTED"`` when the address serves no ``service Aft``); ``details`` the
    status message.
    """

    def __init__(self, operation: str, code: str, details: str) -> None:
        self.operation = operation
        self.code = code
        self.details = details
        super().__init__(f"gRPC {operation} failed: {code}: {details}")


class AuthenticationFailed(GrpcCallFailed):
    """The sidecar refused the caller's credentials (gRPC ``UNAUTHENTICATED`` or
    ``PERMISSION_DENIED``): no bearer token, or not the one of its ``--grpc-token-file``.
    """


class InvalidRequest(GrpcCallFailed, ValueError):
    """The sidecar refused the request's input (gRPC ``INVALID_ARGUMENT``): e.g. a
    transaction id it never handed out, an empty key, too many keys in one call.
    Oversized values raise :class:`ValueTooLarge` instead.
    """
