"""Train the chunked AV Conformer-CTC on a folder of (video, transcript) pairs.

Usage::

    python -m kikimimi.models.avsr.train DATA_DIR --out CKPT_DIR [--epochs N --lr LR --d-model D --layers L
        --heads H --chunk-frames C --left-chunks K --seed S --threads T --max-steps N --log-every N
        --segment vad|whole --vad-param NAME=VALUE ...]

Data: :class:`~kikimimi.models.avsr.data.AvDataset` (features cached per clip): by default (``--segment
vad``) each clip's span from our VAD's first SPEECH_START to its last SPEECH_END, with the features the
``avsr`` node's stream computes for that utterance in the graph; ``--segment whole``: the whole clip, as a
stream decodes it from ``begin(0)`` to ``endpoint(len)``. The fbank normalisation
(per-bin mean and deviation) is taken from the training clips. Each step: a shuffled mini-batch, the
whole-sequence forward with the same chunk mask the streaming decoder uses (so training and streaming
compute the same function), CTC loss (blank 0, ``zero_infinity``), AdamW with a linear warm-up, gradient
clipping, and modality dropout inside the model. Seeded (torch, and numpy for the shuffling), so a run on
the same data and thread count repeats. The loss is logged every ``log_every`` steps; at the end the
checkpoint goes to ``out_dir`` and the weights of the epoch with the lowest mean loss to ``out_dir/best``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.models.avsr.checkpoint import save_checkpoint
from kikimimi.models.avsr.data import SEGMENTS, AvDataset, ClipFeatures
from kikimimi.models.avsr.model import AvConfig, AvCtcModel, encode_text

log = logging.getLogger("kikimimi.avsr.train")


@dataclass(frozen=True)
class TrainResult:
    """What a run did: where the checkpoint is, steps, seconds, per-step losses, and the best epoch loss."""

    out_dir: Path
    steps: int
    epochs: int
    seconds: float
    final_loss: float
    best_loss: float
    n_clips: int
    n_skipped: int
    losses: list[float] = field(default_factory=list)


def collate(clips: list[ClipFeatures], vocab: str) -> dict[str, torch.Tensor]:
    """A padded batch: audio (B, T, 4 n_mels), mouths (B, T, 96, 96) uint8, present (B, T), lengths (B,),
    targets (sum of L) and target_lengths (B,)."""
    inputs = [c.inputs() for c in clips]
    lengths = [a.shape[0] for a, _, _ in inputs]
    b, t = len(clips), max(lengths)
    audio = np.zeros((b, t, inputs[0][0].shape[1]), np.float32)
    mouths = np.zeros((b, t, *inputs[0][1].shape[1:]), np.uint8)
    present = np.zeros((b, t), np.float32)
    for i, (a, m, p) in enumerate(inputs):
        audio[i, :len(a)], mouths[i, :len(a)], present[i, :len(a)] = a, m, p
    targets = [encode_text(c.text, vocab) for c in clips]
    return {"audio": torch.from_numpy(audio), "mouths": torch.from_numpy(mouths),
            "present": torch.from_numpy(present), "lengths": torch.tensor(lengths),
            "targets": torch.tensor([i for t_ in targets for i in t_]),
            "target_lengths": torch.tensor([len(t_) for t_ in targets])}


def ctc_loss(model: AvCtcModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean CTC loss of a batch (per target character, as ``F.ctc_loss`` reduction "mean")."""
    lp = model(batch["audio"], batch["mouths"], batch["present"], batch["lengths"])
    return F.ctc_loss(lp.transpose(0, 1), batch["targets"], batch["lengths"], batch["target_lengths"],
                      blank=0, reduction="mean", zero_infinity=True)


def train(data_dir: str | Path, out_dir: str | Path, config: AvConfig | None = None, epochs: int = 30,
          lr: float = 1e-3, batch_size: int = 8, seed: int = 0, threads: int = 1, max_steps: int | None = None,
          log_every: int = 10, weight_decay: float = 1e-2, clip_norm: float = 5.0, warmup_steps: int = 10,
          cache_dir: str | Path | None = None, segment: str = "vad",
          vad_params: dict[str, Any] | None = None) -> TrainResult:
    """Train on ``data_dir`` and save to ``out_dir``; see the module docstring. ``segment`` and ``vad_params``:
    see :class:`~kikimimi.models.avsr.data.AvDataset`."""
    config = config or AvConfig()
    for name, value, least in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("threads", threads, 1),
                               ("log_every", log_every, 1), ("warmup_steps", warmup_steps, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ParamError(f"{name}={value!r} is not allowed; allowed: an int >= {least}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ParamError(f"max_steps={max_steps!r} is not allowed; allowed: None or an int >= 1")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ParamError(f"lr={lr!r} is not allowed; allowed: a positive number")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    data = AvDataset(data_dir, cache_dir, config.n_mels, config.vocab, segment=segment, vad_params=vad_params)
    log.info("%d clips (%d skipped, segment %s), %.1f s of features", len(data), len(data.skipped), segment,
             time.perf_counter() - t0)

    model = AvCtcModel(config)
    frames = np.concatenate([c.fbank for c in data.items])
    model.set_normalisation(frames.mean(axis=0), frames.std(axis=0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    model.train()
    losses: list[float] = []
    best, best_state, best_epoch = math.inf, copy.deepcopy(model.state_dict()), 0
    step, epoch = 0, 0
    t_train = time.perf_counter()
    while epoch < epochs and (max_steps is None or step < max_steps):
        order = rng.permutation(len(data))
        epoch_losses = []
        for i in range(0, len(order), batch_size):
            batch = collate([data[int(j)] for j in order[i:i + batch_size]], config.vocab)
            loss = ctc_loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            epoch_losses.append(losses[-1])
            if step % log_every == 0:
                log.info("step %d epoch %d loss %.4f (%.1f s)", step, epoch + 1, losses[-1],
                         time.perf_counter() - t_train)
            if max_steps is not None and step >= max_steps:
                break
        epoch += 1
        mean = float(np.mean(epoch_losses))
        if mean < best:
            best, best_state, best_epoch = mean, copy.deepcopy(model.state_dict()), epoch
    seconds = time.perf_counter() - t_train
    model.eval()
    info = {"steps": step, "epochs": epoch, "seconds": round(seconds, 3), "final_loss": losses[-1],
            "best_loss": best, "best_epoch": best_epoch, "lr": lr, "batch_size": batch_size, "seed": seed,
            "threads": threads, "data_dir": str(data_dir), "clips": [c.path.name for c in data.items],
            "segment": segment, "vad_params": dict(vad_params or {}),
            "spans": [[c.start_sample, c.end_sample] for c in data.items]}
    out = Path(out_dir)
    save_checkpoint(model, out, info)
    best_model = AvCtcModel(config)
    best_model.load_state_dict(best_state)
    save_checkpoint(best_model, out / "best", {**info, "weights": f"epoch {best_epoch} (lowest mean loss)"})
    log.info("saved %s after %d steps in %.1f s: loss %.4f, best epoch loss %.4f", out, step, seconds,
             losses[-1], best)
    return TrainResult(out, step, epoch, seconds, losses[-1], best, len(data), len(data.skipped), losses)


def _vad_param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main(argv: list[str] | None = None) -> int:
    d = AvConfig()
    p = argparse.ArgumentParser(prog="python -m kikimimi.models.avsr.train", description=__doc__.split("\n")[0])
    p.add_argument("data_dir", type=Path, help="folder of videos with same-stem .txt transcripts")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--d-model", type=int, default=d.d_model)
    p.add_argument("--layers", type=int, default=d.n_layers)
    p.add_argument("--heads", type=int, default=d.n_heads)
    p.add_argument("--chunk-frames", type=int, default=d.chunk_frames, help="model frames (40 ms) per chunk")
    p.add_argument("--left-chunks", type=int, default=d.left_chunks)
    p.add_argument("--video-channels", type=int, default=d.video_channels)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/kikimimi/avsr)")
    p.add_argument("--segment", choices=SEGMENTS, default="vad",
                   help="vad: train on the span our VAD finds in each clip, as the avsr node decodes it (default); "
                        "whole: on the whole clip")
    p.add_argument("--vad-param", action="append", default=[], metavar="NAME=VALUE", type=_vad_param,
                   help="a vad node parameter of the graph the model will run in (repeatable; default: the vad "
                        "node's defaults, as in launch/av.yaml), e.g. --vad-param min_silence_ms=300")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = replace(d, d_model=a.d_model, n_layers=a.layers, n_heads=a.heads, chunk_frames=a.chunk_frames,
                         left_chunks=a.left_chunks, video_channels=a.video_channels, dropout=a.dropout)
        r = train(a.data_dir, a.out, config, a.epochs, a.lr, a.batch_size, a.seed, a.threads, a.max_steps,
                  a.log_every, cache_dir=a.cache_dir, segment=a.segment, vad_params=dict(a.vad_param))
    except KikimimiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{r.out_dir}: {r.steps} steps, {r.epochs} epochs, {r.seconds:.1f} s, final loss {r.final_loss:.4f}, "
          f"best epoch loss {r.best_loss:.4f}, {r.n_clips} clips ({r.n_skipped} skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
