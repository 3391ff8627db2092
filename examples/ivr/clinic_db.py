"""The clinic's appointment book and voicemail box: one SQLite file.

Every method is blocking (a few ms at most) and opens its own connection, so
calls can use it from the shared worker threads at the same time; the bot
calls it through ``agent.workers.run_blocking`` to keep the event loop free.
A UNIQUE slot constraint makes two callers racing for the same slot safe.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS appointments (
    id         INTEGER PRIMARY KEY,
    caller     TEXT NOT NULL,
    day        TEXT NOT NULL,            -- ISO date
    slot       TEXT NOT NULL,            -- HH:MM, clinic time
    booked_at  TEXT NOT NULL,
    call_id    TEXT NOT NULL,
    UNIQUE (day, slot)
);
CREATE TABLE IF NOT EXISTS voicemails (
    id          INTEGER PRIMARY KEY,
    caller      TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    seconds     REAL NOT NULL,
    wav_path    TEXT NOT NULL,
    transcript  TEXT NOT NULL,
    call_id     TEXT NOT NULL
);
"""

#: Bookable slots: every half hour from 9:00 to 16:30.
SLOTS = tuple(time(h, m) for h in range(9, 17) for m in (0, 30))


@dataclass(frozen=True, slots=True)
class Appointment:
    id: int
    day: date
    slot: time


class ClinicBook:
    """Appointments and voicemails in ``path`` (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5.0)
        try:
            with db:  # commit, or roll back on error
                yield db
        finally:
            db.close()

    def book_first_free(self, day: date, caller: str, call_id: str) -> Appointment | None:
        """Take the first free slot on ``day``; None when the day is full."""
        now = datetime.now().isoformat(timespec="seconds")
        for slot in SLOTS:
            try:
                with self._db() as db:
                    cursor = db.execute(
                        "INSERT INTO appointments (caller, day, slot, booked_at, call_id) VALUES (?, ?, ?, ?, ?)",
                        (caller, day.isoformat(), slot.strftime("%H:%M"), now, call_id),
                    )
                return Appointment(int(cursor.lastrowid or 0), day, slot)
            except sqlite3.IntegrityError:
                continue  # taken (perhaps a moment ago by another call): try the next one
        return None

    def cancel(self, appointment_id: int) -> None:
        with self._db() as db:
            db.execute("DELETE FROM appointments WHERE id = ?", (appointment_id,))

    def appointments(self, caller: str | None = None) -> list[dict[str, str]]:
        query = "SELECT id, caller, day, slot, call_id FROM appointments"
        args: tuple[str, ...] = ()
        if caller is not None:
            query, args = query + " WHERE caller = ?", (caller,)
        with self._db() as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(query + " ORDER BY day, slot", args)]

    def save_voicemail(self, caller: str, seconds: float, wav_path: str, transcript: str, call_id: str) -> int:
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO voicemails (caller, recorded_at, seconds, wav_path, transcript, call_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (caller, datetime.now().isoformat(timespec="seconds"), round(seconds, 2), wav_path, transcript,
                 call_id),
            )
            return int(cursor.lastrowid or 0)

    def voicemails(self) -> list[dict[str, str]]:
        with self._db() as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM voicemails ORDER BY id")]


def next_weekday(today: date, weekday: int) -> date:
    """The next date falling on ``weekday`` (0 = Monday), never today."""
    return today + timedelta(days=(weekday - today.weekday() - 1) % 7 + 1)
