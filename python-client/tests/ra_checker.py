"""A sound checker for read atomicity (and the sidecar's other read guarantees) on a history.

History model
-------------
Every value a test writes is unique and names its writer: ``(writer tid, key, seq)``,
where ``seq`` counts that transaction's writes. A :class:`TxnRecord` lists one
transaction's operations in program order (a DAG's functions one after another), whether
it committed, and when its commit request was sent (``time.monotonic``, which is one clock
for all processes of a Linux machine).

What is checked, and why each verdict is sound
----------------------------------------------
Per read, against the guarantees in README.md and docs/ARCHITECTURE.md (each failure is
certain, not a guess):

* read-your-writes: a read of a key the transaction already wrote returns its own latest
  write of that key;
* repeatable reads: two reads of one key (with no own write between) return the same
  version;
* atomic visibility: an external read returns a version written by a transaction that
  committed, and that version is the writer's *final* write of the key (intermediate
  values never become visible); the read completed after the writer's commit request was
  sent (it cannot have seen a committed version before the commit existed).

Read atomicity (no fractured reads). The sidecar orders versions by ``(commit timestamp,
transaction id)``: one total order ``<`` over transactions, the same for every key, with
"no value" (the initial state, ``None``) older than everything. If ``T`` read ``x`` from
``Wi`` and read ``y`` from ``Wj != Wi``, and ``Wi`` also wrote ``y``, RA requires ``T``'s
``y`` to be at least as new as ``Wi``'s, i.e. ``Wi < Wj``; if ``T`` read "no value" for
``y``, that is already a violation (nothing is older than the initial state). Each such
requirement is an edge ``Wi -> Wj``. A correct execution has *some* total order satisfying
every edge, which exists iff the graph has no cycle. So a cycle is a certain violation,
found without knowing the sidecar's actual commit order (no false alarms from clock
ties or concurrent commits); conversely, any history whose reads are explainable by
some order passes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Write:
    key: str
    seq: int


@dataclass(frozen=True)
class Read:
    key: str
    writer: str | None  # None: no value (the initial state)
    seq: int | None
    done: float = 0.0  # time.monotonic() when the reply arrived


Op = Read | Write


@dataclass
class TxnRecord:
    tid: str
    ops: list[Op] = field(default_factory=list)
    committed: bool = False
    commit_sent: float | None = None

    def final_writes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            if isinstance(op, Write):
                out[op.key] = op.seq
        return out

    def to_json(self) -> dict:  # type: ignore[type-arg]
        return {
            "tid": self.tid,
            "committed": self.committed,
            "commit_sent": self.commit_sent,
            "ops": [
                {"w": [o.key, o.seq]}
                if isinstance(o, Write)
                else {"r": [o.key, o.writer, o.seq, o.done]}
                for o in self.ops
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> TxnRecord:  # type: ignore[type-arg]
        ops: list[Op] = []
        for o in data["ops"]:
            if "w" in o:
                ops.append(Write(*o["w"]))
            else:
                ops.append(Read(*o["r"]))
        return cls(data["tid"], ops, data["committed"], data["commit_sent"])


def encode_value(tid: str, key: str, seq: int) -> bytes:
    """The unique value a test transaction writes."""
    return json.dumps([tid, key, seq]).encode()


def decode_value(value: bytes | None) -> tuple[str | None, int | None, str | None]:
    """``(writer, seq, key)`` of a value read back (all ``None`` for no value)."""
    if value is None:
        return None, None, None
    tid, key, seq = json.loads(value)
    return tid, seq, key


def check_history(records: Iterable[TxnRecord]) -> list[str]:
    """All violations found in the history (empty when it is consistent)."""
    return analyze(records)[0]


def analyze(records: Iterable[TxnRecord]) -> tuple[list[str], int]:
    """``(violations, number of read-atomicity ordering constraints derived)``.

    The count says how much the history exercised the check: a workload whose readers
    never saw two keys of one writer yields none.
    """
    txns = {r.tid: r for r in records}
    finals = {tid: r.final_writes() for tid, r in txns.items()}
    violations: list[str] = []
    edges: dict[str, set[str]] = {}
    edge_reason: dict[tuple[str, str], str] = {}
    n_constraints = 0

    for t in txns.values():
        own: dict[str, int] = {}
        external: dict[str, tuple[str | None, int | None]] = {}
        for op in t.ops:
            if isinstance(op, Write):
                own[op.key] = op.seq
                continue
            got = (op.writer, op.seq)
            if op.key in own:
                if got != (t.tid, own[op.key]):
                    violations.append(
                        f"{t.tid}: read-your-writes: read {op.key} = {got}, "
                        f"own latest write is seq {own[op.key]}"
                    )
                continue
            if op.writer == t.tid:
                violations.append(f"{t.tid}: read its own {op.key} before writing it")
                continue
            if op.key in external:
                if external[op.key] != got:
                    violations.append(
                        f"{t.tid}: non-repeatable read of {op.key}: {external[op.key]} then {got}"
                    )
                continue
            external[op.key] = got
            if op.writer is None:
                continue
            w = txns.get(op.writer)
            if w is None:
                violations.append(f"{t.tid}: read {op.key} from unknown writer {op.writer}")
            elif not w.committed:
                violations.append(f"{t.tid}: read {op.key} from {op.writer}, which did not commit")
            elif finals[op.writer].get(op.key) != op.seq:
                violations.append(
                    f"{t.tid}: read {op.key} = seq {op.seq} of {op.writer}, whose final "
                    f"write of it is seq {finals[op.writer].get(op.key)}"
                )
            elif w.commit_sent is not None and op.done and op.done < w.commit_sent:
                violations.append(
                    f"{t.tid}: read {op.key} from {op.writer} before that commit was requested"
                )

        # Read atomicity constraints from T's external reads.
        for x, (wi, _) in external.items():
            if wi is None or wi not in finals:
                continue
            for y in finals[wi]:
                if y == x or y not in external:
                    continue
                wj = external[y][0]
                if wj == wi:
                    continue
                if wj is None:
                    violations.append(
                        f"{t.tid}: fractured read: {x} from {wi}, which also wrote {y}, "
                        f"but {y} read as no value"
                    )
                    continue
                edges.setdefault(wi, set()).add(wj)
                n_constraints += 1
                edge_reason.setdefault((wi, wj), f"{t.tid} read {x} from {wi} and {y} from {wj}")

    cycle = _find_cycle(edges)
    if cycle:
        steps = [edge_reason[(a, b)] for a, b in itertools.pairwise(cycle)]
        violations.append(
            "fractured reads: no commit order explains them; the cycle "
            + " -> ".join(cycle)
            + " comes from: "
            + "; ".join(steps)
        )
    return violations, n_constraints


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or None (iterative DFS)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color: dict[str, int] = {}
    parent: dict[str, str] = {}
    for root in list(edges):
        if color.get(root, WHITE) != WHITE:
            continue
        stack = [(root, iter(sorted(edges.get(root, ()))))]
        color[root] = GREY
        while stack:
            node, children = stack[-1]
            advanced = False
            for child in children:
                state = color.get(child, WHITE)
                if state == WHITE:
                    color[child] = GREY
                    parent[child] = node
                    stack.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if state == GREY:
                    path = [node]
                    while path[-1] != child:
                        path.append(parent[path[-1]])
                    path.reverse()
                    return [*path, child]
            if not advanced:
                color[node] = BLACK
                stack.pop()
    return None
