"""The two-stage voice activity detector as a streaming model: webrtcvad as a fast gate, Silero VAD
confirming speech, a hysteresis segmenter deciding SPEECH_START / SPEECH_END (and PROGRESS watermarks).

* :class:`VadConfig` (:mod:`.config`): the settings, a frozen dataclass that validates itself.
* :class:`VadModel` (:mod:`.model`): built from a config; holds the shared Silero session, makes streams
  (:meth:`VadModel.new_stream`) and runs the waiting windows of all of them in one batched step.
* :class:`VadStream` (:mod:`.stream`): one audio stream's state; ``accept(int16 samples)`` returns
  :data:`VadDecision` records (sample indices on the stream's clock), ``flush`` / ``close`` end the
  open segment at the last sample seen.
* :func:`speech_spans` (:mod:`.offline`): the speech segments of a whole recording.
* :class:`WebrtcVadConfig`, :class:`WebrtcVadStream` (:mod:`.webrtc`): webrtcvad alone with its own
  hysteresis (the ``webrtc_vad`` node).

The ``vad`` node kind is a thin adapter over it; offline code (speaker enrolment,
AV training data, ``bench/vad.py``) uses it directly.
"""

from kikimimi.models.vad.config import SAMPLE_RATES, VadConfig
from kikimimi.models.vad.model import VadModel, silero_session
from kikimimi.models.vad.offline import speech_spans
from kikimimi.models.vad.stream import VadDecision, VadStream
from kikimimi.models.vad.webrtc import WebrtcVadConfig, WebrtcVadStream

__all__ = ["SAMPLE_RATES", "VadConfig", "VadDecision", "VadModel", "VadStream", "WebrtcVadConfig", "WebrtcVadStream",
           "silero_session", "speech_spans"]
