"""Accuracy on real recordings with the bundled Whisper base model: streaming against offline.

The streaming figures come from the asr node fed by the real VAD and feature nodes (in-process, in
live arrival order, a fixed 1 s partial interval so the run does not depend on machine speed). On
LibriSpeech the reference is what a user would otherwise run: faster-whisper's own ``transcribe()`` on
each whole clip, same model directory and beam (1), int8; elsewhere it is the same model decoding each
whole VAD utterance once. Every message of every clip is checked: committed text never changes from
one partial to the next.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from asr_pipeline import Clip, finals, front_messages, librispeech_subset, load_audio, manifest, offline_texts, run_asr
from test_asr_node import check_revisions

from kikimimi.engine.msgs.speech import Transcript
from kikimimi.models.asr.text import ErrorCount, cer, join_text, wer
from kikimimi.models.asr.whisper_ct2 import WhisperConfig, WhisperCT2

pytestmark = pytest.mark.slow

MAX_GAP = 0.02          # streaming WER / CER within 2 points (absolute) of offline


@pytest.fixture(scope="module")
def base() -> WhisperCT2:
    return WhisperCT2(WhisperConfig("base", threads=2))


def _final_text(out: list[Transcript], language: str) -> str:
    return join_text((t.committed for t in finals(out)), language)


@pytest.fixture(scope="module")
def librispeech(data_dir: Path) -> dict[str, object]:
    from faster_whisper import WhisperModel

    from kikimimi.models.asr.resolve import resolve_model

    fw = WhisperModel(str(resolve_model("base").path), device="cpu", compute_type="int8", cpu_threads=2)
    clips = librispeech_subset(data_dir, per_speaker=3)
    stream, offline = ErrorCount(), ErrorCount()
    rows = []
    for clip in clips:
        audio = load_audio(clip.path)
        out = run_asr(front_messages(audio), model="base", language="en")
        check_revisions(out)
        s_text = _final_text(out, "en")
        segments, _ = fw.transcribe(audio, beam_size=1, language="en")
        o_text = " ".join(seg.text.strip() for seg in segments)
        s, o = wer(clip.reference, s_text), wer(clip.reference, o_text)
        stream, offline = stream + s, offline + o
        rows.append((clip.path.name, s.errors, o.errors, s_text, o_text))
    return {"clips": clips, "stream": stream, "offline": offline, "rows": rows}


def test_librispeech_streaming_wer_is_within_3_points_of_whole_clip_decoding(librispeech: dict[str, object]) -> None:
    """Measured on these 27 clips: streaming 11.02 %, faster-whisper 8.66 % (+2.36 points with finals padded to
    20 s, the CPU default; +2.95 padded to 10 s, +1.77 to 30 s). On all 70 LibriSpeech clips the same
    mechanism gives +0.58 (bench/batch_vs_offline.py --streaming): part of what is left here is Whisper's own
    variance on an utterance decoded without the rest of the clip (2414-128291-0002 loses its first word
    "When," which faster-whisper also drops when given only that utterance's audio). Issue 13 asks for
    1 point: open on this subset. The finals scored 17.32 % on every third clip before they were decoded
    again as a whole with the previous speech's audio, after 500 ms pauses."""
    stream: ErrorCount = librispeech["stream"]  # type: ignore[assignment]
    offline: ErrorCount = librispeech["offline"]  # type: ignore[assignment]
    clips: list[Clip] = librispeech["clips"]  # type: ignore[assignment]
    report = "\n".join(f"{n}: stream {s} offline {o}\n  S: {st}\n  O: {ot}"
                       for n, s, o, st, ot in librispeech["rows"] if s != o)  # type: ignore[attr-defined]
    print(f"\nLibriSpeech ({len(clips)} clips, {stream.length} words): streaming WER {stream.rate:.2%}, "
          f"offline WER {offline.rate:.2%}\n{report}")
    assert len({c.speaker for c in clips}) == 9 and len(clips) >= 20
    assert stream.rate <= offline.rate + 0.03
    assert offline.rate < 0.20          # sanity: the model works (faster-whisper base: ~12 % on test-other)


def test_jfk_matches_its_reference_within_one_word(data_dir: Path) -> None:
    clip = next(c for c in manifest(data_dir) if c.path.name == "jfk.flac")
    out = run_asr(front_messages(load_audio(clip.path)), model="base")
    check_revisions(out)
    assert all(t.language == "en" for t in finals(out))
    # one word may differ: decoded as the continuation of "and so my fellow Americans" (the final's
    # carry), "ask not" can come out "asked not"
    assert wer(clip.reference, _final_text(out, "en")).errors <= 1


def test_fleurs_japanese_cer_streaming_within_2_points_of_offline(data_dir: Path, base: WhisperCT2) -> None:
    clip = next(c for c in manifest(data_dir) if c.language == "ja")
    msgs = front_messages(load_audio(clip.path))
    out = run_asr(msgs, model="base")                       # language detected per utterance
    check_revisions(out)
    fin = finals(out)
    assert fin and all(t.language == "ja" for t in fin)
    s_text = _final_text(out, "ja")
    o_text = join_text(offline_texts(base, msgs, "ja"), "ja")
    s, o = cer(clip.reference, s_text), cer(clip.reference, o_text)
    print(f"\nFLEURS ja: streaming CER {s.rate:.2%} offline CER {o.rate:.2%}\n  S: {s_text}\n  O: {o_text}")
    assert " " not in s_text.strip()                         # no spurious spaces in Japanese
    assert s.rate <= o.rate + MAX_GAP
    assert o.rate < 0.35


def test_speech_at_the_very_start_of_a_file_is_kept(data_dir: Path, tmp_path: Path) -> None:
    """Clips cut so that speech begins in their first 20 ms (at the VAD's onset on the whole clip), through
    ``kikimimi transcribe``'s path, read as the whole clip reads: the same first word and no more errors than
    the whole clip plus one word (issue 13 saw speech at 0.0 s reported at 2.59 s and its first words lost;
    1688-142285-0000 cut at its onset read "But as I and they say" for "There's iron they say" until windows
    at a stream's start got silence before them). The VAD finds such speech at 0.0 s."""
    import soundfile as sf

    from kikimimi.launch import transcribe as tr
    from kikimimi.launch.cli import resolve_graph
    from kikimimi.launch.subtitles import file_text
    from kikimimi.models.asr.text import normalize
    from kikimimi.models.vad.offline import speech_spans

    def read(path: Path) -> str:
        return file_text(tr.run_file(resolve_graph("default"), str(path), "tiny.en", "en").finals)

    clips = librispeech_subset(data_dir, per_speaker=1)[:4]
    for clip in clips:
        audio = load_audio(clip.path)
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        onset = speech_spans(pcm, 16000)[0][0] + 30 * 16        # the span's start is padded by 30 ms
        assert onset > 4000                                     # these clips open with silence: cut it off
        path = tmp_path / f"{clip.path.stem}.wav"
        sf.write(str(path), audio[onset:], 16000, subtype="PCM_16")
        cut, whole = read(path), read(clip.path)
        print(f"{clip.path.name} cut at {onset / 16000:.3f} s: {cut}\n  whole: {whole}")
        assert normalize(cut).split()[:1] == normalize(whole).split()[:1], (clip.path.name, cut, whole)
        assert wer(clip.reference, cut).errors <= wer(clip.reference, whole).errors + 1, (clip.path.name, cut)
