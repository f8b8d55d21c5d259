"""kikimimi.engine: messages, clocks, ring buffer, queues, node base, graph, runner, transports."""

# Register the face and active-speaker message types with the wire codec in every process that imports
# the engine, so a sink that never imports a vision node can still decode them.
from kikimimi.engine import face_messages as _face_messages  # noqa: F401
