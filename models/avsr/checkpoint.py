"""Checkpoint directories of :class:`~kikimimi.models.avsr.model.AvCtcModel`.

A checkpoint is a directory holding

* ``avsr.json``: ``{"format": "kikimimi-avsr", "version": 1, "config": {AvConfig fields}, "training": {...}}``
  (``training``: free-form facts about the run: steps, losses, data, seconds);
* ``model.safetensors``: the state dict (float32 tensors, written with ``safetensors.torch``; never pickle).

:func:`load_checkpoint` checks the format name and version, the config, and every tensor's name and shape
against a freshly built model, and raises :class:`CheckpointError` saying what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kikimimi.engine.errors import KikimimiError, MissingDependency, ParamError
from kikimimi.models.avsr.model import AvConfig, AvCtcModel

FORMAT = "kikimimi-avsr"
VERSION = 1
META_FILE = "avsr.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(KikimimiError, ValueError):
    """An AVSR checkpoint directory is missing, of another format or version, or does not fit the model."""


def _safetensors() -> tuple[Any, type[Exception]]:
    """(safetensors.torch, the error type safetensors raises for a corrupt file)."""
    try:
        import safetensors.torch as st
        from safetensors import SafetensorError
    except ImportError as exc:
        raise MissingDependency("safetensors (AVSR checkpoints)", "pip install 'kikimimi[avsr]'") from exc
    return st, SafetensorError


def save_checkpoint(model: AvCtcModel, path: str | Path, training: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its config and weights) and the ``training`` facts into directory ``path`` (created)."""
    st, _ = _safetensors()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "training": training or {}}
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    st.save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(VERSION)})
    tmp.replace(out / WEIGHTS_FILE)
    (out / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return out


def read_meta(path: str | Path) -> dict[str, Any]:
    """The checked ``avsr.json`` of checkpoint directory ``path``."""
    meta_path = Path(path) / META_FILE
    if not Path(path).is_dir():
        raise CheckpointError(f"AVSR checkpoint {path} is not a directory (expected {META_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"AVSR checkpoint {path} has no {META_FILE}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} has format {meta.get('format')!r}; allowed: {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path} has version {meta.get('version')!r}; allowed: {VERSION}")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[AvCtcModel, dict[str, Any]]:
    """(model in eval mode on ``device``, the ``training`` facts) of checkpoint directory ``path``."""
    st, safetensor_error = _safetensors()
    meta = read_meta(path)
    try:
        config = AvConfig.from_dict(meta.get("config"))
    except (ParamError, TypeError) as exc:
        raise CheckpointError(f"{Path(path) / META_FILE} has a bad config: {exc}") from exc
    model = AvCtcModel(config)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"AVSR checkpoint {path} has no {WEIGHTS_FILE}")
    try:
        tensors = st.load_file(str(weights), device="cpu")
    except (OSError, safetensor_error) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit the config in {META_FILE}: missing tensors {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unexpected tensors {unexpected[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")
    for name, ref in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"{weights}: tensor {name!r} has shape {tuple(got.shape)}; the config in "
                                  f"{META_FILE} needs {tuple(ref.shape)}")
        if got.dtype != ref.dtype:
            raise CheckpointError(f"{weights}: tensor {name!r} has dtype {got.dtype}; allowed: {ref.dtype}")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    training = meta.get("training", {})
    return model.to(device), training if isinstance(training, dict) else {}
