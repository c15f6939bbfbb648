"""``AnnaIpcClient``: a drop-in for Cloudburst's cache client, backed by the sidecar.

Existing Cloudburst code switches by changing one import::

    # from cloudburst.shared.anna_ipc_client import AnnaIpcClient
    from aft_client import AnnaIpcClient

The constructor (``AnnaIpcClient(thread_id=0, context=None)``), ``get(keys, txn_id=None)``,
``put(key, value, txn_id=None)`` and the AFT branch's ``start()``, ``continue_txn(tid,
address, my_ip)``, ``commit(tag, ip_address=None, schedule=None)`` and ``abort(tag)`` keep
their names, arguments and return shapes. What differs, on purpose: no call waits forever
(a missing reply raises :class:`~aft_client.SidecarUnavailable` after the timeout instead
of answering ``None``s or hanging), failures raise the exceptions of
:mod:`aft_client.errors` (a get in a failed or unknown transaction raises
:class:`~aft_client.TransactionAborted` with the sidecar's reason, where Cloudburst's client
reads ``None``), and ``continue_txn`` always asks the sidecar (which knows its own address)
instead of skipping when ``address == my_ip``.
"""

from __future__ import annotations

from typing import Any

import zmq

from aft_client._proto import aft_pb2
from aft_client.client import DEFAULT_TIMEOUT, DEFAULT_TXN_TIMEOUT, Client

__all__ = ["AnnaIpcClient"]


class AnnaIpcClient(Client):
    """Cloudburst's ``AnnaIpcClient`` interface on top of :class:`~aft_client.Client`."""

    def __init__(
        self,
        thread_id: int | str | None = 0,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        *,
        ipc_dir: str = "/requests",
        timeout: float = DEFAULT_TIMEOUT,
        txn_timeout: float = DEFAULT_TXN_TIMEOUT,
        node_address: str | None = None,
    ) -> None:
        super().__init__(
            ipc_dir,
            thread_id,
            timeout,
            txn_timeout=txn_timeout,
            node_address=node_address,
            context=context,
        )

    def start(self) -> aft_pb2.TransactionTag:
        """Start a transaction; returns its ``TransactionTag`` (id, RUNNING, node address)."""
        return self._start()

    def continue_txn(
        self, tid: str, address: str, my_ip: str | None = None
    ) -> aft_pb2.TransactionTag:
        """Join transaction ``tid`` started upstream on node ``address``."""
        self._continue(tid, address)
        return aft_pb2.TransactionTag(id=tid)

    def commit(
        self, tag: aft_pb2.TransactionTag, ip_address: str | None = None, schedule: Any = None
    ) -> None:
        """Commit ``tag.id``; raises :class:`~aft_client.TransactionAborted` unless COMMITTED.

        ``schedule`` (a Cloudburst ``DagSchedule``) names the nodes the DAG ran on as
        ``ip:port`` locations; every one but ``ip_address`` goes into the request.
        """
        nodes: set[str] = set()
        if schedule is not None:
            for location in schedule.locations.values():
                node = location.split(":")[0]
                if node != ip_address:
                    nodes.add(node)
        self._commit(tag.id, sorted(nodes))

    def abort(self, tag: aft_pb2.TransactionTag) -> None:
        """Abort ``tag.id`` (idempotent)."""
        self._abort(tag.id)
