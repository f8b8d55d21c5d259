"""kikimimi.nodes."""
