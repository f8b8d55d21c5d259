"""Speech clips made at test time with espeak-ng (Debian: ``apt-get install -y espeak-ng``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

INSTALL = "apt-get install -y espeak-ng"


def espeak_ng() -> str:
    """Path of the espeak-ng program; skips the test if it is missing (conftest fails it when CI=true)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip(f"espeak-ng is not installed (install it with: {INSTALL})")
    return exe


def say(text: str, folder: Path, rate: int = 16000, pad_s: float = 0.5) -> np.ndarray:
    """``text`` spoken by espeak-ng, resampled to ``rate``, with ``pad_s`` of silence each side: int16 mono."""
    wav = folder / (("_".join(text.split()) or "empty") + ".wav")
    subprocess.run([espeak_ng(), "-w", str(wav), text], check=True, capture_output=True, timeout=30)
    audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = soxr.resample(audio.mean(axis=1), sr, rate) if sr != rate else audio.mean(axis=1)
    pad = np.zeros(int(pad_s * rate), np.float32)
    x = np.concatenate([pad, mono.astype(np.float32), pad])
    return np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)


def write_clip(text: str, folder: Path, rate: int = 16000, pad_s: float = 0.5) -> Path:
    """``text`` spoken (see :func:`say`) and written as a 16-bit wav file; returns its path."""
    path = folder / (("_".join(text.split()) or "empty") + f"_{rate}.wav")
    sf.write(str(path), say(text, folder, rate, pad_s), rate, subtype="PCM_16")
    return path
