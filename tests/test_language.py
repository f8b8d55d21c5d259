"""Language under auto: decided on enough audio, kept for the stream unless another language wins clearly,
restricted with auto:en,ja (models/asr/language.py), through the real recognizer on real recordings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from kikimimi.engine.errors import ParamError
from kikimimi.launch.cli import main
from kikimimi.models.asr.language import (
    LanguageChoice,
    StreamLanguage,
    best_allowed,
    decoding_language,
    parse_language,
)

KNOWN = ("en", "ja", "pl", "cy", "ko")


def test_language_values_parse_and_bad_ones_name_what_is_allowed() -> None:
    assert parse_language("auto", KNOWN) == LanguageChoice()
    assert parse_language("ja", KNOWN) == LanguageChoice(fixed="ja")
    assert parse_language("auto:en,ja", KNOWN) == LanguageChoice(allowed=("en", "ja"))
    assert parse_language("auto:en", KNOWN) == LanguageChoice(fixed="en")
    for bad, why in (("xx", "language='xx' is not allowed; allowed: auto, auto:CODE"),
                     ("auto:en,xx", r"unknown: xx\); allowed"), ("auto:", r"no code\)"), ("", "not allowed")):
        with pytest.raises(ParamError, match=why):
            parse_language(bad, KNOWN)


def test_detection_keeps_to_the_allowed_languages_and_renormalizes() -> None:
    ranked = [("pl", 0.6), ("en", 0.3), ("ja", 0.1)]
    assert best_allowed(ranked, None) == ("pl", 0.6)
    code, p = best_allowed(ranked, ("en", "ja"))
    assert code == "en" and p == pytest.approx(0.75)


def test_a_stream_switches_only_on_strong_evidence_over_enough_audio() -> None:
    assert decoding_language(None, "cy", 0.4, 0.5, 0.9, 2.0) == "cy"          # no stream language yet
    assert decoding_language("en", "cy", 0.7, 5.0, 0.9, 2.0) == "en"          # weak: stays English
    assert decoding_language("en", "ja", 0.97, 0.8, 0.9, 2.0) == "en"         # strong but on 0.8 s
    assert decoding_language("en", "ja", 0.97, 2.5, 0.9, 2.0) == "ja"         # strong and sustained
    sl = StreamLanguage(decide_s=2.0)
    assert sl.fix("pl", 0.6, final=False) is None                            # not on the first short window
    assert sl.fix("en", 2.1, final=False) == "en" and sl.fix("ja", 0.6, final=True) == "ja"
    sl.finished("en")
    assert sl.current == "en"


def joined(data_dir: Path, clips: list[str], path: Path) -> Path:
    parts = []
    for clip in clips:
        x, sr = sf.read(str(data_dir / clip), dtype="float32", always_2d=True)
        parts += [soxr.resample(x.mean(axis=1), sr, 16000).astype(np.float32), np.zeros(32000, np.float32)]
    sf.write(str(path), np.concatenate(parts), 16000)
    return path


@pytest.mark.slow
def test_auto_gives_each_utterance_its_language_in_english_japanese_and_a_switching_file(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jfk, ja = "en/jfk/jfk.flac", "ja/fleurs/fleurs_ja_1837.wav"
    files = [str(data_dir / jfk), str(data_dir / ja), str(joined(data_dir, [jfk, ja], tmp_path / "en_ja.wav")),
             str(data_dir / "diarization/ami/dev01.wav")]
    for language, mix in (("auto", "en"), ("auto:en,ja", "en")):
        assert main(["transcribe", "--model", "base", "--language", language, "--format", "jsonl", *files]) == 0
        finals = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        by_file = {f: [o["language"] for o in finals if o["file"] == f and o["committed"]] for f in files}
        assert by_file[files[0]] and set(by_file[files[0]]) == {"en"}, by_file
        assert by_file[files[1]] and set(by_file[files[1]]) == {"ja"}, by_file
        switch = by_file[files[2]]
        assert switch[-1] == "ja" and set(switch[:-1]) == {"en"}, by_file    # JFK, then the Japanese
        # An English meeting, which came out Polish with the old per-window detection.
        assert set(by_file[files[3]]) == {mix}, by_file
