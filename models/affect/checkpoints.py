"""Emotion classifiers loaded from a local checkpoint directory (nothing is ever downloaded).

:func:`load_classifier` recognises two layouts and returns a :class:`ClipClassifier`, which maps a batch of
16 kHz mono float32 clips to class probabilities (:meth:`ClipClassifier.classify`):

* a transformers audio-classification model (the SUPERB emotion layout): ``config.json`` whose
  ``architectures`` names a ``...ForSequenceClassification`` class (HuBERT, wav2vec 2.0, WavLM), its weights
  (``model.safetensors`` or ``pytorch_model.bin``) and ``preprocessor_config.json``. Class names come from
  ``config.id2label``; the SUPERB short names are mapped (:data:`SUPERB_NAMES`), others are kept as given.
  See :class:`HfAudioClassifier`.
* the Kushinada layout: a transformers ``HubertModel`` upstream plus an s3prl downstream checkpoint; see
  :mod:`kikimimi.models.affect.s3prl`.

Clips are batched with an attention mask when the model takes one (``feat_extract_norm == "layer"``); a
model whose convolutional front end normalises over time (``"group"``, e.g. HuBERT base) sees padding, so
its clips are run in groups of equal length instead, and a clip's result never depends on its batch.
Device ``auto`` uses CUDA when ``torch.cuda.is_available()``, else the CPU. Needs torch and transformers
(the ``speaker-hf`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kikimimi.engine.errors import KikimimiError, MissingDependency, ParamError
from kikimimi.engine.jsonio import read_json_object

RATE = 16000
HF_INSTALL = "pip install 'kikimimi[speaker-hf]'"
TORCH_INSTALL = "pip install torch==2.13.0"
DEVICES = ("auto", "cpu", "cuda")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SUPERB_NAMES = {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad", "exc": "excited",
                "fru": "frustrated", "sur": "surprised", "fea": "fearful", "dis": "disgust", "cal": "calm",
                "joy": "happy", "anger": "angry", "sadness": "sad"}
"""Short class names of SUPERB / IEMOCAP-style checkpoints (and JTES's joy / anger / sadness) and the names
:mod:`~kikimimi.models.affect.labels` uses."""


class ClipClassifier(Protocol):
    """What a loaded checkpoint offers: its class names, its device, and batched classification."""

    classes: tuple[str, ...]
    device: str

    def classify(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (B, C) float32 of B 16 kHz mono clips."""
        ...


def class_name(label: str) -> str:
    """``label`` with a SUPERB short name mapped (``neu`` -> ``neutral``); other names lower-cased as given."""
    key = label.strip().lower()
    return SUPERB_NAMES.get(key, key)


def torch_device(device: str) -> tuple[Any, str]:
    """The torch module and the resolved device; ParamError for an unknown or unavailable device."""
    if device not in DEVICES:
        raise ParamError(f"device={device!r} is not allowed; allowed: {', '.join(DEVICES)}")
    try:
        import torch
    except ImportError as exc:
        raise MissingDependency("PyTorch (checkpoint classifiers run on it)", TORCH_INSTALL) from exc
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ParamError("device='cuda' is not allowed here: torch sees no CUDA device; allowed: auto, cpu")
    return torch, device


def transformers_module() -> Any:
    """The transformers module; MissingDependency with the install command when it is absent."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependency("transformers (checkpoint classifiers load through it)", HF_INSTALL) from exc
    return transformers


def check_clips(clips: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``clips`` as 1-D float32 arrays of at least 400 samples (25 ms); ParamError naming a bad one."""
    if isinstance(clips, np.ndarray) or len(clips) == 0:
        raise ParamError("clips must be a non-empty sequence of 1-D float32 arrays (16 kHz mono)")
    out = []
    for i, c in enumerate(clips):
        a = np.asarray(c)
        if a.ndim != 1 or a.size < 400 or not np.issubdtype(a.dtype, np.floating):
            raise ParamError(f"clip {i} has shape {a.shape} and dtype {a.dtype}; allowed: 1-D float audio of "
                             f">= 400 samples (16 kHz mono)")
        if not np.isfinite(a).all():
            raise ParamError(f"clip {i} holds NaN or infinite samples; allowed: finite audio")
        out.append(np.ascontiguousarray(a, np.float32))
    return out


def length_groups(clips: Sequence[np.ndarray], padded: bool) -> list[list[int]]:
    """Indices of ``clips`` to run together: all of them if ``padded`` (masking works), else equal lengths."""
    if padded:
        return [list(range(len(clips)))]
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault(len(c), []).append(i)
    return list(groups.values())


def read_config(path: Path) -> dict[str, Any]:
    """``path/config.json`` as a dict; ParamError naming the directory and what it holds when missing."""
    if not path.is_dir():
        raise ParamError(f"checkpoint directory {str(path)!r} does not exist or is not a directory")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ParamError(f"{path}: no config.json (a transformers model directory needs config.json, "
                         f"{' or '.join(WEIGHT_FILES)}); found: {', '.join(sorted(p.name for p in path.iterdir()))}")
    return read_json_object(cfg, ParamError)


def check_weights(path: Path) -> None:
    """ParamError naming the expected files when ``path`` has no transformers weight file."""
    if not any((path / w).is_file() for w in WEIGHT_FILES):
        raise ParamError(f"{path}: no weights; expected {' or '.join(WEIGHT_FILES)}; found: "
                         f"{', '.join(sorted(p.name for p in path.iterdir()))}")


class HfAudioClassifier:
    """A transformers ``...ForSequenceClassification`` audio model and its feature extractor, from ``path``."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        path = Path(path)
        config = read_config(path)
        arch = config.get("architectures") or []
        if not any(str(a).endswith("ForSequenceClassification") for a in arch):
            raise ParamError(f"{path}/config.json: architectures={arch!r}; allowed: a ...ForSequenceClassification "
                             "audio model (HuBERT, wav2vec 2.0, WavLM)")
        check_weights(path)
        if not (path / "preprocessor_config.json").is_file():
            raise ParamError(f"{path}: no preprocessor_config.json (the feature extractor's settings)")
        self.torch, self.device = torch_device(device)
        tf = transformers_module()
        try:
            self.extractor = tf.AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
            self.model = tf.AutoModelForAudioClassification.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise KikimimiError(f"{path}: transformers could not load the model: {exc}") from exc
        self.model.eval().to(self.device)
        id2label = self.model.config.id2label
        self.classes = tuple(class_name(str(id2label[i])) for i in range(len(id2label)))
        self.padded = getattr(self.model.config, "feat_extract_norm", "group") == "layer"
        self.path = path

    def classify(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (B, C) float32 of B 16 kHz mono clips (softmax of the model's logits)."""
        clips = check_clips(clips)
        out = np.zeros((len(clips), len(self.classes)), np.float32)
        torch = self.torch
        for idx in length_groups(clips, self.padded):
            feats = self.extractor([clips[i] for i in idx], sampling_rate=RATE, padding=True,
                                   return_attention_mask=self.padded, return_tensors="pt")
            kwargs = {"input_values": feats["input_values"].to(self.device)}
            if self.padded:
                kwargs["attention_mask"] = feats["attention_mask"].to(self.device)
            with torch.inference_mode():
                logits = self.model(**kwargs).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out


def load_classifier(path: str | Path, device: str = "auto", classes: Sequence[str] | None = None) -> ClipClassifier:
    """The classifier in directory ``path``: a transformers ``...ForSequenceClassification`` model, or the
    Kushinada layout (a HubertModel upstream with an s3prl ``*.ckpt`` / ``*.pt`` below it; ``classes`` or a
    ``classes.txt`` beside the checkpoint names its classes). ParamError names what is missing."""
    from kikimimi.models.affect.s3prl import S3prlClassifier, find_downstream

    path = Path(path)
    config = read_config(path)
    arch = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in arch):
        return HfAudioClassifier(path, device)
    ckpt = find_downstream(path)
    if ckpt is not None:
        return S3prlClassifier(path, ckpt, device=device, classes=classes)
    raise ParamError(f"{path}: not a checkpoint layout this loader knows: config.json architectures={arch!r} is no "
                     "...ForSequenceClassification model, and no s3prl downstream *.ckpt / *.pt lies below it")
