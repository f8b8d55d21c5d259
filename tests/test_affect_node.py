"""The affect node on real features and VAD events, and the fusion node attaching affect to transcripts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from asr_pipeline import front_messages, load_audio
from cli_helpers import CLI

from kikimimi.engine.clock import ManualClock
from kikimimi.engine.messages import Header, Message
from kikimimi.engine.msgs.affect import Affect
from kikimimi.engine.msgs.fused import LabeledTranscript
from kikimimi.engine.msgs.speech import Transcript
from kikimimi.engine.testing import run_node
from kikimimi.models.affect.fuse import affect_labels, span_affect
from kikimimi.nodes.affect import AffectNode
from kikimimi.nodes.console_sink import format_final
from kikimimi.nodes.fusion import FusionNode

ANGRY = "emotion/ravdess/Actor_19/03-01-05-02-01-01-19.flac"     # a held-out actor (not in the heads' training)
CLASSES = ("neutral", "happy", "sad", "angry")


def affect(utt: int, start: float, end: float, probs: list[float], final: bool = True, source: str = "voice",
           face_id: int = -1) -> Affect:
    p = np.array(probs, np.float32)
    k = int(p.argmax())
    return Affect(Header("a", 0, int(end * 16000), 0, "affect"), utt, source, int(start * 16000), int(end * 16000),
                  16000, CLASSES[k], CLASSES, p, 0.1, 0.2, float(p[k]), "m", final, face_id)


@pytest.mark.slow
def test_the_node_sends_provisional_then_final_affect_and_files_at_full_speed_only_finals(data_dir: Path) -> None:
    msgs = front_messages(load_audio(data_dir / ANGRY))
    live = [m for _, m in run_node(AffectNode("affect", {"model": "tiny.en", "threads": 2}), msgs)]
    assert all(isinstance(m, Affect) for m in live)
    finals = [m for m in live if isinstance(m, Affect) and m.final]
    provisional = [m for m in live if isinstance(m, Affect) and not m.final]
    assert len(finals) == 1 and provisional and all(m.utterance_id == 0 for m in live)
    f = finals[0]
    assert f.source == "voice" and f.model == "voice-whisper-tiny.en" and f.label == "angry" and f.arousal > 0.3
    ends = [m.end_sample for m in provisional]
    assert ends == sorted(ends) and f.end_sample > ends[0] and f.start_sample == provisional[0].start_sample
    lossless = AffectNode("affect", {"model": "tiny.en", "threads": 2, **AffectNode.lossless_params})
    batch = [m for _, m in run_node(lossless, msgs)]
    assert len(batch) == 1 and isinstance(batch[0], Affect) and batch[0].final
    np.testing.assert_allclose(batch[0].probabilities, f.probabilities, atol=1e-4)


def test_span_affect_weighs_the_utterances_it_overlaps_and_prefers_finals() -> None:
    msgs = [affect(0, 0.0, 1.0, [0.1, 0.7, 0.1, 0.1]), affect(1, 1.5, 4.5, [0.1, 0.1, 0.1, 0.7]),
            affect(2, 5.0, 6.0, [0.7, 0.1, 0.1, 0.1], final=False)]
    e = span_affect(msgs, 0, 4 * 16000)             # 1 s of utterance 0, 2.5 s of utterance 1
    assert e is not None and e.label == "angry"
    want = (np.array([.1, .7, .1, .1]) * 1 + np.array([.1, .1, .1, .7]) * 2.5) / 3.5
    np.testing.assert_allclose(e.probabilities, want, atol=1e-6)
    assert span_affect(msgs, 5 * 16000, 6 * 16000).label == "neutral"      # provisional when nothing else
    assert span_affect(msgs, 7 * 16000, 8 * 16000) is None
    face = affect(0, 0.0, 1.0, [0.1, 0.1, 0.7, 0.1], source="face", face_id=3)
    labels = affect_labels(span_affect(msgs, 0, 16000), span_affect([face], 0, 16000, "face", 3))
    assert [(a.name, a.modality) for a in labels] == [
        ("happy", "voice"), ("arousal", "voice"), ("valence", "voice"), ("sad", "face"), ("arousal", "face"),
        ("valence", "face"), ("happy", "fused"), ("arousal", "fused"), ("valence", "fused")]
    assert span_affect([face], 0, 16000, "face", 4) is None


def test_fusion_waits_for_the_voice_final_and_labels_the_transcript() -> None:
    clock = ManualClock()
    node = FusionNode("fusion", {"speaker_wait_ms": 500}, clock=clock)
    node.connected_inputs = frozenset({"transcripts", "affect"})
    out: list[Message] = []
    node.bind(lambda port, m: out.append(m))
    node.on_message("affect", affect(0, 1.0, 2.0, [0.1, 0.2, 0.1, 0.6], final=False))
    t = Transcript(Header("a", 0, 32000, 0, "asr"), 0, 0, "hi there", "", True, 16000, 32000, 16000, "en")
    node.on_message("transcripts", t)
    assert out == []                                           # the voice final has not reached its end
    node.on_message("affect", affect(0, 1.0, 2.0, [0.7, 0.1, 0.1, 0.1]))
    assert len(out) == 1 and isinstance(out[0], LabeledTranscript)
    fused = [(a.name, round(a.value, 2)) for a in out[0].affect if a.modality == "fused"]
    assert fused[0] == ("neutral", 0.7)
    assert format_final(out[0]) == "[a] 1.00-2.00 s [neutral 0.70]: hi there"


@pytest.mark.slow
def test_transcribe_jsonl_carries_the_affect_of_the_recognizer_model(data_dir: Path) -> None:
    """``transcribe --model tiny.en``: the affect node follows the recognizer's model (one Whisper model serves
    both) and every final carries its voice labels (the console's ``[label p]`` is tested on the fusion node)."""
    clip = str(data_dir / ANGRY)
    proc = subprocess.run([*CLI, "transcribe", "--model", "tiny.en", "--format", "jsonl", clip],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.splitlines()[-1])
    voice = {a["name"]: a["value"] for a in final["affect"] if a["modality"] == "voice"}
    assert "angry" in voice and voice["arousal"] > 0.3 and -1 <= voice["valence"] <= 1


def test_transcribe_sets_the_affect_model_with_the_recognizer_model(data_dir: Path) -> None:
    from kikimimi.launch.cli import resolve_graph
    from kikimimi.launch.transcribe import transcribe_graph

    clip = str(data_dir / ANGRY)
    assert transcribe_graph(resolve_graph("default"), clip, model="tiny.en").node("affect").params["model"] == "tiny.en"
    assert transcribe_graph(resolve_graph("default"), clip, model="small").node("affect").params["model"] == "base"
    from kikimimi.launch.cli import apply_settings, follow_model_setting

    spec = resolve_graph("default")
    settings = ["asr.model=tiny.en"]
    assert apply_settings(follow_model_setting(spec, settings), settings).node("affect").params["model"] == "tiny.en"
    settings = ["asr.model=tiny.en", "affect.model=base"]            # the node's own setting wins
    assert apply_settings(follow_model_setting(spec, settings), settings).node("affect").params["model"] == "base"
