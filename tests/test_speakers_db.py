"""The speaker enrollment database: schema versions, WAL, vector storage, cascades, names, concurrency."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.models.speaker import db as dbmod
from kikimimi.models.speaker.db import SCHEMA_VERSION, SchemaError, SpeakerDB, SpeakerInfo, check_name, default_db_path

ENC = "ge2e-0123456789ab"
DIM = 8


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def raw(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


def test_new_file_has_schema_version_tables_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "speakers.sqlite3"
    db = SpeakerDB(path)
    assert path.is_file()
    assert db.schema_version() == SCHEMA_VERSION == 1
    assert raw(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    tables = {r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "encoders", "speakers", "embeddings"} <= tables
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]    # persistent: a fresh connection sees it
    SpeakerDB(path)                                           # reopening changes nothing
    assert db.schema_version() == SCHEMA_VERSION
    assert db.speakers() == [] and db.vectors(ENC) == {} and db.threshold(ENC) is None


def test_newer_schema_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    SpeakerDB(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    with pytest.raises(SchemaError, match=rf"schema version 7, newer than the version {SCHEMA_VERSION}") as exc:
        SpeakerDB(path)
    assert str(path) in str(exc.value)


def test_migration_hook_upgrades_an_older_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "db.sqlite3"
    old = SpeakerDB(path)
    old.enroll("alice", ENC, unit(np.random.default_rng(0), 1), ["a.wav"], [3.0])
    ran: list[int] = []

    def to_v2(conn: sqlite3.Connection) -> None:
        ran.append(1)
        conn.execute("ALTER TABLE speakers ADD COLUMN note TEXT")

    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(dbmod.MIGRATIONS, 1, to_v2)
    db = SpeakerDB(path)
    assert ran == [1] and db.schema_version() == 2
    assert "note" in {r[1] for r in raw(path, "PRAGMA table_info(speakers)")}
    assert [s.name for s in db.speakers()] == ["alice"]       # data kept
    SpeakerDB(path)
    assert ran == [1]                                         # not run twice


def test_missing_migration_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "db.sqlite3"
    SpeakerDB(path)
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 3)
    with pytest.raises(SchemaError, match="no migration from it to 2"):
        SpeakerDB(path)


def test_not_a_database_and_memory_paths_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(KikimimiError, match=r"junk\.sqlite3"):
        SpeakerDB(junk)
    with pytest.raises(ParamError, match=":memory:"):
        SpeakerDB(":memory:")
    with pytest.raises(ParamError, match="is a folder"):
        SpeakerDB(tmp_path)


def test_vectors_round_trip_as_raw_little_endian_float32(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = SpeakerDB(path)
    rng = np.random.default_rng(1)
    a, b = unit(rng, 3), unit(rng, 2)
    db.enroll("bob", ENC, b, ["b1.wav", "b2.wav"], [4.0, 5.5])
    db.enroll("alice", ENC, a[:2], ["a1.wav", "a2.wav"], [1.0, 2.0])
    db.enroll("alice", ENC, a[2], ["a3.wav"], [0.5])          # a 1-D vector is one row, added to alice
    got = db.vectors(ENC)
    assert list(got) == ["alice", "bob"]
    assert got["alice"].dtype == np.float32 and got["alice"].shape == (3, DIM)
    np.testing.assert_array_equal(got["alice"], a)            # bit-exact, rows in enrollment order
    np.testing.assert_array_equal(got["bob"], b)
    got["alice"][0, 0] = 9.0                                   # writable copies, not views of the blob
    blobs = raw(path, "SELECT vector FROM embeddings WHERE speaker = 'bob' ORDER BY id")
    assert [len(x[0]) for x in blobs] == [DIM * 4, DIM * 4]
    assert blobs[0][0] == b[0].astype("<f4").tobytes()
    assert db.speakers() == [SpeakerInfo("alice", 3, 3.5, (ENC,)), SpeakerInfo("bob", 2, 9.5, (ENC,))]
    assert db.vectors("other-encoder") == {}


def test_encoders_are_kept_apart_and_dims_checked(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = SpeakerDB(path)
    rng = np.random.default_rng(2)
    db.enroll("alice", ENC, unit(rng, 1), ["a.wav"], [1.0])
    db.enroll("alice", "xvec-ffffffffffff", unit(rng, 2, 4), ["a.wav", "b.wav"], [1.0, 2.0])
    db.enroll("carol", "xvec-ffffffffffff", unit(rng, 1, 4), ["c.wav"], [2.0])
    assert db.speakers(ENC) == [SpeakerInfo("alice", 1, 1.0, (ENC,))]
    assert db.speakers("xvec-ffffffffffff") == [SpeakerInfo("alice", 2, 3.0, ("xvec-ffffffffffff",)),
                                                SpeakerInfo("carol", 1, 2.0, ("xvec-ffffffffffff",))]
    assert db.speakers()[0] == SpeakerInfo("alice", 3, 4.0, (ENC, "xvec-ffffffffffff"))
    assert {k: v.shape for k, v in db.vectors("xvec-ffffffffffff").items()} == {"alice": (2, 4), "carol": (1, 4)}
    with pytest.raises(ParamError, match=r"has dim 8 .* dim 4"):
        db.enroll("alice", ENC, unit(rng, 1, 4), ["x.wav"], [1.0])
    with pytest.raises(ParamError, match="one source and one seconds value per vector"):
        db.enroll("alice", ENC, unit(rng, 2), ["x.wav"], [1.0, 2.0])
    with pytest.raises(ParamError, match="NaN, infinite or all-zero"):
        db.enroll("alice", ENC, np.zeros((1, DIM)), ["x.wav"], [1.0])
    assert db.speakers(ENC) == [SpeakerInfo("alice", 1, 1.0, (ENC,))]   # failed enrollments stored nothing


def test_corrupt_vector_is_caught_on_read(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = SpeakerDB(path)
    db.enroll("alice", ENC, unit(np.random.default_rng(3), 1), ["a.wav"], [1.0])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE embeddings SET vector = ?", (b"\0" * 12,))
    with pytest.raises(KikimimiError, match=r"'alice' holds 12 bytes; encoder .* has dim 8, so 32 bytes"):
        db.vectors(ENC)


def test_remove_cascades_to_embeddings(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = SpeakerDB(path)
    rng = np.random.default_rng(4)
    db.enroll("alice", ENC, unit(rng, 2), ["a", "b"], [1.0, 1.0])
    db.enroll("bob", ENC, unit(rng, 1), ["c"], [1.0])
    assert db.remove("alice") is True
    assert raw(path, "SELECT COUNT(*) FROM embeddings WHERE speaker = 'alice'") == [(0,)]
    assert raw(path, "SELECT COUNT(*) FROM embeddings") == [(1,)]
    assert [s.name for s in db.speakers()] == ["bob"] and list(db.vectors(ENC)) == ["bob"]
    assert db.remove("alice") is False
    assert db.remove("nobody") is False


def test_thresholds(tmp_path: Path) -> None:
    db = SpeakerDB(tmp_path / "db.sqlite3")
    assert db.threshold(ENC) is None
    db.enroll("alice", ENC, unit(np.random.default_rng(5), 1), ["a"], [1.0])
    assert db.threshold(ENC) is None                          # enrolled, not calibrated
    db.set_threshold(ENC, DIM, 0.71, "MANIFEST.tsv (4 speakers)", 0.025)
    assert db.threshold(ENC) == pytest.approx(0.71)
    (info,) = db.encoders()
    assert (info.id, info.dim, info.calibrated_on, info.eer) == (ENC, DIM, "MANIFEST.tsv (4 speakers)", 0.025)
    db.set_threshold("new-encoder", 16, 0.5, None, None)      # an encoder without enrollments yet
    assert db.threshold("new-encoder") == 0.5
    with pytest.raises(ParamError, match="has dim 8"):
        db.set_threshold(ENC, 16, 0.7, None, None)
    with pytest.raises(ParamError, match=r"threshold=1.5 is not allowed"):
        db.set_threshold(ENC, DIM, 1.5, None, None)
    with pytest.raises(ParamError, match=r"eer=-0.1 is not allowed"):
        db.set_threshold(ENC, DIM, 0.7, None, -0.1)
    assert db.threshold(ENC) == pytest.approx(0.71)


@pytest.mark.parametrize("name", ["unknown", "voice_1", "voice_042"])
def test_reserved_names_are_refused(tmp_path: Path, name: str) -> None:
    db = SpeakerDB(tmp_path / "db.sqlite3")
    with pytest.raises(ParamError, match=rf"speaker name '{name}' is reserved.*allowed:"):
        db.enroll(name, ENC, unit(np.random.default_rng(6), 1), ["a"], [1.0])
    assert db.speakers() == []


@pytest.mark.parametrize("name", ["", " alice", "alice ", "a\nb", "tab\there", "x" * 65, 42, None])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(ParamError, match=rf"speaker name {re.escape(repr(name))} is not allowed.*at most 64"):
        check_name(name)


@pytest.mark.parametrize("name", ["alice", "Dr. Bob Smith", "voice_x", "voices_1", "unknown2", "山田", "x" * 64])
def test_good_names_are_allowed(name: str) -> None:
    assert check_name(name) == name


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KIKIMIMI_SPEAKERS_DB", str(tmp_path / "env.sqlite3"))
    assert default_db_path() == tmp_path / "env.sqlite3"
    monkeypatch.delenv("KIKIMIMI_SPEAKERS_DB")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_db_path() == tmp_path / ".local" / "share" / "kikimimi" / "speakers.sqlite3"


def test_readers_in_threads_while_one_writer_writes(tmp_path: Path) -> None:
    """Two reader threads loop over the same SpeakerDB while a third enrolls: no error, and every read
    sees whole transactions (each enrollment adds 2 rows, so counts are always even)."""
    db = SpeakerDB(tmp_path / "db.sqlite3")
    rng = np.random.default_rng(7)
    batches = [unit(rng, 2) for _ in range(40)]
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []

    def writer() -> None:
        try:
            for i, vecs in enumerate(batches):
                db.enroll(f"spk{i % 5}", ENC, vecs, [f"{i}a", f"{i}b"], [1.0, 1.0])
                if i % 10 == 9:
                    db.set_threshold(ENC, DIM, 0.5 + i / 100, f"round {i}", 0.1)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            last = 0
            while not done.is_set() or last < 2 * len(batches):
                vecs = db.vectors(ENC)
                n = sum(v.shape[0] for v in vecs.values())
                assert n % 2 == 0 and n >= last
                assert all(v.shape[1] == DIM for v in vecs.values())
                assert sum(s.n_embeddings for s in db.speakers(ENC)) >= n
                db.threshold(ENC)
                seen.append(n)
                last = n
                if done.is_set() and n < 2 * len(batches):
                    time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sum(s.n_embeddings for s in db.speakers(ENC)) == 2 * len(batches)
    assert len(seen) >= 2 and seen[-1] == 2 * len(batches)
    assert db.threshold(ENC) == pytest.approx(0.89)

