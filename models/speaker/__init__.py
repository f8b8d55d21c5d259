"""Speaker models: encoders (d-vectors), streaming embedding windows, identification and clustering,
and the enrollment database.

* :mod:`~kikimimi.models.speaker.encoder`: the :class:`SpeakerEncoder` interface (shared weights, one
  batched ``embed`` call for many windows of many streams), :func:`load_encoder` and
  :func:`shared_encoder` (loaded once per process).
* :mod:`~kikimimi.models.speaker.ge2e`: the GE2E d-vector LSTM with the weights shipped in the
  ``resemblyzer`` package, fed with our own 40-mel front end.
* :mod:`~kikimimi.models.speaker.windows`: sliding windows over a stream and utterance embeddings.
* :mod:`~kikimimi.models.speaker.streaming`: the streaming contract (``SpeakerModel(config)`` ->
  ``new_stream()`` -> ``accept`` / ``begin`` / ``end`` / ``step``, one batched step across streams),
  with its :mod:`~kikimimi.models.speaker.config` (``SpeakerConfig``, the enrollment read at start)
  and :mod:`~kikimimi.models.speaker.results` (window and utterance embeddings, turns).
* :mod:`~kikimimi.models.speaker.identify`: gallery matching, online clustering of unknown voices and
  speaker-change detection; :mod:`~kikimimi.models.speaker.calibrate`: EER and thresholds.
"""
