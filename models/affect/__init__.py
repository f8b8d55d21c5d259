"""Affect: how a person sounds (voice) and looks (face), as labels with probabilities, arousal and valence.

* :mod:`~kikimimi.models.affect.labels`: the emotion classes and their place on the arousal / valence plane.
* :mod:`~kikimimi.models.affect.head`: a linear classifier over pooled features, stored as safetensors with a
  JSON of its classes, input and licence.
* :mod:`~kikimimi.models.affect.voice`: the streaming voice model (Whisper encoder states of the utterance ->
  the head), provisional estimates while an utterance goes on and a final one at its end.
* :mod:`~kikimimi.models.affect.train`: the training script (``python -m kikimimi.models.affect.train``).
"""
