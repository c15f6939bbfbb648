"""Concurrent DAG transactions from several processes, checked for read atomicity."""

from __future__ import annotations

import multiprocessing
import time
import uuid

from conftest import Sidecar
from ra_checker import TxnRecord, analyze
from workload import drain, run_worker

N_WORKERS = 4
N_TXNS = 50  # per worker
N_KEYS = 6
BUDGET = 90.0  # seconds; the workload normally takes a few


def test_concurrent_dag_transactions_are_read_atomic(sidecar: Sidecar) -> None:
    ctx = multiprocessing.get_context("spawn")
    run = uuid.uuid4().hex[:8]
    keys = [f"ra-{run}-{i}" for i in range(N_KEYS)]
    inboxes = [ctx.Queue() for _ in range(N_WORKERS)]
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=run_worker,
            args=(i, N_WORKERS, N_TXNS, sidecar.ipc_dir, keys, inboxes, results, 7),
            daemon=True,
        )
        for i in range(N_WORKERS)
    ]
    started = time.monotonic()
    for p in procs:
        p.start()
    try:
        records, done = drain(results, N_WORKERS, started + BUDGET)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    errors = [e for d in done for e in d["errors"]]
    assert not errors, "\n".join(errors[:5]) + f"\nsidecar log:\n{sidecar.log()[-3000:]}"
    assert len(records) == N_WORKERS * N_TXNS
    # Two threads per process, two reply suffixes: the base id and the first derived one.
    for d in done:
        assert d["suffixes"] == [str(500 + d["index"]), f"{500 + d['index']}.1"]

    committed = [r for r in records if r.committed]
    assert len(committed) > 0.8 * len(records)
    assert any(
        r.ops and any(getattr(op, "writer", None) not in (None, r.tid) for op in r.ops)
        for r in records
    ), "no transaction read another's write: workload too weak"

    # A final reader sees every key from a committed writer.
    from aft_client import Client

    with Client(sidecar.ipc_dir, thread_id=499) as client, client.transaction() as txn:
        final = TxnRecord(txn.tid)
        from ra_checker import Read, decode_value

        for key, value in txn.get_many(keys).items():
            writer, seq, _ = decode_value(value)
            final.ops.append(Read(key, writer, seq, time.monotonic()))
    records.append(final)
    assert all(op.writer is not None for op in final.ops)  # type: ignore[union-attr]

    violations, n_constraints = analyze(records)
    assert not violations, "\n".join(violations[:10])
    # The history must exercise the check: readers saw several keys of one writer.
    assert n_constraints >= 50, f"only {n_constraints} read-atomicity constraints"
