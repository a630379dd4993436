"""Layer C: byte-stream transports (TCP, TLS, WebSocket) and the WebSocket handshake."""
