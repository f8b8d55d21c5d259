"""Whisper through CTranslate2: the shared model and its batched decode.

:class:`WhisperCT2` loads a CTranslate2 Whisper directory (found by
:func:`~kikimimi.models.asr.resolve.resolve_model`) on ``cpu`` with int8 or ``cuda`` with float16
(``device="auto"`` picks CUDA when CTranslate2 sees a GPU). It eats the front end's own
``whisper_log10_mel`` frames, so features are computed once, incrementally, by the feature node.

:meth:`WhisperCT2.decode` serves any number of :class:`WhisperRequest` (from any streams) with one
batched encoder call; language detection, generation and word alignment reuse that encoder output
(generation is grouped by prompt length, which CTranslate2 requires to be equal within a batch).

Padding: Whisper was trained on 30 s windows, and padding every input to 30 s is what makes short
utterances expensive. A window is padded with silence (the log-mel of zeros, then Whisper's
normalization over the window) to ``len + pad_frames`` but at least ``min_frames``, rounded up to a
multiple of ``bucket_frames``; a batch with a final in it to at least ``final_window_ms`` (by default 30 s
on a GPU; on the CPU :data:`CPU_FINAL_WINDOW_MS`: 20 s, 10 s for tiny.en). Measured on this 2-core CPU on the
70 LibriSpeech clips at full speed (bench/batch_vs_offline.py --streaming; faster-whisper beam 1: base 12.21 %,
tiny.en 14.51 %), base's finals score 13.52 % padded to 10 s, 12.95 % to 15 s, 12.79 % to 20 s and 12.46 % to
30 s; tiny.en's 13.77 % at 10 s and 14.34 % at 20 s (batch, beam 5: 12.38 % and 13.20 %; on 10 of the clips
13.04 % at 10 s, 17.39 % at 20 s, 13.48 % at 30 s). Live (bench/asr_latency.py) base's final comes a median
0.92 s after the end of speech at 10 s, 1.08 s at 20 s and 1.83 s at 30 s (tiny.en 0.63, 0.74 and 0.96 s): at
20 s base is within 1 point of faster-whisper and within its 1.5 s target; 30 s misses it. tiny.en is more
accurate and faster at 10 s.
The rounding bounds memory: CTranslate2 keeps buffers for every encoder
input length it has seen, so unrounded lengths (any of 2000) grew the process by about 0.7 MB per new
length, +90 MB over a 10-minute session with tiny.en; with 1 s buckets there are at most 21. Measured on the 70
LibriSpeech clips with base, int8, greedy (``bench/asr_latency.py`` reruns it with ``--padding``):
3000 frames (faster-whisper's way) 12.1 % WER in 46 s; +300 / min 1000 frames 12.0 % in 19 s with
the segment guards below; +100 frames loops on most clips (160 % WER).

Guards against looping and hallucination, applied to every hypothesis: a generated segment that
starts within ``0.3 s`` of the end of the real audio, or repeats an earlier segment of the window
word for word, ends the hypothesis; a run of tokens repeated back to back (three copies of 4+ tokens,
five of shorter runs) is cut to one copy; generated text that repeats 8 tokens of the prompt, the
prefix or itself is cut there; the number of generated tokens is capped by the window's duration.

Its settings and request / output types are in :mod:`~kikimimi.models.asr.whisper_config` (imported here
too). The per-stream state (LocalAgreement, trimming, word timing on the stream's clock) is
:class:`~kikimimi.models.asr.whisper_stream.WhisperStream`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from kikimimi.engine.errors import MissingDependency, ParamError
from kikimimi.models.asr.hallucination import find_loop
from kikimimi.models.asr.language import best_allowed, decoding_language, parse_language
from kikimimi.models.asr.recognizer import AUTO, DecodeRequest, Recognizer, RecognizerStream
from kikimimi.models.asr.resolve import ResolvedModel, resolve_model
from kikimimi.models.asr.text import normalize
from kikimimi.models.asr.whisper_config import (
    PARAMS,
    WhisperConfig,
    WhisperOutput,
    WhisperRequest,
)
from kikimimi.models.asr.whisper_stream import WhisperStream
from kikimimi.models.asr.whisper_words import aligned_words, shift_times
from kikimimi.models.weights import shared

log = logging.getLogger("kikimimi.asr.whisper")

MAX_FRAMES = 3000                # Whisper's 30 s window
SILENCE_LOG10 = -10.0            # log10 of the floor (1e-10): the log-mel of digital silence
TIME_PRECISION = 0.02            # seconds per timestamp token
FRAMES_PER_SECOND = 100
MAX_CONTEXT_TOKENS = 223         # Whisper's limit on previous-text tokens (max_length // 2 - 1)
CONTEXT_BUCKETS = (0, 16, 32, 64, 128, MAX_CONTEXT_TOKENS)
END_GUARD_S = 0.3
LEAD_MIN_RANGE = 0.8             # see WhisperCT2._features
CPU_FINAL_WINDOW_MS = {"": 20000, "tiny.en": 10000}
"""``final_window_ms=-1`` on the CPU, by model name ("" = any other model): see the module docstring."""


def _import_ct2() -> Any:
    try:
        import ctranslate2
    except ImportError as e:
        raise MissingDependency("ctranslate2 (Whisper backend)", "pip install 'kikimimi[asr]'") from e
    return ctranslate2


def _import_tokenizer() -> tuple[Any, Any]:
    try:
        import tokenizers
        from faster_whisper.tokenizer import Tokenizer
    except ImportError as e:
        raise MissingDependency("faster-whisper's tokenizer (Whisper backend)", "pip install 'kikimimi[asr]'") from e
    return tokenizers, Tokenizer


ECHO_TOKENS = 8


def _first_echo(gen: Sequence[int], before: Sequence[int], n: int = ECHO_TOKENS) -> int:
    """Index in ``gen`` where a run of ``n`` tokens starts that already occurred in ``before`` or earlier
    in ``gen`` (the model repeating its prompt or itself); ``len(gen)`` if none."""
    seen: set[tuple[int, ...]] = set()
    hist = list(before)
    for j in range(len(hist) - n + 1):
        seen.add(tuple(hist[j:j + n]))
    for j in range(len(gen) - n + 1):
        gram = tuple(gen[j:j + n])
        if gram in seen:
            return j
        if j >= n:
            seen.add(tuple(gen[j - n:j]))
    return len(gen)


def _language_codes() -> tuple[str, ...]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


class WhisperCT2(Recognizer):
    """A Whisper model on CTranslate2, shared by every stream; see the module docstring.

    The CTranslate2 model and its tokenizer are loaded once per process for each (model path, device,
    compute type, threads) (:func:`kikimimi.models.weights.shared`), so recognizers made one after
    another (``kikimimi transcribe`` over many files) reuse them.
    """

    feature_kind = "whisper_log10_mel"
    params = PARAMS
    config_type = WhisperConfig

    def __init__(self, config: WhisperConfig | None = None, resolved: ResolvedModel | None = None) -> None:
        cfg = config if config is not None else WhisperConfig()
        self.config = cfg
        ct2 = _import_ct2()
        tokenizers, tokenizer_cls = _import_tokenizer()
        self.resolved = resolved if resolved is not None else resolve_model(cfg.model)
        device, compute_type = cfg.device, cfg.compute_type
        if device == "auto":
            device = "cuda" if ct2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "default":
            compute_type = "float16" if device == "cuda" else "int8"
        self.device, self.compute_type = device, compute_type
        path = self.resolved.path

        def load() -> tuple[Any, Any]:
            return (ct2.models.Whisper(str(path), device=device, compute_type=compute_type,
                                       intra_threads=cfg.threads),
                    tokenizers.Tokenizer.from_file(str(path / "tokenizer.json")))

        self.model, self._hf = shared(("whisper-ct2", str(path), device, compute_type, cfg.threads), load)
        self._ct2 = ct2
        self.name = f"whisper-{self.resolved.name}"
        self.n_bins = int(self.model.n_mels)
        self.multilingual = bool(self.model.is_multilingual)
        self.beam_size = cfg.beam_size
        self.pad_frames, self.min_frames = cfg.pad_ms // 10, cfg.min_window_ms // 10
        final_ms = (cfg.final_window_ms if cfg.final_window_ms >= 0 else 30000 if self.device == "cuda"
                    else CPU_FINAL_WINDOW_MS.get(self.resolved.name, CPU_FINAL_WINDOW_MS[""]))
        self.final_min_frames = max(self.min_frames, final_ms // 10)
        self.bucket_frames = max(1, cfg.bucket_ms // 10)
        self.max_window = MAX_FRAMES - self.pad_frames
        self._tokenizer_cls = tokenizer_cls
        self._tokenizers: dict[str | None, Any] = {}
        base = self.tokenizer("en" if self.multilingual else None)
        self.eot, self.timestamp_begin = base.eot, base.timestamp_begin
        self.languages = tuple(_language_codes()) if self.multilingual else ("en",)
        self._space_tokens: dict[int, bool] = {}
        self.echo_redecodes = 0      # windows decoded again without their context prompt (see _run)
        self.policy = cfg.policy()

    # ------------------------------------------------------------------ tokens
    def tokenizer(self, language: str | None) -> Any:
        """faster-whisper's Tokenizer for ``language`` (None: English-only models)."""
        key = language if self.multilingual else None
        tok = self._tokenizers.get(key)
        if tok is None:
            tok = self._tokenizers[key] = self._tokenizer_cls(self._hf, self.multilingual, task="transcribe",
                                                              language=key)
        return tok

    def decode_text(self, tokens: Sequence[int]) -> str:
        """Text of text tokens (special and timestamp tokens dropped)."""
        return self._hf.decode([t for t in tokens if t < self.eot], skip_special_tokens=False)

    def encode_text(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def starts_word(self, token: int) -> bool:
        """True if ``token``'s text begins with a space (it starts a new word)."""
        v = self._space_tokens.get(token)
        if v is None:
            v = self._space_tokens[token] = self._hf.id_to_token(token).startswith("\u0120")
        return v

    # ------------------------------------------------------------------ Recognizer
    def new_stream(self, language: str = AUTO) -> RecognizerStream:
        """A stream recognized in ``language``: a code, "auto" or "auto:en,ja" (see models/asr/language.py)."""
        return WhisperStream(self, parse_language(language, self.languages))

    def encoder_states(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Whisper's encoder output for each window of raw log10 mel frames ((n, n_mels), at most one model
        window: longer ones keep their last frames), decoded together as one batch: (ceil(n / 2), d_model)
        float32 per window, its padding left out (the encoder halves the frame rate)."""
        if not windows:
            return []
        for w in windows:
            if not isinstance(w, np.ndarray) or w.ndim != 2 or w.shape[1] != self.n_bins:
                raise ParamError(f"encoder_states takes (n, {self.n_bins}) log-mel windows, got "
                                 f"{getattr(w, 'shape', type(w).__name__)}")
        reqs = [WhisperRequest(None, False, w.astype(np.float32, copy=False)) for w in windows]  # type: ignore[arg-type]
        feats, lengths, _ = self._features(reqs)
        enc = np.asarray(self.model.encode(self._ct2.StorageView.from_array(feats), to_cpu=True))
        return [enc[i, :max(1, -(-n // 2))].copy() for i, n in enumerate(lengths)]

    def warmup(self) -> None:
        """Decode 1 s of silence once (loads the weights into caches, builds the kernels)."""
        self._run([WhisperRequest(None, False, np.full((100, self.n_bins), SILENCE_LOG10, np.float32),  # type: ignore[arg-type]
                                  language="en", max_new_tokens=4)])

    def decode(self, requests: Sequence[DecodeRequest]) -> list[Any]:
        reqs: list[WhisperRequest] = []
        for r in requests:
            if not isinstance(r, WhisperRequest):
                raise ParamError(f"WhisperCT2.decode got a {type(r).__name__}; allowed: WhisperRequest")
            reqs.append(r)
        return self._run(reqs) if reqs else []

    # ------------------------------------------------------------------ internals
    def _features(self, reqs: Sequence[WhisperRequest]) -> tuple[np.ndarray, list[int], list[int]]:
        """Batch (B, n_mels, L) of normalized, silence-padded windows, each window's length (its lead and
        frames) and the lead put before its frames.

        A request's ``lead_frames`` (at most half a window) are filled with the window's noise floor (each
        bin's 10th percentile), and only where the window has one: where its bins' median lies on average
        at least ``LEAD_MIN_RANGE`` above that (speech with pauses: 0.96..2.5 log10 units on LibriSpeech
        clips and JFK). Stationary noise and hum (0.45..0.48, whatever their level) get no lead: there it
        made Whisper hear an onset and write text for noise."""
        parts: list[tuple[np.ndarray, float, int]] = []
        for r in reqs:
            want = min(max(0, r.lead_frames), self.max_window // 2)
            n = min(int(r.frames.shape[0]), self.max_window - want)
            x = r.frames[-n:] if n else r.frames[:0]
            low = max(float(x.max()) - 8.0, SILENCE_LOG10) if n else SILENCE_LOG10
            x = np.maximum(x, low)
            lead = 0
            if want and n:
                floor, mid = np.quantile(x, [0.1, 0.5], axis=0)
                lead = want if float(np.mean(mid - floor)) >= LEAD_MIN_RANGE else 0
            parts.append((x, low, lead))
        lengths = [lead + len(x) for x, _, lead in parts]
        total = max(max(lengths) + self.pad_frames,
                    self.final_min_frames if any(r.final for r in reqs) else self.min_frames)
        total = min(MAX_FRAMES, -(-total // self.bucket_frames) * self.bucket_frames)
        batch = np.empty((len(reqs), self.n_bins, total), np.float32)
        for i, (x, low, lead) in enumerate(parts):
            w, m = batch[i], lengths[i]
            if lead:
                w[:, :lead] = np.quantile(x, 0.1, axis=0)[:, None]
            w[:, lead:m] = x.T
            w[:, m:] = low
            w += 4.0
            w /= 4.0
        return batch, lengths, [lead for _, _, lead in parts]

    def _run(self, reqs: list[WhisperRequest]) -> list[WhisperOutput]:
        t0 = time.perf_counter()
        feats, lengths, leads = self._features(reqs)
        # on the host either way: one copy of a few MB, and subsets for grouped calls are plain numpy slices
        enc = self.model.encode(self._ct2.StorageView.from_array(feats), to_cpu=True)
        enc_np = np.asarray(enc)
        langs: list[tuple[str, float]] = []
        detect = [i for i, r in enumerate(reqs) if (r.language is None or r.detect) and self.multilingual]
        found: dict[int, tuple[str, float]] = {}
        if detect:
            sub = enc if len(detect) == len(reqs) else self._subset(enc, enc_np, detect)
            for i, res in zip(detect, self.model.detect_language(sub), strict=True):
                found[i] = best_allowed([(code[2:-2], float(p)) for code, p in res], reqs[i].allowed)
        for i, r in enumerate(reqs):
            if i in found:
                code, p = found[i]
                use = decoding_language(r.language, code, p, (lengths[i] - leads[i]) / FRAMES_PER_SECOND,
                                        r.switch_probability, r.switch_s)
                langs.append((use, p if use == code else 1.0 - p))
            else:
                langs.append((r.language or "en", 1.0))
        # group by (context bucket): the start-of-transcript token must sit at the same position
        prompts = [self._prompt(r, langs[i][0], r.context) for i, r in enumerate(reqs)]
        results = self._generate(enc, enc_np, reqs, prompts, list(range(len(reqs))))
        guarded = [self._guard(list(results[i].sequences_ids[0]), len(r.prefix), lengths[i] / FRAMES_PER_SECOND,
                               r.max_new_tokens, r.context) for i, r in enumerate(reqs)]
        # Text that repeats the context prompt is usually the model echoing its prompt; but a speaker may
        # really say again what was said before. Decode those windows again without the prompt: an echo
        # goes away, real speech stays.
        echoed = [i for i, g in enumerate(guarded) if g[3]]
        if echoed:
            bare = [self._prompt(r, langs[i][0], ()) if i in echoed else [] for i, r in enumerate(reqs)]
            again = self._generate(enc, enc_np, reqs, bare, echoed)
            for i in echoed:
                r = reqs[i]
                results[i] = again[i]
                guarded[i] = self._guard(list(again[i].sequences_ids[0]), len(r.prefix),
                                         lengths[i] / FRAMES_PER_SECOND, r.max_new_tokens, ())
        self.echo_redecodes += len(echoed)
        outs: list[WhisperOutput] = []
        for i, r in enumerate(reqs):
            rr = results[i]
            tokens, seg_ends, end_s, _ = guarded[i]
            score = float(rr.scores[0]) if rr.scores else 0.0
            outs.append(WhisperOutput(langs[i][0], langs[i][1], tokens, len(r.prefix), seg_ends, None,
                                      float(rr.no_speech_prob), score, 0.0, end_s))
        want = [i for i, r in enumerate(reqs) if r.want_words and outs[i].tokens]
        if want:
            self._align(enc, enc_np, want, reqs, outs, lengths, langs)
        cost = time.perf_counter() - t0
        for o, lead in zip(outs, leads, strict=True):
            o.cost_s = cost
            if lead:
                shift_times(o, lead / FRAMES_PER_SECOND)
        return outs

    def _prompt(self, r: WhisperRequest, lang: str, context: Sequence[int]) -> list[int]:
        """[sot_prev, context (cut to a bucket size)...] sot_sequence [timestamp_begin, prefix...]."""
        tok = self.tokenizer(lang)
        ctx = list(context[-MAX_CONTEXT_TOKENS:])
        bucket = max(b for b in CONTEXT_BUCKETS if b <= len(ctx))
        ctx = ctx[len(ctx) - bucket:] if bucket else []
        prompt = ([tok.sot_prev, *ctx] if ctx else []) + list(tok.sot_sequence)
        if r.prefix:
            prompt += [tok.timestamp_begin, *r.prefix]
        return prompt

    def _generate(self, enc: Any, enc_np: np.ndarray, reqs: list[WhisperRequest], prompts: list[list[int]],
                  which: list[int]) -> list[Any]:
        """Generation results for the requests ``which`` (None elsewhere): one call per prompt layout, as
        the start-of-transcript token must sit at the same position in every prompt of a call."""
        layouts: dict[int, list[int]] = {}
        for i in which:     # the prompt up to the end of its sot sequence: the context part decides it
            prefix = reqs[i].prefix
            layouts.setdefault(len(prompts[i]) - (len(prefix) + 1 if prefix else 0), []).append(i)
        results: list[Any] = [None] * len(reqs)
        for idx in layouts.values():
            sub = enc if len(idx) == len(reqs) else self._subset(enc, enc_np, idx)
            max_new = max(reqs[i].max_new_tokens for i in idx)
            max_len = min(448, max(len(prompts[i]) for i in idx) + max_new)
            res = self.model.generate(sub, [prompts[i] for i in idx], beam_size=self.beam_size,
                                      max_length=max_len, return_scores=True, return_no_speech_prob=True,
                                      suppress_blank=True, suppress_tokens=[-1])
            for i, rr in zip(idx, res, strict=True):
                results[i] = rr
        return results

    def _subset(self, enc: Any, enc_np: np.ndarray, idx: list[int]) -> Any:
        return self._ct2.StorageView.from_array(np.ascontiguousarray(enc_np[idx]))

    def _guard(self, seq: list[int], n_prefix: int, duration_s: float, max_new: int,
               context: Sequence[int] = ()) -> tuple[list[int], list[tuple[int, float]], float | None, bool]:
        """Text tokens of a generated sequence with the looping guards applied, the segment ends
        (text-token count, closing time in s), the closing time of the last kept segment (None if
        the text ran on without one), and whether the text was cut where it repeats ``context``."""
        tb, eot = self.timestamp_begin, self.eot
        text: list[int] = []
        seg_ends: list[tuple[int, float]] = []
        seen: set[str] = set()
        seg_start_tok = 0
        i = 0
        # the sequence is [<|0.00|>, prefix..., generated...] with a prefix, else generated from the start
        while i < len(seq):
            t = seq[i]
            if t == eot:
                break
            if t >= tb:
                ts = (t - tb) * TIME_PRECISION
                if len(text) > seg_start_tok:          # a segment's closing timestamp
                    seg = normalize(self.decode_text(text[seg_start_tok:]))
                    if seg and seg in seen and len(text) > n_prefix:
                        text = text[:seg_start_tok]
                        break
                    seen.add(seg)
                    seg_ends.append((len(text), ts))
                    seg_start_tok = len(text)
                elif ts >= duration_s - END_GUARD_S and len(text) >= n_prefix:   # a segment opening past the audio
                    break
                i += 1
                continue
            text.append(t)
            i += 1
        gen = text[n_prefix:n_prefix + max_new]
        loop = find_loop(gen, min_period=4, min_repeats=3, short_period_repeats=5)
        if loop is not None:
            gen = gen[:loop[0]]
        own = _first_echo(gen, text[:n_prefix])
        cut = _first_echo(gen, [*context, *text[:n_prefix]]) if context else own
        gen = gen[:cut]
        tokens = text[:n_prefix] + gen
        ends = [(n, t) for n, t in seg_ends if n <= len(tokens)]
        end_s = ends[-1][1] if ends and ends[-1][0] == len(tokens) else None
        return tokens, ends, end_s, cut < own

    def _align(self, enc: Any, enc_np: np.ndarray, want: list[int], reqs: list[WhisperRequest],
               outs: list[WhisperOutput], lengths: list[int], langs: list[tuple[str, float]]) -> None:
        by_lang: dict[str, list[int]] = {}
        for i in want:
            by_lang.setdefault(langs[i][0], []).append(i)
        for lang, idx in by_lang.items():
            tok = self.tokenizer(lang)
            sub = enc if len(idx) == len(reqs) else self._subset(enc, enc_np, idx)
            res = self.model.align(sub, list(tok.sot_sequence), [outs[i].tokens for i in idx],
                                   [max(2, lengths[i]) for i in idx], median_filter_width=7)
            for i, a in zip(idx, res, strict=True):
                outs[i].words = aligned_words(tok, outs[i].tokens, a)
