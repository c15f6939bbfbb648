"""The last-writer-wins value that Cloudburst stores, as a tiny dataclass.

It mirrors Anna's ``LWWPairLattice`` closely enough for code written against Cloudburst's
cache client: ``.ts``, ``.val``, ``.reveal()``, ``.merge()``. Any object with ``.ts`` and
``.reveal()`` (including Anna's own ``LWWPairLattice``) is accepted where a value is put.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aft_client._proto import anna_pb2

__all__ = ["LWWLike", "LWWPairLattice", "LWWValue", "generate_timestamp"]

_last_ts_lock = threading.Lock()
_last_ts = 0


def generate_timestamp() -> int:
    """A strictly increasing (within this process) timestamp in microseconds since the epoch."""
    global _last_ts
    with _last_ts_lock:
        ts = max(time.time_ns() // 1000, _last_ts + 1)
        _last_ts = ts
        return ts


@runtime_checkable
class LWWLike(Protocol):
    """What ``put`` needs from a value: a timestamp and the revealed bytes."""

    @property
    def ts(self) -> int: ...

    def reveal(self) -> Any: ...


@dataclass(frozen=True)
class LWWValue:
    """A last-writer-wins value: ``timestamp`` (uint64) and opaque ``value`` bytes.

    ``LWWValue(ts, val)`` has the same positional signature as Anna's
    ``LWWPairLattice(ts, val)``; ``LWWPairLattice`` is an alias of this class.
    """

    timestamp: int
    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.timestamp, int) or isinstance(self.timestamp, bool):
            raise TypeError(f"timestamp must be an int, not {type(self.timestamp).__name__}")
        if not 0 <= self.timestamp < 2**64:
            raise ValueError(f"timestamp {self.timestamp} does not fit in a uint64")
        if isinstance(self.value, (bytearray, memoryview)):
            object.__setattr__(self, "value", bytes(self.value))
        if not isinstance(self.value, bytes):
            raise TypeError(f"value must be bytes, not {type(self.value).__name__}")

    @classmethod
    def now(cls, value: bytes) -> LWWValue:
        """A value stamped with :func:`generate_timestamp`."""
        return cls(generate_timestamp(), value)

    # Anna LWWPairLattice-compatible surface -------------------------------------------
    @property
    def ts(self) -> int:
        """The timestamp (Anna's name)."""
        return self.timestamp

    @property
    def val(self) -> bytes:
        """The value (Anna's name)."""
        return self.value

    def reveal(self) -> bytes:
        """The value bytes."""
        return self.value

    def merge(self, other: LWWValue) -> LWWValue:
        """The LWW merge: the value with the larger timestamp (``self`` on a tie)."""
        return other if other.timestamp > self.timestamp else self

    # Wire format ------------------------------------------------------------------------
    def serialize(self) -> bytes:
        """The serialized ``LWWValue`` protobuf (a put's ``KeyTuple.payload``)."""
        return anna_pb2.LWWValue(timestamp=self.timestamp, value=self.value).SerializeToString()

    @classmethod
    def deserialize(cls, payload: bytes) -> LWWValue:
        """Parse a serialized ``LWWValue`` protobuf (raises ``google.protobuf`` DecodeError)."""
        msg = anna_pb2.LWWValue()
        msg.ParseFromString(payload)
        return cls(msg.timestamp, msg.value)


LWWPairLattice = LWWValue
"""Alias for code written against Anna's ``LWWPairLattice(ts, val)``."""


def to_lww(value: Any) -> LWWValue:
    """Coerce a put argument: an :class:`LWWValue`, an LWW-like object, or raw bytes."""
    if isinstance(value, LWWValue):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return LWWValue.now(bytes(value))
    if hasattr(value, "ts") and hasattr(value, "reveal"):
        revealed = value.reveal()
        if not isinstance(revealed, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"an LWW value must reveal bytes, got {type(revealed).__name__} "
                "(serialize it first, as Cloudburst's serializer does)"
            )
        return LWWValue(int(value.ts), bytes(revealed))
    raise TypeError(
        f"expected bytes or an LWW value (.ts and .reveal()), got {type(value).__name__}"
    )
