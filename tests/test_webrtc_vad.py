"""webrtc_vad on real speech and on silence: coverage, ordering, several streams, rejections, controls."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webrtcvad

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import Control, ControlKind, Header, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent
from kikimimi.engine.testing import run_node, run_source
from kikimimi.nodes.file_source import FileSource
from kikimimi.nodes.webrtc_vad import WebrtcVad

CLIPS = [
    "en/librispeech/1688/1688-142285-0000.flac",
    "en/librispeech/1998/1998-15444-0007.flac",
    "en/librispeech/2414/2414-128291-0005.flac",
]
START, END = SpeechEventKind.SPEECH_START, SpeechEventKind.SPEECH_END


def load(path: Path, stream_id: str = "file", **params: object) -> list[AudioChunk]:
    """The file's chunks as file_source emits them (as fast as possible)."""
    node = FileSource("src", {"path": str(path), "speed": 0, "stream_id": stream_id, **params},
                      clock=ManualClock())
    return [m for _, m in run_source(node) if isinstance(m, AudioChunk)]


def make_vad(**params: object) -> tuple[WebrtcVad, list[VadEvent]]:
    node = WebrtcVad("vad", dict(params), clock=ManualClock())
    events: list[VadEvent] = []
    node.bind(lambda port, msg: events.append(msg) if isinstance(msg, VadEvent) else None)
    node.on_start()
    return node, events


def detect(chunks: list[Message], **params: object) -> list[VadEvent]:
    node = WebrtcVad("vad", dict(params), clock=ManualClock())
    return [m for _, m in run_node(node, [("audio", c) for c in chunks]) if isinstance(m, VadEvent)]


def key(e: VadEvent) -> tuple:
    return (e.header.stream_id, e.header.seq, e.header.sample_index, e.kind, e.start_sample, e.end_sample,
            e.probability)


def check_well_formed(events: list[VadEvent], n_samples: int) -> None:
    """START/END alternate, each END closes the START before it, segments are ordered and inside the clip."""
    assert len(events) % 2 == 0
    prev_end = 0
    for s, e in zip(events[::2], events[1::2], strict=True):
        assert s.kind is START and e.kind is END
        assert s.start_sample == e.start_sample
        assert prev_end <= s.start_sample < e.end_sample <= n_samples
        assert s.header.sample_index >= s.start_sample and e.header.sample_index >= e.end_sample
        assert 0.5 < e.probability <= 1.0
        prev_end = e.end_sample
    decisions = [e.header.sample_index for e in events]
    assert decisions == sorted(decisions)


@pytest.mark.parametrize("clip", CLIPS)
def test_finds_most_of_the_speech_in_librispeech(data_dir: Path, clip: str) -> None:
    path = data_dir / clip
    n = sf.info(str(path)).frames
    events = detect(load(path))
    check_well_formed(events, n)
    speech = sum(e.end_sample - e.start_sample for e in events if e.kind is END)
    assert speech >= 0.7 * n  # read speech: only the leading/trailing silences and pauses are left out
    assert events[0].start_sample < 16000  # LibriSpeech utterances start within the first second


@pytest.mark.slow
def test_speech_coverage_over_all_librispeech_clips(data_dir: Path) -> None:
    paths = sorted((data_dir / "en/librispeech").glob("*/*.flac"))
    assert len(paths) >= 60
    total = speech = 0
    for path in paths:
        events = detect(load(path))
        n = sf.info(str(path)).frames
        check_well_formed(events, n)
        assert events, f"no speech found in {path.name}"
        total += n
        speech += sum(e.end_sample - e.start_sample for e in events if e.kind is END)
    assert speech >= 0.78 * total


@pytest.mark.parametrize("chunk_ms", [20, 30, 100])
def test_detector_sees_exactly_the_input_audio_frame_by_frame(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, chunk_ms: int) -> None:
    """The ring accumulator hands webrtcvad every sample once, in order, whatever the chunking."""
    seen: list[bytes] = []
    real_vad = webrtcvad.Vad

    class SpyVad:
        def __init__(self, mode: int) -> None:
            self._vad = real_vad(mode)

        def is_speech(self, frame: bytes, rate: int) -> bool:
            seen.append(frame)
            return bool(self._vad.is_speech(frame, rate))

    monkeypatch.setattr(webrtcvad, "Vad", SpyVad)
    chunks = load(data_dir / "en/jfk/jfk.flac", chunk_ms=chunk_ms)  # 11 s: the 1 s ring wraps many times
    detect(chunks)
    audio = np.concatenate([c.samples[:, 0] for c in chunks])
    n = len(seen) * 480
    assert n > audio.shape[0] - 480 and all(len(f) == 960 for f in seen)
    np.testing.assert_array_equal(np.frombuffer(b"".join(seen), np.int16), audio[:n])


def test_digital_silence_gives_no_events() -> None:
    silence = np.zeros((320, 1), np.int16)
    chunks = [AudioChunk(Header("s", i, i * 320, 0, "src"), silence, 16000) for i in range(250)]  # 5 s
    assert detect(chunks) == []


def test_meeting_mix_events_alternate_and_are_ordered(data_dir: Path) -> None:
    path = data_dir / "diarization/ami/dev00.wav"
    events = detect(load(path, chunk_ms=100))
    check_well_formed(events, sf.info(str(path)).frames)
    assert len(events) >= 10  # a 30 s meeting has several turns


def test_two_interleaved_streams_equal_each_alone(data_dir: Path) -> None:
    a = load(data_dir / CLIPS[1], stream_id="a")
    b = load(data_dir / CLIPS[2], stream_id="b", chunk_ms=30)
    alone = detect(a) + detect(b)
    mixed: list[Message] = []
    for i in range(max(len(a), len(b))):
        mixed += a[i:i + 1] + b[i:i + 1]
    together = detect(mixed)
    for sid in ("a", "b"):
        assert [key(e) for e in together if e.header.stream_id == sid] == \
               [key(e) for e in alone if e.header.stream_id == sid]
    assert {e.header.stream_id for e in together} == {"a", "b"}


def test_float32_stereo_input_gives_the_same_events(data_dir: Path) -> None:
    chunks = load(data_dir / CLIPS[1])
    stereo = [replace(c, samples=np.repeat(c.samples.astype(np.float32) / 32768, 2, axis=1)) for c in chunks]
    assert [key(e) for e in detect(stereo)] == [key(e) for e in detect(chunks)]


def test_int16_stereo_input_gives_the_same_events(data_dir: Path) -> None:
    chunks = load(data_dir / CLIPS[1])
    stereo = [replace(c, samples=np.repeat(c.samples, 2, axis=1)) for c in chunks]
    assert [key(e) for e in detect(stereo)] == [key(e) for e in detect(chunks)]


@pytest.mark.parametrize("rate", [8000, 32000, 48000])
def test_other_supported_rates(data_dir: Path, rate: int) -> None:
    path = data_dir / CLIPS[1]
    events = detect(load(path, sample_rate=rate))
    assert events and all(e.sample_rate == rate for e in events)
    check_well_formed(events, round(sf.info(str(path)).duration * rate) + rate // 50)


def test_44100_chunk_is_rejected_counted_and_the_stream_goes_on(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    chunks = load(data_dir / CLIPS[1])
    bad = AudioChunk(Header("file", 0, 0, 0, "src"), np.zeros((882, 1), np.int16), 44100)
    node, events = make_vad()
    with caplog.at_level(logging.WARNING, logger="kikimimi.node.vad"):
        node.on_message("audio", bad)
        for c in chunks:
            node.on_message("audio", c)
    node.on_stop()
    assert node.stats.dropped["rejected"] == 1 and node.stats.rejected_by_kind["sample_rate"] == 1
    assert "44100 Hz; allowed sample rates: 8000, 16000, 32000, 48000" in caplog.text
    assert [key(e) for e in events] == [key(e) for e in detect(chunks)]


@pytest.mark.parametrize(("kind", "sid"), [(ControlKind.FLUSH, "file"), (ControlKind.END_OF_STREAM, "all")])
def test_control_closes_the_open_segment(data_dir: Path, kind: ControlKind, sid: str) -> None:
    chunks = load(data_dir / CLIPS[0])[:100]  # the first 2 s: the speaker is mid-sentence
    node, events = make_vad()
    for c in chunks:
        node.on_message("audio", c)
    assert [e.kind for e in events] == [START]
    node.on_control("audio", Control(Header(sid, 0, -1, 0, "src"), kind))
    assert [e.kind for e in events] == [START, END]
    end = events[1]
    assert end.header.sample_index == chunks[-1].end_index  # decided at the last sample seen
    assert events[0].start_sample < end.end_sample <= chunks[-1].end_index
    node.on_stop()
    assert len(events) == 2  # nothing left open


def test_gap_in_sample_index_keeps_going(data_dir: Path) -> None:
    chunks = load(data_dir / CLIPS[0])
    events = detect(chunks[:200] + chunks[210:])  # 200 ms dropped upstream
    assert sum(e.kind is END for e in events) >= 2     # speech on both sides of the gap was still found
    assert any(e.kind is END and e.end_sample > chunks[210].header.sample_index for e in events)
    check_well_formed(events, chunks[-1].end_index)


def test_min_speech_discards_short_segments(data_dir: Path) -> None:
    chunks = load(data_dir / CLIPS[2])                  # three segments: 3.2, 1.7 and 3.5 s
    lengths = sorted((e.end_sample - e.start_sample) * 1000 // 16000 for e in detect(chunks) if e.kind is END)
    assert len(lengths) >= 2, lengths        # the clip has speech segments of different lengths to discard
    cut = (lengths[0] + lengths[-1]) // 2
    kept = [(e.end_sample - e.start_sample) * 1000 // 16000 for e in detect(chunks, min_speech_ms=cut)
            if e.kind is END]
    assert kept and all(n >= cut for n in kept) and len(kept) < len(lengths), (lengths, cut, kept)
    assert detect(chunks, min_speech_ms=60_000) == []


def test_bad_param_names_value_and_allowed() -> None:
    with pytest.raises(ParamError, match="mode=4 is not allowed; allowed: 0, 1, 2, 3"):
        WebrtcVad("vad", {"mode": 4})
    with pytest.raises(ParamError, match="frame_ms=25 is not allowed; allowed: 10, 20, 30"):
        WebrtcVad("vad", {"frame_ms": 25})
