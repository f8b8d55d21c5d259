"""kikimimi.launch."""
