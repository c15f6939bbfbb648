"""Python client for ``aft-sidecar``: read-atomic transactions for serverless DAGs.

The sidecar runs one per node and speaks Cloudburst's ZeroMQ IPC protocol; this package
is a small typed client for it::

    from aft_client import Client

    client = Client(ipc_dir="/requests", thread_id=0)
    with client.transaction() as txn:          # start; commit at the end, abort on error
        balance = txn.get("balance") or b"0"
        txn.put("balance", str(int(balance) + 1).encode())

A DAG run is one transaction across functions (and nodes)::

    # upstream function
    txn = client.transaction()
    txn.put("stage1", b"...")
    token = txn.handoff()                      # send token.encode() downstream

    # downstream function (maybe another process or node)
    with client.resume(token) as txn:          # continue; commits at the end
        txn.get("stage1")

Plain ``client.get(keys)`` / ``client.put(key, value)`` behave like Cloudburst's
``AnnaIpcClient``; :class:`AnnaIpcClient` mirrors its constructor and transaction methods.
"""

from aft_client.client import (
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_TIMEOUT,
    DEFAULT_TXN_TIMEOUT,
    Client,
    HandoffToken,
    Transaction,
)
from aft_client.compat import AnnaIpcClient
from aft_client.errors import (
    AddressInUse,
    AftError,
    CommitOutcomeUnknown,
    ProtocolError,
    RequestFailed,
    SidecarUnavailable,
    TransactionAborted,
    TransactionStateError,
    ValueTooLarge,
)
from aft_client.lattice import LWWPairLattice, LWWValue, generate_timestamp

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TXN_TIMEOUT",
    "AddressInUse",
    "AftError",
    "AnnaIpcClient",
    "Client",
    "CommitOutcomeUnknown",
    "HandoffToken",
    "LWWPairLattice",
    "LWWValue",
    "ProtocolError",
    "RequestFailed",
    "SidecarUnavailable",
    "Transaction",
    "TransactionAborted",
    "TransactionStateError",
    "ValueTooLarge",
    "generate_timestamp",
]
