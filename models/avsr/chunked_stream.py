"""Per-stream state of the chunked AV recognizer (:class:`~kikimimi.models.avsr.chunked.ChunkedAvRecognizer`),
driven as :mod:`kikimimi.models.avsr.base` says.

* Audio goes into a ring of the last ``history_s`` seconds (so ``begin`` may point a little into the past);
  the open utterance's audio, from its start sample on, goes through a streaming Kaldi fbank
  (:class:`~kikimimi.models.frontend.kaldi.KaldiFbankStream`, int16-range input), bit for bit the
  whole-signal fbank of the utterance. Audio before ``begin`` is not decoded.
* Video frames (one mouth crop or None per frame, in time order) wait in a bounded queue. Model frame k
  of an utterance starting at sample s takes the frame nearest to s + 640 k (within 640 samples, else
  no face). That choice is settled once a video frame at or after s + 640 k has arrived, once the audio
  has run ``video_lag_s`` past it (frames arriving later are not waited for: a stream without video
  decodes with that much delay), or once the audio has reached the endpoint (an utterance's video is
  expected no later than its audio: the avsr node gives a frame once the audio up to its instant is given).
* Whenever ``chunk_frames`` model frames of the open utterance are settled, ``step`` runs them through
  ``forward_chunk`` with the cached state; the encoder only looks back, so a chunk's outputs never change
  afterwards. The last ``endpoint_slack_s`` of chunks keep their inputs and the state before them: an
  endpoint that arrives after audio past it was decoded rolls back to the chunk boundary before the
  endpoint and re-runs the rest, so the final covers exactly the utterance. The greedy CTC text splits
  into ``committed`` (the words whose following space lies before those re-runnable chunks: they can only
  grow) and ``unstable`` (the rest).
* After ``endpoint(end)``, once the audio up to ``end`` is in, the last partial chunk is run and a final
  :class:`Revision` comes with :class:`~kikimimi.engine.messages.Word` spans from the CTC frames (40 ms each,
  clamped to the utterance) and a confidence per word (the mean of its frames' highest probability). An
  endpoint more than the slack behind the decoded audio keeps the chunks it can no longer re-run (the
  final then reaches past ``end``; word spans stay clamped).

The log-probabilities equal a one-shot :meth:`ChunkedAvRecognizer.decode_utterance` over the same audio
and video (up to float rounding), however the input is split. Memory is bounded: the audio ring, the video
queue (frames before the next undecoded instant are dropped; at most ``max_video_frames``), the layer
caches, the re-runnable chunks, and the current utterance's per-frame argmax and log-probabilities. An
utterance longer than ``max_utterance_s`` (default 60 s) gets a final there, and a new utterance opens at
that sample (``utterance_open`` stays true). Past that cap the utterance takes no more audio, so when more
than ``history_s`` of audio comes before the next ``step`` the ring would pass the sample the next
utterance starts at: ``accept_audio`` then decodes the capped utterance's remaining chunks (with the video
it has) and opens the next one itself, and the next ``step`` calls return the finals it kept, in order.
No accepted audio is lost that way.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kikimimi.engine.errors import KikimimiError, ParamError
from kikimimi.engine.msgs.speech import Word
from kikimimi.engine.msgs.vision import MOUTH_SIZE
from kikimimi.engine.ring import AudioRing
from kikimimi.models.asr.recognizer import Revision
from kikimimi.models.avsr.base import AvStream
from kikimimi.models.avsr.conformer import LayerCache
from kikimimi.models.avsr.model import FRAME_SAMPLES, INT16_SCALE, STACK, ctc_words, nearest_video
from kikimimi.models.frontend.kaldi import KaldiFbankStream, kaldi_n_frames
from kikimimi.models.frontend.spec import as_signal

if TYPE_CHECKING:
    from kikimimi.models.avsr.chunked import ChunkedAvRecognizer

log = logging.getLogger("kikimimi.avsr.chunked")

FBANK_TAIL = 400 - 160
"""Samples a model frame's last fbank window reaches past the frame's 640-sample hop span."""


def _index(value: object, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ParamError(f"{what}={value!r} is not allowed; allowed: an int >= 0")
    return int(value)


@dataclass(eq=False)
class _Chunk:
    """A decoded chunk an endpoint may still roll back: its first frame, the state before it, its inputs."""

    frame: int
    cache: list[LayerCache]
    audio: np.ndarray
    mouths: np.ndarray
    present: np.ndarray


@dataclass(eq=False)
class _Utterance:
    start: int
    cache: list[LayerCache]
    end: int | None = None
    fed: int = 0                          # next sample index to feed to the fbank
    fbank: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # not yet decoded
    n_fbank: int = 0                      # fbank frames computed (utterance-local count)
    done: int = 0                         # model frames decoded
    ids: list[int] = field(default_factory=list)
    maxp: list[float] = field(default_factory=list)
    log_probs: list[np.ndarray] = field(default_factory=list)
    recent: deque[_Chunk] = field(default_factory=deque)
    published: tuple[str, str] | None = None
    revised_at: int = 0                   # ``done`` when the last partial was worked out


class ChunkedAvStream(AvStream):
    """One stream's state for :class:`ChunkedAvRecognizer`; see the module docstring."""

    def __init__(self, rec: ChunkedAvRecognizer) -> None:
        self.rec = rec
        self._fbank = KaldiFbankStream(rec.config.n_mels, ring_frames=256)
        self.reset()

    def reset(self) -> None:
        self._audio: AudioRing | None = None
        self._video: deque[tuple[int, np.ndarray | None]] = deque()
        self._last_video = -1
        self._utt: _Utterance | None = None
        self._last: Revision | None = None
        self._finals: deque[Revision] = deque()      # finals of capped utterances decoded in accept_audio
        self.utterance_open = False
        self.dropped_video = 0
        self._fbank.reset()

    # ------------------------------------------------------------------ input
    def accept_audio(self, samples: np.ndarray, sample_index: int) -> None:
        x = as_signal(samples, "samples")
        idx = _index(sample_index, "audio sample_index")
        if self._audio is None:
            self._audio = AudioRing(self.rec.history, 1, np.float32, start_index=idx)
        ring = self._audio
        end = ring.write_index
        if idx < end:
            raise ParamError(f"audio sample_index {idx} goes backwards; allowed: >= {end} (the end of the audio "
                             "accepted so far)")
        if idx > end:           # a gap is silence
            self._write(np.zeros(idx - end, np.float32))
        self._write(x)

    def _write(self, x: np.ndarray) -> None:
        """Write ``x`` into the ring in pieces, feeding the fbank after each, never past audio still needed."""
        ring = self._audio
        assert ring is not None
        self._feed()            # an utterance begun before the first audio starts where the ring does
        pos = 0
        while pos < x.shape[0]:
            n = min(x.shape[0] - pos, self.rec.history)
            keep = self._needed()
            if keep is not None:
                room = keep + self.rec.history - ring.write_index     # what fits without overwriting ``keep``
                if room <= 0:           # only a capped utterance's successor needs it: decode the cap now
                    self._roll()
                    continue
                n = min(n, room)
            ring.write(x[pos:pos + n])
            self._feed()
            pos += n

    def accept_video(self, mouth: np.ndarray | None, sample_index: int) -> None:
        if mouth is not None and (not isinstance(mouth, np.ndarray) or mouth.dtype != np.uint8
                                  or mouth.shape != (MOUTH_SIZE, MOUTH_SIZE)):
            raise ParamError(f"mouth must be None or a uint8 array of shape ({MOUTH_SIZE}, {MOUTH_SIZE}), got "
                             f"{getattr(mouth, 'dtype', type(mouth).__name__)} {getattr(mouth, 'shape', '')}")
        idx = _index(sample_index, "video sample_index")
        if idx <= self._last_video:
            raise ParamError(f"video sample_index {idx} is not after the previous frame's {self._last_video}; "
                             "allowed: frames in time order")
        self._last_video = idx
        self._video.append((idx, None if mouth is None else mouth.copy()))
        while len(self._video) > self.rec.max_video_frames:
            self._video.popleft()
            self.dropped_video += 1

    def _cap_end(self, u: _Utterance) -> int:
        """The sample where ``u`` reaches the length cap."""
        return u.start + self.rec.max_frames * FRAME_SAMPLES

    def _target(self, u: _Utterance) -> int:
        """One past the last sample ``u``'s fbank needs: its end, or what its length cap's frames read."""
        limit = self._cap_end(u) + FBANK_TAIL
        return limit if u.end is None else min(u.end, limit)

    def _capped(self, u: _Utterance) -> bool:
        """Whether ``u`` goes on past its length cap (as a new utterance) rather than ending before it."""
        return u.end is None or kaldi_n_frames(u.end - u.start) // STACK > self.rec.max_frames

    def _needed(self) -> int | None:
        """The oldest sample the open utterance, or the one its length cap opens, still needs from the ring."""
        u = self._utt
        if u is None or not self.utterance_open:
            return None
        keep = self._cap_end(u) if self._capped(u) else None
        if u.fed < self._target(u):
            keep = u.fed if keep is None else min(keep, u.fed)
        return keep

    def _roll(self) -> None:
        """Decode the capped open utterance to its cap now (whatever video is settled), keep its final for the
        next ``step`` and open the next utterance at the cap."""
        u = self._utt
        assert u is not None and self.utterance_open and u.fed >= self._target(u)
        while u.done < self.rec.max_frames:
            self._run(u, min(self.rec.config.chunk_frames, self.rec.max_frames - u.done))
        rev = self._next_after_cap(u)
        if rev is not None:
            self._finals.append(rev)

    def _next_after_cap(self, u: _Utterance) -> Revision | None:
        """The final of ``u`` at its length cap; the rest goes on as a new utterance from there."""
        end = self._cap_end(u)
        rev = self._final(u, end)
        self.utterance_open = False
        self.begin(end)
        if self._utt is not None:
            self._utt.end = u.end
        return rev

    def _feed(self) -> None:
        """Feed the open utterance's fbank with the audio that arrived since (up to its end or length cap)."""
        u, ring = self._utt, self._audio
        if u is None or ring is None or not self.utterance_open or u.fed >= self._target(u):
            return
        if u.fed < ring.oldest_index:               # its start is older than the audio held
            if u.n_fbank:               # _write never lets the ring pass audio not yet fed
                raise KikimimiError(f"utterance audio from sample {u.fed} left the {self.rec.history}-sample ring "
                                    "before it was decoded")
            log.warning("utterance start %d is before the audio held (from %d); starting there", u.start,
                        ring.oldest_index)
            u.start = u.fed = ring.oldest_index
        stop = min(ring.write_index, self._target(u))
        if stop <= u.fed:
            return
        new = self._fbank.accept(ring.view(u.fed, stop).reshape(-1) * np.float32(INT16_SCALE))
        u.fed = stop
        if new.shape[0]:
            u.fbank = np.concatenate([u.fbank, new]) if u.fbank.size else new.copy()
            u.n_fbank += new.shape[0]

    # ------------------------------------------------------------------ utterances
    def begin(self, start_sample: int) -> None:
        start = _index(start_sample, "start_sample")
        if self.utterance_open:
            log.warning("begin(%d) while an utterance is open: its undecoded rest is dropped", start)
        self._utt = _Utterance(start, self.rec.model.init_cache(1, self.rec.device), fed=start)
        self._fbank.reset()
        self.utterance_open = True
        self._feed()

    def endpoint(self, end_sample: int) -> None:
        end = _index(end_sample, "end_sample")
        u = self._utt
        if u is None or not self.utterance_open:
            log.debug("endpoint(%d) without an open utterance: ignored", end)
            return
        if end < u.start:
            raise ParamError(f"end_sample {end} is before the utterance's start {u.start}; allowed: >= {u.start}")
        u.end = end

    def _settled(self, u: _Utterance) -> int:
        """Model frames of ``u`` whose fbank frames are in and whose video frame is settled."""
        audio_end = self._audio.write_index if self._audio is not None else 0
        if u.end is not None and audio_end >= u.end:        # the endpoint's audio is in: so is its video
            return u.n_fbank // STACK
        limit = max(self._last_video, audio_end - self.rec.video_lag)
        by_video = (limit - u.start) // FRAME_SAMPLES + 1 if limit >= u.start else 0
        return min(u.n_fbank // STACK, by_video)

    # ------------------------------------------------------------------ decoding
    def _run(self, u: _Utterance, n: int) -> None:
        """Decode the next ``n`` settled model frames of ``u``."""
        audio = u.fbank[:n * STACK].reshape(n, -1)
        u.fbank = u.fbank[n * STACK:]
        inst = u.start + FRAME_SAMPLES * np.arange(u.done, u.done + n)
        pick = nearest_video(np.fromiter((s for s, _ in self._video), np.int64, len(self._video)), inst)
        mouths = np.zeros((n, MOUTH_SIZE, MOUTH_SIZE), np.uint8)
        present = np.zeros(n, np.float32)
        for j, i in enumerate(pick.tolist()):
            m = self._video[i][1] if i >= 0 else None
            if m is not None:
                mouths[j], present[j] = m, 1.0
        self._forward(u, audio, mouths, present, keep=True)
        keep_from = u.start + FRAME_SAMPLES * (u.done - 1)
        while self._video and self._video[0][0] < keep_from:
            self._video.popleft()

    def _forward(self, u: _Utterance, audio: np.ndarray, mouths: np.ndarray, present: np.ndarray,
                 keep: bool) -> None:
        """Run one chunk of inputs; ``keep``: remember it for a rollback (pruned to the endpoint slack)."""
        if keep and self.rec.slack_frames > 0:
            u.recent.append(_Chunk(u.done, u.cache, audio, mouths, present))
        lp, u.cache = self.rec.run_chunk(audio, mouths, present, u.cache)
        u.log_probs.append(lp)
        u.ids.extend(lp.argmax(axis=1).tolist())
        u.maxp.extend(np.exp(lp.max(axis=1)).tolist())
        u.done += audio.shape[0]
        chunk = self.rec.config.chunk_frames
        horizon = max(u.done - self.rec.slack_frames, 0) // chunk * chunk
        while u.recent and u.recent[0].frame < horizon:
            u.recent.popleft()

    def _rollback(self, u: _Utterance, n: int) -> None:
        """Make ``u`` end at frame ``n`` < ``u.done``: back to the chunk boundary at or before it, then re-run."""
        j = n // self.rec.config.chunk_frames * self.rec.config.chunk_frames
        if not u.recent or u.recent[0].frame > j:
            keep = u.recent[0].frame if u.recent else u.done
            log.info("endpoint at frame %d came after frame %d was decoded; the final keeps %d frames", n, u.done, keep)
            n = j = keep
        chunks = [c for c in u.recent if c.frame >= j]
        if chunks:
            u.cache = chunks[0].cache
        lp = np.concatenate(u.log_probs)[:j]
        u.log_probs, u.ids, u.maxp, u.done = [lp], u.ids[:j], u.maxp[:j], j
        u.recent.clear()
        if n > j:
            a, m, p = (np.concatenate([getattr(c, k) for c in chunks])[:n - j] for k in ("audio", "mouths", "present"))
            self._forward(u, a, m, p, keep=False)

    def step(self) -> Revision | None:
        if self._finals:
            return self._finals.popleft()
        u = self._utt
        if u is None or not self.utterance_open:
            return None
        self._feed()
        chunk, cap = self.rec.config.chunk_frames, self.rec.max_frames
        n_end = None if u.end is None else kaldi_n_frames(u.end - u.start) // STACK
        ready = min(self._settled(u), cap if n_end is None else min(n_end, cap))
        while ready - u.done >= chunk:
            self._run(u, chunk)
        if n_end is not None and n_end <= cap and ready >= n_end:
            if u.done > n_end:
                self._rollback(u, n_end)
            elif n_end > u.done:
                self._run(u, n_end - u.done)
            self.utterance_open = False
            return self._final(u, u.end)
        if u.done >= cap:                             # length cap: a final here, and the rest goes on after it
            return self._next_after_cap(u)
        return self._partial(u)

    # ------------------------------------------------------------------ revisions
    def _partial(self, u: _Utterance) -> Revision | None:
        if u.done == u.revised_at:
            return None
        u.revised_at = u.done
        words = ctc_words(np.asarray(u.ids, np.int64), self.rec.config.vocab)
        horizon = u.recent[0].frame if u.recent else u.done      # frames before it can no longer change
        n = 0
        while n < len(words) and words[n].space is not None and words[n].space < horizon:
            n += 1
        committed = " ".join(w.text for w in words[:n])
        tail = " ".join(w.text for w in words[n:])
        unstable = (" " if committed and tail else "") + tail
        if (committed, unstable) == (u.published or ("", "")):
            return None
        u.published = (committed, unstable)
        self._last = Revision(committed, unstable, False, self.rec.language, u.start,
                              u.start + FRAME_SAMPLES * u.done)
        return self._last

    def _final(self, u: _Utterance, end: int) -> Revision | None:
        out = []
        for w in ctc_words(np.asarray(u.ids, np.int64), self.rec.config.vocab):
            a = min(u.start + FRAME_SAMPLES * w.first, end)
            b = min(u.start + FRAME_SAMPLES * (w.last + 1), end)
            out.append(Word(w.text, a, max(a, b), float(np.mean(u.maxp[w.first:w.last + 1]))))
        text = " ".join(w.text for w in out)
        if not text and u.published is None:
            return None
        u.published = (text, "")
        self._last = Revision(text, "", True, self.rec.language, u.start, end, tuple(out))
        return self._last

    def result(self) -> Revision | None:
        return self._last

    def log_probs(self) -> np.ndarray:
        """The log-probabilities (T, vocab_size) decoded so far in the current (or last) utterance."""
        u = self._utt
        if u is None or not u.log_probs:
            return np.zeros((0, self.rec.model.vocab_size), np.float32)
        return np.concatenate(u.log_probs)
