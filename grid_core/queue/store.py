"""The job store: every job a row in SQLite on the head's disk, its output a file beside it.

A row is committed (WAL, synchronous=FULL) before anyone is told the job exists, as HTCondor's
schedd writes its job queue log before it answers, so after any restart (of the service, of Ray,
of the head itself) the store is the truth. The active jobs are also kept in memory, written
through: the planner reads them on every event, and 1,000 waiting jobs must cost no disk read.

A job's output is a file of JSON lines, `[stream, text]`, appended as it comes and synced before
the runner is told it was kept. Readers name where they stand in each stream (characters since
the job began) and get what follows, so a follower that lost its connection resumes exactly. Only
the last MAX_OUTPUT_CHARS of a job are kept; the characters dropped before the file's first line
are counted in the job's row, so offsets stay true.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from grid_core.types.jobs import ACTIVE, JobRecord

MAX_OUTPUT_CHARS = 8 * 2**20  # per job; older output is dropped beyond it
CACHED_LOGS = 64  # finished jobs' output kept in memory for readers, beyond the active ones
STREAMS = ("stdout", "stderr")
Chunk = tuple[str, str]  # (stream, text)
Offsets = tuple[int, int]  # characters of stdout and of stderr since the job began

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    ended REAL,
    record TEXT NOT NULL,   -- the JobRecord, as JSON
    spec TEXT NOT NULL,     -- what the runner needs beside it (environment, engine resources)
    dropped_stdout INTEGER NOT NULL DEFAULT 0,
    dropped_stderr INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (ended);
"""


ROW = "seq, id, record"  # a JobRow's columns


class JobRow(NamedTuple):
    """A job's row as kept: its place in submission order, its id, and its record's JSON text."""

    seq: int
    id: str
    text: str


def _data(job: JobRecord) -> dict[str, Any]:
    from grid_core.types import wire

    data: dict[str, Any] = wire().unstructure(job)
    return data


def _load(text: str) -> JobRecord:
    from grid_core.types import wire

    record: JobRecord = wire().structure(json.loads(text), JobRecord)
    return record


class Output:
    """One job's kept output in memory: its chunks, where both streams stood after each, and the
    characters dropped before the first."""

    def __init__(self, dropped: Offsets = (0, 0)) -> None:
        self.chunks: list[Chunk] = []
        self.ends: list[Offsets] = []
        self.dropped = dropped
        self.chars = 0

    def add(self, chunks: Iterable[Chunk]) -> None:
        stdout, stderr = self.ends[-1] if self.ends else self.dropped
        for stream, text in chunks:
            if stream == "stdout":
                stdout += len(text)
            else:
                stderr += len(text)
            self.chunks.append((stream, text))
            self.ends.append((stdout, stderr))
            self.chars += len(text)

    def trim(self) -> bool:
        """Drop the oldest chunks beyond MAX_OUTPUT_CHARS (the newest stays whole); whether any went."""
        gone = 0
        while self.chars > MAX_OUTPUT_CHARS and len(self.chunks) - gone > 1:
            self.chars -= len(self.chunks[gone][1])
            gone += 1
        if gone:
            self.dropped = self.ends[gone - 1]
            del self.chunks[:gone], self.ends[:gone]
        return bool(gone)

    def read(self, since: Sequence[int]) -> tuple[list[Chunk], Offsets]:
        """The output after `since`, and where both streams then stand."""
        want = (int(since[0]), int(since[1]))
        # The first chunk that ends past `since` in either stream: both offsets only grow.
        at = bisect.bisect_left(self.ends, True, key=lambda end: end[0] > want[0] or end[1] > want[1])
        out = []
        for i in range(at, len(self.chunks)):
            stream, text = self.chunks[i]
            which = STREAMS.index(stream)
            end, mine = self.ends[i][which], want[which]
            if end > mine:  # the part of the chunk the reader has not had
                out.append((stream, text[max(0, mine - end + len(text)):]))
        stood = self.ends[-1] if self.ends else self.dropped
        return out, (max(stood[0], want[0]), max(stood[1], want[1]))


class JobStore:
    """The jobs of one cluster, on the head's disk under `directory` (made 0700)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(os.path.join(directory, "output"), mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self.directory = directory
        self.lock = threading.RLock()
        self.db = sqlite3.connect(os.path.join(directory, "jobs.db"), check_same_thread=False,
                                  isolation_level=None)
        os.chmod(os.path.join(directory, "jobs.db"), 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.active: dict[str, JobRecord] = {
            row[0]: _load(row[1]) for row in self.db.execute(
                f"SELECT id, record FROM jobs WHERE state IN {ACTIVE!r} ORDER BY seq")}
        # The same as plain data: a listing of 1,000 waiting jobs sends these as they are.
        self.active_data = {job_id: _data(job) for job_id, job in self.active.items()}
        self.logs: dict[str, Output] = {}
        self._uniform: bool | None = None

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # ------------------------------------------------------------------ records

    def add(self, jobs: Sequence[tuple[JobRecord, Mapping[str, Any]]]) -> list[JobRecord]:
        """New jobs, committed together before this returns; each gets its submission order."""
        import attrs

        added: list[tuple[JobRecord, dict[str, Any]]] = []
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for job, spec in jobs:
                    cursor = self.db.execute("INSERT INTO jobs (id, state, record, spec) VALUES (?, ?, '', ?)",
                                             (job.id, job.state, json.dumps(dict(spec))))
                    job = attrs.evolve(job, seq=int(cursor.lastrowid or 0))
                    data = _data(job)
                    self.db.execute("UPDATE jobs SET record = ? WHERE id = ?", (json.dumps(data), job.id))
                    added.append((job, data))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            for job, data in added:
                self.active[job.id], self.active_data[job.id] = job, data
        return [job for job, _ in added]

    def update(self, job_id: str, **fields: Any) -> JobRecord | None:
        """The job's record with these fields changed, committed; None for a job that is not
        active (a runner's late report of a job already ended changes nothing)."""
        import attrs

        with self.lock:
            job = self.active.get(job_id)
            if job is None:
                return None
            job = attrs.evolve(job, **fields)
            data = _data(job)
            self.db.execute("UPDATE jobs SET state = ?, ended = ?, record = ? WHERE id = ?",
                            (job.state, job.ended, json.dumps(data), job_id))
            if job.state in ACTIVE:
                self.active[job_id], self.active_data[job_id] = job, data
            else:
                del self.active[job_id], self.active_data[job_id]
            return job

    def amend(self, job_id: str, **fields: Any) -> None:
        """Change a record whatever its state (a finished job's attempts gain a late word)."""
        import attrs

        with self.lock:
            job = self.get(job_id)
            if job is None:
                return
            if job.state in ACTIVE:
                self.update(job_id, **fields)
                return
            data = _data(attrs.evolve(job, **fields))
            self.db.execute("UPDATE jobs SET record = ? WHERE id = ?", (json.dumps(data), job_id))

    def get(self, job_id: str) -> JobRecord | None:
        with self.lock:
            if job_id in self.active:
                return self.active[job_id]
            row = self.db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _load(row[0]) if row else None

    def spec(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            row = self.db.execute("SELECT spec FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def members(self, array_id: str) -> list[JobRecord]:
        return [_load(kept.text) for kept in self.member_rows(array_id)]

    def member_rows(self, array_id: str, finished: bool = False) -> list[JobRow]:
        """An array's members (only the finished ones, with `finished`) in submission order, each
        as the JSON it is kept as."""
        query = f"SELECT {ROW} FROM jobs WHERE id LIKE ?" + (f" AND state NOT IN {ACTIVE!r}" if finished else "")
        with self.lock:
            return [JobRow(*row) for row in self.db.execute(query + " ORDER BY seq", (f"{array_id}.%",))]

    def finished(self, newest: int | None = None, since: float | None = None) -> list[JobRecord]:
        """Finished jobs, oldest first: all of them, or the `newest` that ended after `since`."""
        return [_load(kept.text) for kept in self.finished_rows(newest, since)]

    def finished_rows(self, newest: int | None = None, since: float | None = None) -> list[JobRow]:
        """The same as `finished`, each record as the JSON it is kept as: what a listing sends on,
        without building a record of each only to write it out again."""
        query, args = f"SELECT {ROW} FROM jobs WHERE state NOT IN {ACTIVE!r}", []
        if since is not None:
            query += " AND ended >= ?"
            args.append(since)
        query += " ORDER BY seq DESC"
        if newest is not None:
            query += f" LIMIT {int(newest)}"
        with self.lock:
            rows = self.db.execute(query, args).fetchall()
        return [JobRow(*row) for row in reversed(rows)]

    def uniform(self) -> bool:
        """Whether every kept record has JobRecord's fields, none more or fewer (none was kept by
        an older or a newer grid), so that their texts can be sent on as JobRecords. Looked at once:
        records this grid writes have its fields."""
        if self._uniform is None:
            import attrs

            fields = {f.name for f in attrs.fields(JobRecord)}
            with self.lock:
                self._uniform = all(json.loads(text).keys() == fields
                                    for (text,) in self.db.execute("SELECT record FROM jobs"))
        return self._uniform

    def prune(self, keep_records: int, keep_seconds: float, keep_output_bytes: int,
              now: float | None = None) -> int:
        """Forget finished jobs that are neither among the newest `keep_records` nor younger than
        `keep_seconds`; then drop the oldest finished jobs' output beyond `keep_output_bytes` in
        all. How many records went."""
        now = time.time() if now is None else now
        with self.lock:
            rows = self.db.execute(
                f"SELECT id FROM jobs WHERE state NOT IN {ACTIVE!r} AND ended < ? AND seq < "
                f"(SELECT COALESCE(MIN(seq), 0) FROM (SELECT seq FROM jobs WHERE state NOT IN {ACTIVE!r} "
                "ORDER BY seq DESC LIMIT ?))", (now - keep_seconds, keep_records)).fetchall()
            gone = [r[0] for r in rows]
            self.db.executemany("DELETE FROM jobs WHERE id = ?", [(g,) for g in gone])
            for job_id in gone:
                self._forget_output(job_id)
            sizes = []
            for (job_id,) in self.db.execute(f"SELECT id FROM jobs WHERE state NOT IN {ACTIVE!r} ORDER BY seq DESC"):
                try:
                    sizes.append((job_id, os.path.getsize(self._output_path(job_id))))
                except OSError:
                    continue
            total = 0
            for job_id, size in sizes:  # newest first: the oldest beyond the total lose their output
                total += size
                if total > keep_output_bytes:
                    self._forget_output(job_id)
        return len(gone)

    # ------------------------------------------------------------------ output

    def _output_path(self, job_id: str) -> str:
        return os.path.join(self.directory, "output", job_id.replace("/", "_"))

    def _forget_output(self, job_id: str) -> None:
        import glob

        self.logs.pop(job_id, None)
        path = self._output_path(job_id)
        for kept in [path, *glob.glob(glob.escape(path) + ".attempt*")]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(kept)

    def _output(self, job_id: str) -> Output:
        """The job's output in memory, read from its file the first time."""
        log = self.logs.get(job_id)
        if log is not None:
            return log
        row = self.db.execute("SELECT dropped_stdout, dropped_stderr FROM jobs WHERE id = ?", (job_id,)).fetchone()
        log = self.logs[job_id] = _read_output(self._output_path(job_id), (int(row[0]), int(row[1])) if row else (0, 0))
        finished = [j for j in self.logs if j not in self.active]
        for old in finished[:max(0, len(finished) - CACHED_LOGS)]:
            del self.logs[old]
        return log

    def end_attempt(self, job_id: str, number: int) -> None:
        """Put the job's output aside as attempt `number`'s: the next attempt's starts empty."""
        with self.lock:
            self.logs.pop(job_id, None)
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._output_path(job_id), self._attempt_path(job_id, number))
            self.db.execute("UPDATE jobs SET dropped_stdout = 0, dropped_stderr = 0 WHERE id = ?", (job_id,))

    def _attempt_path(self, job_id: str, number: int) -> str:
        return f"{self._output_path(job_id)}.attempt{number}"

    def append(self, job_id: str, chunks: Sequence[Chunk]) -> None:
        """The job's output, on disk (synced) before this returns."""
        if not chunks:
            return
        with self.lock:
            if job_id not in self.active:
                return
            log = self._output(job_id)
            log.add(chunks)
            data = "".join(json.dumps([STREAMS.index(s), t]) + "\n" for s, t in chunks)
            path = self._output_path(job_id)
            if log.trim() and os.path.exists(path) and os.path.getsize(path) > 2 * MAX_OUTPUT_CHARS:
                # Write the kept part anew, then say where it starts: a crash in between keeps more, never less.
                data = "".join(json.dumps([STREAMS.index(s), t]) + "\n" for s, t in log.chunks)
                with open(path + ".new", "w", encoding="utf-8") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(path + ".new", path)
                self.db.execute("UPDATE jobs SET dropped_stdout = ?, dropped_stderr = ? WHERE id = ?",
                                (*log.dropped, job_id))
                return
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self, job_id: str, since: Sequence[int] = (0, 0), attempt: int | None = None,
             ) -> tuple[list[Chunk], Offsets, JobRecord | None]:
        """The output after `since`, where both streams then stand, and the job's record: of the
        attempt that counts (the last), or of an earlier `attempt` (1 first)."""
        with self.lock:
            job = self.get(job_id)
            if job is None:
                return [], (int(since[0]), int(since[1])), None
            if attempt is not None and os.path.exists(self._attempt_path(job_id, attempt)):  # put aside
                log = _read_output(self._attempt_path(job_id, attempt), (0, 0))
            else:
                log = self._output(job_id)
            chunks, stood = log.read(since)
        return chunks, stood, job


def _read_output(path: str, dropped: Offsets) -> Output:
    """An output file as kept (`dropped`: the characters dropped before its first line)."""
    log = Output(dropped)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    chunks = []
    for line in lines:
        try:
            which, text = json.loads(line)
            chunks.append((STREAMS[which], text))
        except (ValueError, TypeError, IndexError):
            break  # a line cut short by a crash ends what was kept
    log.add(chunks)
    return log
