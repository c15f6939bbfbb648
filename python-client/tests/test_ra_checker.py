"""The read-atomicity checker flags hand-made bad histories and passes good ones."""

from __future__ import annotations

import random

from ra_checker import Read, TxnRecord, Write, check_history


def txn(tid: str, *ops: object, committed: bool = True, commit_sent: float = 0.0) -> TxnRecord:
    return TxnRecord(tid, list(ops), committed, commit_sent)  # type: ignore[arg-type]


def test_consistent_history_passes() -> None:
    history = [
        txn("W1", Write("x", 1), Write("y", 2)),
        txn("W2", Write("y", 1)),
        # W1 < W2 explains this: T sees W1's x and the newer W2's y.
        txn("T", Read("x", "W1", 1), Read("y", "W2", 1)),
        # Initial state everywhere is fine; so is seeing all of W1.
        txn("U", Read("x", None, None), Read("y", None, None)),
        txn("V", Read("x", "W1", 1), Read("y", "W1", 2)),
        # Own writes, repeatable reads.
        txn(
            "S",
            Read("x", "W1", 1),
            Write("x", 1),
            Read("x", "S", 1),
            Read("y", "W2", 1),
            Read("y", "W2", 1),
        ),
    ]
    assert check_history(history) == []


def test_classic_fractured_read_is_caught() -> None:
    history = [
        txn("W1", Write("x", 1), Write("y", 2)),
        txn("W2", Write("x", 1), Write("y", 2)),
        txn("T", Read("x", "W1", 1), Read("y", "W2", 2)),
    ]
    [violation] = check_history(history)
    assert "fractured" in violation and "W1" in violation and "W2" in violation


def test_fractured_read_against_initial_state_is_caught() -> None:
    history = [
        txn("W1", Write("x", 1), Write("y", 2)),
        txn("T", Read("x", "W1", 1), Read("y", None, None)),
    ]
    [violation] = check_history(history)
    assert "fractured" in violation and "no value" in violation


def test_cycle_spread_over_readers_is_caught() -> None:
    # Every reader alone is explainable; together they need W1 < W2 < W3 < W1.
    history = [
        txn("W1", Write("x", 1), Write("y", 2)),
        txn("W2", Write("y", 1), Write("z", 2)),
        txn("W3", Write("z", 1), Write("x", 2)),
        txn("T1", Read("x", "W1", 1), Read("y", "W2", 1)),
        txn("T2", Read("y", "W2", 1), Read("z", "W3", 1)),
        txn("T3", Read("z", "W3", 1), Read("x", "W1", 1)),
    ]
    assert check_history(history[:5]) == []
    [violation] = check_history(history)
    assert "cycle" in violation


def test_atomic_visibility_violations_are_caught() -> None:
    history = [
        txn("A", Write("x", 1), committed=False),
        txn("W", Write("y", 1), Write("y", 2), commit_sent=10.0),
        txn("T1", Read("x", "A", 1)),  # aborted writer
        txn("T2", Read("y", "W", 1, done=20.0)),  # intermediate value
        txn("T3", Read("y", "W", 2, done=5.0)),  # before the commit was even requested
        txn("T4", Read("z", "nobody", 1)),  # unknown writer
    ]
    found = check_history(history)
    assert len(found) == 4
    assert any("did not commit" in v for v in found)
    assert any("final" in v for v in found)
    assert any("before that commit" in v for v in found)
    assert any("unknown writer" in v for v in found)


def test_read_your_writes_and_repeatable_reads_are_checked() -> None:
    history = [
        txn("W1", Write("x", 1)),
        txn("W2", Write("x", 1)),
        txn("T", Write("k", 1), Write("k", 2), Read("k", "T", 1)),
        txn("U", Read("x", "W1", 1), Read("x", "W2", 1)),
    ]
    found = check_history(history)
    assert len(found) == 2
    assert any("read-your-writes" in v for v in found)
    assert any("non-repeatable" in v for v in found)


def _simulate(atomic: bool, seed: int) -> list[TxnRecord]:
    """Run the workload's transaction shape on a toy store, serially interleaved at random.

    Commits install a transaction's writes all at once (``atomic``) or key by key with
    other transactions' reads in between (the bug read atomicity forbids).
    """
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(6)]
    store: dict[str, tuple[str, int]] = {}
    records: list[TxnRecord] = []
    pending_installs: list[tuple[str, int, str]] = []  # (key, seq, tid) not yet visible
    for n in range(300):
        rec = TxnRecord(f"T{n}")
        writes = {}
        for k in rng.sample(keys, 3):
            writer = store.get(k)
            rec.ops.append(Read(k, writer[0] if writer else None, writer[1] if writer else None))
        for seq, k in enumerate(rng.sample(keys, 3), start=1):
            rec.ops.append(Write(k, seq))
            writes[k] = seq
        rec.committed = True
        records.append(rec)
        if atomic:
            for k, seq in writes.items():
                store[k] = (rec.tid, seq)
        else:
            pending_installs += [(k, seq, rec.tid) for k, seq in writes.items()]
            rng.shuffle(pending_installs)
            for _ in range(rng.randint(0, len(pending_installs))):
                k, seq, tid = pending_installs.pop()
                store[k] = (tid, seq)
    return records


def test_checker_has_teeth_on_a_non_atomic_store() -> None:
    for seed in range(5):
        assert check_history(_simulate(atomic=True, seed=seed)) == []
        assert check_history(_simulate(atomic=False, seed=seed)), seed
