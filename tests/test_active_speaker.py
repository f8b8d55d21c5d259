"""active_speaker: the lip / audio-envelope synchrony scorer on synthetic talkers, and the node around it.

The synthetic talker: "syllables" (Hann bumps of 120-260 ms, about 4 per second, random loudness) shape
both the loudness of a white-noise carrier (the audio) and the outer-lip opening of the face, so a face
driven by the same syllables is in sync, one driven by another draw of syllables is not.
"""

from __future__ import annotations

import numpy as np
import pytest

from kikimimi.engine.errors import ParamError
from kikimimi.engine.messages import NO_SAMPLE, Control, ControlKind, Header, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.vision import ActiveSpeaker, Face, Faces
from kikimimi.engine.registry import load_kind
from kikimimi.engine.testing import run_node
from kikimimi.models.vision.active import (
    FLOOR_DB,
    ActiveSpeakerError,
    ActiveSpeakerScorer,
    BandEnvelope,
    SyncScorer,
    frame_levels,
    highpass,
    lip_signal,
    lip_signals,
)
from kikimimi.models.vision.active_stream import (
    ActiveSpeakerConfig,
    ActiveSpeakerDetector,
    DroppedFrame,
    FrameScores,
)
from kikimimi.nodes.active_speaker import ActiveSpeakerNode

RATE = 16000
FPS = 25
HOP = RATE // FPS          # samples per video frame


def syllables(seconds: float, seed: int) -> np.ndarray:
    """A syllabic envelope in [0, 1] at the audio rate: random bumps, about 4 per second."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    env = np.zeros(n)
    t = 0.1
    while t < seconds - 0.3:
        dur = rng.uniform(0.12, 0.26)
        a, b = int(t * RATE), int((t + dur) * RATE)
        env[a:b] = np.maximum(env[a:b], rng.uniform(0.4, 1.0) * np.hanning(b - a))
        t += dur + rng.uniform(0.03, 0.2)
    return env


def talker_audio(env: np.ndarray, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed + 100).standard_normal(len(env))
    return (0.3 * env * noise + 1e-4 * noise).astype(np.float32)


def face_lips(env: np.ndarray, n_frames: int, seed: int = 0, jitter: float = 0.005) -> np.ndarray:
    """Lip opening per video frame following ``env`` (audio-rate) at the frame instants, plus jitter."""
    rng = np.random.default_rng(seed + 200)
    idx = np.minimum(np.arange(n_frames) * HOP, len(env) - 1)
    return 0.05 + 0.4 * env[idx] + jitter * rng.standard_normal(n_frames)


def landmarks_for(opening: float) -> np.ndarray:
    """Landmarks whose outer lips are ``opening`` x the mouth width apart (mouth width 20 px)."""
    lm = np.zeros((68, 2), np.float32)
    lm[:, 0] = np.linspace(20, 80, 68)
    lm[:, 1] = 50
    lm[48] = (40, 80)
    lm[54] = (60, 80)
    for up, lo, x in ((50, 58, 46), (51, 57, 50), (52, 56, 54)):
        lm[up] = (x, 80 - 10 * opening)
        lm[lo] = (x, 80 + 10 * opening)
    return lm


def run_scorer(audio: np.ndarray, lips: np.ndarray, chunk: int = 320) -> list:
    """Feed a SyncScorer audio in ``chunk``s until each frame is ready; the frames' results."""
    sc = SyncScorer(RATE)
    pos, out = 0, []
    for i, lip in enumerate(lips):
        while not sc.ready(i * HOP) and pos < len(audio):
            sc.push_audio(audio[pos:pos + chunk], pos)
            pos += chunk
        out.append(sc.push_frame(i * HOP, float(lip)))
    return out


def mean_p(results: list) -> float:
    ps = [r.probability for r in results if r.weight > 0]
    return float(np.mean(ps)) if ps else 0.5


# ---------------------------------------------------------------------------------------------- model
def test_lip_signal_is_the_outer_opening_over_the_mouth_width() -> None:
    assert lip_signal(landmarks_for(0.3)) == pytest.approx(0.3)
    assert lip_signals(np.stack([landmarks_for(0.1), landmarks_for(0.4)])) == pytest.approx([0.1, 0.4])
    assert np.isnan(lip_signal(np.full((68, 2), np.nan, np.float32)))
    assert np.isnan(lip_signal(np.zeros((68, 2), np.float32)))         # no mouth width
    with pytest.raises(ActiveSpeakerError, match=r"\(68, 2\)"):
        lip_signal(np.zeros((20, 2)))


def test_envelope_levels_are_db_of_the_speech_band() -> None:
    t = np.arange(RATE) / RATE
    frames = np.arange(5, 20) * HOP
    in_band = frame_levels(0.5 * np.sin(2 * np.pi * 1500 * t), RATE, frames)
    assert in_band == pytest.approx(10 * np.log10(0.5 ** 2 / 2), abs=0.2)     # power of the sine, dB re 1
    below = frame_levels(0.5 * np.sin(2 * np.pi * 200 * t), RATE, frames)
    assert np.all(below < in_band - 30)
    assert frame_levels(np.zeros(RATE), RATE, frames) == pytest.approx(FLOOR_DB)


def test_streamed_envelope_equals_the_offline_one_for_any_chunking() -> None:
    audio = talker_audio(syllables(3.0, 1))
    frames = np.arange(2, 70) * HOP
    offline = frame_levels(audio, RATE, frames)
    rng = np.random.default_rng(3)
    env = BandEnvelope(RATE)
    pos = 0
    while pos < len(audio):
        n = int(rng.integers(1, 900))
        env.push(audio[pos:pos + n], pos)
        env.push(audio[max(0, pos - 50):pos + n], max(0, pos - 50))    # overlapping repeats are skipped
        pos += n
    assert [env.level_at(int(s)) for s in frames] == pytest.approx(list(offline))
    assert env.ready_index(int(frames[-1])) <= env.end_index


def test_envelope_fills_gaps_with_silence_and_forgets_old_levels() -> None:
    noise = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    env = BandEnvelope(RATE, keep_s=2.0)
    env.push(noise, 0)
    env.push(noise, 2 * RATE)                                       # one second missing
    assert env.level_at(int(1.5 * RATE)) == pytest.approx(FLOOR_DB)
    assert -30 < env.level_at(int(2.5 * RATE)) < -20                # 0.1 RMS white noise, 1400 of its 8000 Hz
    assert np.isnan(env.level_at(100))                              # older than keep_s
    assert np.isnan(env.level_at(3 * RATE))                         # not yet in
    assert env.end_index == 3 * RATE
    env.push(np.zeros(10, np.float32), 100 * RATE)                  # a jump past the history: starts over
    assert env.end_index == 100 * RATE + 10
    env.push(noise, 0)                                              # a restarted stream: starts over too
    assert env.end_index == RATE and env.level_at(RATE // 2) > -30


def test_highpass_removes_the_slow_part() -> None:
    x = np.linspace(0, 10, 50)
    assert np.abs(highpass(x, 13)[6:-6]).max() < 1e-9
    y = np.sin(2 * np.pi * np.arange(50) / 6)
    assert np.corrcoef(highpass(x + y, 13), y)[0, 1] > 0.95


def test_a_face_that_follows_the_envelope_scores_high() -> None:
    env = syllables(8.0, 1)
    res = run_scorer(talker_audio(env), face_lips(env, 200))
    assert mean_p(res) > 0.85
    assert np.nanmean([r.correlation for r in res]) > 0.6


def test_a_still_face_and_an_unrelated_face_score_low() -> None:
    env = syllables(8.0, 1)
    audio = talker_audio(env)
    still = run_scorer(audio, np.full(200, 0.12) + 0.001 * np.random.default_rng(0).standard_normal(200))
    assert mean_p(still) < 0.1
    others = [mean_p(run_scorer(audio, face_lips(syllables(8.0, seed), 200, seed))) for seed in range(2, 8)]
    assert max(others) < 0.5 and np.mean(others) < 0.35, others     # chance windows reach r ~ 0.3 now and then


def test_silence_or_steady_noise_cannot_tell() -> None:
    env = syllables(8.0, 1)
    lips = face_lips(env, 200)
    for audio in (np.zeros(8 * RATE, np.float32),
                  (0.05 * np.random.default_rng(1).standard_normal(8 * RATE)).astype(np.float32)):
        res = run_scorer(audio, lips)
        assert all(r.probability == 0.5 and r.weight == 0.0 for r in res)


def test_the_first_second_and_missing_faces_give_one_half() -> None:
    env = syllables(5.0, 1)
    lips = face_lips(env, 120)
    res = run_scorer(talker_audio(env), lips)
    assert all(r.probability == 0.5 for r in res[:24]) and res[30].probability != 0.5
    lips[60:] = np.nan                                 # the face is lost: its frames drop out of the window
    res = run_scorer(talker_audio(env), lips)
    assert res[70].probability != 0.5 and res[70].n_frames == 39
    assert res[99].probability == 0.5 and res[99].n_frames == 10     # less than 1 s of face in the window
    assert res[119].probability == 0.5 and res[119].n_frames == 0


def test_windows_and_memory_are_bounded() -> None:
    env = syllables(30.0, 5)
    res = run_scorer(talker_audio(env), face_lips(env, 750))
    spans = [r.end_sample - r.start_sample for r in res]
    assert max(spans) < 2 * RATE and res[-1].end_sample == 749 * HOP
    assert max(r.n_frames for r in res) == 50
    sc = SyncScorer(RATE, window_s=1.5)
    sc.push_audio(np.zeros(60 * RATE, np.float32), 0)
    for i in range(60 * FPS):
        sc.push_frame(i * HOP, 0.1)
    assert len(sc) <= 38
    assert sc.envelope._levels.shape == (1000,)        # KEEP_S of 10 ms levels, whatever was pushed


def test_multi_face_scorer_keeps_faces_apart_and_forgets_them() -> None:
    env = syllables(8.0, 1)
    audio = talker_audio(env)
    speaker, listener = face_lips(env, 200), face_lips(syllables(8.0, 7), 200, 7)
    ms = ActiveSpeakerScorer(RATE, forget_s=1.0, max_faces=3)
    ms.push_audio(audio, 0)
    got: dict[int, list] = {1: [], 2: []}
    for i in range(200):
        lips = {1: speaker[i]} if i >= 150 else {1: speaker[i], 2: listener[i]}
        for fid, r in ms.push_frame(i * HOP, lips).items():
            got[fid].append(r)
        if i == 170:
            assert sorted(ms.face_ids) == [1, 2]       # face 2 unseen for 0.8 s: still kept
    assert mean_p(got[1]) > 0.85 and mean_p(got[2]) < 0.35
    assert ms.face_ids == [1]                          # unseen for more than forget_s
    for fid in range(10, 15):
        ms.push_frame(200 * HOP, {fid: 0.1})
    assert len(ms.face_ids) == 3 and 1 not in ms.face_ids   # max_faces: the least recently seen go


def test_scorer_rejects_bad_settings() -> None:
    with pytest.raises(ParamError, match="sample_rate"):
        BandEnvelope(4000)
    with pytest.raises(ParamError, match="window_s"):
        SyncScorer(RATE, window_s=0.5)
    with pytest.raises(ActiveSpeakerError, match="start_index"):
        BandEnvelope(RATE).push(np.zeros(10), -5)


# ---------------------------------------------------------------------------------------------- stream contract
def stream_run(audio: np.ndarray, lips: dict[int, np.ndarray], n: int, config: ActiveSpeakerConfig | None = None,
               chunk: int = 320, faces_first: bool = False) -> list:
    """Everything one ActiveSpeakerStream returns for the scene (audio in ``chunk``s), then ``finish``."""
    st = ActiveSpeakerDetector(config).new_stream()
    out: list = []
    frames = [(i * HOP, {fid: float(v[i]) for fid, v in lips.items()}, i * 40_000_000, i) for i in range(n)]
    pieces = [(audio[a:a + chunk], a) for a in range(0, len(audio), chunk)]
    if faces_first:
        for f in frames:
            out += st.accept_faces(*f)
    for x, a in pieces:
        out += st.accept_audio(x, a, (a + len(x)) * 1_000_000_000 // RATE)
    if not faces_first:
        for f in frames:
            out += st.accept_faces(*f)
    return out + st.end_audio() + st.finish()


def key(results: list) -> list:
    """Stream results comparable with == (the correlation may be NaN)."""
    return [(r.index, r.frame_index, r.t_ns, r.sample_index, [(f.face_id, f.probability, f.speaking, f.start_sample,
                                                                f.end_sample, f.weight) for f in r.faces])
            for r in results]


def test_config_validates_itself_naming_the_value_and_what_is_allowed() -> None:
    assert ActiveSpeakerConfig().offset_samples == 0
    assert ActiveSpeakerConfig(av_offset_ms=200).offset_samples == 3200
    for kwargs, pattern in (({"sample_rate": 4000}, r"sample_rate=4000 is not allowed; allowed: an int >= 4400"),
                            ({"window_s": 0.5}, r"window_s=0.5 is not allowed; allowed: 1.0 <= window_s <= 60"),
                            ({"on": 1.5}, r"on=1.5 is not allowed; allowed: 0 <= on <= 1"),
                            ({"on": 0.5, "off": 0.6}, r"off=0.6 is not below on=0.5; allowed: off < on"),
                            ({"forget_s": 0.0}, r"forget_s=0.0 is not allowed; allowed: forget_s > 0"),
                            ({"max_held": 0}, r"max_held=0 is not allowed; allowed: an int >= 1")):
        with pytest.raises(ParamError, match=pattern):
            ActiveSpeakerConfig(**kwargs)


def test_stream_scores_every_frame_once_in_order_whatever_the_arrival_and_chunking() -> None:
    audio, lips = scene()
    ref = stream_run(audio, lips, 150)
    assert all(isinstance(r, FrameScores) for r in ref)
    assert [r.index for r in ref] == list(range(150)) and [r.frame_index for r in ref] == list(range(150))
    assert [r.sample_index for r in ref] == [i * HOP for i in range(150)]
    assert all([f.face_id for f in r.faces] == [0, 1] for r in ref)
    for other in (stream_run(audio, lips, 150, faces_first=True), stream_run(audio, lips, 150, chunk=1234)):
        assert key(other) == key(ref)
    last = {f.face_id: f for f in ref[-1].faces}
    assert last[0].speaking and not last[1].speaking and last[0].probability > 0.7
    assert (last[0].start_sample, last[0].end_sample) == (100 * HOP, 149 * HOP)
    assert np.mean([r.faces[0].weight for r in ref[40:]]) > 0.5


def test_stream_results_are_what_the_node_emits() -> None:
    audio, lips = scene()
    measured = {fid: np.array([lip_signal(landmarks_for(float(x))) for x in v]) for fid, v in lips.items()}
    ref = stream_run(audio, measured, 150, ActiveSpeakerConfig(on=0.9, off=0.2, av_offset_ms=40))
    msgs = [("audio", m) for m in audio_msgs(audio)] + [("faces", m) for m in faces_msgs(lips, 150)]
    node = outputs(run_node(ActiveSpeakerNode("as", {"on": 0.9, "off": 0.2, "av_offset_ms": 40}), msgs))
    assert [(m.face_id, m.probability, m.speaking, m.start_sample, m.end_sample) for m in node] == [
        (f.face_id, f.probability, f.speaking, f.start_sample, f.end_sample) for r in ref for f in r.faces]


def test_stream_waits_for_audio_places_camera_frames_and_drops_what_it_cannot_hold() -> None:
    audio, lips = scene(50)
    cfg = ActiveSpeakerConfig(max_held=10)
    st = ActiveSpeakerDetector(cfg).new_stream()
    got = []
    for i in range(50):
        got += st.accept_faces(None, {0: float(lips[0][i])}, (i * HOP) * 1_000_000_000 // RATE, i)
    assert [type(r) for r in got] == [DroppedFrame] * 40 and {r.reason for r in got} == {"overflow"}
    assert [r.frame_index for r in got] == list(range(40)) and st.held == 10
    got = st.accept_audio(audio[: 30 * HOP], 0, 30 * HOP * 1_000_000_000 // RATE)   # frames 40..49: after it
    assert got == [] and st.held == 10
    got = st.accept_audio(audio[30 * HOP:46 * HOP], 30 * HOP, 46 * HOP * 1_000_000_000 // RATE)
    rest = st.end_audio()                                          # the audio is complete: the rest at once
    assert got and rest and st.held == 0
    assert [r.frame_index for r in got + rest] == list(range(40, 50))
    assert [r.sample_index for r in got + rest] == [i * HOP for i in range(40, 50)]
    cam = ActiveSpeakerDetector().new_stream()
    assert cam.accept_faces(None, {}, 0, 7) == []
    assert cam.finish() == [DroppedFrame(7, 0, "stale")]


def test_stream_says_when_nobody_is_in_view() -> None:
    st = ActiveSpeakerDetector().new_stream()
    st.accept_audio(np.zeros(RATE, np.float32), 0)
    (r,) = st.accept_faces(3200, {}, 5, 2)
    assert r == FrameScores(0, 2, 5, 3200, ())


# ---------------------------------------------------------------------------------------------- node
def face(fid: int, opening: float) -> Face:
    box = np.array([10, 10, 80, 90], np.int32)
    return Face(fid, box, landmarks_for(opening), box, np.zeros((96, 96), np.uint8), float(opening), True)


def faces_msgs(lips: dict[int, np.ndarray], n: int, stream: str = "s", sample_index: bool = True) -> list[Faces]:
    return [Faces(Header(stream, i, i * HOP if sample_index else NO_SAMPLE, i * 40_000_000, "vision"), i, 320, 240,
                  25.0, tuple(face(fid, float(v[i])) for fid, v in lips.items())) for i in range(n)]


def audio_msgs(audio: np.ndarray, stream: str = "s", chunk: int = 320, rate: int = RATE) -> list[AudioChunk]:
    out = []
    for k, a in enumerate(range(0, len(audio), chunk)):
        x = audio[a:a + chunk].reshape(-1, 1)
        # t_ns: the capture time of the chunk's end (as file_source and mic_source stamp it).
        out.append(AudioChunk(Header(stream, k, a, (a + len(x)) * 1_000_000_000 // RATE, "src"), x, rate))
    return out


def scene(n: int = 150) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    env = syllables(n / FPS + 0.2, 1)
    return talker_audio(env), {0: face_lips(env, n), 1: face_lips(syllables(n / FPS + 0.2, 7), n, 7)}


def outputs(out: list[tuple[str, Message]]) -> list[ActiveSpeaker]:
    assert all(port == "active" for port, _ in out)
    return [m for _, m in out if isinstance(m, ActiveSpeaker)]


def test_node_kind_is_registered() -> None:
    assert load_kind("active_speaker") is ActiveSpeakerNode


def test_node_scores_the_same_whether_faces_come_before_or_after_their_audio() -> None:
    audio, lips = scene()
    a = [("audio", m) for m in audio_msgs(audio)]
    f = [("faces", m) for m in faces_msgs(lips, 150)]
    runs = [a + f, f + a, [x for pair in zip(f, a, strict=False) for x in pair] + a[len(f):]]
    results = [outputs(run_node(ActiveSpeakerNode("as"), msgs)) for msgs in runs]
    key = [(m.face_id, m.probability, m.speaking, m.start_sample, m.end_sample) for m in results[0]]
    assert len(key) == 300
    for other in results[1:]:
        assert [(m.face_id, m.probability, m.speaking, m.start_sample, m.end_sample) for m in other] == key
    last = {m.face_id: m for m in results[0]}
    assert last[0].speaking and not last[1].speaking
    assert last[0].end_sample == 149 * HOP and last[0].start_sample == 100 * HOP
    assert last[0].header.sample_index == last[0].end_sample and last[0].sample_rate == RATE


def test_node_hysteresis_every_frames_and_offset() -> None:
    audio, lips = scene()
    msgs = [("audio", m) for m in audio_msgs(audio)] + [("faces", m) for m in faces_msgs(lips, 150)]
    out = outputs(run_node(ActiveSpeakerNode("as", {"every_frames": 10}), msgs))
    assert len(out) == 30 and {m.end_sample for m in out} == {i * HOP for i in range(0, 150, 10)}
    p0 = [m.probability for m in outputs(run_node(ActiveSpeakerNode("as"), msgs)) if m.face_id == 0]
    spk = [m.speaking for m in outputs(run_node(ActiveSpeakerNode("as", {"on": 0.9, "off": 0.2}), msgs))
           if m.face_id == 0]
    state = False
    for p, s in zip(p0, spk, strict=True):
        state = p > 0.2 if state else p >= 0.9
        assert s == state
    late = outputs(run_node(ActiveSpeakerNode("as", {"av_offset_ms": 200}), msgs))
    assert late[-1].end_sample == 149 * HOP + 3200
    assert np.mean([m.probability for m in late if m.face_id == 0][40:]) < np.mean(p0[40:])
    with pytest.raises(ParamError, match="off"):
        ActiveSpeakerNode("as", {"on": 0.5, "off": 0.6})


def test_node_maps_frames_without_a_sample_index_through_the_audio_clock() -> None:
    audio, lips = scene()
    a = [("audio", m) for m in audio_msgs(audio)]
    ref = outputs(run_node(ActiveSpeakerNode("as"), a + [("faces", m) for m in faces_msgs(lips, 150)]))
    got = outputs(run_node(ActiveSpeakerNode("as"), [("faces", m) for m in faces_msgs(lips, 150, sample_index=False)]
                           + a))
    assert [(m.face_id, m.probability, m.end_sample) for m in got] == [
        (m.face_id, m.probability, m.end_sample) for m in ref]


def test_node_rejects_wrong_rates_and_bounds_the_held_frames() -> None:
    audio, lips = scene()
    node = ActiveSpeakerNode("as", {"max_held": 10})
    out = outputs(run_node(node, [("audio", audio_msgs(audio, rate=8000)[0])]
                           + [("faces", m) for m in faces_msgs(lips, 150)]))
    assert node.stats.rejected_by_kind["sample_rate"] == 1
    assert node.frames_dropped == 140 and node.stats.dropped["overflow"] == 140
    assert len(out) == 20 and all(m.probability == 0.5 and not m.speaking for m in out)   # scored at stop


def test_node_end_of_stream_scores_held_frames_and_forgets_the_stream() -> None:
    audio, lips = scene()
    eos = Control(Header("s", 0, NO_SAMPLE, 0, "src"), ControlKind.END_OF_STREAM)
    node = ActiveSpeakerNode("as")
    msgs: list[tuple[str, Message]] = [("faces", m) for m in faces_msgs(lips, 150)]
    msgs += [("audio", m) for m in audio_msgs(audio[: 100 * HOP])]
    out = outputs(run_node(node, [*msgs, ("audio", eos), ("faces", eos)]))
    assert len(out) == 300 and node.frames_scored == 150
    assert out[150].probability > 0.7 and out[-1].probability == 0.5     # the audio ended at frame 100
    assert node.streams == {}


def test_node_says_when_no_face_is_in_view() -> None:
    audio, lips = scene(50)
    msgs = faces_msgs(lips, 50)
    empty = [Faces(m.header, m.frame_index, m.width, m.height, m.fps, ()) if 20 <= i < 30 else m
             for i, m in enumerate(msgs)]
    got = outputs(run_node(ActiveSpeakerNode("as"), [("audio", m) for m in audio_msgs(audio)] +
                           [("faces", m) for m in empty]))
    none = [m for m in got if m.face_id == -1]
    assert [m.end_sample for m in none] == [i * HOP for i in range(20, 30)]
    assert all(m.probability == 0.0 and not m.speaking and m.start_sample == m.end_sample for m in none)
    assert len(got) - len(none) == 2 * 40


def test_camera_frames_without_any_audio_are_dropped_and_counted() -> None:
    _, lips = scene(20)
    node = ActiveSpeakerNode("as")
    out = outputs(run_node(node, [("faces", m) for m in faces_msgs(lips, 20, sample_index=False)]))
    assert out == [] and node.frames_dropped == 20 and node.stats.dropped["stale"] == 20
