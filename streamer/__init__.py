"""emomon's command and everything around the model at run time: audio in (audio/), the monitor
(monitor/: live and replay), the outputs (outputs/), the WebSocket server (serve/); cli.py is the
`emomon` command and config.py reads config.toml."""
