"""``kikimimi speakers`` and whole-file embeddings, on real LibriSpeech recordings from ../shared/data.

The GE2E encoder needs the resemblyzer weights and torch; the VAD needs Silero (onnxruntime). Few and
short files keep the run short.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.engine.errors import KikimimiError
from kikimimi.launch.cli import main
from kikimimi.launch.speakers import label_keys, labelled_files, pair_scores, select_speakers
from kikimimi.models.speaker.db import SpeakerDB

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.data

LS = "en/librispeech"
ALICE = f"{LS}/1688/1688-142285-0002.flac"       # 2.8 s
BOB = f"{LS}/1998/1998-15444-0007.flac"          # 3.2 s
SAME = (f"{LS}/2412/2412-153948-0000.flac", f"{LS}/2412/2412-153948-0002.flac")   # cosine ~0.90
OTHER = f"{LS}/1988/1988-24833-0000.flac"        # another speaker; ~0.63 against SAME[0]
CALIBRATION_SPEAKERS = "1688,1998,2609,3005"     # disjoint from 2412 and 1988: verification is open-set


@pytest.fixture(scope="module")
def encoder():
    from kikimimi.models.speaker.encoder import load_encoder
    from kikimimi.models.speaker.ge2e import resemblyzer_weights

    try:
        resemblyzer_weights()
    except KikimimiError as exc:
        pytest.skip(str(exc))
    return load_encoder("ge2e", threads=1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["speakers", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_enroll_list_remove(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], encoder) -> None:
    db = str(tmp_path / "speakers.sqlite3")
    rc, out, _ = run(capsys, "enroll", "alice", str(data_dir / ALICE), "--db", db)
    assert rc == 0
    assert f"enrolled 'alice' with 1 embedding (encoder {encoder.id})" in out
    secs = float(re.search(r"1688-142285-0002\.flac: ([0-9.]+) s of speech", out).group(1))
    assert 1.5 < secs < 2.835                    # the VAD trimmed the silence around the speech
    assert run(capsys, "enroll", "bob", str(data_dir / BOB), "--db", db)[0] == 0

    rc, out, _ = run(capsys, "list", "--db", db)
    assert rc == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["alice"][1] == "1" and rows["bob"][1] == "1"
    assert rows["alice"][3] == encoder.id
    assert rows[encoder.id][2:] == ["0.75", "encoder", "default"]   # not calibrated yet
    stored = SpeakerDB(db).vectors(encoder.id)
    assert sorted(stored) == ["alice", "bob"] and stored["alice"].shape == (1, encoder.dim)

    rc, out, err = run(capsys, "remove", "bob", "--db", db)
    assert rc == 0 and "removed 'bob'" in out
    rc, out, err = run(capsys, "remove", "bob", "--db", db)
    assert rc == 1 and "'bob' is not enrolled" in err
    rc, out, _ = run(capsys, "list", "--db", db)
    assert "alice" in out and "bob" not in out


def test_verify_same_and_different_speakers(data_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], encoder) -> None:
    db = tmp_path / "none.sqlite3"
    rc, out, _ = run(capsys, "verify", str(data_dir / SAME[0]), str(data_dir / SAME[1]), "--db", str(db))
    lines = out.splitlines()
    assert rc == 0
    assert re.fullmatch(r"similarity 0\.\d{4}", lines[0]) and float(lines[0].split()[1]) > 0.8
    assert lines[1] == "match"
    assert lines[2] == "(threshold 0.75, encoder default)"
    rc, out, _ = run(capsys, "verify", str(data_dir / SAME[0]), str(data_dir / OTHER), "--db", str(db))
    lines = out.splitlines()
    assert rc == 1 and lines[0].startswith("similarity ") and lines[1] == "no match"   # exit 1: no match
    assert not db.exists()                       # verify never creates the database
    rc, out, _ = run(capsys, "verify", str(data_dir / SAME[0]), str(data_dir / OTHER), "--threshold", "0.5")
    assert rc == 0 and out.splitlines()[1:] == ["match", "(threshold 0.5, given with --threshold)"]


@pytest.mark.slow
def test_verify_exit_status_says_match_or_no_match(data_dir: Path, tmp_path: Path) -> None:
    """Issue 14.8: verify exited 0 on "no match"; through the real command: 0 match, 1 no match, 2 error."""
    import subprocess

    from cli_helpers import CLI

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "speakers", "verify", *args, "--db", str(tmp_path / "none.sqlite3")],
                              capture_output=True, text=True, timeout=180, check=False)

    # Measured cosine of these two: ~0.63, under the encoder's default threshold 0.75; 0.5 makes it a match.
    different = [str(data_dir / SAME[0]), str(data_dir / OTHER)]
    proc = verify(*different)
    assert (proc.returncode, proc.stdout.splitlines()[1]) == (1, "no match"), proc.stderr
    proc = verify(*different, "--threshold", "0.5")
    assert (proc.returncode, proc.stdout.splitlines()[1]) == (0, "match"), proc.stderr
    proc = verify(str(data_dir / SAME[0]), str(tmp_path / "missing.wav"))
    assert (proc.returncode, proc.stdout) == (2, "") and "missing.wav" in proc.stderr


def test_usage_errors(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "db.sqlite3")
    rc, _, err = run(capsys, "enroll", "voice_7", str(data_dir / ALICE), "--db", db)
    assert rc == 2 and "'voice_7' is reserved" in err
    rc, _, err = run(capsys, "enroll", "carol", str(tmp_path / "missing.wav"), "--db", db)
    assert rc == 2 and "missing.wav" in err
    rc, _, err = run(capsys, "verify", str(data_dir / ALICE), str(tmp_path / "missing.wav"))
    assert rc == 2 and "missing.wav" in err
    with pytest.raises(SystemExit) as exc:
        main(["speakers", "verify", "a.wav", "b.wav", "--threshold", "1.5"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["speakers"])
    assert exc.value.code == 2
    rc, _, err = run(capsys, "calibrate", str(data_dir / "MANIFEST.tsv"), "--speakers", "1688,nobody", "--db", db)
    assert rc == 2 and "no speaker 'nobody'" in err and "librispeech:1688 (M)" in err
    rc, _, err = run(capsys, "remove", "carol", "--db", db)
    assert rc == 1 and "not enrolled" in err


@pytest.mark.slow
def test_calibrate_then_verify_open_set(data_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], encoder) -> None:
    db = str(tmp_path / "speakers.sqlite3")
    rc, out, _ = run(capsys, "calibrate", str(data_dir / "MANIFEST.tsv"), "--speakers", CALIBRATION_SPEAKERS,
                     "--max-files", "3", "--db", db)
    assert rc == 0
    m = re.search(r"^EER (\d+\.\d\d)% at threshold (-?\d\.\d{3}) over (\d+) same / (\d+) different pairs$",
                  out, re.MULTILINE)
    assert m, out
    assert (int(m.group(3)), int(m.group(4))) == (4 * 3, 6 * 9)       # 4 x C(3,2); C(4,2) x 3 x 3
    assert float(m.group(1)) <= 10.0
    stored = SpeakerDB(db).threshold(encoder.id)
    assert stored is not None and abs(stored - float(m.group(2))) < 5e-4 and 0.5 < stored < 0.95

    rc, out, _ = run(capsys, "list", "--db", db)
    assert rc == 0 and "no speakers enrolled" in out
    (row,) = [line for line in out.splitlines() if line.startswith(encoder.id)]
    assert f"calibrated on {data_dir / 'MANIFEST.tsv'} (4 speakers, 12 files" in row
    assert f"{stored:.4f}".rstrip("0") in row

    # speakers the threshold never saw
    rc, out, _ = run(capsys, "verify", str(data_dir / SAME[0]), str(data_dir / SAME[1]), "--db", db)
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("similarity ") and lines[1] == "match"
    assert lines[2].startswith("(threshold 0.") and "calibrated on" in lines[2]
    rc, out, _ = run(capsys, "verify", str(data_dir / SAME[0]), str(data_dir / OTHER), "--db", db)
    assert rc == 1 and out.splitlines()[1] == "no match"


def test_calibrate_directory_layout(data_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str], encoder) -> None:
    root = tmp_path / "voices"
    for spk, files in {"ann": [SAME[0], SAME[1]],
                       "ben": [f"{LS}/3752/3752-4944-0000.flac", f"{LS}/3752/3752-4944-0002.flac"]}.items():
        (root / spk / "chapter").mkdir(parents=True)
        for f in files:
            (root / spk / "chapter" / Path(f).name).symlink_to(data_dir / f)
    (root / "ann" / "notes.txt").write_text("not audio")
    db = str(tmp_path / "db.sqlite3")
    rc, out, _ = run(capsys, "calibrate", str(root), "--db", db)
    assert rc == 0 and "over 2 same / 4 different pairs" in out
    assert SpeakerDB(db).threshold(encoder.id) is not None


def test_manifest_parsing(data_dir: Path, tmp_path: Path) -> None:
    pairs = labelled_files(data_dir / "MANIFEST.tsv")
    paths = [p for p, _ in pairs]
    assert all(Path(p).is_file() for p in paths)
    assert not any(p.endswith((".align", ".rttm")) for p in paths)            # not audio
    assert not any("dev00.wav" in p for p in paths)                           # a mixture of two speakers
    assert not any("fleurs" in p for p in paths)                              # speaker "unknown (...)"
    assert any(p.endswith("jfk.flac") for p in paths)                         # a comma inside (notes) is fine
    assert label_keys("librispeech:1688 (M)") >= {"librispeech:1688 (M)", "librispeech:1688", "1688"}
    chosen = select_speakers(labelled_files(data_dir / "MANIFEST.tsv", max_files=3), "1688,librispeech:1998")
    assert sorted({lab for _, lab in chosen}) == ["librispeech:1688 (M)", "librispeech:1998 (F)"]
    assert len(chosen) == 6
    tsv = tmp_path / "m.tsv"
    tsv.write_text("path\tspeaker_id\n" f"{data_dir / ALICE}\tx\n" "rel/a.wav\t\n" "rel/b.wav\ty\n")
    assert labelled_files(tsv) == [(str(data_dir / ALICE), "x"), (str(tmp_path / "rel/b.wav"), "y")]
    (tmp_path / "bad.tsv").write_text("file\tspeaker\n")
    with pytest.raises(KikimimiError, match="no path, speaker_id column"):
        labelled_files(tmp_path / "bad.tsv")
    v = np.eye(3, dtype=np.float32)[[0, 0, 1]]
    same, diff = pair_scores(v, ["a", "a", "b"])
    assert same.tolist() == [1.0] and diff.tolist() == [0.0, 0.0]


def test_speech_embedding_of_files(data_dir: Path, tmp_path: Path, encoder,
                                   caplog: pytest.LogCaptureFixture) -> None:
    from kikimimi.models.speaker.files import load_audio, speech_embedding

    audio = load_audio(data_dir / "en/jfk/jfk.flac")                  # 44.1 kHz stereo
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 11.0 * 16000) < 16000 * 0.01
    emb, secs = speech_embedding(encoder, data_dir / ALICE)
    assert emb.vector is not None and emb.vector.shape == (encoder.dim,)
    assert abs(float(np.linalg.norm(emb.vector)) - 1.0) < 1e-5
    assert all(a >= 0 and b <= 2.835 * 16000 for a, b in emb.spans)

    # a louder 44.1 kHz stereo copy embeds (nearly) the same
    x, sr = sf.read(data_dir / ALICE, dtype="float32")
    import soxr

    stereo = np.stack([x, 0.5 * x], axis=1)
    sf.write(tmp_path / "stereo.wav", soxr.resample(stereo, sr, 44100), 44100)
    emb2, secs2 = speech_embedding(encoder, tmp_path / "stereo.wav")
    assert float(emb.vector @ emb2.vector) > 0.97 and abs(secs2 - secs) < 0.3

    # no speech: the whole file, with a warning
    noise = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 1e-3
    sf.write(tmp_path / "quiet.wav", noise, 16000)
    with caplog.at_level(logging.WARNING, logger="kikimimi.models.speaker.files"):
        emb3, secs3 = speech_embedding(encoder, tmp_path / "quiet.wav")
    assert "found no speech" in caplog.text and emb3.vector is not None and secs3 == pytest.approx(2.0)

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(KikimimiError, match=r"cannot read audio file .*bad\.wav"):
        speech_embedding(encoder, bad)
    with pytest.raises(KikimimiError, match=r"missing\.flac: no such file"):
        speech_embedding(encoder, tmp_path / "missing.flac")
