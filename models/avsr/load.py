"""Load an audio-visual recognizer from a local directory, whichever kind it holds.

A directory with ``avsr.json`` is our chunked AV Conformer-CTC (:func:`kikimimi.models.avsr.chunked.load_chunked`,
needs torch); one with ``config.json`` is a transformers AV checkpoint
(:func:`kikimimi.models.avsr.external.load_external_av`). ``device="auto"`` picks CUDA when torch sees one.
"""

from __future__ import annotations

from pathlib import Path

from kikimimi.engine.errors import MissingDependency, ParamError
from kikimimi.models.avsr.base import AvRecognizer

CHUNKED_META = "avsr.json"


def load_av_model(model: str, device: str, threads: int, language: str = "auto") -> AvRecognizer:
    """The AV recognizer in directory ``model``: chunked (``avsr.json``) or external (``config.json``)."""
    path = Path(model).expanduser()
    if device == "auto":
        try:
            import torch
        except ImportError:
            device = "cpu"
        else:
            device = "cuda" if torch.cuda.is_available() else "cpu"
    if not path.is_dir():
        raise ParamError(f"model={model!r} is not allowed; allowed: a directory with {CHUNKED_META} (our chunked "
                         f"AV model) or config.json with an auto_map (a transformers AV checkpoint); {path} is none")
    if (path / CHUNKED_META).is_file():
        try:
            import torch
        except ImportError as exc:
            from kikimimi.models.avsr.external import TORCH_INSTALL

            raise MissingDependency("PyTorch (our chunked AV model runs on it)", TORCH_INSTALL) from exc
        from kikimimi.models.avsr.chunked import load_chunked

        rec: AvRecognizer = load_chunked(path, device, threads)
        return rec
    if (path / "config.json").is_file():
        from kikimimi.models.avsr.external import load_external_av

        return load_external_av(path, device, threads, language=language)
    raise ParamError(f"model={model!r}: {path} holds neither {CHUNKED_META} (our chunked AV model) nor config.json "
                     "(a transformers AV checkpoint)")
