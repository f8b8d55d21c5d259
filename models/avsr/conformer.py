"""Conformer layers for chunked streaming: the same numbers whole-sequence (with a chunk mask) and chunk by chunk.

Each :class:`ConformerLayer` is: half-step feed-forward, multi-head self-attention, convolution module,
half-step feed-forward, final LayerNorm (Gulati et al. 2020), made streaming-safe:

* Attention sees a **chunk mask**: frame ``t`` of chunk ``c = t // chunk`` attends to every frame of its own
  chunk (no look-ahead past the chunk's end) and of at most ``left_chunks`` previous chunks.
* Positions come only from a learned per-head **relative bias** indexed by the distance ``query - key``
  (clipped to the distances the mask allows), and from the causal convolution: no absolute positions, so
  a frame's output does not depend on where the stream started being decoded.
* The convolution module (pointwise conv + GLU, depthwise conv, LayerNorm, SiLU, pointwise conv) uses a
  **causal** depthwise conv (left-padded with zeros only) and LayerNorm instead of BatchNorm.

:meth:`ConformerStack.forward` runs a padded batch of whole sequences; :meth:`ConformerStack.forward_chunk`
runs one chunk with a :class:`LayerCache` per layer (the attention keys/values of the last
``left_chunks * chunk`` frames and the depthwise conv's last ``kernel - 1`` inputs) and returns the new
caches. Chained ``forward_chunk`` calls over chunks of ``chunk`` frames (the last one may be shorter) give
the whole-sequence outputs up to float rounding.

Because every layer looks back, the stack's receptive field grows with depth:
:func:`earliest_dependency` gives the first input frame a chunk's output can depend on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kikimimi.engine.errors import ParamError


class LayerCache(NamedTuple):
    """Streaming state of one layer: keys/values (B, heads, m, d_head) of the last m <= left_chunks * chunk
    frames, and the depthwise conv's last ``kernel - 1`` inputs (B, d_model, kernel - 1)."""

    key: Tensor
    value: Tensor
    conv: Tensor


def chunk_mask(n: int, chunk: int, left_chunks: int, device: torch.device | None = None) -> Tensor:
    """Bool (n, n): ``mask[q, k]`` is true when query frame q may attend to key frame k (same chunk, or one
    of the ``left_chunks`` chunks before)."""
    c = torch.arange(n, device=device) // chunk
    diff = c[:, None] - c[None, :]
    return (diff >= 0) & (diff <= left_chunks)


def earliest_dependency(first_frame: int, chunk: int, left_chunks: int, kernel: int, layers: int) -> int:
    """The first input frame that the stack's outputs at frames >= ``first_frame`` can depend on.

    Per layer, the conv at frame t reads the attention outputs of frames t - kernel + 1 .. t, and those
    attend back to the start of their chunk minus ``left_chunks`` chunks; the per-frame parts add nothing.
    """
    a = first_frame
    for _ in range(layers):
        a = max(a - kernel + 1, 0)
        a = max((a // chunk - left_chunks) * chunk, 0)
    return a


class FeedForward(nn.Module):
    """Pre-norm feed-forward: LayerNorm, Linear (x ff_mult), SiLU, dropout, Linear, dropout."""

    def __init__(self, d_model: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.up = nn.Linear(d_model, d_model * ff_mult)
        self.down = nn.Linear(d_model * ff_mult, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.down(self.drop(F.silu(self.up(self.norm(x))))))


class ChunkAttention(nn.Module):
    """Multi-head self-attention with a per-head relative position bias over distances [-(chunk-1), max_left]."""

    def __init__(self, d_model: int, n_heads: int, chunk: int, left_chunks: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.chunk = chunk
        self.max_left = (left_chunks + 1) * chunk - 1          # the longest distance back the mask allows
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rel_bias = nn.Parameter(torch.zeros(n_heads, chunk + self.max_left))
        self.drop = nn.Dropout(dropout)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """(heads, nq, nk) bias for query positions ``q_pos`` and key positions ``k_pos``."""
        dist = (q_pos[:, None] - k_pos[None, :]).clamp(-(self.chunk - 1), self.max_left)
        return self.rel_bias[:, dist + self.chunk - 1]

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, allowed: Tensor | None) -> Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d_head) + bias
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        ctx = torch.matmul(self.drop(torch.softmax(scores, dim=-1)), v)
        b, _, n, _ = ctx.shape
        return self.drop(self.out(ctx.transpose(1, 2).reshape(b, n, -1)))

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """Attention over whole sequences; ``allowed`` bool (B, 1, n, n) or (1, 1, n, n)."""
        q, k, v = self._project(x)
        pos = torch.arange(x.shape[1], device=x.device)
        return self._attend(q, k, v, self._bias(pos, pos), allowed)

    def forward_chunk(self, x: Tensor, key: Tensor, value: Tensor, keep: int) -> tuple[Tensor, Tensor, Tensor]:
        """Attention of one chunk over the cached keys/values and itself; returns (out, keys, values) where
        the new keys/values are the last ``keep`` frames."""
        q, k, v = self._project(x)
        k = torch.cat([key, k], dim=2)
        v = torch.cat([value, v], dim=2)
        m, n = key.shape[2], x.shape[1]
        pos = torch.arange(-m, n, device=x.device)
        out = self._attend(q, k, v, self._bias(pos[m:], pos), None)
        start = max(k.shape[2] - keep, 0)
        return out, k[:, :, start:], v[:, :, start:]


class CausalConvModule(nn.Module):
    """Pointwise conv + GLU, causal depthwise conv, LayerNorm, SiLU, pointwise conv, dropout (pre-norm)."""

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.conv_norm = nn.LayerNorm(d_model)
        self.pw2 = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def _tail(self, y: Tensor) -> Tensor:
        return self.drop(self.pw2(F.silu(self.conv_norm(y.transpose(1, 2)))))

    def forward(self, x: Tensor) -> Tensor:
        h = F.glu(self.pw1(self.norm(x)), dim=-1).transpose(1, 2)          # (B, d, n)
        return self._tail(self.depthwise(F.pad(h, (self.kernel - 1, 0))))

    def forward_chunk(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One chunk with the previous ``kernel - 1`` depthwise inputs ``state``; returns (out, new state)."""
        h = torch.cat([state, F.glu(self.pw1(self.norm(x)), dim=-1).transpose(1, 2)], dim=2)
        return self._tail(self.depthwise(h)), h[:, :, h.shape[2] - (self.kernel - 1):]


class ConformerLayer(nn.Module):
    """One Conformer block: x + FFN/2, x + MHSA, x + Conv, x + FFN/2, LayerNorm."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, kernel: int, chunk: int, left_chunks: int,
                 dropout: float) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_mult, dropout)
        self.attn = ChunkAttention(d_model, n_heads, chunk, left_chunks, dropout)
        self.conv = CausalConvModule(d_model, kernel, dropout)
        self.ff2 = FeedForward(d_model, ff_mult, dropout)
        self.final_norm = nn.LayerNorm(d_model)
        self.keep = left_chunks * chunk

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, allowed)
        x = x + self.conv(x)
        return self.final_norm(x + 0.5 * self.ff2(x))

    def forward_chunk(self, x: Tensor, cache: LayerCache) -> tuple[Tensor, LayerCache]:
        x = x + 0.5 * self.ff1(x)
        a, key, value = self.attn.forward_chunk(x, cache.key, cache.value, self.keep)
        x = x + a
        c, conv = self.conv.forward_chunk(x, cache.conv)
        x = x + c
        return self.final_norm(x + 0.5 * self.ff2(x)), LayerCache(key, value, conv)


class ConformerStack(nn.Module):
    """``n_layers`` :class:`ConformerLayer` run whole (chunk-masked) or chunk by chunk with caches."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int, ff_mult: int, kernel: int, chunk: int,
                 left_chunks: int, dropout: float) -> None:
        super().__init__()
        checks = {"d_model": (d_model, 1), "n_heads": (n_heads, 1), "n_layers": (n_layers, 1),
                  "ff_mult": (ff_mult, 1), "conv_kernel": (kernel, 1), "chunk_frames": (chunk, 1),
                  "left_chunks": (left_chunks, 0)}
        for name, (value, least) in checks.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ParamError(f"Conformer {name}={value!r} is not allowed; allowed: an int >= {least}")
        if d_model % n_heads:
            raise ParamError(f"Conformer d_model={d_model} is not a multiple of n_heads={n_heads}")
        self.d_model, self.n_heads, self.kernel = d_model, n_heads, kernel
        self.chunk, self.left_chunks = chunk, left_chunks
        self.layers = nn.ModuleList(ConformerLayer(d_model, n_heads, ff_mult, kernel, chunk, left_chunks, dropout)
                                    for _ in range(n_layers))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, n, d_model) -> (B, n, d_model) with the chunk mask; frames at or past ``lengths[b]`` are padding
        (no valid frame attends to them; their own outputs are meaningless)."""
        n = x.shape[1]
        allowed = chunk_mask(n, self.chunk, self.left_chunks, x.device)[None, None]
        if lengths is not None:
            pos = torch.arange(n, device=x.device)
            valid_key = pos[None, :] < lengths.to(x.device)[:, None]                     # (B, n)
            # a padding query keeps itself so that no row is fully masked (no NaN anywhere)
            allowed = allowed & (valid_key[:, None, None, :] | torch.eye(n, dtype=torch.bool, device=x.device))
        for layer in self.layers:
            x = layer(x, allowed)
        return x

    def init_cache(self, batch: int = 1, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> list[LayerCache]:
        """Caches for the start of a sequence: no keys, zero conv history (the whole pass's zero padding)."""
        d_head = self.d_model // self.n_heads
        empty = torch.zeros(batch, self.n_heads, 0, d_head, device=device, dtype=dtype)
        conv = torch.zeros(batch, self.d_model, self.kernel - 1, device=device, dtype=dtype)
        return [LayerCache(empty, empty, conv) for _ in self.layers]

    def forward_chunk(self, x: Tensor, cache: list[LayerCache]) -> tuple[Tensor, list[LayerCache]]:
        """One chunk (B, n <= chunk, d_model) after the frames summarised by ``cache``; returns (out, new cache).

        Every chunk but a sequence's last must have exactly ``chunk`` frames, or later chunks would not
        line up with the whole-sequence chunk mask.
        """
        if x.shape[1] > self.chunk or x.shape[1] < 1:
            raise ParamError(f"forward_chunk got {x.shape[1]} frames; allowed: 1 to chunk_frames={self.chunk}")
        if len(cache) != len(self.layers):
            raise ParamError(f"forward_chunk got {len(cache)} layer caches for {len(self.layers)} layers")
        new: list[LayerCache] = []
        for layer, c in zip(self.layers, cache, strict=True):
            x, c2 = layer.forward_chunk(x, c)
            new.append(c2)
        return x, new
