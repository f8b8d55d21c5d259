"""Active-speaker scoring on the 7 GRID talking-face clips (../shared/data/av/grid/*.mpg, one frontal talker,
3 s each, speech about 0.5-2.3 s, all with the same six-word sentence rhythm).

Must-show checks:

* For every ordered pair (video of clip B, audio of clip A != B), B's face scores LOWER with A's audio
  than with its own (42 pairs). The stricter "lower than both matched scores" is counted and printed
  (run with -s); on the current extraction it also holds for all 42.
* The lip aperture correlates positively with the audio envelope on every clip.

A clip's score for a (video, audio) pair is the mean of the online window probabilities
(:class:`~kikimimi.models.vision.active.SyncScorer`, 2 s windows ending at each frame, audio pushed in
20 ms chunks as the frames need it) over the frames whose window shows speech modulation (weight > 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kikimimi.models.vision.active import SyncScorer, frame_levels, lip_signals

pytestmark = [pytest.mark.data, pytest.mark.slow]


def _fail_or_skip(message: str) -> None:
    pytest.skip(message)   # conftest turns it into a failure under CI=true


@pytest.fixture(scope="module")
def clips(data_dir: Path) -> dict[str, object]:
    """Every GRID clip read once with the vision front end (about 0.7 s of CPU per clip)."""
    paths = sorted((data_dir / "av" / "grid").glob("*.mpg"))
    if len(paths) < 2:
        _fail_or_skip(f"GRID clips not found in {data_dir / 'av' / 'grid'} (see the project README: ../shared/data)")
    for module in ("av", "cv2", "dlib"):
        try:
            __import__(module)
        except ImportError as e:
            _fail_or_skip(f"the vision extras are not installed ({e}): pip install 'kikimimi[vision,av]'")
    from kikimimi.models.vision.clip import read_av_clip

    return {p.stem: read_av_clip(p) for p in paths}


def clip_score(lips: np.ndarray, audio: np.ndarray, frame_samples: np.ndarray, rate: int, chunk: int = 320) -> float:
    """Mean window probability over the frames with speech in their window, audio streamed in ``chunk``s."""
    sc = SyncScorer(rate)
    pos = 0
    probs = []
    for s, lip in zip(frame_samples, lips, strict=True):
        while not sc.ready(int(s)) and pos < len(audio):
            sc.push_audio(audio[pos:pos + chunk], pos)
            pos += chunk
        r = sc.push_frame(int(s), float(lip))
        if r.weight > 0:
            probs.append(r.probability)
    return float(np.mean(probs)) if probs else 0.5


def test_every_face_scores_lower_with_another_clips_audio(clips: dict) -> None:
    names = sorted(clips)
    n = len(names)
    m = np.zeros((n, n))          # m[b, a]: video of clip b with the audio of clip a
    for b, vb in enumerate(names):
        cb = clips[vb]
        lips = lip_signals(cb.landmarks)
        assert cb.has_face.mean() > 0.9, vb
        for a, va in enumerate(names):
            m[b, a] = clip_score(lips, clips[va].audio, cb.frame_samples, cb.sample_rate)
    pairs = [(b, a) for b in range(n) for a in range(n) if a != b]
    per_video = [m[b, b] - m[b, a] for b, a in pairs]
    stricter = [min(m[b, b], m[a, a]) - m[b, a] for b, a in pairs]
    print(f"\nmatched scores: {dict(zip(names, np.round(np.diag(m), 3).tolist(), strict=True))}")
    print(f"mismatched: mean {np.mean([m[b, a] for b, a in pairs]):.3f}, max {max(m[b, a] for b, a in pairs):.3f}")
    print(f"per-video criterion: {sum(d > 0 for d in per_video)}/{len(pairs)} pairs, min margin {min(per_video):.3f}")
    print(f"stricter criterion: {sum(d > 0 for d in stricter)}/{len(pairs)} pairs, min margin {min(stricter):.3f}")
    bad = [(names[b], names[a], round(m[b, a], 3), round(m[b, b], 3)) for b, a in pairs if m[b, a] >= m[b, b]]
    assert not bad, f"(video, audio, mismatched, matched score) where a face does not prefer its own audio: {bad}"
    assert sum(d > 0 for d in stricter) >= len(pairs) - 2          # a regression guard, not the requirement
    assert min(np.diag(m)) > 0.7


def test_lip_aperture_follows_the_audio_envelope_on_every_clip(clips: dict) -> None:
    for name, c in sorted(clips.items()):
        env = frame_levels(c.audio, c.sample_rate, c.frame_samples)
        for label, lip in (("inner aperture", c.aperture), ("outer lip signal", lip_signals(c.landmarks))):
            ok = np.isfinite(lip) & np.isfinite(env)
            r = float(np.corrcoef(lip[ok], env[ok])[0, 1])
            print(f"{name}: {label} vs envelope r = {r:.2f}")
            assert r > 0.2, (name, label, r)


def test_node_prefers_each_face_with_its_own_audio(clips: dict) -> None:
    """The node, fed Faces and 20 ms AudioChunks, on each clip's video with its own audio and with the next
    clip's audio: the mean probability and the share of frames marked speaking are higher with its own."""
    from kikimimi.engine.messages import Header
    from kikimimi.engine.msgs.audio import AudioChunk
    from kikimimi.engine.msgs.vision import NO_FACE, ActiveSpeaker, Face, Faces
    from kikimimi.engine.testing import run_node
    from kikimimi.nodes.active_speaker import ActiveSpeakerNode

    names = sorted(clips)
    for i, vb in enumerate(names):
        c = clips[vb]
        faces = []
        for k, s in enumerate(c.frame_samples):
            f = () if not c.has_face[k] else (Face(0, c.boxes[k], c.landmarks[k], c.mouth_boxes[k], c.mouths[k],
                                                   float(c.aperture[k]), True),)
            faces.append(("faces", Faces(Header("s", k, int(s), 0, "vision"), k, 360, 288, c.fps, f)))
        stats = []
        for va in (vb, names[(i + 1) % len(names)]):
            x = clips[va].audio
            audio = [("audio", AudioChunk(Header("s", j, a, 0, "src"), x[a:a + 320].reshape(-1, 1), c.sample_rate))
                     for j, a in enumerate(range(0, len(x), 320))]
            got = [m for _, m in run_node(ActiveSpeakerNode("as"), faces + audio) if isinstance(m, ActiveSpeaker)]
            assert len(got) == len(faces)                      # one message per frame: the face, or "no face"
            out = [m for m in got if m.face_id != NO_FACE]
            assert len(out) == int(c.has_face.sum())
            stats.append((np.mean([m.probability for m in out]), np.mean([m.speaking for m in out])))
        (p_own, on_own), (p_other, on_other) = stats
        assert p_own > p_other and on_own > on_other, (vb, stats)


def test_stream_contract_prefers_each_face_with_its_own_audio(clips: dict) -> None:
    """The model-level stream (ActiveSpeakerDetector.new_stream), frames given before their audio: every
    frame is scored once, in order, and each face's mean probability and speaking share are higher with its
    own audio than with the next clip's."""
    from kikimimi.models.vision.active_stream import ActiveSpeakerDetector, FrameScores

    names = sorted(clips)
    det = ActiveSpeakerDetector()
    for i, vb in enumerate(names):
        c = clips[vb]
        lips = lip_signals(c.landmarks)
        stats = []
        for va in (vb, names[(i + 1) % len(names)]):
            x = clips[va].audio
            st = det.new_stream()
            out = []
            for k, s in enumerate(c.frame_samples):
                out += st.accept_faces(int(s), {0: float(lips[k])} if c.has_face[k] else {}, 0, k)
            for a in range(0, len(x), 320):
                out += st.accept_audio(x[a:a + 320], a)
            out += st.finish()
            assert all(isinstance(r, FrameScores) for r in out)
            assert [r.frame_index for r in out] == list(range(len(c.frame_samples)))
            scores = [f for r in out for f in r.faces]
            assert len(scores) == int(c.has_face.sum())
            stats.append((np.mean([f.probability for f in scores]), np.mean([f.speaking for f in scores])))
        (p_own, on_own), (p_other, on_other) = stats
        assert p_own > p_other and on_own > on_other, (vb, stats)
