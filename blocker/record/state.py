"""The state directory: what was published, which order versions were last good, what probes saw.

SQLite in WAL mode with full sync: a daemon killed at any point restarts into the last
committed state, and the CLI can read it while the daemon runs.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS zones (
    operator TEXT PRIMARY KEY,
    serial INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    names INTEGER NOT NULL,
    records INTEGER NOT NULL,
    published_at TEXT NOT NULL,
    in_effect INTEGER NOT NULL,          -- 1 once the reload hook succeeded
    reload_message TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL DEFAULT ''      -- SHA-256 of the exact bytes published (the whole file)
);
CREATE TABLE IF NOT EXISTS zone_bodies (
    checksum TEXT PRIMARY KEY,           -- SHA-256 of the body (zones.checksum)
    content BLOB NOT NULL                -- the body, zlib-compressed: the previous zone of the next plan
);
CREATE TABLE IF NOT EXISTS applied_plans (
    checksum TEXT PRIMARY KEY,           -- a plan checksum `apply --checksum` published
    result TEXT NOT NULL,                -- SHA-256 of "operator zone-checksum" lines after it
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS order_versions (
    order_id TEXT NOT NULL,
    digest TEXT NOT NULL,                -- SHA-256 of the file bytes
    path TEXT NOT NULL,
    content BLOB NOT NULL,               -- the file as applied: re-parsed when the file goes bad
    first_seen TEXT NOT NULL,
    PRIMARY KEY (order_id, digest)
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,                -- the last good version in force
    path TEXT NOT NULL,
    present INTEGER NOT NULL,            -- 0 when its file disappeared (orphaned while active)
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS zone_history (
    operator TEXT NOT NULL,
    serial INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    published_at TEXT NOT NULL,
    order_ids TEXT NOT NULL,             -- comma-separated orders with entries in this serial
    PRIMARY KEY (operator, serial, published_at)
);
CREATE TABLE IF NOT EXISTS probe_firsts (
    order_id TEXT NOT NULL,
    operator TEXT NOT NULL,
    kind TEXT NOT NULL,                  -- 'blocked' (time-to-block) | 'lifted' (time-to-lift)
    at TEXT NOT NULL,
    PRIMARY KEY (order_id, operator, kind)
);
CREATE TABLE IF NOT EXISTS probe_last (
    order_id TEXT NOT NULL,
    operator TEXT NOT NULL,
    last_ok TEXT,                        -- last pass where every check of this order held
    last_failure TEXT,                   -- last pass where one did not
    failures INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, operator)
);
"""


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class _Locked:
    """A sqlite3 connection whose statements run under a lock (see State.__init__)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self.conn, self.lock = conn, lock

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> _Rows:
        with self.lock:
            cur = self.conn.execute(sql, params)
            return _Rows(cur.fetchall(), cur.rowcount)

    def executescript(self, sql: str) -> None:
        with self.lock:
            self.conn.executescript(sql)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class _Rows:
    """Rows fetched while the lock was held, so no cursor outlives it."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


@dataclass(frozen=True)
class ZoneRecord:
    operator: str
    serial: int
    checksum: str
    names: int
    records: int
    published_at: datetime
    in_effect: bool
    reload_message: str
    digest: str = ""  # SHA-256 of the file bytes published; "" for a zone recorded before it was kept


@dataclass(frozen=True)
class OrderVersion:
    order_id: str
    digest: str
    path: str
    content: bytes
    present: bool


class State:
    """One SQLite database per state directory; short transactions, safe to share with readers."""

    def __init__(self, state_dir: Path, readonly: bool = False) -> None:
        self.dir = state_dir
        if not readonly:
            state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "state.sqlite3"
        # The daemon's reconciles and probe passes run in scheduler threads: one connection shared
        # by all of them, every statement and transaction under one re-entrant lock.
        self._lock = threading.RLock()
        if readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db = _Locked(conn, self._lock)
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(zones)")}
            if "digest" not in columns:  # a state folder made before zones kept their digest
                self.db.execute("ALTER TABLE zones ADD COLUMN digest TEXT NOT NULL DEFAULT ''")

    @classmethod
    def open_existing(cls, state_dir: Path) -> State | None:
        """For read-only commands: None when no daemon or apply ever wrote here."""
        if not (state_dir / "state.sqlite3").exists():
            return None
        return cls(state_dir)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[_Locked]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # zones -------------------------------------------------------------------------------
    def zone(self, operator: str) -> ZoneRecord | None:
        row = self.db.execute("SELECT * FROM zones WHERE operator=?", (operator,)).fetchone()
        if row is None:
            return None
        digest = row[8] if len(row) > 8 else ""  # a read-only open of a state folder made before digests
        return ZoneRecord(row[0], row[1], row[2], row[3], row[4], datetime.fromisoformat(row[5]), bool(row[6]),
                          row[7], digest)

    def zones(self) -> dict[str, ZoneRecord]:
        ops = [r[0] for r in self.db.execute("SELECT operator FROM zones ORDER BY operator")]
        return {op: z for op in ops if (z := self.zone(op)) is not None}

    def record_publish(self, zone: ZoneRecord, order_ids: list[str], body: bytes | None = None) -> None:
        """`body`: the zone body published (what `zone.checksum` is the SHA-256 of). Kept,
        compressed, once per distinct body (operators with the same content share it), in the
        same transaction: plan, apply and the daemon then know what was published without
        trusting a file anyone can edit. One row, about a tenth of the zone, per publish."""
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO zones (operator, serial, checksum, names, records, published_at, in_effect, "
                "reload_message, digest) VALUES (?,?,?,?,?,?,?,?,?)",
                (zone.operator, zone.serial, zone.checksum, zone.names, zone.records,
                 iso(zone.published_at), int(zone.in_effect), zone.reload_message, zone.digest),
            )
            self._keep_body(db, zone.checksum, body)
            db.execute("INSERT OR REPLACE INTO zone_history VALUES (?,?,?,?,?)",
                       (zone.operator, zone.serial, zone.checksum, iso(zone.published_at), ",".join(order_ids)))

    @staticmethod
    def _keep_body(db: _Locked, checksum: str, body: bytes | None) -> None:
        known = db.execute("SELECT 1 FROM zone_bodies WHERE checksum=?", (checksum,)).fetchone()
        if body is not None and known is None:
            db.execute("INSERT INTO zone_bodies VALUES (?,?)", (checksum, zlib.compress(body, 1)))
        db.execute("DELETE FROM zone_bodies WHERE checksum NOT IN (SELECT checksum FROM zones)")

    def keep_body(self, operator: str, serial: int, digest: str, body: bytes) -> None:
        """Keep the digest and body of a zone recorded before the state kept them (same serial only)."""
        with self.tx() as db:
            if db.execute("UPDATE zones SET digest=? WHERE operator=? AND serial=?",
                          (digest, operator, serial)).rowcount:
                row = db.execute("SELECT checksum FROM zones WHERE operator=?", (operator,)).fetchone()
                self._keep_body(db, row[0], body)

    def has_body(self, checksum: str) -> bool:
        try:
            return self.db.execute("SELECT 1 FROM zone_bodies WHERE checksum=?", (checksum,)).fetchone() is not None
        except sqlite3.OperationalError:  # a read-only open of a state folder made before bodies were kept
            return False

    def published_body(self, operator: str) -> bytes | None:
        """The body last published for `operator` (checked against its SHA-256), or None when the
        state does not hold it (no publish yet, a state folder made before bodies were kept, a
        damaged row: the file is then read, with care)."""
        try:
            row = self.db.execute("SELECT b.content, z.checksum FROM zones z JOIN zone_bodies b "
                                  "ON b.checksum = z.checksum WHERE z.operator=?", (operator,)).fetchone()
        except sqlite3.OperationalError:  # a read-only open of a state folder made before bodies were kept
            return None
        if row is None:
            return None
        try:
            body = zlib.decompress(row[0])
        except zlib.error:
            return None
        return body if hashlib.sha256(body).hexdigest() == row[1] else None

    def record_applied(self, checksum: str, result: str, at: datetime) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO applied_plans VALUES (?,?,?)", (checksum, result, iso(at)))

    def applied_result(self, checksum: str) -> str | None:
        """What the zones were right after `apply --checksum <checksum>` published, if it did."""
        row = self.db.execute("SELECT result FROM applied_plans WHERE checksum=?", (checksum,)).fetchone()
        return None if row is None else str(row[0])

    def mark_in_effect(self, operator: str, ok: bool, message: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE zones SET in_effect=?, reload_message=? WHERE operator=?",
                       (int(ok), message, operator))

    def zone_history(self, order_id: str | None = None) -> list[tuple[str, int, str, datetime, list[str]]]:
        rows = self.db.execute("SELECT * FROM zone_history ORDER BY published_at, operator").fetchall()
        out = []
        for op, serial, checksum, at, ids in rows:
            id_list = [i for i in ids.split(",") if i]
            if order_id is None or order_id in id_list:
                out.append((op, serial, checksum, datetime.fromisoformat(at), id_list))
        return out

    # orders ------------------------------------------------------------------------------
    def remember_order(self, order_id: str, digest: str, path: str, content: bytes, at: datetime) -> bool:
        """Store a good version; True when this version is new for this order."""
        with self.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO order_versions VALUES (?,?,?,?,?)",
                             (order_id, digest, path, content, iso(at)))
            db.execute("INSERT OR REPLACE INTO orders VALUES (?,?,?,1,?)", (order_id, digest, path, iso(at)))
            return cur.rowcount > 0

    def remember_orders(self, versions: list[tuple[str, str, str, bytes]], at: datetime) -> None:
        """`remember_order` of each (order_id, digest, path, content), in one transaction: one
        fsync for a folder of 1,000 new orders, not 1,000."""
        with self.tx() as db:
            for order_id, digest, path, content in versions:
                db.execute("INSERT OR IGNORE INTO order_versions VALUES (?,?,?,?,?)",
                           (order_id, digest, path, content, iso(at)))
                db.execute("INSERT OR REPLACE INTO orders VALUES (?,?,?,1,?)", (order_id, digest, path, iso(at)))

    def set_present(self, order_id: str, present: bool, at: datetime) -> None:
        with self.tx() as db:
            db.execute("UPDATE orders SET present=?, updated_at=? WHERE order_id=?", (int(present), iso(at), order_id))

    def forget_order(self, order_id: str) -> None:
        """After `apply --force` lifts an orphan: its versions stay as evidence, it stops being in force."""
        with self.tx() as db:
            db.execute("DELETE FROM orders WHERE order_id=?", (order_id,))

    def last_good(self) -> dict[str, OrderVersion]:
        """The last good version of every order in force; contents are read only when asked for
        (`content_of`): a reconcile compares digests, and 1,000 orders are 44 MB of text."""
        rows = self.db.execute("SELECT order_id, digest, path, present FROM orders").fetchall()
        return {r[0]: OrderVersion(r[0], r[1], r[2], b"", bool(r[3])) for r in rows}

    def content_of(self, order_id: str, digest: str) -> bytes:
        row = self.db.execute("SELECT content FROM order_versions WHERE order_id=? AND digest=?",
                              (order_id, digest)).fetchone()
        return b"" if row is None else bytes(row[0])

    def order_since(self) -> dict[str, datetime]:
        """Per order in force: when its current version became the last good one (or later: its
        file's presence changed). A zone published before that may hold another version's targets,
        so a probe does not take it as proof for this one's (expectations.proof_serials)."""
        rows = self.db.execute("SELECT order_id, updated_at FROM orders").fetchall()
        return {o: datetime.fromisoformat(at) for o, at in rows}

    def order_versions(self, order_id: str) -> list[tuple[str, str, bytes, datetime]]:
        rows = self.db.execute("SELECT digest, path, content, first_seen FROM order_versions WHERE order_id=? "
                               "ORDER BY first_seen", (order_id,)).fetchall()
        return [(d, p, bytes(c), datetime.fromisoformat(f)) for d, p, c, f in rows]

    # probes ------------------------------------------------------------------------------
    def record_first(self, order_id: str, operator: str, kind: str, at: datetime) -> bool:
        with self.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO probe_firsts VALUES (?,?,?,?)", (order_id, operator, kind, iso(at)))
            return cur.rowcount > 0

    def firsts(self) -> dict[tuple[str, str, str], datetime]:
        rows = self.db.execute("SELECT order_id, operator, kind, at FROM probe_firsts").fetchall()
        return {(o, op, k): datetime.fromisoformat(at) for o, op, k, at in rows}

    def record_probe_outcome(self, order_id: str, operator: str, ok: bool, at: datetime) -> None:
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO probe_last (order_id, operator) VALUES (?,?)", (order_id, operator))
            if ok:
                db.execute("UPDATE probe_last SET last_ok=? WHERE order_id=? AND operator=?",
                           (iso(at), order_id, operator))
            else:
                db.execute("UPDATE probe_last SET last_failure=?, failures=failures+1 WHERE order_id=? AND operator=?",
                           (iso(at), order_id, operator))

    def probe_last(self) -> dict[tuple[str, str], tuple[datetime | None, datetime | None, int]]:
        rows = self.db.execute("SELECT order_id, operator, last_ok, last_failure, failures FROM probe_last").fetchall()
        return {(o, op): (from_iso(ok), from_iso(bad), n) for o, op, ok, bad, n in rows}

    # read-only helpers for the legal reports ------------------------------------------------
    def version_summary(self) -> dict[str, tuple[int, datetime]]:
        """Per order: how many file versions were applied, and when the first one was seen.

        The report needs "when did we receive it" for every order without loading every
        version's content (`order_versions` does, and 1,000 orders are tens of MB of text).
        """
        rows = self.db.execute("SELECT order_id, COUNT(*), MIN(first_seen) FROM order_versions "
                               "GROUP BY order_id").fetchall()
        return {o: (n, datetime.fromisoformat(first)) for o, n, first in rows}
