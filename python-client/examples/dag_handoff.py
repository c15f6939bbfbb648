#!/usr/bin/env python3
"""A two-function DAG as one transaction, with the functions in two processes.

Run it against a sidecar::

    aft-sidecar --ipc-dir /tmp/aft --storage file:///tmp/aft/store --node-address 127.0.0.1 &
    python python-client/examples/dag_handoff.py --ipc-dir /tmp/aft

``upstream`` starts the transaction, writes an order, and hands the transaction off;
``downstream`` (another process, which could be on another node) resumes it, reads the
order written upstream (read-your-writes across functions), writes an invoice, and
commits. Both writes become visible together, or neither does.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import uuid

from aft_client import Client


def upstream(ipc_dir: str, order_key: str, conn: multiprocessing.connection.Connection) -> None:
    with Client(ipc_dir, thread_id=None) as client:  # thread id derived from the pid
        txn = client.transaction()
        txn.put(order_key, b"2 x espresso")
        token = txn.handoff()  # the function ends here; the transaction goes on downstream
        print(f"upstream:   started {txn.tid} on {token.address}, wrote {order_key}")
        conn.send(token.encode())  # in Cloudburst: the last trigger argument


def downstream(
    ipc_dir: str, order_key: str, invoice_key: str, conn: multiprocessing.connection.Connection
) -> None:
    token = conn.recv()
    with Client(ipc_dir, thread_id=None) as client:
        with client.resume(token) as txn:  # commits when the block ends
            order = txn.get(order_key)
            assert order is not None, "the upstream write must be visible downstream"
            txn.put(invoice_key, b"invoice for " + order)
            print(f"downstream: resumed {txn.tid}, read {order!r}, wrote {invoice_key}")
        print(f"downstream: {txn.status}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipc-dir", default="/requests", help="the sidecar's --ipc-dir")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    order_key, invoice_key = f"order-{run}", f"invoice-{run}"
    ctx = multiprocessing.get_context("spawn")
    recv_end, send_end = ctx.Pipe(duplex=False)
    procs = [
        ctx.Process(target=upstream, args=(args.ipc_dir, order_key, send_end)),
        ctx.Process(target=downstream, args=(args.ipc_dir, order_key, invoice_key, recv_end)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    if any(p.exitcode != 0 for p in procs):
        print("a function failed", file=sys.stderr)
        return 1

    with Client(args.ipc_dir, thread_id=None) as client:
        values = client.get([order_key, invoice_key])  # plain reads of committed data
        for key, value in values.items():
            print(f"committed:  {key} = {value.reveal() if value else None!r}")
        return 0 if all(values.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
