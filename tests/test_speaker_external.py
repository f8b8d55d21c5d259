"""Speaker encoders from a local directory: tiny random transformers x-vector models and TorchScript modules
built by the tests themselves (nothing is downloaded), run on real LibriSpeech audio."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from kikimimi.engine.errors import KikimimiError, MissingDependency, ParamError
from kikimimi.models.speaker.encoder import load_encoder
from kikimimi.models.speaker.windows import embed_audio, encoder_input, mel_power

torch = pytest.importorskip("torch", reason="speaker encoders from a directory run on PyTorch")
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    # torch's MultiheadAttention inside transformers' WavLM, not ours
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning"),
]

CLIP = "en/librispeech/1688/1688-142285-0003.flac"
HF_INSTALL = "pip install 'kikimimi[speaker-hf]'"


def _transformers() -> Any:
    return pytest.importorskip("transformers", reason=f"transformers is not installed ({HF_INSTALL})")


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> np.ndarray:
    audio, rate = sf.read(data_dir / CLIP, dtype="float32")
    assert rate == 16000 and audio.ndim == 1
    return audio


def windows(audio: np.ndarray, n: int, count: int = 3) -> np.ndarray:
    """``count`` windows of ``n`` samples spread over ``audio``."""
    starts = np.linspace(0, len(audio) - n, count).astype(int)
    return np.stack([audio[a:a + n] for a in starts])


def save_xvector(path: Path, seed: int = 0, arch: str = "wavlm") -> Path:
    """A tiny randomly initialised WavLMForXVector / Wav2Vec2ForXVector and its feature extractor in ``path``."""
    tr = _transformers()
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16, 32), tdnn_kernel=(3, 3, 1),
                 tdnn_dilation=(1, 2, 1), xvector_output_dim=16)
    config_cls, model_cls = ((tr.WavLMConfig, tr.WavLMForXVector) if arch == "wavlm"
                             else (tr.Wav2Vec2Config, tr.Wav2Vec2ForXVector))
    torch.manual_seed(seed)
    model_cls(config_cls(**small)).eval().save_pretrained(path)
    tr.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                return_attention_mask=True).save_pretrained(path)
    return path


def reference_xvector(path: Path, batch: np.ndarray) -> np.ndarray:
    """The saved model run directly through transformers, embeddings L2-normalised."""
    tr = _transformers()
    extractor = tr.AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    model = tr.AutoModelForAudioXVector.from_pretrained(path, local_files_only=True).eval()
    inputs = extractor(list(batch), sampling_rate=16000, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs).embeddings
    return torch.nn.functional.normalize(out, dim=-1).numpy()


@pytest.mark.data
@pytest.mark.parametrize("arch", ["wavlm", "wav2vec2"])
def test_xvector_matches_transformers(tmp_path: Path, clip: np.ndarray, arch: str) -> None:
    save_xvector(tmp_path, arch=arch)
    enc = load_encoder(str(tmp_path), device="cpu")
    assert (enc.input_kind, enc.dim, enc.sample_rate) == ("audio", 16, 16000)
    assert re.fullmatch(rf"{arch}-xvector-[0-9a-f]{{12}}", enc.id)
    batch = windows(clip, int(enc.window_s * 16000))
    got = enc.embed(batch)
    assert got.shape == (3, 16) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, reference_xvector(tmp_path, batch), atol=1e-5)
    # each window's embedding depends only on its own samples
    np.testing.assert_allclose(enc.embed(batch[1:2]), got[1:2], atol=1e-5)


@pytest.mark.data
def test_xvector_id_follows_weights(tmp_path: Path, clip: np.ndarray) -> None:
    a, b = save_xvector(tmp_path / "a", seed=0), save_xvector(tmp_path / "b", seed=1)
    enc_a, enc_b = load_encoder(str(a), device="cpu"), load_encoder(str(b), device="cpu")
    assert load_encoder(str(a), device="cpu").id == enc_a.id
    assert enc_a.id != enc_b.id
    batch = windows(clip, 16000)
    assert not np.allclose(enc_a.embed(batch), enc_b.embed(batch), atol=1e-3)


@pytest.mark.data
def test_xvector_embed_audio_and_meta(tmp_path: Path, clip: np.ndarray) -> None:
    save_xvector(tmp_path)
    (tmp_path / "kikimimi_encoder.json").write_text(json.dumps({"window_s": 1.5, "threshold": 0.6}))
    enc = load_encoder(str(tmp_path), device="cpu")
    assert (enc.window_s, enc.default_threshold) == (1.5, 0.6)
    enc.warmup()
    res = embed_audio(enc, clip)
    assert res.vector is not None and res.vector.shape == (16,)
    assert abs(float(np.linalg.norm(res.vector)) - 1.0) < 1e-5
    assert res.windows.shape == (len(res.spans), 16) and len(res.spans) >= 3
    wins = [clip[a:b] for a, b in res.spans]
    np.testing.assert_allclose(res.windows, enc.embed(encoder_input(enc, wins)), atol=1e-5)


class MelEncoder(torch.nn.Module):
    """(B, T, 40) mel power -> (B, 8): log, a linear layer, mean over time."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(40, 8)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.log(mels + 1e-6)).mean(dim=1)


class AudioEncoder(torch.nn.Module):
    """(B, T) audio -> (B, 8): 10 ms frames, a linear layer, a tanh, mean over time."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(160, 8)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = audio[:, : audio.shape[1] // 160 * 160].reshape(audio.shape[0], -1, 160)
        return torch.tanh(self.proj(frames)).mean(dim=1)


def save_torchscript(path: Path, kind: str, seed: int = 0, **meta: Any) -> torch.jit.ScriptModule:
    """A scripted tiny encoder of input ``kind`` and its JSON in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    module = torch.jit.script((MelEncoder if kind == "mel40_power" else AudioEncoder)().eval())
    module.save(str(path / "encoder.ts.pt"))
    meta = {"input_kind": kind, "dim": 8, "window_s": 1.0, "threshold": 0.7, **meta}
    (path / "kikimimi_encoder.json").write_text(json.dumps(meta))
    return module


@pytest.mark.data
@pytest.mark.parametrize("kind", ["mel40_power", "audio"])
def test_torchscript_encoder(tmp_path: Path, clip: np.ndarray, kind: str) -> None:
    module = save_torchscript(tmp_path / "a", kind)
    enc = load_encoder(str(tmp_path / "a"), device="cpu")
    assert (enc.input_kind, enc.dim, enc.window_s, enc.default_threshold) == (kind, 8, 1.0, 0.7)
    assert re.fullmatch(r"torchscript-[0-9a-f]{12}", enc.id)
    audio = windows(clip, 16000)
    batch = np.stack([mel_power(w) for w in audio]) if kind == "mel40_power" else audio
    got = enc.embed(batch)
    with torch.no_grad():
        want = torch.nn.functional.normalize(module(torch.from_numpy(batch)), dim=-1).numpy()
    assert got.shape == (3, 8) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-5)
    res = embed_audio(enc, clip)
    assert res.vector is not None and abs(float(np.linalg.norm(res.vector)) - 1.0) < 1e-5
    np.testing.assert_allclose(res.windows, enc.embed(encoder_input(enc, [clip[a:b] for a, b in res.spans])),
                               atol=1e-5)
    save_torchscript(tmp_path / "b", kind, seed=1)
    assert load_encoder(str(tmp_path / "b"), device="cpu").id != enc.id
    assert load_encoder(str(tmp_path / "a"), device="cpu").id == enc.id


def test_torchscript_bad_meta_and_input(tmp_path: Path) -> None:
    save_torchscript(tmp_path, "mel40_power", input_kind="spectrogram")
    with pytest.raises(ParamError, match=r"input_kind='spectrogram'.*allowed: mel40_power, audio"):
        load_encoder(str(tmp_path))
    save_torchscript(tmp_path, "mel40_power", dim=0)
    with pytest.raises(ParamError, match="dim=0"):
        load_encoder(str(tmp_path))
    save_torchscript(tmp_path, "mel40_power", dim=5)
    enc = load_encoder(str(tmp_path), device="cpu")
    with pytest.raises(ParamError, match=r"returned shape \(2, 8\)"):
        enc.embed(np.full((2, 50, 40), 1e-3, np.float32))
    with pytest.raises(ParamError, match="mel power"):
        enc.embed(np.zeros((2, 16000), np.float32))


def test_directory_with_neither(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\0")
    with pytest.raises(ParamError) as err:
        load_encoder(str(tmp_path))
    for name in ("config.json", "ForXVector", "encoder.ts.pt", "kikimimi_encoder.json", "model.onnx"):
        assert name in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Wav2Vec2ForCTC"]}))
    with pytest.raises(ParamError, match=r"Wav2Vec2ForCTC.*none a \.\.\.ForXVector"):
        load_encoder(str(tmp_path))


def test_missing_transformers_names_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["WavLMForXVector"], "model_type": "wavlm"}))
    (tmp_path / "model.safetensors").write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "transformers", None)   # import transformers -> ImportError
    with pytest.raises(KikimimiError) as err:
        load_encoder(str(tmp_path), device="cpu")
    assert isinstance(err.value, MissingDependency)
    assert HF_INSTALL in str(err.value)
