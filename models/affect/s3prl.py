"""The Kushinada layout: a transformers HuBERT upstream plus an s3prl emotion downstream checkpoint.

This is how ``imprt/kushinada-hubert-large-jtes-er`` is published (the upstream ``imprt/kushinada-hubert-large``
as a transformers ``HubertModel``; the downstream as s3prl's ``dev-best.ckpt``). :class:`S3prlClassifier`
computes, for each clip:

1. the waveform normalised to zero mean and unit variance (``do_normalize`` of the upstream's
   ``preprocessor_config.json``; on when that file is absent), as s3prl's HuBERT upstream does;
2. all hidden states of the ``HubertModel`` (the embedding output and every layer: ``num_hidden_layers + 1``);
3. s3prl's featurizer: their sum weighted by ``softmax(Featurizer.weights)``;
4. the downstream: ``projector`` (Linear), mean pooling over the clip's valid frames, ``model.post_net.linear``
   (Linear) -> logits -> softmax.

The checkpoint (``torch.load``; a dict) must hold these keys, with these shapes (D: the upstream's hidden size,
P: the projector size, C: the classes, L: ``num_hidden_layers + 1``)::

    ckpt["Featurizer"]["weights"]                        (L,)
    ckpt["Downstream"]["projector.weight"]               (P, D)
    ckpt["Downstream"]["projector.bias"]                 (P,)
    ckpt["Downstream"]["model.post_net.linear.weight"]   (C, P)
    ckpt["Downstream"]["model.post_net.linear.bias"]     (C,)

It is searched as the one ``*.ckpt`` (else ``*.pt``) below the upstream directory, or given. It is read with
``weights_only=True`` allowing ``argparse.Namespace`` (s3prl stores its arguments so); ``trust_pickle=True``
reads any pickle (only for files you trust). Class names: ``classes``, else ``classes.txt`` (one a line) beside
the checkpoint or in the upstream directory, mapped by :func:`~kikimimi.models.affect.checkpoints.class_name`.
The real checkpoint does not store its class order: JTES checkpoints are commonly read as
neutral, joy, anger, sadness, which must be supplied. Fairseq-trained s3prl upstreams take the last layer before
the final layer norm, transformers' last hidden state after it: for such checkpoints the last layer differs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.engine.jsonio import read_json_object
from kikimimi.models.affect.checkpoints import (
    RATE,
    check_clips,
    check_weights,
    class_name,
    length_groups,
    read_config,
    torch_device,
    transformers_module,
)

FEATURIZER_KEYS = ("weights",)
DOWNSTREAM_KEYS = ("projector.weight", "projector.bias", "model.post_net.linear.weight", "model.post_net.linear.bias")
CLASSES_FILE = "classes.txt"
NORM_EPS = 1e-7


def find_downstream(path: Path) -> Path | None:
    """The one ``*.ckpt`` below ``path`` (else the one ``*.pt``); None if there is none; ParamError if several."""
    for pattern in ("*.ckpt", "*.pt"):
        found = sorted(p for p in path.rglob(pattern) if p.is_file())
        if len(found) > 1:
            names = ", ".join(str(p.relative_to(path)) for p in found)
            raise ParamError(f"{path}: several s3prl checkpoints ({names}); allowed: exactly one, or pass one")
        if found:
            return found[0]
    return None


def read_classes(ckpt: Path, upstream: Path) -> tuple[str, ...]:
    """Class names from ``classes.txt`` beside ``ckpt`` or in ``upstream``; ParamError naming both places."""
    for place in (ckpt.parent / CLASSES_FILE, upstream / CLASSES_FILE):
        if place.is_file():
            names = [ln.strip() for ln in place.read_text(encoding="utf-8").splitlines() if ln.strip()]
            return tuple(class_name(n) for n in names)
    raise ParamError(f"no class names for {ckpt}: pass classes=... or write {CLASSES_FILE} (one name a line) in "
                     f"{ckpt.parent} or {upstream}")


def _section(ckpt: dict[str, Any], name: str, keys: Sequence[str], where: Path) -> dict[str, Any]:
    """``ckpt[name]`` holding ``keys``; ParamError listing the keys found when they differ."""
    part = ckpt.get(name)
    if not isinstance(part, dict):
        raise ParamError(f"{where}: no {name!r} state dict; expected keys {', '.join(keys)} under it; top-level "
                         f"keys found: {', '.join(map(str, ckpt))}")
    missing = [k for k in keys if k not in part]
    if missing:
        raise ParamError(f"{where}: {name} lacks {', '.join(missing)}; expected {', '.join(keys)}; found: "
                         f"{', '.join(map(str, part))}")
    return part


def load_downstream(torch: Any, ckpt: Path, trust_pickle: bool = False) -> tuple[Any, dict[str, Any]]:
    """(featurizer weights (L,), downstream tensors by key) of the s3prl checkpoint ``ckpt``."""
    try:
        if trust_pickle:
            data = torch.load(str(ckpt), map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                data = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    except Exception as exc:   # torch raises many types for a bad or unsafe pickle
        raise ParamError(f"{ckpt}: not readable as a torch checkpoint with weights_only=True ({exc}); if you trust "
                         "the file, pass trust_pickle=True") from exc
    if not isinstance(data, dict):
        raise ParamError(f"{ckpt}: holds a {type(data).__name__}; expected a dict with 'Featurizer' and 'Downstream'")
    feat = _section(data, "Featurizer", FEATURIZER_KEYS, ckpt)
    down = _section(data, "Downstream", DOWNSTREAM_KEYS, ckpt)
    return feat["weights"].float(), {k: down[k].float() for k in DOWNSTREAM_KEYS}


class S3prlClassifier:
    """HuBERT upstream + s3prl featurizer and downstream (see the module docstring)."""

    def __init__(self, upstream: str | Path, ckpt: str | Path | None = None, device: str = "auto",
                 classes: Sequence[str] | None = None, trust_pickle: bool = False) -> None:
        upstream = Path(upstream)
        read_config(upstream)
        check_weights(upstream)
        found = Path(ckpt) if ckpt is not None else find_downstream(upstream)
        if found is None or not found.is_file():
            raise ParamError(f"{upstream}: no s3prl downstream checkpoint ({ckpt or '*.ckpt or *.pt below it'})")
        torch, self.device = torch_device(device)
        self.torch = torch
        tf = transformers_module()
        try:
            self.upstream = tf.HubertModel.from_pretrained(str(upstream), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise KikimimiError(f"{upstream}: transformers could not load a HubertModel: {exc}") from exc
        self.upstream.eval().to(self.device)
        cfg = self.upstream.config
        weights, down = load_downstream(torch, found, trust_pickle)
        n_layers, dim = cfg.num_hidden_layers + 1, cfg.hidden_size
        proj, lin = down["projector.weight"], down["model.post_net.linear.weight"]
        if tuple(weights.shape) != (n_layers,) or proj.shape[1] != dim or lin.shape[1] != proj.shape[0]:
            raise ParamError(f"{found}: shapes do not fit the upstream (hidden states {n_layers}, size {dim}): "
                             f"Featurizer.weights {tuple(weights.shape)}, projector.weight {tuple(proj.shape)}, "
                             f"model.post_net.linear.weight {tuple(lin.shape)}")
        self.layer_weights = torch.softmax(weights, dim=0).to(self.device)
        self.projector = torch.nn.Linear(dim, proj.shape[0]).to(self.device).eval()
        self.projector.load_state_dict({"weight": proj, "bias": down["projector.bias"]})
        self.linear = torch.nn.Linear(proj.shape[0], lin.shape[0]).to(self.device).eval()
        self.linear.load_state_dict({"weight": lin, "bias": down["model.post_net.linear.bias"]})
        names = tuple(class_name(c) for c in classes) if classes is not None else read_classes(found, upstream)
        if len(names) != lin.shape[0]:
            raise ParamError(f"{found}: the head has {lin.shape[0]} classes but {len(names)} names were given "
                             f"({', '.join(names)})")
        self.classes = names
        pre = upstream / "preprocessor_config.json"
        self.normalize = bool(read_json_object(pre, ParamError).get("do_normalize", True)) if pre.is_file() else True
        self.padded = getattr(cfg, "feat_extract_norm", "group") == "layer"
        self.checkpoint = found

    def _batch(self, clips: Sequence[np.ndarray]) -> tuple[Any, Any, Any]:
        """(padded input (B, N), sample mask (B, N), valid frames (B,)) on the device."""
        torch = self.torch
        n = max(len(c) for c in clips)
        x = np.zeros((len(clips), n), np.float32)
        mask = np.zeros((len(clips), n), np.int64)
        for i, c in enumerate(clips):
            if self.normalize:
                c = (c - c.mean()) / np.sqrt(c.var() + NORM_EPS)
            x[i, :len(c)] = c
            mask[i, :len(c)] = 1
        lengths = torch.as_tensor([len(c) for c in clips])
        frames = self.upstream._get_feat_extract_output_lengths(lengths)
        return torch.from_numpy(x).to(self.device), torch.from_numpy(mask).to(self.device), frames.to(self.device)

    def classify(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (B, C) float32 of B 16 kHz mono clips."""
        clips = check_clips(clips)
        torch = self.torch
        out = np.zeros((len(clips), len(self.classes)), np.float32)
        for idx in length_groups(clips, self.padded):
            x, mask, frames = self._batch([clips[i] for i in idx])
            with torch.inference_mode():
                hs = self.upstream(x, attention_mask=mask if self.padded else None,
                                   output_hidden_states=True).hidden_states
                feats = (torch.stack(hs, 0) * self.layer_weights.view(-1, 1, 1, 1)).sum(0)
                proj = self.projector(feats)                               # (B, T, P)
                valid = (torch.arange(proj.shape[1], device=self.device)[None, :] < frames[:, None]).float()
                pooled = (proj * valid[..., None]).sum(1) / frames[:, None].float()
                probs = torch.softmax(self.linear(pooled), dim=-1)
            out[idx] = probs.float().cpu().numpy()
        return out


__all__ = ["RATE", "S3prlClassifier", "find_downstream", "load_downstream", "read_classes"]
