"""kikimimi.engine."""
