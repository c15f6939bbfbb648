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

Functions with no sidecar on their node use a sidecar's gRPC front (AFT's ``service Aft``;
needs the ``[grpc]`` extra) with the same transaction API::

    client = Client(grpc="sidecar.internal:50051", grpc_token_file="/secrets/aft.token")
    with client.transaction() as txn:
        txn.put("balance", b"1")
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
    AuthenticationFailed,
    CommitOutcomeUnknown,
    GrpcCallFailed,
    InvalidRequest,
    ProtocolError,
    RequestFailed,
    SidecarUnavailable,
    TransactionAborted,
    TransactionNotFound,
    TransactionStateError,
    UnsupportedOperation,
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
    "AuthenticationFailed",
    "Client",
    "CommitOutcomeUnknown",
    "GrpcCallFailed",
    "HandoffToken",
    "InvalidRequest",
    "LWWPairLattice",
    "LWWValue",
    "ProtocolError",
    "RequestFailed",
    "SidecarUnavailable",
    "Transaction",
    "TransactionAborted",
    "TransactionNotFound",
    "TransactionStateError",
    "UnsupportedOperation",
    "ValueTooLarge",
    "generate_timestamp",
]
