"""The shop's orders, refunds and escalations: one SQLite file with a few demo orders.

Blocking and short; the agent's tools call it through ``run_blocking``. Each
method opens its own connection, so concurrent calls never share one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id           TEXT PRIMARY KEY,
    customer     TEXT NOT NULL,
    item         TEXT NOT NULL,
    status       TEXT NOT NULL,      -- processing | shipped | delivered
    total_cents  INTEGER NOT NULL,
    date         TEXT NOT NULL       -- delivered on / expected on
);
CREATE TABLE IF NOT EXISTS refunds (
    id           INTEGER PRIMARY KEY,
    order_id     TEXT NOT NULL UNIQUE REFERENCES orders(id),
    amount_cents INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS escalations (
    id           INTEGER PRIMARY KEY,
    call_id      TEXT NOT NULL,
    caller       TEXT NOT NULL,
    summary      TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
"""
DEMO_ORDERS = [
    ("4517", "+15550123", "a pair of trail running shoes", "delivered", 8999, "2026-03-02"),
    ("3820", "+15550123", "a coffee grinder", "shipped", 4500, "2026-03-06"),
    ("2764", "+15550177", "a desk lamp", "processing", 3250, "2026-03-09"),
]
REFUND_ID_BASE = 1000  # refund numbers read well on the phone: R-1001, R-1002, ...


class OrderStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)
            db.executemany("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?)", DEMO_ORDERS)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5.0)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def order(self, order_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute(
                "SELECT o.*, r.id AS refund_id, r.amount_cents AS refunded_cents FROM orders o "
                "LEFT JOIN refunds r ON r.order_id = o.id WHERE o.id = ?", (order_id,)
            ).fetchone()
        return dict(row) if row else None

    def refund(self, order_id: str, reason: str) -> dict[str, Any]:
        """Refund a delivered order in full, once; says why not otherwise."""
        with self._db() as db:
            order = db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
            if order is None:
                return {"ok": False, "why": f"there is no order {order_id}"}
            done = db.execute("SELECT id FROM refunds WHERE order_id = ?", (order_id,)).fetchone()
            if done is not None:
                return {"ok": False, "why": "this order was already refunded", "refund_id": done["id"]}
            if order["status"] != "delivered":
                return {"ok": False, "why": f"the order is still {order['status']}; it can be cancelled instead"}
            cursor = db.execute(
                "INSERT INTO refunds (id, order_id, amount_cents, reason, created_at) VALUES "
                "((SELECT COALESCE(MAX(id), ?) + 1 FROM refunds), ?, ?, ?, ?)",
                (REFUND_ID_BASE, order_id, order["total_cents"], reason, datetime.now().isoformat(timespec="seconds")),
            )
            refund_id = db.execute("SELECT id FROM refunds WHERE rowid = ?", (cursor.lastrowid,)).fetchone()["id"]
        return {"ok": True, "refund_id": refund_id, "order_id": order_id, "amount_cents": order["total_cents"]}

    def refunds(self) -> list[dict[str, Any]]:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT * FROM refunds ORDER BY id")]

    def escalate(self, call_id: str, caller: str, summary: str) -> int:
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO escalations (call_id, caller, summary, created_at) VALUES (?, ?, ?, ?)",
                (call_id, caller, summary, datetime.now().isoformat(timespec="seconds")),
            )
            return int(cursor.lastrowid or 0)

    def escalations(self) -> list[dict[str, Any]]:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT * FROM escalations ORDER BY id")]
