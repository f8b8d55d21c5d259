"""kikimimi.engine: messages, clocks, ring buffer, queues, node base, graph, runner, transports."""
