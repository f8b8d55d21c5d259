"""Checkpoint loaders (issue 15 item 3) on tiny checkpoints built here: a transformers HuBERT
...ForSequenceClassification directory and the Kushinada layout (HubertModel + s3prl downstream checkpoint).
Weights are random, so these check the wiring against a direct forward of the same modules, not accuracy."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from asr_pipeline import load_audio

from kikimimi.engine.errors import ParamError
from kikimimi.models.affect.checkpoints import HfAudioClassifier, class_name, load_classifier
from kikimimi.models.affect.s3prl import S3prlClassifier

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SUPERB = {0: "neu", 1: "hap", 2: "ang", 3: "sad"}


def tiny_config(layer_norm: bool, **extra: object) -> object:
    """A HuBERT config small enough to build in milliseconds (80x down-sampling, 2 layers of 32)."""
    return transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer" if layer_norm else "group",
        do_stable_layer_norm=layer_norm, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, layerdrop=0.0, **extra)


def save_extractor(path: Path, attention_mask: bool) -> None:
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                          return_attention_mask=attention_mask).save_pretrained(str(path))


def make_hf(path: Path, layer_norm: bool = True) -> Path:
    torch.manual_seed(0)
    cfg = tiny_config(layer_norm, num_labels=4, id2label=SUPERB, label2id={v: k for k, v in SUPERB.items()},
                      classifier_proj_size=16)
    model = transformers.HubertForSequenceClassification(cfg)
    with torch.no_grad():   # a head far from uniform, so a wiring error shows in the probabilities
        model.classifier.weight.normal_(0.0, 3.0)
    model.save_pretrained(str(path))
    save_extractor(path, layer_norm)
    return path


def make_kushinada(path: Path, layer_norm: bool = True, classes: bool = True) -> Path:
    torch.manual_seed(1)
    model = transformers.HubertModel(tiny_config(layer_norm))
    model.save_pretrained(str(path))
    save_extractor(path, layer_norm)
    ck = path / "s3prl/result/downstream/tiny_fold1"
    ck.mkdir(parents=True)
    g = torch.Generator().manual_seed(2)
    state = {
        "Featurizer": {"weights": torch.tensor([2.0, -1.0, 0.5])},
        "Downstream": {"projector.weight": torch.randn(8, 32, generator=g),
                       "projector.bias": torch.randn(8, generator=g),
                       "model.post_net.linear.weight": 0.3 * torch.randn(4, 8, generator=g),
                       "model.post_net.linear.bias": torch.randn(4, generator=g)},
        "Args": argparse.Namespace(upstream="hf_hubert_custom"), "Step": 10,
    }
    torch.save(state, ck / "dev-best.ckpt")
    if classes:
        (ck / "classes.txt").write_text("neutral\njoy\nanger\nsadness\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def speech(data_dir: Path) -> list[np.ndarray]:
    """A RAVDESS clip (angry, strong) at 16 kHz and its first 1.3 s."""
    rows = csv.DictReader((data_dir / "emotion/ravdess/labels.tsv").open(encoding="utf-8"), delimiter="\t")
    path = next(data_dir / r["path"] for r in rows if r["actor"] == "17" and r["emotion"] == "angry")
    a = load_audio(path)
    return [a, a[:20800].copy()]


def direct_hf(model: object, extractor: object, clip: np.ndarray) -> np.ndarray:
    feats = extractor([clip], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(feats["input_values"]).logits, -1)[0].numpy()


def test_a_transformers_classifier_loads_maps_superb_names_and_equals_a_direct_forward(
        tmp_path: Path, speech: list[np.ndarray]) -> None:
    path = make_hf(tmp_path / "hf")
    clf = load_classifier(path, device="cpu")
    assert isinstance(clf, HfAudioClassifier) and clf.device == "cpu"
    assert clf.classes == ("neutral", "happy", "angry", "sad")
    probs = clf.classify(speech)
    assert probs.shape == (2, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    model = transformers.HubertForSequenceClassification.from_pretrained(str(path)).eval()
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(path))
    for clip, p in zip(speech, probs, strict=True):
        np.testing.assert_allclose(p, direct_hf(model, extractor, clip), atol=1e-4)
    assert np.abs(probs[0] - probs[1]).max() > 1e-3          # different clips, different results
    # batch == one by one: the short clip padded in the batch gives what it gives alone
    np.testing.assert_allclose(probs[1], clf.classify([speech[1]])[0], atol=1e-4)


def test_a_group_norm_model_is_run_in_equal_length_groups_so_padding_cannot_change_it(
        tmp_path: Path, speech: list[np.ndarray]) -> None:
    clf = load_classifier(make_hf(tmp_path / "hf", layer_norm=False), device="cpu")
    assert not clf.padded
    batch = clf.classify([speech[1], speech[0], speech[1]])
    alone = clf.classify([speech[1]])[0]
    np.testing.assert_allclose(batch[0], alone, atol=1e-5)
    np.testing.assert_allclose(batch[2], alone, atol=1e-5)
    np.testing.assert_allclose(batch[1], clf.classify([speech[0]])[0], atol=1e-5)


def direct_kushinada(model: object, state: dict, clip: np.ndarray) -> np.ndarray:
    """The Kushinada computation written out: normalise, hidden states, softmax-weighted sum, projector, mean,
    linear, softmax."""
    x = torch.from_numpy((clip - clip.mean()) / np.sqrt(clip.var() + 1e-7))[None]
    with torch.no_grad():
        hs = torch.stack(model(x, output_hidden_states=True).hidden_states)
        w = torch.softmax(state["Featurizer"]["weights"], 0)
        f = (hs * w[:, None, None, None]).sum(0)[0]
        d = state["Downstream"]
        p = f @ d["projector.weight"].T + d["projector.bias"]
        logits = p.mean(0) @ d["model.post_net.linear.weight"].T + d["model.post_net.linear.bias"]
        return torch.softmax(logits, -1).numpy()


def test_the_kushinada_layout_loads_and_wires_featurizer_projector_pooling_and_head(
        tmp_path: Path, speech: list[np.ndarray]) -> None:
    path = make_kushinada(tmp_path / "kushinada")
    clf = load_classifier(path, device="cpu")
    assert isinstance(clf, S3prlClassifier)
    assert clf.classes == ("neutral", "happy", "angry", "sad")        # joy / anger / sadness mapped
    probs = clf.classify(speech)
    assert probs.shape == (2, 4) and np.ptp(probs[0]) > 0.05      # not uniform: wiring errors would show
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    model = transformers.HubertModel.from_pretrained(str(path)).eval()
    state = torch.load(str(clf.checkpoint), weights_only=False)
    for clip, p in zip(speech, probs, strict=True):
        np.testing.assert_allclose(p, direct_kushinada(model, state, clip), atol=1e-4)
    # the layer weights matter: the same checkpoint with other weights gives another result
    state["Featurizer"]["weights"] = torch.tensor([-3.0, 0.0, 3.0])
    assert np.abs(probs[0] - direct_kushinada(model, state, speech[0])).max() > 1e-3
    np.testing.assert_allclose(probs[1], clf.classify([speech[1]])[0], atol=1e-4)     # batch == alone
    explicit = S3prlClassifier(path, clf.checkpoint, device="cpu", classes=["a", "b", "c", "d"])
    assert explicit.classes == ("a", "b", "c", "d")


def test_a_group_norm_kushinada_upstream_is_run_by_length(tmp_path: Path, speech: list[np.ndarray]) -> None:
    clf = load_classifier(make_kushinada(tmp_path / "k", layer_norm=False), device="cpu")
    batch = clf.classify([speech[0], speech[1]])
    np.testing.assert_allclose(batch[1], clf.classify([speech[1]])[0], atol=1e-5)


def test_bad_directories_and_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="does not exist"):
        load_classifier(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.md").write_text("x")
    with pytest.raises(ParamError, match=r"no config\.json.*found: readme\.md"):
        load_classifier(tmp_path / "empty")
    hf = make_hf(tmp_path / "hf")
    (hf / "model.safetensors").rename(hf / "other.bin")
    with pytest.raises(ParamError, match=r"no weights; expected model\.safetensors or pytorch_model\.bin"):
        load_classifier(hf)
    (hf / "other.bin").rename(hf / "model.safetensors")
    (hf / "preprocessor_config.json").unlink()
    with pytest.raises(ParamError, match="preprocessor_config"):
        load_classifier(hf)
    k = make_kushinada(tmp_path / "k", classes=False)
    with pytest.raises(ParamError, match=r"classes\.txt"):
        load_classifier(k, device="cpu")
    with pytest.raises(ParamError, match="4 classes but 2 names"):
        load_classifier(k, device="cpu", classes=["x", "y"])
    ck = next(k.rglob("*.ckpt"))
    torch.save({"Featurizer": {"weights": torch.zeros(3)}, "Downstream": {"projector.weight": torch.zeros(8, 32)}}, ck)
    with pytest.raises(ParamError, match=r"Downstream lacks projector\.bias.*found: projector\.weight"):
        load_classifier(k, device="cpu", classes=["a", "b", "c", "d"])
    torch.save({"weights": torch.zeros(3)}, ck)
    with pytest.raises(ParamError, match=r"no 'Featurizer' state dict.*found: weights"):
        load_classifier(k, device="cpu", classes=["a", "b", "c", "d"])
    (ck.parent / "second.ckpt").write_bytes(b"")
    with pytest.raises(ParamError, match="several s3prl checkpoints"):
        load_classifier(k)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/config.json").write_text(json.dumps({"architectures": ["HubertModel"]}))
    with pytest.raises(ParamError, match="not a checkpoint layout"):
        load_classifier(tmp_path / "plain")
    clf = load_classifier(make_hf(tmp_path / "hf2"), device="cpu")
    with pytest.raises(ParamError, match="clip 1 has shape"):
        clf.classify([np.zeros(1000, np.float32), np.zeros((2, 1000), np.float32)])
    with pytest.raises(ParamError, match="non-empty"):
        clf.classify([])
    with pytest.raises(ParamError, match="device='gpu' is not allowed"):
        load_classifier(tmp_path / "hf2", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParamError, match="no CUDA device"):
            load_classifier(tmp_path / "hf2", device="cuda")


def test_class_names_map_superb_and_jtes_short_names() -> None:
    assert [class_name(n) for n in ("neu", "HAP", "ang", "sad", "joy", "fru", "other")] == [
        "neutral", "happy", "angry", "sad", "happy", "frustrated", "other"]
