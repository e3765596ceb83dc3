"""`emomon serve`: the WebSocket API and its browser page (server.py, web/), the model's own
process (model_process.py), the clients behind live/replay --server (remote.py), and [serve]."""
