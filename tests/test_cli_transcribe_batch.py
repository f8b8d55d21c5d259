"""`kikimimi transcribe` as a new user runs it (issue 14), each through the real CLI in a subprocess: where the
results go (folders, bad output paths checked before any work), a batch with bad and truncated files, compressed
formats recognised by their content, the progress bar on a terminal, and subtitle cues on real transcripts."""

from __future__ import annotations

import itertools
import os
import pty
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CLI

pytest.importorskip("ctranslate2")
pytest.importorskip("onnxruntime")

JFK = "en/jfk/jfk.flac"                                   # 11 s, 44.1 kHz stereo FLAC
LIBRI = "en/librispeech/1688/1688-142285-0002.flac"       # 2.8 s
LONG_SENTENCE = "en/librispeech/1998/1998-15444-0000.flac"  # 13.3 s, one long sentence
FLEURS_JA = "ja/fleurs/fleurs_ja_1837.wav"
SRT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})$")
VTT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")
NO_MODEL = "/no/such/model"     # were a model loaded, this would fail: the output check must come first


def kikimimi(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "transcribe", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def cues(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) of each cue of an SRT or WebVTT document."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = pattern.match(line)
        if m:
            g = [int(x) for x in m.groups()]
            out.append((((g[0] * 60 + g[1]) * 60 + g[2]) * 1000 + g[3], ((g[4] * 60 + g[5]) * 60 + g[6]) * 1000 + g[7],
                        lines[i + 1]))
    return out


@pytest.mark.slow
def test_subtitles_go_into_a_folder_named_with_a_slash_or_existing(data_dir: Path, tmp_path: Path) -> None:
    jfk = str(data_dir / JFK)
    r = kikimimi("--format", "srt", "--model", "tiny.en", "--speakers", "--output", "subs/", jfk, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "wrote subs/jfk.srt\n"
    got = cues((tmp_path / "subs" / "jfk.srt").read_text(encoding="utf-8"), SRT_TIME)
    assert [t.split(": ", 1)[1] for _, _, t in got] == ["And so, my fellow Americans.",
                                                        "Ask not what your country can do for you.",
                                                        "Ask what you can do for your country."]
    assert all(re.match(r"^voice_\d+: ", t) for _, _, t in got), got      # --speakers: 'NAME: ' prefix
    (tmp_path / "there").mkdir()
    libri = str(data_dir / LIBRI)
    r = kikimimi("--format", "vtt", "--model", "tiny.en", "--speakers", "--output", "there", libri, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == f"wrote there/{Path(LIBRI).stem}.vtt\n"
    vtt = (tmp_path / "there" / f"{Path(LIBRI).stem}.vtt").read_text(encoding="utf-8")
    assert all(re.match(r"^<v voice_\d+>\w", t) for _, _, t in cues(vtt, VTT_TIME)), vtt


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "srt", "--output", "/nonexistent_dir/x.srt"],
     "--output /nonexistent_dir/x.srt: folder '/nonexistent_dir' does not exist"),
    (["--format", "text", "--output", "texts/"],
     "--output texts/: --format text writes one file for all inputs, not a folder; give a file name, "
     "e.g. texts/transcripts.txt"),
    (["--format", "vtt", "--output", "taken.vtt", "A", "A"],
     "--output taken.vtt: is a file; --format vtt with 3 files needs a folder (one .vtt per file)"),
])
def test_a_bad_output_fails_before_any_work(args: list[str], message: str, data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "taken.vtt").write_text("mine\n")
    files = [str(data_dir / LIBRI) if a == "A" else a for a in args]
    r = kikimimi("--model", NO_MODEL, *files, str(data_dir / JFK), cwd=tmp_path, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"kikimimi: error: {message}\n")
    assert (tmp_path / "taken.vtt").read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "taken.vtt"]


@pytest.mark.slow
def test_bad_files_in_a_batch_get_one_line_each_and_the_good_ones_are_written(data_dir: Path,
                                                                              tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp3"
    notes.write_text("shopping list: milk, eggs\n" * 40)
    folder = tmp_path / "folder"
    folder.mkdir()
    whole = (data_dir / JFK).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole[:len(whole) * 6 // 10])       # stops in "ask not what your country ..."
    good = str(data_dir / LIBRI)
    files = [str(notes), good, str(folder), str(tmp_path / "missing.wav"), str(cut)]
    r = kikimimi("--model", "tiny.en", "--output", "all.txt", *files, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("kikimimi: error:")]
    assert errors == [f"kikimimi: error: {notes}: is not an audio or video file (neither libsndfile nor FFmpeg can "
                      "read an audio or video track from it)",
                      f"kikimimi: error: {folder}: is a directory, not an audio or video file",
                      f"kikimimi: error: {tmp_path / 'missing.wav'}: no such file"]
    warnings = [ln for ln in r.stderr.splitlines() if "truncated or damaged" in ln]
    assert len(warnings) == 1 and str(cut) in warnings[0], r.stderr
    assert r.stderr.splitlines()[-1] == "wrote all.txt"
    lines = (tmp_path / "all.txt").read_text(encoding="utf-8").splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [good, str(cut)]
    assert "fellow americans" in lines[1].lower() and "for your country" not in lines[1].lower(), lines[1]


def _encode(x: np.ndarray, path: Path, container: str, codec: str, rate: int) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format=container) as c:
        stream = c.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)


@pytest.mark.slow
def test_compressed_formats_are_read_by_content_with_a_progress_bar_on_a_terminal(data_dir: Path,
                                                                                  tmp_path: Path) -> None:
    import soundfile as sf
    import soxr

    x, sr = sf.read(str(data_dir / JFK), dtype="float32", always_2d=True)
    x = soxr.resample(x.mean(axis=1), sr, 16000)[: int(8.4 * 16000)].astype(np.float32)   # "... do for you."
    made = {"mp3_named.wav": ("mp3", "libmp3lame", 16000), "jfk.m4a": ("ipod", "aac", 16000),
            "jfk.opus": ("ogg", "libopus", 48000), "jfk.webm": ("webm", "libopus", 48000)}
    for name, (container, codec, rate) in made.items():
        _encode(x, tmp_path / name, container, codec, rate)
    leader, follower = pty.openpty()          # stderr on a terminal, stdout on a pipe
    try:
        proc = subprocess.run([*CLI, "transcribe", "--model", "tiny.en", *made], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=follower, stdin=subprocess.DEVNULL, timeout=180)
        os.close(follower)
        follower = -1
        err = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    stderr = err.decode(errors="replace")
    assert proc.returncode == 0, stderr
    lines = proc.stdout.decode().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == list(made)
    for ln in lines:
        assert "ask not what your country can do for you" in re.sub(r"[^a-z ]", "", ln.lower()), ln
    for i, name in enumerate(made, 1):                  # per file and overall
        assert re.search(rf"\] +\d+%  {re.escape(name)}  [\d.]+/8\.\d s  \| file {i}/4 \[[#-]+\] +\d+% of 33\.\d s",
                         stderr), stderr
    assert "\r" in stderr


def _check_cues(got: list[tuple[int, int, str]], max_chars: int) -> None:
    assert got
    for start, end, text in got:
        assert end - start >= 1000, got                          # no flashing fragments
        assert len(text) <= max_chars, got
        assert re.search(r"\w", text), got                       # no cue of punctuation only
    assert all(got[i][1] <= got[i + 1][0] for i in range(len(got) - 1)), got


@pytest.mark.slow
def test_english_subtitles_are_cut_at_phrases_without_stray_fragments(data_dir: Path, tmp_path: Path) -> None:
    """Measured before: tiny.en's cues on this clip ended in a 0.32 s cue "so." and cut "...to / be one"."""
    r = kikimimi("--format", "srt", "--model", "tiny.en", str(data_dir / LONG_SENTENCE), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = cues(r.stdout, SRT_TIME)
    _check_cues(got, 42)
    assert len(got[-1][2].split()) >= 3, got
    assert sum(t.endswith((",", ".")) for _, _, t in got) >= len(got) - 2, got   # cuts at punctuation


@pytest.mark.slow
def test_japanese_subtitles_keep_20_characters_and_whole_words(data_dir: Path, tmp_path: Path) -> None:
    """Measured before: two cues of 40 and 24 characters, the second starting inside the katakana name
    (ジンブ / ス)."""
    r = kikimimi("--format", "srt", "--model", "base", "--language", "ja", str(data_dir / FLEURS_JA), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = cues(r.stdout, SRT_TIME)
    _check_cues(got, 20)
    katakana = re.compile(r"[\u30a0-\u30ff]")
    for (_, _, a), (_, _, b) in itertools.pairwise(got):
        assert not (katakana.match(a[-1]) and katakana.match(b[0])), got     # not inside a katakana word
    assert "復興" in got[0][2] and " " not in "".join(t for _, _, t in got)
