"""Speaker models: encoders (d-vectors), streaming embedding windows, identification and clustering,
and the enrollment database.

* :mod:`~kikimimi.models.speaker.encoder`: the :class:`SpeakerEncoder` interface (shared weights, one
  batched ``embed`` call for many windows of many streams) and :func:`load_encoder`.
* :mod:`~kikimimi.models.speaker.ge2e`: the GE2E d-vector LSTM with the weights shipped in the
  ``resemblyzer`` package, fed with our own 40-mel front end.
* :mod:`~kikimimi.models.speaker.windows`: sliding windows over a stream and utterance embeddings.
* :mod:`~kikimimi.models.speaker.identify`: gallery matching, online clustering of unknown voices and
  speaker-change detection; :mod:`~kikimimi.models.speaker.calibrate`: EER and thresholds.
"""
