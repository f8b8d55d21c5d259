"""How a voice sounds, per utterance: Whisper encoder states pooled over the utterance -> a linear head.

:class:`VoiceAffectModel` holds what streams share: a Whisper model's encoder (loaded through
:func:`~kikimimi.models.weights.shared`, so a recognizer with the same model, device and threads in the same
process shares its weights) and a :class:`~kikimimi.models.affect.head.LinearHead` trained on the mean and
standard deviation of those states (bundled heads: ``weights/voice-whisper-<model>.*``, trained by
:mod:`~kikimimi.models.affect.train` on RAVDESS, CC BY-NC-SA 4.0: non-commercial use only).
:meth:`VoiceAffectModel.new_stream` gives a :class:`VoiceAffectStream` per audio stream.

A stream takes the same raw log10 mel frames the recognizer does (:meth:`VoiceAffectStream.accept`, frame
indices with their sample clock), and utterances from the VAD (:meth:`~VoiceAffectStream.begin` at speech
start, :meth:`~VoiceAffectStream.end` at speech end). :meth:`VoiceAffectModel.step` takes the streams that
are due and runs one batched encoder call for all of them: a provisional estimate once an utterance has
``min_ms`` of audio and then every ``interval_ms``, and the final one as soon as the frames reach the
utterance's end. An utterance longer than Whisper's 30 s window is judged on its last 30 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kikimimi.engine.errors import ParamError
from kikimimi.models.affect.head import LinearHead, head_files, load_head
from kikimimi.models.affect.labels import arousal_valence
from kikimimi.models.asr.frame_ring import FrameRing

FPS = 100
MAX_FRAMES = 3000
SILENCE_LOG10 = -10.0
WEIGHTS = Path(__file__).resolve().parent / "weights"


def bundled_head(model: str) -> Path:
    """The bundled head for Whisper ``model`` (base, tiny.en); ParamError lists the bundled ones."""
    p = WEIGHTS / f"voice-whisper-{model}"
    if not head_files(p)[0].is_file():
        have = sorted(f.name.removeprefix("voice-whisper-").removesuffix(".json")
                      for f in WEIGHTS.glob("voice-whisper-*.json"))
        raise ParamError(f"no bundled voice affect head for whisper model {model!r}; bundled: {', '.join(have)} "
                         "(or train one: python -m kikimimi.models.affect.train)")
    return p


def input_name(model: str) -> str:
    """The name of the vectors a head for Whisper ``model`` takes."""
    return f"whisper-{model}-states-meanstd"


def pool(states: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of encoder states (T, d) -> (2 d,) float32."""
    return np.concatenate([states.mean(axis=0), states.std(axis=0)]).astype(np.float32)


@dataclass(frozen=True, slots=True)
class VoiceAffectConfig:
    """model: the Whisper model whose encoder is used; head: a head's path ("" = the bundled one for model);
    min_ms: no estimate before an utterance is this long; interval_ms: provisional estimates this often
    (0 = only finals); device and threads as the recognizer's."""

    model: str = "base"
    head: str = ""
    device: str = "auto"
    threads: int = 0
    min_ms: int = 1000
    interval_ms: int = 1000

    def __post_init__(self) -> None:
        for name in ("min_ms", "interval_ms", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ParamError(f"voice affect {name}={v!r} is not allowed; allowed: an integer >= 0")


@dataclass(frozen=True, slots=True)
class AffectEstimate:
    """One estimate of an utterance: span on the sample clock, class probabilities, label, confidence (the
    label's probability), arousal and valence (:func:`~kikimimi.models.affect.labels.arousal_valence`)."""

    utterance_id: int
    start_sample: int
    end_sample: int
    classes: tuple[str, ...]
    probabilities: np.ndarray
    label: str
    confidence: float
    arousal: float
    valence: float
    final: bool


class VoiceAffectModel:
    """Shared encoder and head; see the module docstring."""

    def __init__(self, cfg: VoiceAffectConfig | None = None, head: LinearHead | None = None) -> None:
        from kikimimi.models.asr.whisper_ct2 import WhisperConfig, WhisperCT2

        self.cfg = cfg = cfg if cfg is not None else VoiceAffectConfig()
        self.whisper = WhisperCT2(WhisperConfig(cfg.model, device=cfg.device, threads=cfg.threads))
        name = self.whisper.resolved.name
        self.head = head if head is not None else load_head(cfg.head or bundled_head(name))
        if self.head.input != input_name(name):
            raise ParamError(f"voice affect head {self.head.id!r} takes {self.head.input!r}, but model {cfg.model!r} "
                             f"gives {input_name(name)!r}; use a head trained on that model's states")
        self.id = self.head.id
        self.classes = self.head.classes

    def new_stream(self) -> VoiceAffectStream:
        return VoiceAffectStream(self)

    def estimate(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (B, C) of log-mel windows ((n, n_mels) each), in one encoder call."""
        states = self.whisper.encoder_states(list(windows))
        return self.head.probabilities(np.stack([pool(s) for s in states]))

    def step(self, streams: Sequence[VoiceAffectStream], limits: Sequence[int | None] | None = None) -> int:
        """Estimate every due utterance of ``streams`` in one batch (each stream's provisional estimate reading no
        further than its sample in ``limits``, None: all it has); how many were estimated."""
        lims = list(limits) if limits is not None else [None] * len(streams)
        if len(lims) != len(streams):
            raise ParamError(f"voice affect step: {len(lims)} limits for {len(streams)} streams; allowed: one each")
        due = [(s, req) for s, lim in zip(streams, lims, strict=True) if (req := s.due(lim)) is not None]
        if not due:
            return 0
        probs = self.estimate([req[1] for _, req in due])
        for (s, req), p in zip(due, probs, strict=True):
            s.deliver(req, p)
        return len(due)


class VoiceAffectStream:
    """One audio stream's utterances and estimates; see the module docstring."""

    def __init__(self, model: VoiceAffectModel) -> None:
        self.model = model
        w = model.whisper
        self._frames = FrameRing(MAX_FRAMES + 10 * FPS, w.n_bins, w.hop, SILENCE_LOG10)
        self._utt: tuple[int, int, int] | None = None      # (utterance id, start sample, start frame)
        self._end: tuple[int, int] | None = None           # (end sample, end frame) once ended
        self._last = -1                                    # frame up to which the last estimate ran
        self._next_id = 0
        self._out: list[AffectEstimate] = []

    def accept(self, frames: np.ndarray, start_frame: int, sample_index: int) -> None:
        """Log10 mel frames ``[start_frame, start_frame + n)``, the first at stream sample ``sample_index``."""
        self._frames.accept(frames, start_frame, sample_index)

    def begin(self, start_sample: int, utterance_id: int | None = None) -> None:
        """An utterance starts at ``start_sample`` (an open one is dropped without a final)."""
        if start_sample < 0:
            raise ParamError(f"voice affect: start_sample={start_sample} is not allowed; allowed: >= 0")
        uid = self._next_id if utterance_id is None else utterance_id
        self._next_id = uid + 1
        f = self._frames.frame_of(start_sample)
        if self._frames.ring is not None:
            f = max(f, self._frames.ring.oldest_index)
        self._utt, self._end, self._last = (uid, start_sample, f), None, f

    def end(self, end_sample: int) -> None:
        """The open utterance ends at ``end_sample``; its final comes at the next step that has its frames."""
        if self._utt is not None and self._end is None:
            end_sample = max(end_sample, self._utt[1])
            self._end = (end_sample, max(self._frames.frame_of(end_sample), self._utt[2]))

    def due(self, limit: int | None = None) -> tuple[tuple[int, int, int, bool], np.ndarray] | None:
        """The window to estimate now, if any: ((utterance id, start sample, end sample, final), frames). A
        provisional window reads frames up to sample ``limit`` at most (None: every frame there is)."""
        ring = self._frames.ring
        if self._utt is None or ring is None:
            return None
        uid, s0, f0 = self._utt
        cfg = self.model.cfg
        if self._end is not None:
            if self._frames.frames_end < self._end[1]:        # the final waits for every frame of the utterance
                return None
            end, final, end_sample = self._end[1], True, self._end[0]
        else:
            end = self._frames.frames_end
            if limit is not None:
                end = min(end, self._frames.frame_of(limit))
            long_enough = end - f0 >= cfg.min_ms // 10
            if cfg.interval_ms <= 0 or not long_enough or end - self._last < cfg.interval_ms // 10:
                return None
            final, end_sample = False, self._frames.sample_of(end)
        end = min(end, ring.write_index)
        start = max(f0, end - MAX_FRAMES, ring.oldest_index)
        if end <= start:
            if final:
                self._utt = self._end = None
            return None
        return (uid, s0, end_sample, final), ring.view(start, end).copy()

    def deliver(self, req: tuple[tuple[int, int, int, bool], np.ndarray], probabilities: np.ndarray) -> None:
        """Keep the estimate of a window :meth:`due` gave."""
        (uid, s0, s1, final), _ = req
        classes = self.model.classes
        k = int(np.argmax(probabilities))
        a, v = arousal_valence(classes, probabilities)
        self._out.append(AffectEstimate(uid, s0, s1, classes, probabilities.astype(np.float32), classes[k],
                                        float(probabilities[k]), a, v, final))
        if final:
            self._utt = self._end = None
        else:
            self._last = self._frames.frame_of(s1)

    @property
    def frames_end(self) -> int:
        """One past the newest frame accepted."""
        return self._frames.frames_end

    def sample_of(self, frame: int) -> int:
        """The stream sample of frame ``frame``."""
        return self._frames.sample_of(frame)

    @property
    def open(self) -> bool:
        """An utterance has begun and has not had its final yet."""
        return self._utt is not None

    def results(self) -> list[AffectEstimate]:
        """The estimates made since the last call, in order."""
        out, self._out = self._out, []
        return out
