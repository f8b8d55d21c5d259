"""A linear emotion classifier over a pooled feature vector, and its files.

:class:`LinearHead` computes ``softmax(W @ ((x - mean) / scale) + b)`` for a batch of vectors. On disk it is
two files side by side: ``NAME.safetensors`` (float32 tensors ``weight`` (C, D), ``bias`` (C,), ``mean`` (D,),
``scale`` (D,)) and ``NAME.json`` (``id``, ``classes``, ``input`` (what the vector is, e.g.
``whisper-base-states-meanstd``), ``licence``, ``trained_on`` and the evaluation figures). :func:`load_head`
checks that they agree and names what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import KikimimiError, MissingDependency, ParamError

TENSORS = ("weight", "bias", "mean", "scale")


def _safetensors_numpy() -> Any:
    try:
        from safetensors import numpy as st
    except ImportError as exc:
        raise MissingDependency("safetensors", "pip install 'kikimimi[affect]'  (or: pip install safetensors)") from exc
    return st


@dataclass(frozen=True, eq=False)
class LinearHead:
    """Classes, input name and tensors of a linear classifier (see the module docstring)."""

    id: str
    classes: tuple[str, ...]
    input: str
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c, d = len(self.classes), self.mean.shape[0] if self.mean.ndim == 1 else -1
        shapes = {"weight": (c, d), "bias": (c,), "mean": (d,), "scale": (d,)}
        for name, shape in shapes.items():
            t = getattr(self, name)
            if not isinstance(t, np.ndarray) or t.shape != shape or not np.all(np.isfinite(t)):
                raise ParamError(f"affect head {self.id!r}: {name} must be finite with shape {shape} ({c} classes, "
                                 f"{d} inputs), got {getattr(t, 'shape', type(t).__name__)}")
        if np.any(self.scale <= 0):
            raise ParamError(f"affect head {self.id!r}: scale must be positive")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (B, C) float32 of vectors ``x`` (B, D)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ParamError(f"affect head {self.id!r} takes vectors of {self.dim} ({self.input}), got shape {x.shape}")
        z = ((x.astype(np.float64) - self.mean) / self.scale) @ self.weight.T.astype(np.float64) + self.bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write ``path`` + ``.safetensors`` and ``.json`` (``path`` without a suffix)."""
        st = _safetensors_numpy()
        js, ts = head_files(path)
        st.save_file({n: np.ascontiguousarray(getattr(self, n), np.float32) for n in TENSORS}, str(ts))
        meta = {**self.meta, "id": self.id, "classes": list(self.classes), "input": self.input}
        js.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def head_files(path: str | Path) -> tuple[Path, Path]:
    """The JSON and safetensors files of the head named ``path`` (which may end in either suffix; a name
    such as ``voice-whisper-tiny.en`` keeps its dot)."""
    p = Path(path)
    name = p.name.removesuffix(".json").removesuffix(".safetensors")
    return p.with_name(name + ".json"), p.with_name(name + ".safetensors")


def load_head(path: str | Path) -> LinearHead:
    """The head saved at ``path`` (with or without its suffix); KikimimiError names a missing file or tensor."""
    js, ts = head_files(path)
    p = js.with_name(js.name.removesuffix(".json"))
    for f in (js, ts):
        if not f.is_file():
            raise KikimimiError(f"affect head {str(p)!r}: {f.name} not found; a head is NAME.json + NAME.safetensors")
    meta = json.loads(js.read_text(encoding="utf-8"))
    tensors = _safetensors_numpy().load_file(str(ts))
    missing = [n for n in TENSORS if n not in tensors]
    if missing or not isinstance(meta.get("classes"), list) or not meta.get("input"):
        raise KikimimiError(f"affect head {str(p)!r}: needs tensors {', '.join(TENSORS)} and JSON classes and input; "
                            f"missing: {', '.join(missing) or 'classes/input in the JSON'}")
    return LinearHead(str(meta.get("id") or p.name), tuple(meta["classes"]), str(meta["input"]),
                      *(tensors[n].astype(np.float32) for n in TENSORS), meta=meta)


def fit_head(x: np.ndarray, y: Sequence[int], classes: Sequence[str], input_name: str, head_id: str,
             l2: float = 0.05, steps: int = 200) -> LinearHead:
    """A multinomial logistic regression fitted on standardized ``x`` (N, D) with labels ``y`` (indices into
    ``classes``): mean cross-entropy plus ``l2`` * ||W||^2 / 2, by L-BFGS (torch, CPU)."""
    import torch

    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    xs = torch.tensor((x - mean) / scale, dtype=torch.float64)
    yt = torch.tensor(np.asarray(y), dtype=torch.long)
    w = torch.zeros((len(classes), x.shape[1]), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w.T + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearHead(head_id, tuple(classes), input_name, w.detach().numpy().astype(np.float32),
                      b.detach().numpy().astype(np.float32), mean.astype(np.float32), scale.astype(np.float32))
