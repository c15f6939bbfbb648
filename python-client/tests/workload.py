"""A bounded multi-process workload of two-function DAG transactions (for test_workload).

``N`` worker processes share one sidecar. Each runs two threads on one ``Client``:

* the *upstream* thread starts transactions, reads and writes a few keys, then hands the
  transaction (token + its operation log so far) to the next worker's queue;
* the *downstream* thread resumes transactions handed to it by the previous worker, reads
  and writes more, and commits (or aborts about one in ten).

Every value is unique (``ra_checker.encode_value``), so each read names its writer. The
finished records go to the result queue for ``ra_checker.check_history``.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import traceback
from typing import Any

from ra_checker import Read, TxnRecord, Write, decode_value, encode_value

from aft_client import Client, TransactionAborted

QUEUE_WAIT = 60.0  # a bound on every blocking queue operation


def _read(txn: Any, keys: list[str], rec: TxnRecord, many: bool) -> None:
    if many:
        values = txn.get_many(keys)
        done = time.monotonic()
        items = [(k, values[k]) for k in keys]
    else:
        items = []
        for k in keys:
            v = txn.get(k)
            items.append((k, v))
        done = time.monotonic()
    for k, v in items:
        writer, seq, key = decode_value(v)
        if key is not None and key != k:
            raise AssertionError(f"read {k} returned a value written to {key}")
        rec.ops.append(Read(k, writer, seq, done))


def _write(txn: Any, keys: list[str], rec: TxnRecord) -> None:
    seqs = {op.key: op.seq for op in rec.ops if isinstance(op, Write)}
    items = {}
    for k in keys:
        seq = seqs.get(k, 0) + 1
        items[k] = encode_value(rec.tid, k, seq)
        rec.ops.append(Write(k, seq))
    txn.put_many(items)


def run_worker(
    index: int,
    n_workers: int,
    n_txns: int,
    ipc_dir: str,
    keys: list[str],
    inboxes: list[Any],
    results: Any,
    seed: int,
) -> None:
    client = Client(ipc_dir, thread_id=500 + index, timeout=10.0, txn_timeout=20.0)
    errors: list[str] = []
    suffixes: list[str] = []

    def upstream() -> None:
        rng = random.Random(seed * 1000 + index)
        outbox = inboxes[(index + 1) % n_workers]
        for _ in range(n_txns):
            txn = client.transaction()
            rec = TxnRecord(txn.tid)
            _read(txn, rng.sample(keys, 2), rec, many=rng.random() < 0.5)
            written = rng.sample(keys, rng.randint(1, 2))
            _write(txn, written, rec)
            if rng.random() < 0.5:  # read-your-writes inside the function
                _read(txn, [written[0]], rec, many=False)
            token = txn.handoff()
            outbox.put((token.encode(), rec.to_json()), timeout=QUEUE_WAIT)

    def downstream() -> None:
        rng = random.Random(seed * 1000 + index + 500)
        inbox = inboxes[index]
        for _ in range(n_txns):
            token, rec_json = inbox.get(timeout=QUEUE_WAIT)
            rec = TxnRecord.from_json(rec_json)
            txn = client.resume(token)
            assert txn.tid == rec.tid
            upstream_writes = [op.key for op in rec.ops if isinstance(op, Write)]
            # Read a key written upstream (read-your-writes across functions) and others.
            _read(txn, [rng.choice(upstream_writes)], rec, many=False)
            _read(txn, rng.sample(keys, 3), rec, many=rng.random() < 0.5)
            _write(txn, rng.sample(keys, rng.randint(1, 2)), rec)
            if rng.random() < 0.1:
                txn.abort()
                rec.committed = False
            else:
                rec.commit_sent = time.monotonic()
                try:
                    txn.commit()
                    rec.committed = True
                except TransactionAborted as exc:
                    errors.append(f"unexpected abort of {rec.tid}: {exc}")
                    rec.committed = False
            results.put(("record", rec.to_json()), timeout=QUEUE_WAIT)

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                suffixes.append(client.reply_suffix)
                fn()
            except BaseException:
                errors.append(f"worker {index} {fn.__name__}: {traceback.format_exc()}")

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (upstream, downstream)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    results.put(("done", {"index": index, "errors": errors, "suffixes": sorted(suffixes)}))


def drain(results: Any, n_workers: int, deadline: float) -> tuple[list[TxnRecord], list[dict]]:  # type: ignore[type-arg]
    """Collect records until every worker reported done (or the deadline passes)."""
    records: list[TxnRecord] = []
    done: list[dict] = []  # type: ignore[type-arg]
    while len(done) < n_workers:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"only {len(done)} of {n_workers} workers finished")
        try:
            kind, body = results.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            continue
        if kind == "record":
            records.append(TxnRecord.from_json(body))
        else:
            done.append(body)
    return records, done
