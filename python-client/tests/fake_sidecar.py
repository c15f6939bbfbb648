"""A scriptable in-process stand-in for aft-sidecar, for client unit tests.

It binds the six request endpoints, records every raw request, and answers like the real
sidecar in the simple cases (a dict store, transactions with buffered writes, no read
atomicity). Tests install hooks to misbehave: stay silent, send malformed or stale replies,
answer with error codes. The real binary is exercised by ``test_sidecar.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from aft_client._proto import aft_pb2, anna_pb2

ENDPOINTS = ("get", "put", "start", "commit", "abort", "continue")

# A hook gets (endpoint, raw request) and returns None to let the default handler answer,
# or a list of (reply address, frame) to send instead (an empty list: stay silent).
Hook = Callable[[str, bytes], "list[tuple[str, bytes]] | None"]


@dataclass
class FakeTxn:
    tid: str
    status: int = aft_pb2.RUNNING
    writes: dict[str, bytes] = field(default_factory=dict)
    # Test hook: commits of this transaction answer RUNNING (outcome unknown).
    outcome_unknown: bool = False


class FakeSidecar:
    def __init__(self, ipc_dir: str, node_address: str = "127.0.0.1", max_value: int = 1 << 24):
        self.ipc_dir = ipc_dir
        self.node_address = node_address
        self.max_value = max_value
        self.store: dict[str, bytes] = {}  # key -> serialized LWWValue
        self.txns: dict[str, FakeTxn] = {}
        self.requests: list[tuple[str, bytes]] = []
        self.hook: Hook | None = None
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-sidecar", daemon=True)
        self._lock = threading.Lock()

    # lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeSidecar:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._ctx.term()

    def __enter__(self) -> FakeSidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_on(self, endpoint: str) -> list[bytes]:
        with self._lock:
            return [body for name, body in self.requests if name == endpoint]

    # loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        pulls = {}
        poller = zmq.Poller()
        for name in ENDPOINTS:
            sock = self._ctx.socket(zmq.PULL)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(f"ipc://{self.ipc_dir}/{name}")
            pulls[sock] = name
            poller.register(sock, zmq.POLLIN)
        pushes: dict[str, zmq.Socket] = {}
        self._ready.set()
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(50):
                    name = pulls[sock]
                    body = sock.recv()
                    with self._lock:
                        self.requests.append((name, body))
                    replies = self.hook(name, body) if self.hook else None
                    if replies is None:
                        replies = self._handle(name, body)
                    for address, frame in replies:
                        push = pushes.get(address)
                        if push is None:
                            push = self._ctx.socket(zmq.PUSH)
                            push.setsockopt(zmq.LINGER, 0)
                            push.connect(address)
                            pushes[address] = push
                        push.send(frame)
        finally:
            for sock in list(pulls) + list(pushes.values()):
                sock.close(0)

    # default behaviour ----------------------------------------------------------------
    def _handle(self, name: str, body: bytes) -> list[tuple[str, bytes]]:
        return getattr(self, "_on_" + name)(body)

    @staticmethod
    def _split_tid(request: anna_pb2.KeyRequest) -> tuple[list[anna_pb2.KeyTuple], str | None]:
        tuples = list(request.tuples)
        if tuples and tuples[-1].key == "TRANSACTION_ID":
            return tuples[:-1], tuples[-1].payload.decode()
        return tuples, None

    def _on_get(self, body: bytes) -> list[tuple[str, bytes]]:
        request = anna_pb2.KeyRequest.FromString(body)
        tuples, tid = self._split_tid(request)
        response = anna_pb2.KeyResponse(type=anna_pb2.GET, response_id=request.request_id)
        txn = self.txns.get(tid) if tid else None
        if tid is not None and (txn is None or txn.status != aft_pb2.RUNNING):
            for tup in tuples:  # like the sidecar: KEY_DNE with the reason as payload
                response.tuples.add(
                    key=tup.key, error=anna_pb2.KEY_DNE, payload=f"transaction `{tid}`".encode()
                )
            return [(request.response_address, response.SerializeToString())]
        for tup in tuples:
            payload = None
            if txn is not None and tup.key in txn.writes:
                payload = txn.writes[tup.key]
            elif tid is None or txn is not None:
                payload = self.store.get(tup.key)
            if payload is None:
                response.tuples.add(key=tup.key, error=anna_pb2.KEY_DNE)
            else:
                response.tuples.add(key=tup.key, lattice_type=anna_pb2.LWW, payload=payload)
        return [(request.response_address, response.SerializeToString())]

    def _on_put(self, body: bytes) -> list[tuple[str, bytes]]:
        request = anna_pb2.KeyRequest.FromString(body)
        tuples, tid = self._split_tid(request)
        response = anna_pb2.KeyResponse(type=anna_pb2.PUT, response_id=request.request_id)
        txn = self.txns.get(tid) if tid else None
        for tup in tuples:
            reason = ""
            if len(tup.payload) > self.max_value:
                error = anna_pb2.LATTICE
                reason = (
                    f"key `{tup.key}`: value of {len(tup.payload)} bytes exceeds the limit of "
                    f"{self.max_value} bytes"
                )
            elif tid is not None and (txn is None or txn.status != aft_pb2.RUNNING):
                error = anna_pb2.KEY_DNE
                reason = f"unknown transaction `{tid}`" if txn is None else f"`{tid}` has ended"
            else:
                error = anna_pb2.NO_ERROR
                if txn is not None:
                    txn.writes[tup.key] = tup.payload
                else:
                    self.store[tup.key] = tup.payload
            response.tuples.add(
                key=tup.key, lattice_type=anna_pb2.LWW, error=error, payload=reason.encode()
            )
        return [(request.response_address, response.SerializeToString())]

    def _on_start(self, body: bytes) -> list[tuple[str, bytes]]:
        tid = uuid.uuid4().hex
        self.txns[tid] = FakeTxn(tid)
        tag = aft_pb2.TransactionTag(id=tid, status=aft_pb2.RUNNING, address=self.node_address)
        return [(body.decode(), tag.SerializeToString())]

    def _on_commit(self, body: bytes) -> list[tuple[str, bytes]]:
        request = aft_pb2.CommitRequest.FromString(body)
        txn = self.txns.get(request.tid)
        if txn is not None and txn.outcome_unknown:
            tag = aft_pb2.TransactionTag(id=request.tid, status=aft_pb2.RUNNING)
            return [(request.responseAddress, tag.SerializeToString())]
        if txn is not None and txn.status == aft_pb2.RUNNING:
            self.store.update(txn.writes)
            txn.status = aft_pb2.COMMITTED
        status = txn.status if txn is not None else aft_pb2.ABORTED
        tag = aft_pb2.TransactionTag(id=request.tid, status=status)
        return [(request.responseAddress, tag.SerializeToString())]

    def _on_abort(self, body: bytes) -> list[tuple[str, bytes]]:
        tid, address = body.decode().split("~", 1)
        txn = self.txns.get(tid)
        if txn is not None and txn.status == aft_pb2.RUNNING:
            txn.status = aft_pb2.ABORTED
        tag = aft_pb2.TransactionTag(id=tid, status=aft_pb2.ABORTED)
        return [(address, tag.SerializeToString())]

    def _on_continue(self, body: bytes) -> list[tuple[str, bytes]]:
        request = aft_pb2.MetadataRequest.FromString(body)
        self.txns.setdefault(request.tid, FakeTxn(request.tid))
        return [(request.responseAddress, b"")]
