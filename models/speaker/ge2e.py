"""The GE2E d-vector encoder (Wan et al. 2018), as trained by the ``resemblyzer`` package.

Three LSTM layers of 256 over 40-channel mel power frames, the last layer's final hidden state through
a 256 -> 256 linear layer and a ReLU, then L2 normalisation. The module is our own; only the weights
come from ``resemblyzer/pretrained.pt`` (found on disk without importing the package, whose import
pulls librosa). Install them with ``pip install --no-deps resemblyzer`` (its declared dependencies
would replace our webrtcvad wheel). The input is our own mel power
(:func:`~kikimimi.models.speaker.windows.mel_power`), not the package's librosa code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.models.speaker.encoder import MEL40, SpeakerEncoder, file_digest

N_MELS = 40
HIDDEN = 256
LAYERS = 3
INSTALL = "pip install --no-deps resemblyzer"


def resemblyzer_weights() -> Path:
    """Path of ``pretrained.pt`` in the installed resemblyzer package (the package is not imported)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise KikimimiError(f"the GE2E weights come with the resemblyzer package, which is not installed; "
                            f"install it with: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise KikimimiError(f"resemblyzer is installed but has no {path}; reinstall it with: {INSTALL}")
    return path


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise KikimimiError("the GE2E encoder runs on PyTorch; install the CPU build with: "
                            "pip install torch==2.13.0") from exc
    return torch


def build_module(torch: Any) -> Any:
    """The GE2E network (untrained)."""
    nn = torch.nn

    class Ge2e(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
            self.linear = nn.Linear(HIDDEN, HIDDEN)

        def forward(self, mels: Any) -> Any:
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.clamp(torch.linalg.vector_norm(raw, dim=1, keepdim=True), min=1e-12)

    return Ge2e()


class Ge2eEncoder(SpeakerEncoder):
    """GE2E on PyTorch (CPU or CUDA). ``weights``: a checkpoint with ``model_state`` (resemblyzer's
    layout) or a plain state dict; None = the resemblyzer package's ``pretrained.pt``."""

    input_kind = MEL40
    dim = HIDDEN
    window_s = 1.6
    default_threshold = 0.75

    def __init__(self, weights: Path | str | None = None, device: str = "auto", threads: int = 0) -> None:
        torch = _torch()
        path = resemblyzer_weights() if weights is None else Path(weights)
        if not path.is_file():
            raise ParamError(f"GE2E weights {str(path)!r} not found; allowed: a .pt file with the model state")
        if device not in ("auto", "cpu", "cuda"):
            raise ParamError(f"device={device!r} is not allowed; allowed: auto, cpu, cuda")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads > 0:
            torch.set_num_threads(threads)
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ParamError(f"{path} holds no state dict; allowed: a torch checkpoint of GE2E weights")
        state = {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}
        module = build_module(torch)
        missing = module.load_state_dict(state, strict=False).missing_keys
        if missing:
            raise ParamError(f"{path} lacks GE2E weights {', '.join(missing)}; allowed: a checkpoint with "
                             "lstm.* and linear.* of a 3x256 LSTM over 40 mels")
        self._torch = torch
        self.device = device
        self.module = module.to(device).eval()
        self.id = f"ge2e-{file_digest(path)}"
        self.path = path

    def embed(self, batch: np.ndarray) -> np.ndarray:
        if not isinstance(batch, np.ndarray) or batch.ndim != 3 or batch.shape[2] != N_MELS:
            raise ParamError(f"GE2E input must be (batch, frames, {N_MELS}) mel power, got "
                             f"{getattr(batch, 'shape', type(batch).__name__)}")
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            return self.module(x).float().cpu().numpy()
