"""One function of a linear DAG, run as its own process by test_sidecar.

Usage: chain_step.py IPC_DIR STEP KEY EARLIER_KEYS TOKEN

Step 0 starts the transaction; later steps resume it from TOKEN. Each step checks it sees
every earlier step's write, writes ``step<N>`` to KEY, and prints the next token; the last
step (STEP 2) commits and prints ``committed``.
"""

from __future__ import annotations

import sys

from aft_client import Client


def main() -> int:
    ipc_dir, step, key, earlier, token = sys.argv[1:6]
    n = int(step)
    with Client(ipc_dir, thread_id=None) as client:
        txn = client.transaction() if n == 0 else client.resume(token)
        for i, k in enumerate(filter(None, earlier.split(","))):
            got = txn.get(k)
            if got != f"step{i}".encode():
                print(f"step {n}: {k} = {got!r}, expected step{i}", file=sys.stderr)
                return 1
        txn.put(key, f"step{n}".encode())
        if n == 2:
            txn.commit()
            print("committed")
        else:
            print(txn.handoff().encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
