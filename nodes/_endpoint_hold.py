"""Hold a VAD's SPEECH_END until the silence after it has lasted, so short pauses do not end an utterance.

The VAD ends a segment after its own hangover (``min_silence_ms``, 300 ms by default: the speaker node
wants segments that short), but a recognizer that finalizes each segment alone loses accuracy at every
pause it cuts (Whisper decodes the words before a pause without the audio after it; on LibriSpeech,
finals cut at 300 ms pauses scored 1-3 WER points worse than whole-clip decoding, at 500 ms none).
:class:`EndpointHold` sits between the VAD events and the asr node's :class:`~kikimimi.nodes._vad_sync.VadGate`
and works on the VAD's own event order only (so files at full speed give the same result on every run):

* a SPEECH_END is held;
* a SPEECH_START that begins less than ``hold`` samples after the held end drops both (the utterance
  goes on, its pause inside it);
* a PROGRESS watermark at or past ``hold`` samples after the held end releases it, unless a watermark
  since the end said speech (probability >= ``threshold``: speech resuming that the VAD has yet to confirm
  with a SPEECH_START); then it waits for that START, or for ``hold`` samples of watermarks below the
  threshold after the last one that said speech;
* :meth:`flush` (end of stream) releases it.

Without PROGRESS watermarks (the VAD's ``progress_ms`` 0) a held end waits for the next SPEECH_START or the
end of the stream.
"""

from __future__ import annotations

from kikimimi.engine.errors import ParamError
from kikimimi.engine.msgs.speech import SpeechEventKind, VadEvent


class EndpointHold:
    """Holds SPEECH_END until ``hold`` samples of silence followed it; see the module docstring."""

    def __init__(self, hold: int, threshold: float = 0.5) -> None:
        if hold < 0 or not 0.0 < threshold <= 1.0:
            raise ParamError(f"EndpointHold hold={hold}, threshold={threshold}; allowed: hold >= 0, "
                             "0 < threshold <= 1")
        self.hold = hold
        self.threshold = threshold
        self.held: VadEvent | None = None
        self._speech_at: int | None = None   # watermark of the last PROGRESS that said speech while held
        self.merged = 0                       # pauses that did not end an utterance

    def push(self, ev: VadEvent) -> list[VadEvent]:
        """The events to pass on now, in order, for ``ev``."""
        if self.hold <= 0:
            return [ev]
        if ev.kind is SpeechEventKind.SPEECH_END:
            out = self.flush()
            self.held, self._speech_at = ev, None
            return out
        held = self.held
        if held is None:
            return [ev]
        if ev.kind is SpeechEventKind.SPEECH_START:
            if ev.start_sample - held.end_sample < self.hold:
                self.held, self._speech_at = None, None
                self.merged += 1
                return []
            return [*self.flush(), ev]
        if ev.probability >= self.threshold:
            self._speech_at = ev.start_sample
            return [ev]
        since = held.end_sample if self._speech_at is None else max(held.end_sample, self._speech_at)
        if ev.start_sample >= since + self.hold:
            return [*self.flush(), ev]
        return [ev]

    def flush(self) -> list[VadEvent]:
        """Release the held SPEECH_END, if any."""
        held, self.held, self._speech_at = self.held, None, None
        return [held] if held is not None else []
