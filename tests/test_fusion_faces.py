"""fusion with an active-speaker input: face ids on transcripts, waiting for the faces, require_face."""

from __future__ import annotations

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.messages import Control, ControlKind, Header, Message
from kikimimi.engine.msgs.fused import LabeledTranscript
from kikimimi.engine.msgs.speech import Transcript
from kikimimi.engine.msgs.vision import NO_FACE, ActiveSpeaker
from kikimimi.engine.testing import NodeHarness
from kikimimi.nodes.fusion import FusionNode

SR = 16000


def act(face: int, prob: float, end_s: float, stream: str = "a") -> ActiveSpeaker:
    end = int(end_s * SR)
    return ActiveSpeaker(Header(stream, 0, end, 0, "asd"), face, prob, prob >= 0.6, max(0, end - SR), end, SR)


def final(start_s: float, end_s: float, utt: int = 0, text: str = "hello") -> Transcript:
    return Transcript(Header("a", utt, 0, 0, "asr"), utt, 1, text, "", True, int(start_s * SR), int(end_s * SR), SR,
                      "en")


def partial(start_s: float, end_s: float, utt: int = 0) -> Transcript:
    return Transcript(Header("a", utt, 0, 0, "asr"), utt, 0, "", "hel", False, int(start_s * SR), int(end_s * SR), SR,
                      "en")


def fusion(**params: object) -> tuple[NodeHarness, list[Message], ManualClock]:
    """A fusion node with its transcripts and active inputs wired, on a manual clock; its emitted messages."""
    h = NodeHarness(FusionNode("fusion", dict(params)), connected={"transcripts", "active"})
    return h, h.messages, h.clock


def test_the_face_that_speaks_most_over_the_utterance_is_attached() -> None:
    node, out, _ = fusion()
    for k in range(1, 11):                                   # windows ending every 0.2 s from 1.2 to 3.0 s
        t = 1.0 + 0.2 * k
        node.send("active", act(3, 0.8, t))
        node.send("active", act(7, 0.3, t))
    node.send("active", act(7, 1.0, 5.0))              # outside the utterance: not counted
    node.send("transcripts", final(1.0, 3.0))
    assert len(out) == 1
    got = out[0]
    assert isinstance(got, LabeledTranscript) and got.face_id == 3 and abs(got.face_score - 0.8) < 1e-9


def test_a_final_waits_for_the_active_speaker_windows_to_reach_its_end() -> None:
    node, out, clock = fusion(speaker_wait_ms=500)
    node.send("active", act(1, 0.9, 1.5))
    node.send("transcripts", final(1.0, 3.0))
    assert out == []                                          # the faces have not reached 3.0 s (minus slack)
    node.send("active", act(1, 0.9, 2.9))
    assert out == []                                          # windows must reach the end itself
    node.send("active", act(1, 0.9, 3.0))
    assert out == []                                          # the frame's other faces may still come
    node.send("active", act(1, 0.9, 3.04))
    assert len(out) == 1 and out[0].face_id == 1              # type: ignore[attr-defined]
    node.send("transcripts", final(4.0, 5.0, utt=1))
    clock.advance(600_000_000)
    node.tick()
    assert len(out) == 2 and node.node.speaker_timeouts == 1       # went out after the wait, with what was known


def test_nobody_speaking_leaves_face_id_unset_without_require_face() -> None:
    node, out, _ = fusion()
    node.send("active", act(2, 0.1, 2.0))
    node.send("active", act(2, 0.2, 3.0))
    node.send("active", act(2, 0.9, 3.04))             # after the span: says the span is complete
    node.send("transcripts", final(1.0, 3.0))
    got = out[0]
    assert isinstance(got, LabeledTranscript) and got.face_id == NO_FACE and abs(got.face_score - 0.15) < 1e-9


def test_require_face_suppresses_speech_no_visible_face_produced() -> None:
    node, out, _ = fusion(require_face=True)
    node.send("active", act(2, 0.1, 1.6))
    node.send("transcripts", partial(1.0, 1.6))         # evidence so far: nobody speaks -> dropped
    node.send("active", act(2, 0.2, 3.0))
    node.send("transcripts", final(1.0, 3.0))           # the TV spoke: dropped
    node.send("active", act(2, 0.9, 4.5))
    node.send("active", act(2, 0.9, 5.0))
    node.send("active", act(2, 0.9, 5.04))
    node.send("transcripts", final(4.0, 5.0, utt=1, text="me"))
    assert [(m.utterance_id, m.face_id) for m in out if isinstance(m, LabeledTranscript)] == [(1, 2)]
    assert node.node.suppressed_no_face == 2 and node.node.stats.dropped["no_face"] == 2


def test_require_face_drops_a_final_when_no_face_was_ever_seen() -> None:
    node, out, _ = fusion(require_face=True)
    node.send("transcripts", final(1.0, 3.0))
    node.send("active", Control(Header("a", 0, -1, 0, "asd"), ControlKind.END_OF_STREAM))
    assert out == [] and node.node.suppressed_no_face == 1


def test_no_face_frames_move_the_watermark_and_suppress_without_waiting() -> None:
    node, out, _ = fusion(require_face=True)
    for k in range(1, 32):
        t = k * 0.1
        node.send("active", ActiveSpeaker(Header("a", k, int(t * SR), 0, "asd"), NO_FACE, 0.0, False,
                                                int(t * SR), int(t * SR), SR))
    node.send("transcripts", final(1.0, 3.0))
    assert out == [] and node.node.suppressed_no_face == 1 and node.node.speaker_timeouts == 0


def test_with_require_face_a_final_whose_faces_are_late_goes_out_unlabelled() -> None:
    node, out, clock = fusion(require_face=True, speaker_wait_ms=500)
    node.send("active", act(1, 0.9, 1.2))
    node.send("transcripts", final(1.0, 3.0))
    clock.advance(600_000_000)
    node.tick()
    assert len(out) == 1 and node.node.suppressed_no_face == 0 and node.node.face_timeouts == 0
    assert out[0].face_id == 1                                # type: ignore[attr-defined]  # the evidence so far
    node.send("transcripts", final(4.0, 5.0, utt=1))
    clock.advance(600_000_000)
    node.tick()
    assert len(out) == 2 and out[1].face_id == -1 and node.node.face_timeouts == 1   # type: ignore[attr-defined]
    assert node.node.suppressed_no_face == 0


def test_the_face_label_does_not_depend_on_when_the_transcript_arrives() -> None:
    """ActiveSpeaker windows come in time order; wherever the final falls among them, the same windows count."""
    msgs = [act(1, 0.9, 1.5), act(2, 0.2, 1.5), act(1, 0.2, 3.0), act(2, 0.95, 3.0), act(2, 1.0, 3.2),
            act(1, 0.0, 3.25)]
    labels = set()
    for at in range(len(msgs) + 1):
        node, out, _ = fusion()
        for m in msgs[:at]:
            node.send("active", m)
        node.send("transcripts", final(1.0, 3.0))
        for m in msgs[at:]:
            node.send("active", m)
        node.send("active", Control(Header("a", 0, -1, 0, "asd"), ControlKind.END_OF_STREAM))
        got = [m for m in out if isinstance(m, LabeledTranscript)]
        assert len(got) == 1
        labels.add((got[0].face_id, round(got[0].face_score, 6)))
    assert labels == {(2, 0.575)}                              # windows ending after 3.0 s never count
