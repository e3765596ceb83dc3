"""A live audio stream on loopback, as an internet radio sends one: HTTP, no length, MP3
frames in real time. Run as a process of its own by tests/test_streams.py:

    python stream_server.py AUDIO.mp3 PORT_FILE [--drop-at S --outage S]

It writes its port to PORT_FILE once it listens. The first listener gets the stream from
its start; at --drop-at seconds of audio the connection is cut, for --outage seconds every
request is answered 503, and the next listener gets the stream from where it is by then
(what aired in between is gone, as on air), to its end, after which it closes.
"""

from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def frames(path: Path) -> list[tuple[float, bytes]]:
    """(start s, bytes) of each MP3 frame, read by PyAV's demuxer."""
    import av

    data = path.read_bytes()
    out = []
    with av.open(str(path)) as box:
        stream = box.streams.audio[0]
        for packet in box.demux(stream):
            if packet.size and packet.pos is not None and packet.pts is not None:
                out.append((float(packet.pts * stream.time_base), data[packet.pos : packet.pos + packet.size]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("audio", type=Path)
    ap.add_argument("port_file", type=Path)
    ap.add_argument("--drop-at", type=float, default=0.0, help="cut the first connection here (0: never)")
    ap.add_argument("--outage", type=float, default=0.0)
    args = ap.parse_args()
    stream = frames(args.audio)
    clock: dict[str, float] = {}  # start: when the first listener came; back: when the outage ends
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            now = time.monotonic()
            with lock:
                first = "start" not in clock
                clock.setdefault("start", now)
                if not first and now < clock.get("back", 0.0):
                    self.send_error(503, "off the air")
                    return
            start = clock["start"]
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("icy-name", "emomon test radio")
            self.end_headers()
            at = 0.0 if first else now - start  # live: where the programme is now
            stop = args.drop_at if first and args.drop_at else float("inf")
            try:
                for t, data in stream:
                    if t < at:
                        continue
                    if t >= stop:
                        with lock:
                            clock["back"] = time.monotonic() + args.outage
                        return  # the connection drops
                    time.sleep(max(0.0, start + t - 0.5 - time.monotonic()))  # half a second ahead, as a buffer
                    self.wfile.write(data)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    args.port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
