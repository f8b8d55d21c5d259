"""An enrolled speaker's name on the transcripts of `kikimimi run` with the default graph, and which threshold the
speaker node names speakers with: its ``threshold`` parameter, else the one `kikimimi speakers calibrate` stored,
else the encoder's default (0.75 for GE2E).

Real LibriSpeech recordings; the database is the one a user points at with $KIKIMIMI_SPEAKERS_DB (the default
graph's speaker node reads the default path). In-process, so the models load once. The threshold the node used is
read from its start-up log line and checked against the outcome (named or not) on the same clip.

Why not ``--speed 0``: there a final's speaker label is not yet reliable. Fusion waits for a final's speaker turns
only ``speaker_wait_ms`` of wall-clock time, which a busy CPU can outlast at full speed, and the speaker node's turns
vary (a window past SPEECH_END taken before the event arrived splits off a spurious ``voice_2`` part). (Fusion also
used to forward a waiting final as soon as the recognizer's END_OF_STREAM came: fixed with these tests.)
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from kikimimi.engine.errors import KikimimiError
from kikimimi.launch.cli import main
from kikimimi.models.speaker.db import SpeakerDB

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ctranslate2")

LS = "en/librispeech"
ENROLL = f"{LS}/2412/2412-153948-0000.flac"     # speaker 2412 (F), 11.7 s
SAME = f"{LS}/2412/2412-153948-0002.flac"       # 2412 again, 3.7 s: scores 0.902 against the enrollment
OTHER = f"{LS}/1988/1988-24833-0000.flac"       # speaker 1988 (M), 3.3 s
NAME = "ada"
THRESHOLD_LOG = re.compile(r"speaker speaker: 1 enrolled speakers, threshold (-?\d\.\d{3})$")


@pytest.fixture(scope="module")
def encoder_id() -> str:
    from kikimimi.models.speaker.encoder import shared_encoder
    from kikimimi.models.speaker.ge2e import resemblyzer_weights

    try:
        resemblyzer_weights()
    except KikimimiError as exc:
        pytest.skip(str(exc))
    return str(shared_encoder("ge2e", "auto", 1).id)


@pytest.fixture
def db(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
       encoder_id: str) -> Path:
    """A database at $KIKIMIMI_SPEAKERS_DB with NAME enrolled from one recording by `kikimimi speakers enroll`."""
    path = tmp_path / "speakers.sqlite3"
    monkeypatch.setenv("KIKIMIMI_SPEAKERS_DB", str(path))
    assert main(["speakers", "enroll", NAME, str(data_dir / ENROLL)]) == 0
    assert f"enrolled {NAME!r} with 1 embedding (encoder {encoder_id}) in {path}" in capsys.readouterr().out
    return path


def padded(clip: Path, folder: Path) -> Path:
    """``clip`` with 1.5 s of silence after it (16 kHz wav): the VAD ends the utterance well before the file."""
    audio, rate = sf.read(clip, dtype="int16")
    assert rate == 16000 and audio.ndim == 1
    path = folder / f"{clip.stem}-padded.wav"
    sf.write(path, np.concatenate([audio, np.zeros(24000, np.int16)]), rate)
    return path


def final_transcript(clip: Path, out: Path, caplog: pytest.LogCaptureFixture,
                     *settings: str) -> tuple[dict[str, Any], float]:
    """`kikimimi run --input CLIP --speed 1 --output OUT [--set ...]` with the default graph over ``clip`` padded
    with silence: its one final transcript, and the threshold the speaker node logged at start.

    Speed 1 (live pacing, about 5 s a run) rather than 0: at speed 0 the label of a file's final depends on
    which of the recognizer and the speaker node finishes first (measured here: 2 runs in 10 with Whisper warm
    got a label from provisional turns, some none at all); see the module docstring. ``speaker_wait_ms`` is
    raised from 500 ms of wall time so a busy machine cannot time the wait out either."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kikimimi.nodes.speaker"):
        assert main(["run", "--input", str(padded(clip, out.parent)), "--speed", "1", "--output", str(out),
                     "--set", "fusion.speaker_wait_ms=60000", *settings]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    (final,) = [o for o in rows if o["type"] == "LabeledTranscript" and o["final"]]
    (threshold,) = [float(m.group(1)) for r in caplog.records if (m := THRESHOLD_LOG.search(r.getMessage()))]
    return final, threshold


@pytest.mark.slow
def test_enrolled_speaker_is_named_on_the_transcript_and_another_speaker_is_not(
        db: Path, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    final, threshold = final_transcript(data_dir / SAME, tmp_path / "same.jsonl", caplog)
    assert threshold == 0.75                             # nothing calibrated, no parameter: GE2E's default
    assert final["speaker"] == NAME and final["speaker_score"] >= threshold, final
    assert "honest" in final["committed"].lower()

    final, _ = final_transcript(data_dir / OTHER, tmp_path / "other.jsonl", caplog)
    assert final["speaker"] == "voice_1", final           # an unknown voice of this session
    assert "kittens" in final["committed"].lower()


@pytest.mark.slow
def test_threshold_is_the_parameter_else_the_calibrated_one_else_the_default(
        db: Path, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str], encoder_id: str) -> None:
    """A calibration that labels two recordings of the enrolled speaker as two speakers (each with an identical
    copy: same-speaker pairs score 1.0) stores a threshold midway between 1.0 and their cross score (about 0.90):
    above the 0.902 the SAME clip reaches in the graph. Without a parameter the node uses it and stops naming
    the speaker (the default 0.75 named her, see the test above); a ``threshold`` parameter below it names her
    again."""
    voices = tmp_path / "voices"
    for label, clip in (("a", ENROLL), ("b", SAME)):
        (voices / label).mkdir(parents=True)
        for copy in ("1", "2"):
            (voices / label / f"{copy}.flac").symlink_to(data_dir / clip)
    assert main(["speakers", "calibrate", str(voices)]) == 0
    assert "over 2 same / 4 different pairs" in capsys.readouterr().out
    calibrated = SpeakerDB(db).threshold(encoder_id)
    assert calibrated is not None and 0.9 < calibrated < 1.0

    final, threshold = final_transcript(data_dir / SAME, tmp_path / "calibrated.jsonl", caplog)
    assert threshold == round(calibrated, 3)
    assert final["speaker"] == "voice_1", final

    final, threshold = final_transcript(data_dir / SAME, tmp_path / "param.jsonl", caplog,
                                        "--set", "speaker.threshold=0.5")
    assert threshold == 0.5
    assert final["speaker"] == NAME and 0.5 <= final["speaker_score"] < calibrated, final
