"""External audio-visual recognizers: transformers remote-code checkpoints (AVista style) in a local directory.

:func:`load_external_av` loads ``AutoProcessor`` and ``AutoModelForSpeechSeq2Seq`` with
``trust_remote_code=True, local_files_only=True``; the directory needs ``config.json`` whose ``auto_map``
names the model class and an ``AutoProcessor`` ``auto_map`` entry in one of :data:`PROCESSOR_FILES`. A
decode calls the processor with the RAW audio (float32 16 kHz, 1-D) and the RAW mouth frames (uint8
(T, 96, 96) gray at the model's frame rate; (T, 96, 96, 3) when ``video_channels`` is 3), under the first
of :data:`AUDIO_ARGS` / :data:`VIDEO_ARGS` its ``__call__`` takes (AVista: ``raw_audio`` / ``raw_video``,
whose extractor converts numpy frames from BGR to gray, so ``raw_video`` gets 3 channels), plus
``sampling_rate`` and ``return_tensors="pt"`` when it takes them; then ``model.generate(**inputs)`` and
``processor.batch_decode(..., skip_special_tokens=True)``. :class:`ExternalAvOptions` fields can be set in
``kikimimi_avsr.json`` in the directory; keyword arguments override the file.

:class:`ExternalAvStream` drives it chunk by chunk with the ASR node's policy (StreamPolicy, LocalAgreement, a
shared AdaptiveInterval) as the Whisper stream does. It keeps an audio ring (``policy.ring_s``) and a deque
of ``(sample_index, mouth)`` frames and re-decodes the window from the utterance start to the newest audio
every interval. Video is aligned by sample index: slot ``i`` of a window from ``a`` (instant ``a + i * rate /
fps``) takes the newest frame before the slot's midpoint if at most :data:`HOLD_S` older; no frame, or None
(no face), gives a zero crop. From ``commit_after_s`` on, LocalAgreement commits the characters on which the
newest hypothesis and one ``agreement_gap_s`` older agree, ending before a space (anywhere for unspaced
languages). A window longer than ``max_window_s`` is decoded to that length, its text committed ("advance").
The final decode at the endpoint holds the whole text: for an utterance up to ``max_window_s``, one
processor + generate over all of it. A hypothesis contradicting the committed text (counted in
``conflicts``) keeps that text and appends what follows its aligned end. Words: generate gives no timings,
so each window's final text is split on spaces into words with equal, evenly spread sample spans (confidence
1.0), unless generate returns a mapping with ``word_timings`` (per item: ``(word, start_s, end_s)`` lists).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.engine.errors import KikimimiError, MissingDependency, ParamError
from kikimimi.engine.jsonio import read_json_object
from kikimimi.engine.msgs.speech import Word
from kikimimi.engine.msgs.vision import MOUTH_SIZE
from kikimimi.engine.ring import AudioRing
from kikimimi.models.asr.policy import AdaptiveInterval, LocalAgreement, StreamPolicy
from kikimimi.models.asr.text import is_unspaced, tidy
from kikimimi.models.avsr.base import AvRecognizer, AvStream, Revision

log = logging.getLogger("kikimimi.avsr.external")

INSTALL = "pip install 'kikimimi[avsr]'"
TORCH_INSTALL = "pip install torch==2.13.0"
META = "kikimimi_avsr.json"
HOLD_S = 0.2
AUDIO_ARGS = ("raw_audio", "audio", "audios", "raw_speech", "speech", "input_values")
VIDEO_ARGS = ("raw_video", "video", "videos", "pixel_values", "lips")
MODEL_AUTO = "AutoModelForSpeechSeq2Seq"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json", "config.json")


class ExternalAvError(KikimimiError, ValueError):
    """An external AV model directory cannot be used; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class ExternalAvOptions:
    """Settings of an external AV model (defaults, then ``kikimimi_avsr.json``, then keyword arguments)."""

    language: str = "auto"                 # ISO code of the text; "auto": the config's "language", else ""
    max_window_s: float = 20.0             # longest window decoded at once
    min_interval_ms: int = 300             # partial decodes: AdaptiveInterval bounds and headroom
    max_interval_ms: int = 2000
    headroom: float = 2.0
    num_beams: int = 1
    max_new_tokens: int | None = None      # None: 24 + 16 per second of window
    audio_arg: str | None = None           # None: read from the processor's signature
    video_arg: str | None = None
    video_channels: int | None = None      # 1 or 3; None: 3 for "raw_video", else 1
    fps: float | None = None               # None: the config's "video_fps" / "fps", else 25
    policy: StreamPolicy = field(default_factory=StreamPolicy)


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, ExternalAvError)


def _check_dir(path: Path) -> dict[str, Any]:
    """The directory's config.json after checking the layout (no heavy imports)."""
    if not path.is_dir():
        raise ExternalAvError(f"AV model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise ExternalAvError(f"{path} has no config.json; an external AV model needs config.json with an "
                              f"auto_map entry for {MODEL_AUTO} (our chunked model has avsr.json instead)")
    config = _read_json(path / "config.json")
    if not isinstance(config.get("auto_map"), dict) or MODEL_AUTO not in config["auto_map"]:
        raise ExternalAvError(f"{path / 'config.json'} has no auto_map entry for {MODEL_AUTO}; allowed: "
                              "transformers remote-code models whose config maps it to their model class")
    maps = [_read_json(path / f).get("auto_map") for f in PROCESSOR_FILES if (path / f).is_file()]
    if not any(isinstance(m, dict) and "AutoProcessor" in m for m in maps):
        raise ExternalAvError(f"{path} has no auto_map entry for AutoProcessor (looked in "
                              f"{', '.join(PROCESSOR_FILES)})")
    return config


def load_external_av(path: str | Path, device: str = "cpu", threads: int = 1, **options: Any) -> ExternalAvRecognizer:
    """The transformers AV model in ``path``; ``options`` are :class:`ExternalAvOptions` fields."""
    path = Path(path).expanduser()
    config = _check_dir(path)
    names = {f.name for f in dataclasses.fields(ExternalAvOptions)}
    meta = _read_json(path / META) if (path / META).is_file() else {}
    unknown = sorted((set(meta) | set(options)) - names)
    if unknown:
        raise ParamError(f"{path}: unknown AV option {unknown[0]!r}; allowed: {', '.join(sorted(names))}")
    opts = dataclasses.replace(ExternalAvOptions(), **{**meta, **options})
    if isinstance(opts.policy, dict):
        opts = dataclasses.replace(opts, policy=StreamPolicy(**opts.policy))
    if device not in ("auto", "cpu", "cuda"):
        raise ParamError(f"device={device!r} is not allowed; allowed: auto, cpu, cuda")
    try:
        import torch
        import transformers
    except ImportError as exc:
        torch_missing = "torch" not in sys.modules
        raise MissingDependency("PyTorch (external AV models run on it)" if torch_missing else
                                "transformers (external AV models load through it)",
                                TORCH_INSTALL if torch_missing else INSTALL) from exc
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if threads > 0:
        torch.set_num_threads(threads)
    kw = {"trust_remote_code": True, "local_files_only": True}
    try:
        processor = transformers.AutoProcessor.from_pretrained(str(path), **kw)
        model = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(str(path), **kw).eval().to(device)
    except ImportError as exc:
        raise ExternalAvError(f"{path}: the model's own code could not be imported: {exc}") from exc
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ExternalAvError(f"{path}: transformers could not load the processor and model: {exc}") from exc
    return ExternalAvRecognizer(path, processor, model, torch, device, opts, config)


class ExternalAvRecognizer(AvRecognizer):
    """A transformers AV model and its processor; :meth:`transcribe` decodes one window."""

    def __init__(self, path: Path, processor: Any, model: Any, torch: Any, device: str, opts: ExternalAvOptions,
                 config: dict[str, Any]) -> None:
        self.name = f"external:{path.name}"
        self.processor, self.model, self.torch, self.device, self.opts = processor, model, torch, device, opts
        lang = config.get("language") if opts.language == "auto" else opts.language
        self.language = lang if isinstance(lang, str) else ""
        self.fps = opts.fps or config.get("video_fps") or config.get("fps") or 25.0
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or self.fps <= 0:
            raise ExternalAvError(f"{path}: fps={self.fps!r} is not allowed; allowed: a positive number")
        if opts.max_window_s <= 0 or opts.max_window_s > opts.policy.ring_s - 5:
            raise ParamError(f"max_window_s={opts.max_window_s} is not allowed; allowed: 0 < it <= ring_s - 5")
        self.max_window = int(opts.max_window_s * self.sample_rate)
        self.interval = AdaptiveInterval(max(1, opts.min_interval_ms // 10), max(1, opts.max_interval_ms // 10),
                                         opts.headroom)
        params = inspect.signature(processor.__call__).parameters
        named = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self.audio_arg = opts.audio_arg or next((a for a in AUDIO_ARGS if a in named), None)
        self.video_arg = opts.video_arg or next((a for a in VIDEO_ARGS if a in named), None)
        if self.audio_arg is None or self.video_arg is None:
            raise ExternalAvError(f"{path}: the processor {type(processor).__name__} takes none of "
                                  f"{AUDIO_ARGS if self.audio_arg is None else VIDEO_ARGS}; set audio_arg / "
                                  f"video_arg in {META}")
        self.video_channels = opts.video_channels or (3 if self.video_arg == "raw_video" else 1)
        if self.video_channels not in (1, 3):
            raise ParamError(f"video_channels={self.video_channels} is not allowed; allowed: 1, 3")
        self._extra = {k: v for k, v in (("sampling_rate", self.sample_rate), ("return_tensors", "pt"))
                       if k in named or var_kw}
        self.decodes = 0

    def new_stream(self) -> ExternalAvStream:
        return ExternalAvStream(self)

    def warmup(self) -> None:
        """Decode one second of silence with closed-mouth zero frames."""
        self.transcribe(np.zeros(self.sample_rate, np.float32), self.blank(round(self.fps)))

    def blank(self, n: int) -> np.ndarray:
        """``n`` zero mouth frames in the layout the processor gets."""
        shape = (n, MOUTH_SIZE, MOUTH_SIZE) + ((3,) if self.video_channels == 3 else ())
        return np.zeros(shape, np.uint8)

    def transcribe(self, audio: np.ndarray, video: np.ndarray) -> tuple[str, list[tuple[str, float, float]] | None]:
        """One processor + generate + batch_decode over a window: its text, and word timings if the model gave any."""
        torch = self.torch
        inputs = self.processor(**{self.audio_arg: audio, self.video_arg: video}, **self._extra)
        dtype = getattr(self.model, "dtype", None)
        feed = {k: (v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device))
                if torch.is_tensor(v) else v for k, v in inputs.items()}
        n_new = self.opts.max_new_tokens or int(24 + 16 * len(audio) / self.sample_rate)
        with torch.inference_mode():
            out = self.model.generate(**feed, num_beams=self.opts.num_beams, max_new_tokens=n_new)
        self.decodes += 1
        seqs, timings = (out, None) if torch.is_tensor(out) else (out["sequences"], out.get("word_timings"))
        decode = getattr(self.processor, "batch_decode", None) or self.processor.tokenizer.batch_decode
        text = decode(seqs[:1].cpu(), skip_special_tokens=True)[0]
        return str(text), (list(timings[0]) if timings else None)


def _cjk(text: str) -> bool:
    return any("\u3040" <= c <= "\u9fff" or "\u0e00" <= c <= "\u0eff" or "\uff00" <= c <= "\uffef" for c in text)


def _join(head: str, tail: str, unspaced: bool) -> str:
    """Two pieces of text: one space between them unless one is empty, unspaced, or they bring their own."""
    if not head or not tail or unspaced or head.endswith(" ") or tail.startswith(" "):
        return head + tail
    return head + " " + tail


def _aligned_end(prefix: str, text: str, unspaced: bool) -> int:
    """Where in ``text`` the end of ``prefix`` lies (by the last matching block), moved on to a word end."""
    blocks = [b for b in difflib.SequenceMatcher(None, prefix, text, autojunk=False).get_matching_blocks() if b.size]
    j = blocks[-1].b + blocks[-1].size + len(prefix) - blocks[-1].a - blocks[-1].size if blocks else len(prefix)
    j = min(j, len(text))
    while not unspaced and 0 < j < len(text) and text[j] != " ":
        j += 1
    return j


@dataclass(eq=False)
class _Utt:
    start: int
    agreement: LocalAgreement[str]
    buf_start: int
    last_decoded: int
    end: int | None = None
    unspaced: bool = False
    done: str = ""                 # text of the windows already decoded for good (advances)
    committed: str = ""            # committed text of the current window
    tail: str = ""                 # the newest hypothesis after the committed text
    words: list[Word] = field(default_factory=list)
    pub: tuple[str, str] = ("", "")


class ExternalAvStream(AvStream):
    """One stream of an :class:`ExternalAvRecognizer`; see the module docstring."""

    def __init__(self, rec: ExternalAvRecognizer) -> None:
        self.rec = rec
        self.rate, self.period = rec.sample_rate, rec.sample_rate / rec.fps
        self._ring_samples = int(rec.opts.policy.ring_s * self.rate)
        self.conflicts = self.video_late = 0     # video_late: frames not after the newest one held (ignored)
        self.reset()

    def reset(self) -> None:
        self._ring: AudioRing | None = None
        self._video: deque[tuple[int, np.ndarray | None]] = deque(maxlen=int(self.rec.opts.policy.ring_s * 120))
        self._utt: _Utt | None = None
        self._last: Revision | None = None
        self.utterance_open = False

    def accept_audio(self, samples: np.ndarray, sample_index: int) -> None:
        x = np.asarray(samples, np.float32).reshape(-1, 1)
        ring = self._ring
        if ring is None or sample_index < ring.oldest_index or sample_index > ring.write_index + ring.capacity // 2:
            ring = self._ring = AudioRing(self._ring_samples, 1, np.float32, start_index=sample_index)
        if sample_index > ring.write_index:                 # a gap: silence in its place
            ring.write(np.zeros((sample_index - ring.write_index, 1), np.float32))
        skip = ring.write_index - sample_index
        if skip < len(x):
            ring.write(x[skip:])

    def accept_video(self, mouth: np.ndarray | None, sample_index: int) -> None:
        if mouth is not None and (not isinstance(mouth, np.ndarray) or mouth.dtype != np.uint8
                                  or mouth.shape != (MOUTH_SIZE, MOUTH_SIZE)):
            raise ParamError(f"a mouth crop must be uint8 ({MOUTH_SIZE}, {MOUTH_SIZE}) or None, got "
                             f"{getattr(mouth, 'dtype', type(mouth).__name__)} {getattr(mouth, 'shape', '')}")
        if self._video and sample_index <= self._video[-1][0]:
            self.video_late += 1
            return
        self._video.append((int(sample_index), mouth))
        while self._video[0][0] < sample_index - self._ring_samples:
            self._video.popleft()

    def frames(self, a: int, b: int) -> np.ndarray:
        """The mouth frames aligned to audio ``[a, b)`` (see the module docstring), in the processor's layout."""
        n = max(1, round((b - a) / self.period))
        out = self.rec.blank(n)
        if self._video:
            held = list(self._video)
            idx = np.fromiter((i for i, _ in held), np.int64, len(held))
            slots = a + np.arange(n) * self.period
            pos = np.searchsorted(idx, slots + self.period / 2, side="left") - 1
            for i, j in enumerate(pos):
                mouth = held[j][1] if j >= 0 and idx[j] >= slots[i] - HOLD_S * self.rate else None
                if mouth is not None:
                    out[i] = mouth[..., None] if out.ndim == 4 else mouth
        return out

    def begin(self, start_sample: int) -> None:
        if self._utt is not None and self.utterance_open:
            log.warning("utterance at sample %d begins while the one from %d is open; dropping that one",
                        start_sample, self._utt.start)
        start = int(start_sample) if self._ring is None else max(int(start_sample), self._ring.oldest_index)
        pol = self.rec.opts.policy
        agreement: LocalAgreement[str] = LocalAgreement(pol.agreement_n, int(pol.agreement_gap_s * self.rate))
        self._utt = _Utt(start, agreement, start, start, unspaced=is_unspaced(self.rec.language))
        self._last = None
        self.utterance_open = True

    def endpoint(self, end_sample: int) -> None:
        if self._utt is not None and self.utterance_open:
            self._utt.end = max(int(end_sample), self._utt.start)

    def step(self) -> Revision | None:
        u, ring = self._utt, self._ring
        if u is None or not self.utterance_open or ring is None:
            return None
        if u.buf_start < ring.oldest_index:
            log.warning("stream fell %d samples behind its audio ring; resuming at the oldest sample held",
                        ring.oldest_index - u.buf_start)
            u.buf_start = u.last_decoded = ring.oldest_index
        end, max_win = ring.write_index, self.rec.max_window
        if u.end is not None:
            if end < u.end:
                return None
            while u.end - u.buf_start > max_win:
                self._decode(u, u.buf_start + max_win, "advance")
            return self._decode(u, u.end, "final")
        if end - u.buf_start > max_win:
            return self._decode(u, u.buf_start + max_win, "advance")
        interval = self.rec.interval.frames * self.rate // 100      # the first partial as soon as there is enough
        if end - u.buf_start >= self.rec.opts.policy.min_partial_s * self.rate and (
                u.last_decoded <= u.buf_start or end - u.last_decoded >= interval):
            return self._decode(u, end, "partial")
        return None

    def _decode(self, u: _Utt, end: int, kind: str) -> Revision | None:
        a = u.buf_start
        text, timings = "", None
        if end > a and self._ring is not None:
            t0 = time.perf_counter()
            text, timings = self.rec.transcribe(self._ring.view(a, end)[:, 0].copy(), self.frames(a, end))
            if kind == "partial":
                self.rec.interval.observe(time.perf_counter() - t0)
        u.last_decoded = end
        text = tidy(text, self.rec.language)
        u.unspaced = u.unspaced or (not self.rec.language and " " not in text and _cjk(text))
        agrees = text.startswith(u.committed)
        self.conflicts += not agrees
        rest = text[len(u.committed):] if agrees else text[_aligned_end(u.committed, text, u.unspaced):]
        if kind == "partial":
            k = 0
            if agrees and end - u.start >= self.rec.opts.policy.commit_after_s * self.rate:
                unspaced = u.unspaced
                k = u.agreement.update(list(rest), lambda s, i: i < len(s) and (unspaced or s[i] == " "), end)
            u.committed, u.tail = u.committed + rest[:k], rest[k:]
            return self._publish(u, False, end)
        window = u.committed + rest if agrees else _join(u.committed, rest, u.unspaced)
        u.words += self._words(window, a, end, timings)
        u.done = _join(u.done, window, u.unspaced)
        u.committed, u.tail, u.buf_start = "", "", end
        u.agreement.reset()
        self.utterance_open = kind != "final"
        return self._publish(u, kind == "final", end)

    def _words(self, text: str, a: int, b: int, timings: list[tuple[str, float, float]] | None) -> list[Word]:
        """The window's words on the stream clock: the model's timings, else equal spans over ``[a, b)``."""
        if timings:
            at = [(str(w).strip(), *(min(max(a + round(float(t) * self.rate), a), b) for t in (s, e)))
                  for w, s, e in timings]
            return [Word(w, lo, max(lo, hi), 1.0) for w, lo, hi in at]
        parts = text.split()
        span = (b - a) / max(len(parts), 1)
        return [Word(p, a + round(i * span), a + round((i + 1) * span), 1.0) for i, p in enumerate(parts)]

    def _publish(self, u: _Utt, final: bool, end: int) -> Revision | None:
        committed = _join(u.done, u.committed, u.unspaced)
        if final:
            self._utt = None
            if not committed and u.pub == ("", ""):
                return None                 # nothing recognized, nothing published: the utterance leaves no trace
            self._last = Revision(committed, "", True, self.rec.language, u.start, max(end, u.start), tuple(u.words))
            return self._last
        unstable = _join(u.done, u.committed + u.tail, u.unspaced)[len(committed):]
        if (committed, unstable) == u.pub or not (committed or unstable):
            return None
        u.pub = (committed, unstable)
        self._last = Revision(committed, unstable, False, self.rec.language, u.start, max(end, u.start))
        return self._last

    def result(self) -> Revision | None:
        return self._last
