"""Audio-visual speech recognition: our chunked AV encoder with CTC, and a loader for external AV checkpoints."""
