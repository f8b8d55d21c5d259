"""The speaker enrollment database: enrolled voices and calibrated thresholds, in one SQLite file.

Layout (schema version :data:`SCHEMA_VERSION`, kept in the ``meta`` table):

* ``encoders``: one row per encoder id (``ge2e-<hash of the weights>``): embedding ``dim``, the
  calibrated ``threshold`` (NULL until ``kikimimi speakers calibrate`` ran), what it was calibrated on
  and the EER measured there.
* ``speakers``: one row per enrolled name.
* ``embeddings``: one row per enrollment embedding: speaker, encoder id, the vector as raw
  little-endian float32 bytes (never pickle; its length is checked against the encoder's ``dim`` on
  read), the file it came from and its seconds of speech. Removing a speaker removes its embeddings
  (``ON DELETE CASCADE``).

Embeddings and thresholds only mean something under the encoder id they were made with, so every read
names one. Concurrency: the file is in WAL journal mode, so readers never block the one writer nor see
half of a write; every connection waits up to ``busy_timeout_ms`` for a lock instead of failing; every
write is one ``BEGIN IMMEDIATE`` transaction. A connection is opened per call and closed at its end, so
a :class:`SpeakerDB` can be shared between threads (no connection ever is).

Opening a file written by a newer kikimimi (higher schema version) raises :class:`SchemaError`; an older
one is brought up to date by the functions in :data:`MIGRATIONS` (version ``v`` -> ``v + 1``), in one
transaction.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.models.speaker.identify import UNKNOWN, VOICE_PREFIX

SCHEMA_VERSION = 1
ENV_VAR = "KIKIMIMI_SPEAKERS_DB"
MAX_NAME = 64
BUSY_TIMEOUT_MS = 10_000
_RESERVED = re.compile(rf"^(?:{re.escape(UNKNOWN)}|{re.escape(VOICE_PREFIX)}\d+)$")
_F32 = np.dtype("<f4")

_SCHEMA_V1 = (
    """CREATE TABLE encoders (
        id TEXT PRIMARY KEY,
        dim INTEGER NOT NULL CHECK (dim > 0),
        threshold REAL NULL,
        calibrated_on TEXT,
        eer REAL NULL,
        updated_ns INTEGER NOT NULL)""",
    """CREATE TABLE speakers (
        name TEXT PRIMARY KEY,
        created_ns INTEGER NOT NULL)""",
    """CREATE TABLE embeddings (
        id INTEGER PRIMARY KEY,
        speaker TEXT NOT NULL REFERENCES speakers(name) ON DELETE CASCADE,
        encoder TEXT NOT NULL,
        vector BLOB NOT NULL,
        source TEXT,
        seconds REAL,
        created_ns INTEGER NOT NULL)""",
    "CREATE INDEX embeddings_by_encoder ON embeddings(encoder, speaker)",
    "CREATE INDEX embeddings_by_speaker ON embeddings(speaker)",
)

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[v]`` brings a version-``v`` database to version ``v + 1`` (inside the open transaction).
Add one (and bump :data:`SCHEMA_VERSION`) with every schema change."""


class SchemaError(KikimimiError):
    """The database file has a schema this version of kikimimi cannot use."""


class SpeakerInfo(NamedTuple):
    """An enrolled speaker: its number of embeddings and their total seconds of speech (under one encoder
    when the listing named one), and the encoder ids its embeddings were made with."""

    name: str
    n_embeddings: int
    seconds: float
    encoders: tuple[str, ...] = ()


class EncoderInfo(NamedTuple):
    """An encoder the database knows: its dim and calibrated threshold (None until calibrated)."""

    id: str
    dim: int
    threshold: float | None
    calibrated_on: str | None
    eer: float | None
    updated_ns: int


def default_db_path() -> Path:
    """``$KIKIMIMI_SPEAKERS_DB`` if set (and not empty), else ``~/.local/share/kikimimi/speakers.sqlite3``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "share" / "kikimimi" / "speakers.sqlite3"


def check_name(name: object) -> str:
    """``name`` if it may be enrolled, else ParamError naming it and what is allowed."""
    allowed = (f"allowed: a non-empty printable name of at most {MAX_NAME} characters, without leading or "
               f"trailing spaces, other than the reserved labels {UNKNOWN!r} and {VOICE_PREFIX}<digits>")
    if not isinstance(name, str):
        raise ParamError(f"speaker name {name!r} is not allowed (not a string); {allowed}")
    if not name or not name.isprintable() or len(name) > MAX_NAME or name != name.strip():
        raise ParamError(f"speaker name {name!r} is not allowed; {allowed}")
    if _RESERVED.match(name):
        raise ParamError(f"speaker name {name!r} is reserved (the identifier answers with it); {allowed}")
    return name


def _check_encoder_id(encoder_id: object) -> str:
    if not isinstance(encoder_id, str) or not encoder_id or not encoder_id.isprintable():
        raise ParamError(f"encoder id {encoder_id!r} is not allowed; allowed: a non-empty printable string "
                         f"such as 'ge2e-3f2a9c1d0b7e'")
    return encoder_id


def _check_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ParamError(f"embedding dim {dim!r} is not allowed; allowed: an integer >= 1")
    return int(dim)


def _optional_real(what: str, value: object, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(value)) or not low <= float(value) <= high:
        raise ParamError(f"{what}={value!r} is not allowed; allowed: a number in [{low:g}, {high:g}] or None")
    return float(value)


class SpeakerDB:
    """The enrollment database in the SQLite file ``path`` (created, with its folder, if missing)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        path = default_db_path() if path is None else path
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise ParamError(f"speaker database path {str(path)!r} is not allowed; allowed: a file path "
                             f"(connections are opened per call, so an in-memory database would not persist)")
        self.path = Path(path).expanduser()
        self.busy_timeout_ms = int(busy_timeout_ms)
        if self.path.is_dir():
            raise ParamError(f"speaker database path {self.path} is a folder; allowed: a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KikimimiError(f"cannot create the folder of the speaker database {self.path}: {exc}") from exc
        self._setup()

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit), foreign keys on."""
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000.0, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise KikimimiError(f"cannot open the speaker database {self.path}: {exc}") from exc
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one read transaction (a consistent snapshot across several queries)."""
        with closing(self._connect()) as conn:
            try:
                conn.execute("BEGIN")
                yield conn
            except sqlite3.DatabaseError as exc:
                raise KikimimiError(f"speaker database {self.path}: {exc}") from exc
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one write transaction, committed if the block ends normally."""
        with closing(self._connect()) as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise KikimimiError(f"speaker database {self.path}: cannot start a write: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise KikimimiError(f"speaker database {self.path}: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ schema
    @staticmethod
    def _version(conn: sqlite3.Connection) -> int | None:
        """The file's schema version, None for a file without a ``meta`` table (a new database)."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
            return None
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            return int(row[0])
        except (TypeError, ValueError):
            raise SchemaError(f"speaker database {conn_path(conn)} has a meta table without a valid "
                              f"schema_version ({row!r}); it was not written by kikimimi") from None

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaError(f"speaker database {self.path} has schema version {version}, newer than the "
                              f"version {SCHEMA_VERSION} this kikimimi understands; upgrade kikimimi or use "
                              f"another database (--db or ${ENV_VAR})")

    def _setup(self) -> None:
        """WAL mode; create the tables on first open, migrate an older schema, refuse a newer one."""
        with closing(self._connect()) as conn:
            try:
                version = self._version(conn)
                self._check_version(version)
                if version == SCHEMA_VERSION:
                    return
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise KikimimiError(f"speaker database {self.path}: cannot switch to WAL journal mode "
                                        f"(got {mode!r}); is it on a network file system?")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version = self._version(conn)  # another process may have been first
                    self._check_version(version)
                    if version is None:
                        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                        for statement in _SCHEMA_V1:
                            conn.execute(statement)
                        version = 1
                        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
                    while version < SCHEMA_VERSION:
                        migrate = MIGRATIONS.get(version)
                        if migrate is None:
                            raise SchemaError(f"speaker database {self.path} has schema version {version} and "
                                              f"there is no migration from it to {version + 1}")
                        migrate(conn)
                        version += 1
                        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                raise KikimimiError(f"cannot use {self.path} as the speaker database: {exc}") from exc

    def schema_version(self) -> int:
        """The schema version of the file."""
        with self._read() as conn:
            version = self._version(conn)
        return 0 if version is None else version

    # ------------------------------------------------------------------ writes
    @staticmethod
    def _encoder_dim(conn: sqlite3.Connection, encoder_id: str, dim: int) -> bool:
        """Check ``dim`` against the encoder's stored one; True if the encoder is known."""
        row = conn.execute("SELECT dim FROM encoders WHERE id = ?", (encoder_id,)).fetchone()
        if row is not None and int(row[0]) != dim:
            raise ParamError(f"encoder {encoder_id!r} has dim {row[0]} in the speaker database; got vectors of "
                             f"dim {dim}; allowed: {row[0]} (same encoder id, same dimension)")
        return row is not None

    def enroll(self, name: str, encoder_id: str, vectors: np.ndarray | Sequence[np.ndarray],
               sources: Sequence[str | None], seconds: Sequence[float]) -> None:
        """Add the (n, dim) embeddings ``vectors`` of ``name`` made by ``encoder_id`` (one transaction),
        each with the file it came from and its seconds of speech. Creates the speaker if new (existing
        embeddings are kept) and the encoder row (uncalibrated) if new."""
        check_name(name)
        _check_encoder_id(encoder_id)
        rows = np.asarray(vectors, dtype=np.float64)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
            raise ParamError(f"embeddings of {name!r} have shape {np.shape(vectors)}; allowed: (dim,) or (n, dim) "
                             f"with n, dim >= 1")
        if not np.all(np.isfinite(rows)) or np.any(np.linalg.norm(rows, axis=1) <= 1e-12):
            raise ParamError(f"embeddings of {name!r} hold NaN, infinite or all-zero vectors; allowed: finite "
                             f"vectors of non-zero length")
        n, dim = rows.shape
        sources, seconds = list(sources), list(seconds)
        if len(sources) != n or len(seconds) != n:
            raise ParamError(f"enroll {name!r}: {n} vectors but {len(sources)} sources and {len(seconds)} "
                             f"seconds; allowed: one source and one seconds value per vector")
        secs = [_optional_real(f"seconds[{i}]", s, 0.0, math.inf) for i, s in enumerate(seconds)]
        now = time.time_ns()
        blobs = [np.ascontiguousarray(r, dtype=_F32).tobytes() for r in rows]
        with self._write() as conn:
            if not self._encoder_dim(conn, encoder_id, dim):
                conn.execute("INSERT INTO encoders (id, dim, threshold, calibrated_on, eer, updated_ns) "
                             "VALUES (?, ?, NULL, NULL, NULL, ?)", (encoder_id, dim, now))
            conn.execute("INSERT OR IGNORE INTO speakers (name, created_ns) VALUES (?, ?)", (name, now))
            conn.executemany(
                "INSERT INTO embeddings (speaker, encoder, vector, source, seconds, created_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(name, encoder_id, blob, None if src is None else str(src), sec, now)
                 for blob, src, sec in zip(blobs, sources, secs, strict=True)])

    def remove(self, name: str) -> bool:
        """Forget ``name`` and all its embeddings; False if it was not enrolled."""
        if not isinstance(name, str):
            raise ParamError(f"speaker name {name!r} is not allowed; allowed: a string")
        with self._write() as conn:
            return conn.execute("DELETE FROM speakers WHERE name = ?", (name,)).rowcount > 0

    def set_threshold(self, encoder_id: str, dim: int, threshold: float, calibrated_on: str | None,
                      eer: float | None) -> None:
        """Store the calibrated cosine ``threshold`` of ``encoder_id`` (and what it was measured on, and the
        EER there), creating the encoder row if new."""
        _check_encoder_id(encoder_id)
        dim = _check_dim(dim)
        thr = _optional_real("threshold", threshold, -1.0, 1.0)
        if thr is None:
            raise ParamError("threshold=None is not allowed; allowed: a cosine similarity in [-1, 1]")
        err = _optional_real("eer", eer, 0.0, 1.0)
        now = time.time_ns()
        with self._write() as conn:
            if self._encoder_dim(conn, encoder_id, dim):
                conn.execute("UPDATE encoders SET threshold = ?, calibrated_on = ?, eer = ?, updated_ns = ? "
                             "WHERE id = ?", (thr, calibrated_on, err, now, encoder_id))
            else:
                conn.execute("INSERT INTO encoders (id, dim, threshold, calibrated_on, eer, updated_ns) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (encoder_id, dim, thr, calibrated_on, err, now))

    # ------------------------------------------------------------------ reads
    def threshold(self, encoder_id: str) -> float | None:
        """The calibrated threshold of ``encoder_id``, None if it was never calibrated."""
        with self._read() as conn:
            row = conn.execute("SELECT threshold FROM encoders WHERE id = ?", (encoder_id,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def encoders(self) -> list[EncoderInfo]:
        """Every encoder the database knows, by id."""
        with self._read() as conn:
            rows = conn.execute("SELECT id, dim, threshold, calibrated_on, eer, updated_ns FROM encoders "
                                "ORDER BY id").fetchall()
        return [EncoderInfo(r[0], int(r[1]), None if r[2] is None else float(r[2]), r[3],
                            None if r[4] is None else float(r[4]), int(r[5])) for r in rows]

    def speakers(self, encoder_id: str | None = None) -> list[SpeakerInfo]:
        """Enrolled speakers by name: all of them, or those with embeddings of ``encoder_id`` (then counting
        only those)."""
        where, args = ("WHERE e.encoder = ?", (encoder_id,)) if encoder_id is not None else ("", ())
        join = "JOIN" if encoder_id is not None else "LEFT JOIN"
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT s.name, COUNT(e.id), COALESCE(SUM(e.seconds), 0.0) FROM speakers s {join} embeddings e "
                f"ON e.speaker = s.name {where} GROUP BY s.name ORDER BY s.name", args).fetchall()
            used: dict[str, list[str]] = {}
            for name, enc in conn.execute(f"SELECT DISTINCT e.speaker, e.encoder FROM embeddings e {where} "
                                          f"ORDER BY e.speaker, e.encoder", args):
                used.setdefault(name, []).append(enc)
        return [SpeakerInfo(r[0], int(r[1]), float(r[2]), tuple(used.get(r[0], ()))) for r in rows]

    def vectors(self, encoder_id: str) -> dict[str, np.ndarray]:
        """name -> (n, dim) float32 enrollment embeddings of ``encoder_id``, names in order, rows in the
        order they were enrolled. Raises KikimimiError if a stored vector does not have the encoder's dim."""
        with self._read() as conn:
            row = conn.execute("SELECT dim FROM encoders WHERE id = ?", (encoder_id,)).fetchone()
            if row is None:
                return {}
            dim = int(row[0])
            rows = conn.execute("SELECT id, speaker, vector FROM embeddings WHERE encoder = ? "
                                "ORDER BY speaker, id", (encoder_id,)).fetchall()
        grouped: dict[str, list[np.ndarray]] = {}
        for rid, speaker, blob in rows:
            if not isinstance(blob, bytes) or len(blob) != dim * _F32.itemsize:
                size = len(blob) if isinstance(blob, bytes) else type(blob).__name__
                raise KikimimiError(f"speaker database {self.path}: embedding {rid} of {speaker!r} holds {size} "
                                    f"bytes; encoder {encoder_id!r} has dim {dim}, so {dim * _F32.itemsize} "
                                    f"bytes of float32 were expected")
            grouped.setdefault(speaker, []).append(np.frombuffer(blob, dtype=_F32))
        return {name: np.stack(vecs).astype(np.float32) for name, vecs in grouped.items()}


def conn_path(conn: sqlite3.Connection) -> str:
    """The file behind ``conn`` (for messages)."""
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "?"
