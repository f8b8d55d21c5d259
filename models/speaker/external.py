"""Speaker encoders loaded from a local directory: transformers x-vector models and TorchScript modules.

:func:`load_external` recognises two layouts (nothing is ever downloaded):

* a Hugging Face transformers x-vector model: ``config.json`` whose ``architectures`` names a
  ``...ForXVector`` class (``WavLMForXVector``, ``Wav2Vec2ForXVector``, ``UniSpeechSatForXVector``, ...),
  its weights (``*.safetensors`` or ``*.bin``) and ``preprocessor_config.json``. Input kind ``audio``; the
  feature extractor and the model run in :meth:`HfXVectorEncoder.embed`, whose output is
  ``outputs.embeddings``, L2-normalised. Needs the ``speaker-hf`` extra (transformers).
* a TorchScript module: ``encoder.ts.pt`` (``torch.jit.save``) and ``kikimimi_encoder.json`` with
  ``{"input_kind": "audio" | "mel40_power", "dim": int, "window_s": float, "threshold": float}``
  (threshold optional). The module maps (batch, samples) audio or (batch, frames, 40) mel power to
  (batch, dim); this covers ECAPA-TDNN and similar exported from SpeechBrain.

An x-vector directory may also hold ``kikimimi_encoder.json`` to set ``window_s`` and ``threshold``.
The encoder id is the family (``wavlm-xvector``, ``torchscript``, ...) plus the first 12 hex digits of a
SHA-256 over the weight files (their sorted names and bytes), so calibrated thresholds belong to the
exact weights.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import MissingDependency, ParamError
from kikimimi.engine.jsonio import read_json_object
from kikimimi.models.speaker.encoder import AUDIO, INPUT_KINDS, SAMPLE_RATE, SpeakerEncoder, l2_normalise

HF_INSTALL = "pip install 'kikimimi[speaker-hf]'"
TORCH_INSTALL = "pip install torch==2.13.0"
TS_WEIGHTS = "encoder.ts.pt"
META = "kikimimi_encoder.json"
HF_CONFIG = "config.json"
HF_WEIGHT_SUFFIXES = (".safetensors", ".bin")
N_MELS = 40
LOOKED_FOR = (f"{HF_CONFIG} whose 'architectures' names a ...ForXVector class (a transformers x-vector model), "
              f"or {TS_WEIGHTS} with {META} (a TorchScript encoder)")


def weights_digest(paths: Sequence[Path], n: int = 12) -> str:
    """First ``n`` hex digits of a SHA-256 over ``paths`` in name order: each name, its size, its bytes."""
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        h.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:n]


def _torch(device: str, threads: int) -> tuple[Any, str]:
    """The torch module and the resolved device (``auto``: CUDA if available); sets the CPU threads."""
    if device not in ("auto", "cpu", "cuda"):
        raise ParamError(f"device={device!r} is not allowed; allowed: auto, cpu, cuda")
    try:
        import torch
    except ImportError as exc:
        raise MissingDependency("PyTorch (speaker encoders from a directory run on it)", TORCH_INSTALL) from exc
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if threads > 0:
        torch.set_num_threads(threads)
    return torch, device


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, ParamError)


def _positive(meta: dict[str, Any], key: str, where: Path, kind: type = float) -> Any:
    """``meta[key]`` as a positive ``kind`` (int or float); ParamError naming the file otherwise."""
    value = meta.get(key)
    ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise ParamError(f"{where}: {key}={value!r} is not allowed; allowed: a positive {kind.__name__}")
    return kind(value)


def _apply_meta(encoder: SpeakerEncoder, meta: dict[str, Any], where: Path) -> None:
    """Set ``window_s`` / ``min_window_s`` / ``default_threshold`` from ``meta`` where it has them."""
    if "window_s" in meta:
        encoder.window_s = _positive(meta, "window_s", where)
    if "min_window_s" in meta:
        encoder.min_window_s = _positive(meta, "min_window_s", where)
    encoder.min_window_s = min(encoder.min_window_s, encoder.window_s)
    threshold = meta.get("threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
            raise ParamError(f"{where}: threshold={threshold!r} is not allowed; allowed: a cosine in [-1, 1]")
        encoder.default_threshold = float(threshold)


def _check_batch(batch: np.ndarray, input_kind: str, what: str) -> np.ndarray:
    """``batch`` as contiguous float32 if its shape fits ``input_kind``; ParamError otherwise."""
    ndim, shape = (2, "(batch, samples) audio") if input_kind == AUDIO else (3, f"(batch, frames, {N_MELS}) mel power")
    if (not isinstance(batch, np.ndarray) or batch.ndim != ndim or (ndim == 3 and batch.shape[2] != N_MELS)
            or batch.shape[0] == 0):
        raise ParamError(f"{what} input must be a non-empty {shape} array, got "
                         f"{getattr(batch, 'shape', type(batch).__name__)}")
    return np.ascontiguousarray(batch, np.float32)


class HfXVectorEncoder(SpeakerEncoder):
    """A transformers ``...ForXVector`` model and its feature extractor, from a local directory."""

    input_kind = AUDIO
    window_s = 3.0               # x-vector heads are trained on 2-4 s crops
    default_threshold = 0.86     # the cosine the WavLM-base-plus-sv card suggests; calibrate per id

    def __init__(self, path: Path, config: dict[str, Any], device: str = "auto", threads: int = 0) -> None:
        torch, device = _torch(device, threads)
        try:
            from transformers import AutoFeatureExtractor, AutoModelForAudioXVector
        except ImportError as exc:
            raise MissingDependency("transformers (x-vector speaker encoders)", HF_INSTALL) from exc
        weights = [p for p in path.iterdir() if p.is_file() and p.name.endswith(HF_WEIGHT_SUFFIXES)]
        if not weights:
            raise ParamError(f"{path} has {HF_CONFIG} but no weights; looked for "
                             f"{', '.join('*' + s for s in HF_WEIGHT_SUFFIXES)}")
        self.extractor = AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForAudioXVector.from_pretrained(str(path), local_files_only=True)
        self.model = model.to(device).eval()
        self.dim = int(model.config.xvector_output_dim)
        family = str(config.get("model_type") or "hf").replace("_", "-")
        self.id = f"{family}-xvector-{weights_digest(weights)}"
        if (path / META).is_file():
            _apply_meta(self, _read_json(path / META), path / META)
        self._torch, self.device, self.path = torch, device, path

    def embed(self, batch: np.ndarray) -> np.ndarray:
        x = _check_batch(batch, AUDIO, "x-vector")
        inputs = self.extractor(list(x), sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
        with self._torch.inference_mode():
            outputs = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
            return l2_normalise(outputs.embeddings.float().cpu().numpy())


class TorchScriptEncoder(SpeakerEncoder):
    """A scripted module in ``encoder.ts.pt`` described by ``kikimimi_encoder.json``."""

    def __init__(self, path: Path, device: str = "auto", threads: int = 0) -> None:
        torch, device = _torch(device, threads)
        meta_path = path / META
        meta = _read_json(meta_path)
        kind = meta.get("input_kind")
        if kind not in INPUT_KINDS:
            raise ParamError(f"{meta_path}: input_kind={kind!r} is not allowed; allowed: {', '.join(INPUT_KINDS)}")
        self.input_kind = kind
        self.dim = _positive(meta, "dim", meta_path, int)
        if "window_s" not in meta:
            raise ParamError(f"{meta_path} lacks window_s; allowed: the window length in seconds (a positive float)")
        _apply_meta(self, meta, meta_path)
        weights = path / TS_WEIGHTS
        try:
            with warnings.catch_warnings():   # recent torch deprecates TorchScript; it is the format we read
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
                module = torch.jit.load(str(weights), map_location=device)
        except (RuntimeError, ValueError) as exc:
            raise ParamError(f"{weights} is not a TorchScript module saved with torch.jit.save: {exc}") from exc
        self.module = module.eval()
        self.id = f"torchscript-{weights_digest([weights])}"
        self._torch, self.device, self.path = torch, device, path

    def embed(self, batch: np.ndarray) -> np.ndarray:
        x = _check_batch(batch, self.input_kind, "TorchScript encoder")
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(x).to(self.device))
            out = out.float().cpu().numpy()
        if out.shape != (x.shape[0], self.dim):
            raise ParamError(f"{self.path / TS_WEIGHTS} returned shape {out.shape}; {META} promises "
                             f"({x.shape[0]}, {self.dim})")
        return l2_normalise(out)


def _xvector_config(path: Path) -> dict[str, Any] | None:
    """The parsed ``config.json`` if it names a ``...ForXVector`` architecture, else None."""
    if not (path / HF_CONFIG).is_file():
        return None
    config = _read_json(path / HF_CONFIG)
    archs = config.get("architectures") or []
    if isinstance(archs, list) and any(isinstance(a, str) and a.endswith("ForXVector") for a in archs):
        return config
    raise ParamError(f"{path / HF_CONFIG} names architectures {archs!r}, none a ...ForXVector class; "
                     f"looked for {LOOKED_FOR}")


def load_external(path: Path, device: str = "auto", threads: int = 0) -> SpeakerEncoder:
    """The speaker encoder in the local directory ``path``: a TorchScript encoder if it holds
    ``encoder.ts.pt`` and ``kikimimi_encoder.json``, else a transformers x-vector model; ParamError
    listing what was looked for if it is neither."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ParamError(f"speaker encoder directory {str(path)!r} does not exist; looked for {LOOKED_FOR}")
    if (path / TS_WEIGHTS).is_file() and (path / META).is_file():
        return TorchScriptEncoder(path, device, threads)
    config = _xvector_config(path)
    if config is not None:
        return HfXVectorEncoder(path, config, device, threads)
    found = sorted(p.name for p in path.iterdir())[:10]
    raise ParamError(f"{path} holds no speaker encoder; looked for {LOOKED_FOR}; found: "
                     f"{', '.join(found) if found else 'nothing'}")
