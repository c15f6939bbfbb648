"""Pure message building/parsing and the LWW value type."""

from __future__ import annotations

import itertools

import pytest

from aft_client import LWWPairLattice, LWWValue, ProtocolError, _wire, generate_timestamp
from aft_client._proto import aft_pb2, anna_pb2


def test_lww_value_matches_anna_surface() -> None:
    v = LWWPairLattice(10, b"abc")
    assert isinstance(v, LWWValue)
    assert (v.ts, v.val, v.reveal(), v.timestamp, v.value) == (10, b"abc", b"abc", 10, b"abc")
    assert v.merge(LWWValue(11, b"new")) == LWWValue(11, b"new")
    assert v.merge(LWWValue(9, b"old")) is v
    assert LWWValue.deserialize(v.serialize()) == v
    proto = anna_pb2.LWWValue.FromString(v.serialize())
    assert (proto.timestamp, proto.value) == (10, b"abc")
    assert LWWValue(1, bytearray(b"x")).value == b"x"
    with pytest.raises(TypeError):
        LWWValue(1, "str")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LWWValue(-1, b"")
    with pytest.raises(TypeError):
        LWWValue(True, b"")


def test_generate_timestamp_is_strictly_increasing() -> None:
    stamps = [generate_timestamp() for _ in range(1000)]
    assert all(a < b for a, b in itertools.pairwise(stamps))


def test_get_request_shape() -> None:
    body = _wire.get_request(["a", "b"], "ipc:///r/get_0", "rid", tid="T1")
    req = anna_pb2.KeyRequest.FromString(body)
    assert [t.key for t in req.tuples] == ["a", "b", "TRANSACTION_ID"]
    assert req.tuples[-1].payload == b"T1"
    assert (req.response_address, req.request_id) == ("ipc:///r/get_0", "rid")
    plain = anna_pb2.KeyRequest.FromString(_wire.get_request(["a"], "x", "r"))
    assert [t.key for t in plain.tuples] == ["a"]


def test_parse_get_response_variants() -> None:
    resp = anna_pb2.KeyResponse(response_id="r1")
    resp.tuples.add(key="a", lattice_type=anna_pb2.LWW, payload=LWWValue(1, b"A").serialize())
    resp.tuples.add(key="b", error=anna_pb2.KEY_DNE)
    data = resp.SerializeToString()
    result = _wire.parse_get_response(data, ["a", "b", "c"], "r1")
    assert result is not None
    assert result.values == {"a": LWWValue(1, b"A"), "b": None, "c": None}
    assert result.errors == {}
    assert _wire.parse_get_response(data, ["a"], "other") is None  # stale
    # An empty response_id (a sidecar that does not echo) is accepted.
    resp.response_id = ""
    assert _wire.parse_get_response(resp.SerializeToString(), ["a"], "r9") is not None
    # A response-level error applies to keys without a tuple.
    resp = anna_pb2.KeyResponse(error=anna_pb2.TIMEOUT)
    result = _wire.parse_get_response(resp.SerializeToString(), ["a"], "r")
    assert result is not None and result.errors == {"a": "TIMEOUT"}
    with pytest.raises(ProtocolError):
        _wire.parse_get_response(b"\x0a\xff", ["a"], "r")
    # KEY_DNE with a reason is the sidecar's "failed transaction", not a missing key.
    resp = anna_pb2.KeyResponse(response_id="r")
    resp.tuples.add(key="a", error=anna_pb2.KEY_DNE, payload=b"unknown transaction `T`")
    result = _wire.parse_get_response(resp.SerializeToString(), ["a"], "r")
    assert result is not None
    assert result.errors == {"a": "KEY_DNE"}
    assert result.reasons == {"a": "unknown transaction `T`"}
    bad = anna_pb2.KeyResponse()
    bad.tuples.add(key="a", lattice_type=anna_pb2.LWW, payload=b"\xff\xff")
    with pytest.raises(ProtocolError, match="LWW payload"):
        _wire.parse_get_response(bad.SerializeToString(), ["a"], "r")


def test_put_request_and_response() -> None:
    body = _wire.put_request([("k", LWWValue(5, b"v"))], "ipc:///r/put_0", "r", tid="T")
    req = anna_pb2.KeyRequest.FromString(body)
    assert req.tuples[0].lattice_type == anna_pb2.LWW
    assert LWWValue.deserialize(req.tuples[0].payload) == LWWValue(5, b"v")
    assert req.tuples[-1].key == "TRANSACTION_ID"
    resp = anna_pb2.KeyResponse(response_id="r")
    resp.tuples.add(key="k", error=anna_pb2.NO_ERROR)
    resp.tuples.add(key="TRANSACTION_ID")  # echoed back: not a key
    assert _wire.parse_put_response(resp.SerializeToString(), "r") == [_wire.PutAck("k", 0)]
    assert _wire.parse_put_response(resp.SerializeToString(), "x") is None
    # An error tuple's payload is the sidecar's reason.
    resp = anna_pb2.KeyResponse(response_id="r")
    resp.tuples.add(key="k", error=anna_pb2.LATTICE, payload=b"value too big ")
    assert _wire.parse_put_response(resp.SerializeToString(), "r") == [
        _wire.PutAck("k", anna_pb2.LATTICE, "value too big")
    ]
    # A response-level error without tuples applies to every key.
    resp = anna_pb2.KeyResponse(response_id="r", error=anna_pb2.TIMEOUT)
    assert _wire.parse_put_response(resp.SerializeToString(), "r") == [
        _wire.PutAck("", anna_pb2.TIMEOUT)
    ]


def test_transaction_bodies() -> None:
    assert _wire.start_request("ipc:///requests/start_0") == b"ipc:///requests/start_0"
    commit = aft_pb2.CommitRequest.FromString(_wire.commit_request("T", "addr", ["1.1.1.1"]))
    assert (commit.tid, commit.responseAddress, list(commit.addresses)) == (
        "T",
        "addr",
        ["1.1.1.1"],
    )
    assert _wire.abort_request("T", "ipc:///r/abort_0") == b"T~ipc:///r/abort_0"
    with pytest.raises(ValueError):
        _wire.abort_request("a~b", "x")
    meta = aft_pb2.MetadataRequest.FromString(_wire.continue_request("T", "ra", "10.0.0.1"))
    assert (meta.tid, meta.responseAddress, meta.address) == ("T", "ra", "10.0.0.1")
    tag = _wire.parse_tag(
        aft_pb2.TransactionTag(id="T", status=aft_pb2.COMMITTED).SerializeToString(), "commit"
    )
    assert tag.status == aft_pb2.COMMITTED
    with pytest.raises(ProtocolError):
        _wire.parse_tag(b"\x10\x07", "commit")  # status 7 does not exist
