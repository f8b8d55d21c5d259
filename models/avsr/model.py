"""Our audio-visual CTC model: Kaldi fbank + mouth crops, early fusion, chunked Conformer, character CTC.

Timing: one model frame every 40 ms (25 fps, the video rate). Model frame ``k`` of an utterance that
starts at sample ``s`` is fbank frames ``4k .. 4k + 3`` of the audio from ``s`` (Kaldi fbank, 25 ms windows
every 10 ms, int16-range input; stacked into one 4 * n_mels vector) and the video frame nearest to the
frame's instant ``s + 640 k`` (at most :data:`FRAME_SAMPLES` away; none: no face). Trailing fbank frames
that do not fill a model frame are dropped.

Per frame: the audio embedding (global mean/variance normalisation with the ``feat_mean``/``feat_std``
buffers set from training data, Linear, LayerNorm), the video embedding (a small per-frame 2D CNN over the
96x96 grayscale mouth, pixels normalised as (x/255 - 0.421)/0.165; no temporal look-ahead; zeroed where
there is no face) and a 0/1 face-present feature are concatenated and projected to ``d_model`` (early
fusion). In training, modality dropout zeroes a whole example's video (and its face-present feature) or
its audio now and then, so the model also works with only one of them. Then a
:class:`~kikimimi.models.avsr.conformer.ConformerStack` and a linear CTC head over the character
vocabulary: blank = 0, then the characters of ``AvConfig.vocab`` (space, apostrophe, a-z).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kikimimi.engine.errors import ParamError
from kikimimi.engine.msgs.vision import MOUTH_SIZE
from kikimimi.models.avsr.conformer import ConformerStack, LayerCache

VOCAB = " 'abcdefghijklmnopqrstuvwxyz"
"""The characters after the CTC blank (id 0): id i + 1 is ``VOCAB[i]``."""
BLANK = 0
STACK = 4
"""Fbank frames (10 ms hops) per model frame (40 ms, the 25 fps video period)."""
FBANK_HOP = 160
FRAME_SAMPLES = STACK * FBANK_HOP
"""Samples of one model frame at 16 kHz (640)."""
SAMPLE_RATE = 16000
INT16_SCALE = 32768.0
PIXEL_MEAN, PIXEL_STD = 0.421, 0.165


@dataclass(frozen=True)
class AvConfig:
    """Hyper-parameters of :class:`AvCtcModel` (JSON-serialisable with :meth:`to_dict`).

    ``chunk_frames``: model frames per streaming chunk (the look-ahead: 8 = 320 ms); ``left_chunks``:
    previous chunks each layer's attention sees; ``modality_dropout``: probability (training only) that an
    example loses its video or (when it has a face) its audio, half each.
    """

    n_mels: int = 80
    d_model: int = 144
    n_heads: int = 4
    n_layers: int = 6
    ff_mult: int = 4
    conv_kernel: int = 15
    chunk_frames: int = 8
    left_chunks: int = 4
    video_channels: int = 32
    dropout: float = 0.1
    modality_dropout: float = 0.2
    vocab: str = VOCAB

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                raise ParamError(f"AvConfig.{f.name}={value!r} is not allowed; allowed: an int")
            if f.type == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not 0.0 <= value < 1.0):
                raise ParamError(f"AvConfig.{f.name}={value!r} is not allowed; allowed: a number in [0, 1)")
        for name in ("n_mels", "d_model", "n_heads", "n_layers", "ff_mult", "conv_kernel", "chunk_frames",
                     "video_channels"):
            if getattr(self, name) < 1:
                raise ParamError(f"AvConfig.{name}={getattr(self, name)} is not allowed; allowed: >= 1")
        if self.left_chunks < 0:
            raise ParamError(f"AvConfig.left_chunks={self.left_chunks} is not allowed; allowed: >= 0")
        if self.d_model % self.n_heads:
            raise ParamError(f"AvConfig.d_model={self.d_model} is not a multiple of n_heads={self.n_heads}")
        v = self.vocab
        if (not isinstance(v, str) or " " not in v or len(set(v)) != len(v) or v != v.lower()
                or any(c.isspace() and c != " " for c in v)):
            raise ParamError(f"AvConfig.vocab={v!r} is not allowed; allowed: distinct lowercase characters "
                             "including the space")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> AvConfig:
        """Build from :meth:`to_dict`'s output; unknown or missing keys raise ParamError naming them."""
        if not isinstance(data, dict):
            raise ParamError(f"AvConfig must come from a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - names), sorted(names - set(data))
        if unknown or missing:
            raise ParamError(f"AvConfig keys do not match: unknown {unknown}, missing {missing}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------- text
_SPACES = re.compile(r" +")


def normalize_text(text: str, vocab: str = VOCAB) -> str:
    """Lowercase, whitespace to single spaces, characters outside ``vocab`` dropped, spaces collapsed."""
    t = "".join(" " if c.isspace() else c for c in text.lower())
    t = "".join(c for c in t if c in vocab)
    return _SPACES.sub(" ", t).strip()


def encode_text(text: str, vocab: str = VOCAB) -> list[int]:
    """Token ids (1-based, blank = 0 never appears) of the normalised ``text``."""
    return [vocab.index(c) + 1 for c in normalize_text(text, vocab)]


def decode_ids(ids: list[int] | np.ndarray, vocab: str = VOCAB) -> str:
    """Text of token ids (blanks skipped, no CTC collapse), spaces collapsed and stripped."""
    chars = []
    for i in ids:
        i = int(i)
        if i < 0 or i > len(vocab):
            raise ParamError(f"token id {i} is not allowed; allowed: 0 (blank) to {len(vocab)}")
        if i != BLANK:
            chars.append(vocab[i - 1])
    return _SPACES.sub(" ", "".join(chars)).strip()


def ctc_collapse(frame_ids: np.ndarray) -> list[tuple[int, int, int]]:
    """Greedy CTC path -> tokens: (id, first frame, last frame) of each run of one non-blank id."""
    out: list[tuple[int, int, int]] = []
    prev = BLANK
    for f, i in enumerate(np.asarray(frame_ids).tolist()):
        if i != BLANK:
            if i == prev:
                tok, first, _ = out[-1]
                out[-1] = (tok, first, f)
            else:
                out.append((i, f, f))
        prev = i
    return out


@dataclass(frozen=True)
class CtcWord:
    """A word of a greedy CTC path: its text, the first frame of its first character and the last frame of its
    last one, and the first frame of the space token after it (None while no space has followed)."""

    text: str
    first: int
    last: int
    space: int | None


def ctc_words(frame_ids: np.ndarray, vocab: str = VOCAB) -> list[CtcWord]:
    """The words of a greedy CTC path (per-frame argmax ids), split at space tokens."""
    space = vocab.index(" ") + 1
    words: list[CtcWord] = []
    chars: list[tuple[int, int, int]] = []
    for tok in ctc_collapse(frame_ids):
        if tok[0] != space:
            chars.append(tok)
        elif chars:
            words.append(CtcWord("".join(vocab[t - 1] for t, _, _ in chars), chars[0][1], chars[-1][2], tok[1]))
            chars = []
    if chars:
        words.append(CtcWord("".join(vocab[t - 1] for t, _, _ in chars), chars[0][1], chars[-1][2], None))
    return words


def greedy_text(log_probs: np.ndarray | Tensor, vocab: str = VOCAB) -> str:
    """Greedy CTC transcript of (T, V) log-probabilities."""
    lp = log_probs.detach().cpu().numpy() if isinstance(log_probs, Tensor) else np.asarray(log_probs)
    return decode_ids([t for t, _, _ in ctc_collapse(lp.argmax(axis=-1))], vocab)


# ---------------------------------------------------------------------------------------------- pairing
def stack_fbank(fbank: np.ndarray) -> np.ndarray:
    """(n, n_mels) fbank -> (n // 4, 4 * n_mels): model frame k = fbank frames 4k..4k+3 (remainder dropped)."""
    n = fbank.shape[0] // STACK
    return np.ascontiguousarray(fbank[:n * STACK].reshape(n, STACK * fbank.shape[1]), dtype=np.float32)


def nearest_video(video_samples: np.ndarray, instants: np.ndarray, max_dist: int = FRAME_SAMPLES) -> np.ndarray:
    """For each instant, the index into the sorted ``video_samples`` of the nearest frame (the earlier on a
    tie), or -1 when none lies within ``max_dist`` samples."""
    vs = np.asarray(video_samples, np.int64)
    inst = np.asarray(instants, np.int64)
    if vs.size == 0:
        return np.full(inst.shape, -1, np.int64)
    right = np.clip(np.searchsorted(vs, inst, side="left"), 0, vs.size - 1)
    left = np.clip(right - 1, 0, vs.size - 1)
    take_left = np.abs(inst - vs[left]) <= np.abs(vs[right] - inst)
    idx = np.where(take_left, left, right)
    return np.where(np.abs(vs[idx] - inst) <= max_dist, idx, -1)


def model_inputs(fbank: np.ndarray, mouths: np.ndarray, has_face: np.ndarray, frame_samples: np.ndarray,
                 start_sample: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-utterance inputs: (stacked fbank (T, 4 n_mels) float32, mouths (T, 96, 96) uint8, face present
    (T,) float32) for fbank computed from ``start_sample`` and video frames at ``frame_samples``."""
    audio = stack_fbank(fbank)
    n = audio.shape[0]
    idx = nearest_video(frame_samples, start_sample + FRAME_SAMPLES * np.arange(n))
    ok = idx >= 0
    present = np.where(ok, np.asarray(has_face, bool)[np.maximum(idx, 0)], False) if len(has_face) else ok
    out = np.zeros((n, MOUTH_SIZE, MOUTH_SIZE), np.uint8)
    out[present] = mouths[idx[present]]
    return audio, out, present.astype(np.float32)


# ---------------------------------------------------------------------------------------------- network
class MouthCnn(nn.Module):
    """Per-frame 2D CNN: (N, 96, 96) uint8 or float pixels -> (N, d_model); four stride-2 convs, 2x2 average
    pooling to 3x3, Linear, LayerNorm."""

    def __init__(self, channels: int, d_model: int) -> None:
        super().__init__()
        c = channels
        self.convs = nn.ModuleList([nn.Conv2d(1, c, 5, 2, 2), nn.Conv2d(c, 2 * c, 3, 2, 1),
                                    nn.Conv2d(2 * c, 2 * c, 3, 2, 1), nn.Conv2d(2 * c, 4 * c, 3, 2, 1)])
        self.proj = nn.Linear(4 * c * 9, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, pixels: Tensor) -> Tensor:
        x = (pixels.to(torch.float32)[:, None] / 255.0 - PIXEL_MEAN) / PIXEL_STD
        for conv in self.convs:
            x = F.gelu(conv(x))
        x = F.avg_pool2d(x, 2).flatten(1)
        return self.norm(self.proj(x))


class AvCtcModel(nn.Module):
    """The audio-visual CTC model (see the module docstring). Inputs per model frame: ``audio`` (B, T, 4 n_mels)
    stacked raw fbank, ``mouths`` (B, T, 96, 96) uint8, ``present`` (B, T) float 0/1."""

    def __init__(self, config: AvConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.d_model
        self.register_buffer("feat_mean", torch.zeros(c.n_mels))
        self.register_buffer("feat_std", torch.ones(c.n_mels))
        self.audio_proj = nn.Linear(STACK * c.n_mels, d)
        self.audio_norm = nn.LayerNorm(d)
        self.video = MouthCnn(c.video_channels, d)
        self.fuse = nn.Linear(2 * d + 1, d)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = ConformerStack(d, c.n_heads, c.n_layers, c.ff_mult, c.conv_kernel, c.chunk_frames,
                                      c.left_chunks, c.dropout)
        self.head = nn.Linear(d, len(c.vocab) + 1)

    @property
    def vocab_size(self) -> int:
        return len(self.config.vocab) + 1

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Set the per-bin fbank mean and standard deviation (floored at 1e-3) used to normalise audio."""
        n = self.config.n_mels
        if np.shape(mean) != (n,) or np.shape(std) != (n,):
            raise ParamError(f"normalisation needs ({n},) mean and std, got {np.shape(mean)} and {np.shape(std)}")
        self.feat_mean.copy_(torch.as_tensor(np.asarray(mean, np.float32)))
        self.feat_std.copy_(torch.as_tensor(np.maximum(np.asarray(std, np.float32), 1e-3)))

    def embed(self, audio: Tensor, mouths: Tensor, present: Tensor) -> Tensor:
        """Fused per-frame embeddings (B, T, d_model); applies modality dropout in training mode."""
        b, t, _ = audio.shape
        n_mels = self.config.n_mels
        a = ((audio.view(b, t, STACK, n_mels) - self.feat_mean) / self.feat_std).view(b, t, STACK * n_mels)
        a = self.audio_norm(self.audio_proj(a))
        present = present.to(a.dtype)
        if self.training and self.config.modality_dropout > 0:
            r = torch.rand(b, device=a.device)
            p = self.config.modality_dropout
            drop_video = r < p / 2
            drop_audio = (r >= p / 2) & (r < p) & (present.sum(1) > 0)
            present = present * (~drop_video).to(a.dtype)[:, None]
            a = a * (~drop_audio).to(a.dtype)[:, None, None]
        flat = present.reshape(-1)
        v = torch.zeros(b * t, a.shape[-1], device=a.device, dtype=a.dtype)
        rows = torch.nonzero(flat > 0).reshape(-1)
        if rows.numel():
            v[rows] = self.video(mouths.reshape(b * t, MOUTH_SIZE, MOUTH_SIZE)[rows])
        x = torch.cat([a, v.view(b, t, -1), present[..., None]], dim=-1)
        return self.drop(self.fuse(x))

    def forward(self, audio: Tensor, mouths: Tensor, present: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Log-probabilities (B, T, vocab_size) of whole (padded) utterances, with the streaming chunk mask."""
        h = self.encoder(self.embed(audio, mouths, present), lengths)
        return torch.log_softmax(self.head(h), dim=-1)

    def init_cache(self, batch: int = 1, device: torch.device | str = "cpu") -> list[LayerCache]:
        return self.encoder.init_cache(batch, device)

    def forward_chunk(self, audio: Tensor, mouths: Tensor, present: Tensor,
                      cache: list[LayerCache]) -> tuple[Tensor, list[LayerCache]]:
        """Log-probabilities of one chunk (B, n <= chunk_frames, ...) after ``cache``; returns (log-probs, cache)."""
        h, cache = self.encoder.forward_chunk(self.embed(audio, mouths, present), cache)
        return torch.log_softmax(self.head(h), dim=-1), cache
