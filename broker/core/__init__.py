"""Layer B: the broker state machine and shared state (sessions, router, trees); no sockets."""
