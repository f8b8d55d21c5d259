"""Scenes built from the real GRID recordings, through the vision, active_speaker and fusion nodes:

* two talkers side by side (the frames of two clips joined left | right) with the audio of one of them:
  both faces keep their ids, and the face whose audio plays is the one attached to the utterance;
* a voice with nobody speaking in view (the talker's first frame held still, like a person listening
  while a TV talks): with ``require_face`` the fusion node drops the utterance; with the moving face
  it passes, labelled with that face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kikimimi.engine.messages import Header, Message
from kikimimi.engine.msgs.audio import AudioChunk
from kikimimi.engine.msgs.fused import TRANSCRIPT_TYPES
from kikimimi.engine.msgs.speech import Transcript
from kikimimi.engine.msgs.vision import ActiveSpeaker, Faces, VideoFrame
from kikimimi.engine.testing import run_node
from kikimimi.nodes.active_speaker import ActiveSpeakerNode
from kikimimi.nodes.fusion import FusionNode
from kikimimi.nodes.vision import VisionNode

pytestmark = [pytest.mark.data, pytest.mark.slow]
RATE = 16000
CHUNK = 320
NAMES = ("bbaf2n", "lbax4n", "pwij3p", "sbwe5n")


@pytest.fixture(scope="module")
def clips(data_dir: Path) -> dict[str, tuple[np.ndarray, list[np.ndarray], np.ndarray]]:
    from kikimimi.models.vision.clip import read_audio_video

    out = {}
    for name in NAMES:
        audio, frames, times, _ = read_audio_video(data_dir / "av" / "grid" / f"{name}.mpg")
        out[name] = (audio, frames, np.round(times * RATE).astype(np.int64))
    return out


def audio_msgs(audio: np.ndarray) -> list[tuple[str, Message]]:
    return [("audio", AudioChunk(Header("s", k, a, (a + CHUNK) * 1_000_000_000 // RATE, "src"),
                                 audio[a:a + CHUNK].reshape(-1, 1), RATE))
            for k, a in enumerate(range(0, len(audio) - CHUNK + 1, CHUNK))]


def scene(frames: list[np.ndarray], samples: np.ndarray, audio: np.ndarray) -> tuple[list[Faces], list[ActiveSpeaker]]:
    video = [("video", VideoFrame(Header("s", i, int(s), int(s) * 62_500, "src"), img, "bgr24", i))
             for i, (img, s) in enumerate(zip(frames, samples, strict=True))]
    faces = [m for _, m in run_node(VisionNode("vision"), video) if isinstance(m, Faces)]
    active = [m for _, m in run_node(ActiveSpeakerNode("active"), audio_msgs(audio) + [("faces", f) for f in faces])
              if isinstance(m, ActiveSpeaker)]
    return faces, active


def fused(active: list[ActiveSpeaker], require_face: bool) -> list[Transcript]:
    """The fusion node's output for one final spanning the GRID speech (0.5 - 2.3 s)."""
    final = Transcript(Header("s", 0, 0, 0, "asr"), 0, 0, "words", "", True, 8000, 36800, RATE, "en")
    node = FusionNode("fusion", {"require_face": require_face})
    node.connected_inputs = frozenset({"transcripts", "active"})
    return [m for _, m in run_node(node, [("active", a) for a in active] + [("transcripts", final)])
            if isinstance(m, TRANSCRIPT_TYPES)]


def test_two_talkers_side_by_side_the_one_heard_is_the_one_labelled(clips: dict) -> None:
    for k, left in enumerate(NAMES):
        right = NAMES[(k + 1) % len(NAMES)]
        (a_l, f_l, s_l), (a_r, f_r, _) = clips[left], clips[right]
        n = min(len(f_l), len(f_r))
        joined = [np.ascontiguousarray(np.hstack([f_l[i], f_r[i]])) for i in range(n)]
        for heard, audio in (("left", a_l), ("right", a_r)):
            faces, active = scene(joined, s_l[:n], audio)
            assert sum(len(f.faces) == 2 for f in faces) >= 0.95 * n, (left, right)
            ids = {f.face_id for fr in faces for f in fr.faces}
            assert len(ids) == 2, (left, right, ids)           # two faces, stable ids through the clip
            x = {f.face_id: float(f.box[0]) for fr in faces for f in fr.faces}
            want = min(x, key=x.get) if heard == "left" else max(x, key=x.get)
            out = fused(active, require_face=True)
            assert len(out) == 1 and out[0].face_id == want, (left, right, heard, out)


def test_a_voice_while_the_face_in_view_is_still_is_suppressed(clips: dict) -> None:
    for name in NAMES:
        audio, frames, samples = clips[name]
        _, moving = scene(frames, samples, audio)
        out = fused(moving, require_face=True)
        assert len(out) == 1 and out[0].face_id == 0 and out[0].face_score > 0.6, (name, out)
        _, still = scene([frames[0]] * len(frames), samples, audio)
        assert max(a.probability for a in still) < 0.6, name
        node_out = fused(still, require_face=True)
        assert node_out == [], (name, node_out)
        assert fused(still, require_face=False)[0].face_id == -1
