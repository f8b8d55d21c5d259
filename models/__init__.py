"""kikimimi.models."""
