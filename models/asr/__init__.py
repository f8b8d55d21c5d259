"""Speech recognition models: the backend-neutral interface, model resolution, streaming policy.

* :mod:`~kikimimi.models.asr.recognizer`: :class:`Recognizer` (shared weights, batched ``decode``) and
  :class:`RecognizerStream` (per-stream state: accept, begin, endpoint, step, apply, result, reset).
* :mod:`~kikimimi.models.asr.backends`: backends by name (the ``kikimimi.asr_backends`` entry points), each
  with its declared parameters and typed config.
* :mod:`~kikimimi.models.asr.whisper_ct2`: Whisper through CTranslate2 (imported on use);
  :mod:`~kikimimi.models.asr.whisper_config` its settings, requests and outputs;
  :mod:`~kikimimi.models.asr.whisper_words` its aligned words;
  :mod:`~kikimimi.models.asr.whisper_stream` its per-stream state (with carry, frame_ring, utterance_state,
  speculation).
* :mod:`~kikimimi.models.asr.sphinx`: pocketsphinx with a JSGF grammar (imported on use).
* :mod:`~kikimimi.models.asr.batching`: decoding the due streams of one recognizer in one call.
* :mod:`~kikimimi.models.asr.resolve`: finds a model by name or path.
* :mod:`~kikimimi.models.asr.policy`: LocalAgreement commit policy, buffer trimming, adaptive interval.
* :mod:`~kikimimi.models.asr.hallucination`: silence-phrase and repetition filters.
* :mod:`~kikimimi.models.asr.text`: normalization and WER / CER.

Importing this package imports no heavy dependency.
"""

from kikimimi.models.asr.recognizer import AUTO, DecodeRequest, Recognizer, RecognizerStream, Revision

__all__ = ["AUTO", "DecodeRequest", "Recognizer", "RecognizerStream", "Revision"]
