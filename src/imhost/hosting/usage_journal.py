"""The engine's usage flush, kept apart from everything else the database is doing.

The engine counts usage in memory and hands it over every second or so
(:class:`~imhost.xmpp.ports.UsageSink`). :class:`JournaledUsageSink` takes the batch, appends
it to a local journal file (one JSON line a record, flushed to the operating system) and
returns at once: the engine never waits for the database. A writer task then writes the
journal's records to the database through the inner sink (its own connection, see
``hosting/engines/builtin.py``), and empties the journal once they are committed.

So what a ``kill -9`` loses is what was counted since the last hand-over (about one second),
whatever the database was doing: a slow transaction, a lock, an outage. At the next start the
journals of processes that are gone are read back and written (:meth:`JournaledUsageSink.start`);
records keep their idempotency keys, so one written twice (committed, then the process died
before the journal was emptied) is counted once.

A journal is ``usage-journal-<node>-<pid>.jsonl`` in the data directory, locked (``flock``)
while its process lives: a journal whose lock can be taken belongs to a process that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from imhost.xmpp.ports import UsageRecord, UsageSink

log = logging.getLogger(__name__)

WRITE_SECONDS = 1.0
MAX_PENDING = 200_000
"""Records kept while the database refuses them (the oldest are dropped past this)."""
WARN_AFTER_SECONDS = 30.0
"""The writer logs a warning once the oldest unwritten record is this old (then every 30 s)."""


def _encode(record: UsageRecord) -> str:
    return json.dumps(
        {
            "host": record.host,
            "metric": record.metric,
            "bucket": record.bucket_start.isoformat(),
            "quantity": record.quantity,
            "key": record.idempotency_key,
            "subject": record.subject,
        },
        separators=(",", ":"),
    )


def _decode(line: str) -> UsageRecord | None:
    try:
        data: dict[str, Any] = json.loads(line)
        bucket = datetime.fromisoformat(data["bucket"])
        if bucket.tzinfo is None:
            return None
        return UsageRecord(
            host=str(data["host"]),
            metric=str(data["metric"]),
            bucket_start=bucket,
            quantity=int(data["quantity"]),
            idempotency_key=str(data["key"]),
            subject=None if data.get("subject") is None else str(data["subject"]),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a line torn by a kill in mid-write: the rest of the file still counts


class UsageJournal:
    """The local journal file of one process (see the module docstring). Thread-safe."""

    def __init__(self, directory: Path, node_id: str) -> None:
        self.directory = directory
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", node_id)[:64] or "node"
        self.path = directory / f"usage-journal-{safe}-{os.getpid()}.jsonl"
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def open(self) -> list[UsageRecord]:
        """Open (and lock) this process's journal; read and remove the journals of processes
        that are gone, returning their records (to be written again)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._file is None:
                handle = self.path.open("a", encoding="utf-8")
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._file = handle
        recovered: list[UsageRecord] = []
        for path in sorted(self.directory.glob("usage-journal-*.jsonl")):
            if path == self.path:
                continue
            with path.open("r", encoding="utf-8") as orphan:
                try:
                    fcntl.flock(orphan.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its process is alive
                records = [r for r in map(_decode, orphan) if r is not None]
                # Ours before the orphan goes: a kill between the two replays it twice, harmless.
                self.append(records)
                recovered.extend(records)
                path.unlink()
        return recovered

    def append(self, records: list[UsageRecord]) -> None:
        if not records:
            return
        text = "".join(_encode(r) + "\n" for r in records)
        with self._lock:
            if self._file is None:
                raise RuntimeError("the usage journal is not open")
            self._file.write(text)
            self._file.flush()  # in the OS: survives a kill of the process

    def keep_only(self, records: list[UsageRecord]) -> None:
        """Replace the journal's content by ``records`` (what is still unwritten)."""
        with self._lock:
            if self._file is None:
                return
            self._file.seek(0)
            self._file.truncate()
            if records:
                self._file.write("".join(_encode(r) + "\n" for r in records))
            self._file.flush()

    def close(self, *, remove: bool) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()


class JournaledUsageSink:
    """A :class:`UsageSink` that journals locally and writes to ``inner`` in the background.

    ``record`` returns once the batch is in the journal and wakes the writer task, which
    calls ``inner.record`` with everything pending (again every :data:`WRITE_SECONDS` while
    the database refuses it, and once more at close).
    """

    def __init__(self, inner: UsageSink, journal: UsageJournal) -> None:
        self.inner = inner
        self.journal = journal
        self.pending: deque[tuple[float, UsageRecord]] = deque()
        """(monotonic time journaled, record), oldest first."""
        self.dropped = 0
        self.last_written_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        """Set by :meth:`record`: the writer writes at once (it does not wait for a timer)."""
        self._io = asyncio.Lock()
        """Orders journal appends and rewrites (a rewrite must not erase a newer append)."""
        self._warned_at = 0.0

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest record not yet in the database (0 when all are)."""
        return time.monotonic() - self.pending[0][0] if self.pending else 0.0

    async def start(self) -> None:
        """Open the journal, queue what dead processes left, start the writer. Idempotent."""
        if self._task is not None:
            return
        recovered = await asyncio.to_thread(self.journal.open)
        if recovered:
            log.info("writing %d usage records left by a previous process", len(recovered))
            now = time.monotonic()
            self.pending.extend((now, r) for r in recovered)
            self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._writer())

    async def record(self, records: list[UsageRecord]) -> None:
        if not records:
            return
        async with self._io:
            await asyncio.to_thread(self.journal.append, records)
            now = time.monotonic()
            self.pending.extend((now, r) for r in records)
            while len(self.pending) > MAX_PENDING:
                self.pending.popleft()
                self.dropped += 1
        self._wake.set()

    async def write_pending(self) -> bool:
        """Write what is pending to the database; True if nothing is left."""
        if not self.pending:
            return True
        count = len(self.pending)
        batch = [r for _, r in self.pending]
        try:
            await self.inner.record(batch)
        except Exception as exc:  # noqa: BLE001 - kept in the journal, retried next time
            if self.lag_seconds >= WARN_AFTER_SECONDS and (
                time.monotonic() - self._warned_at >= WARN_AFTER_SECONDS
            ):
                self._warned_at = time.monotonic()
                log.warning(
                    "usage not written for %.0f s (%s); %d records kept in %s",
                    self.lag_seconds,
                    exc,
                    len(self.pending),
                    self.journal.path,
                )
            return False
        async with self._io:
            for _ in range(min(count, len(self.pending))):
                self.pending.popleft()
            self.last_written_at = time.monotonic()
            rest = [r for _, r in self.pending]
            await asyncio.to_thread(self.journal.keep_only, rest)
        return not rest

    async def _writer(self) -> None:
        """Write as soon as a batch arrives; after a failure, again every WRITE_SECONDS."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                done = await self.write_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("usage writer failed; retrying")
                done = False
            if not done:
                await asyncio.sleep(WRITE_SECONDS)
                self._wake.set()

    async def close(self) -> None:
        """Stop the writer, write what is pending (once), close the journal (kept on disk if
        records are still unwritten: the next start writes them)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        done = await self.write_pending()
        await asyncio.to_thread(self.journal.close, remove=done)
