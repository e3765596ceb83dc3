"""`emomon serve`: the WebSocket server, its page, the model process and the --server
clients (docs/architecture.md)."""
