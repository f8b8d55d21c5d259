"""`python -m kikimimi.models.avsr.train DIR --out OUT` as a user runs it: a folder of two real GRID clips with
same-stem transcripts, the smallest model and run the options allow; the checkpoint it writes loads with the
project's loader (the one the avsr node uses) and decodes a clip.

tests/test_avsr_train.py calls ``train()`` in-process; this runs the command line end to end.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
for _module in ("av", "cv2", "dlib", "onnxruntime"):
    pytest.importorskip(_module)

CLIPS = ("av/grid/bbaf2n.mpg", "av/grid/lbax4n.mpg")
TINY = ["--d-model", "16", "--layers", "1", "--heads", "1", "--chunk-frames", "2", "--left-chunks", "1",
        "--video-channels", "4"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_train_command_writes_a_checkpoint_the_loader_decodes_with(data_dir: Path, tmp_path: Path) -> None:
    from kikimimi.models.avsr.chunked import ChunkedAvRecognizer
    from kikimimi.models.avsr.data import follow_face, read_graph_clip
    from kikimimi.models.avsr.load import load_av_model
    from kikimimi.models.avsr.model import greedy_text

    with open(data_dir / "MANIFEST.tsv", encoding="utf-8", newline="") as f:
        references = {row["path"]: row["reference"] for row in csv.DictReader(f, delimiter="\t")}
    clips = tmp_path / "clips"
    clips.mkdir()
    for rel in CLIPS:
        (clips / Path(rel).name).symlink_to(data_dir / rel)
        (clips / f"{Path(rel).stem}.txt").write_text(references[rel] + "\n", encoding="utf-8")
    out = tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "kikimimi.models.avsr.train", str(clips), "--out", str(out), "--epochs", "2",
           "--max-steps", "2", "--batch-size", "2", "--log-every", "1", "--cache-dir", str(tmp_path / "cache"), *TINY]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=180)      # about 8 s here, most of it imports
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, stderr
    assert f"{out}: 2 steps, 2 epochs" in stdout and "2 clips (0 skipped)" in stdout, stdout

    assert {p.name for p in out.iterdir()} >= {"avsr.json", "model.safetensors"}
    meta = json.loads((out / "avsr.json").read_text(encoding="utf-8"))
    assert meta["format"] == "kikimimi-avsr" and meta["training"]["steps"] == 2
    assert sorted(meta["training"]["clips"]) == sorted(Path(c).name for c in CLIPS)
    assert (meta["config"]["d_model"], meta["config"]["n_layers"], meta["config"]["chunk_frames"]) == (16, 1, 2)

    rec = load_av_model(str(out), "cpu", 1)
    assert isinstance(rec, ChunkedAvRecognizer) and rec.config.d_model == 16
    clip = read_graph_clip(data_dir / CLIPS[0])
    mouths, has_face = follow_face(clip.faces, clip.frame_samples, 0)
    assert has_face.mean() > 0.9                        # a face in (nearly) every frame of a GRID clip
    log_probs = rec.decode_utterance(clip.float_audio, mouths, has_face, clip.frame_samples)
    # one row per 40 ms model frame (4 fbank frames of 25 ms every 10 ms) over the whole 3 s clip, each a
    # distribution over the vocabulary and the CTC blank
    frames = (1 + (len(clip.audio) - 400) // 160) // 4
    assert frames > 70 and log_probs.shape == (frames, rec.model.vocab_size), log_probs.shape
    assert np.allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-4)
    assert set(greedy_text(log_probs, rec.config.vocab)) <= set(rec.config.vocab)
