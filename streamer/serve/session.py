"""One WebSocket stream of `emomon serve` from handshake to close: the Origin and token
checks, the stream's parameters (sample_rate; format: 16-bit PCM, or WebM/Opus or Ogg/Opus
chunks decoded by compressed.py), the read loop (bounded messages, at most max_speed x
real time, an idle timeout) and the send loop (docs/serve.md)."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from urllib.parse import urlsplit

from ...model import media
from ...model.audio import SAMPLE_RATE
from .compressed import FORMATS, OPUS_RATE, ChunkDecoder
from .hub import Hub, Stream

MAX_MESSAGE_BYTES = 1 << 20  # one binary message: 1 MiB, about 33 s at 16 kHz
RATES = (8000, 48000)  # accepted sample rates, inclusive
RATE_TEXT = re.compile(r"[0-9]{1,6}")  # sample_rate as ASCII digits, parsed before accept()


class StreamSession:
    """One WebSocket connection from handshake to close."""

    decoder: ChunkDecoder | None = None  # a compressed stream's (format=webm or ogg)

    def __init__(self, hub: Hub, ws) -> None:
        self.hub, self.ws = hub, ws

    def _origin_allowed(self) -> bool:
        """A browser always says which page opens the socket. Only the server's own page (the
        origin's host is the Host it asked for, which HostGuard has checked) and [serve] origins
        may: another site the user visits must not stream through this server."""
        origin = self.ws.headers.get("origin")
        allowed = self.hub.settings.origins
        if origin is None or "*" in allowed or origin.rstrip("/") in allowed:
            return True
        return urlsplit(origin).netloc.lower() == self.ws.headers.get("host", "").lower()

    def _authorised(self) -> bool:
        token = self.hub.settings.token
        if not token:
            return True
        header = self.ws.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else self.ws.query_params.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    async def _refuse(self, code: int, text: str, reason: str) -> None:
        """After the handshake: one error message naming the problem, then close `code`."""
        self.hub.m_refused.labels(reason).inc()
        await self.ws.send_json({"type": "error", "message": text})
        await self.ws.close(code)

    async def run(self) -> None:
        from starlette.websockets import WebSocketDisconnect

        hub, ws = self.hub, self.ws
        for allowed, reason in ((self._origin_allowed, "origin"), (self._authorised, "token")):
            if not allowed():
                hub.m_refused.labels(reason).inc()
                await ws.close(1008)  # before accept: the handshake is refused (HTTP 403)
                return
        raw = ws.query_params.get("sample_rate", str(SAMPLE_RATE))
        rate = int(raw) if RATE_TEXT.fullmatch(raw) else 0  # ASCII digits only: '²' passes str.isdigit()
        fmt = ws.query_params.get("format", "pcm16")
        await ws.accept()
        if fmt not in ("pcm16", *FORMATS):
            await self._refuse(1008, f"format {fmt[:20]!r} is not one of pcm16, {', '.join(FORMATS)}.", "format")
            return
        if fmt != "pcm16":
            if not media.available():
                await self._refuse(1008, f"This server decodes {FORMATS[fmt]} streams once emomon[media] is "
                                   "installed there; send 16-bit PCM (format=pcm16).", "format")  # fmt: skip
                return
            rate = OPUS_RATE  # the decoder's, whatever sample_rate says
        elif not RATES[0] <= rate <= RATES[1]:
            await self._refuse(1008, f"sample_rate {raw[:20]!r} is not a whole number from 8000 to 48000.", "rate")
            return
        if hub.closing:
            await self._refuse(1001, "The server is shutting down.", "closing")
            return
        if len(hub.streams) >= hub.settings.max_streams:
            await self._refuse(1013, f"The server is at its limit of {hub.settings.max_streams} streams.", "full")
            return
        stream = hub.open(rate)
        sender = asyncio.create_task(self._send(stream))
        if fmt != "pcm16":
            self.decoder = ChunkDecoder(fmt, asyncio.get_running_loop(), lambda audio: self._decoded(stream, audio),
                                        name=f"stream {stream.id} ({FORMATS[fmt]})")  # fmt: skip
        try:
            await ws.send_json({
                "type": "ready", "stream": stream.id, "model": hub.predictor.name,
                "emotions": list(hub.predictor.emotions), "sample_rate": stream.rate,
            })  # fmt: skip
            code, text, finish = await self._receive(stream)
            if finish and self.decoder is not None:  # what is still in the pipe, decoded first
                self.decoder.end()
                try:
                    await asyncio.wait_for(self.decoder.done.wait(), hub.settings.model_timeout_s)
                except TimeoutError:
                    self.decoder.fail(f"The decoder did not finish within {hub.settings.model_timeout_s:g} s.")
                if self.decoder.failed.done():
                    code, text, finish = self._undecodable(self.decoder.failed.result())
            if finish:
                hub.feed(stream, stream.cuts.finish())  # the resampler's tail and the open segment
                wait_s = hub.settings.model_timeout_s
                try:
                    await asyncio.wait_for(stream.idle.wait(), wait_s)  # every final result is in the outbox
                except TimeoutError:
                    code, text = 1011, f"{stream.pending} segment(s) got no result within {wait_s:g} s."
                if code == 1000:
                    stream.outbox.put_nowait({"type": "end"})
            stream.outbox.put_nowait(None)
            await sender
            if text:
                await ws.send_json({"type": "error", "message": text})
            await ws.close(code)
        except WebSocketDisconnect:
            pass  # the client went away: its segments still in the queue cost one model call, no more
        finally:
            sender.cancel()
            if self.decoder is not None:
                self.decoder.end()
            hub.close(stream)

    def _decoded(self, stream: Stream, audio) -> None:
        """A block the stream's decoder gave (on the loop): cut as 16-bit PCM is."""
        if stream.key in self.hub.streams:
            stream.samples_in += len(audio)
            self.hub.feed(stream, stream.cuts.push(audio))

    def _undecodable(self, sentence: str) -> tuple[int, str, bool]:
        self.hub.m_refused.labels("undecodable").inc()
        return 1007, sentence, False

    async def _send(self, stream: Stream) -> None:
        while True:
            msg = await stream.outbox.get()
            if msg is None:
                return
            await self.ws.send_json(msg)

    async def _receive(self, stream: Stream) -> tuple[int, str, bool]:
        """Read until the client ends (1000), the server closes (1001), the client falls silent
        (1008) or a message is bad. Returns the close code, the error to send before it, and
        whether the stream's remaining results are sent first."""
        hub, ws = self.hub, self.ws
        idle_s = hub.settings.idle_timeout_s or None
        while True:
            wait = stream.ahead_s(hub.settings.max_speed)
            if wait > 0:  # faster than max_speed x real time: stop reading, TCP pushes back
                await asyncio.sleep(wait)
            if hub.closing:
                return 1001, "", True
            receive = asyncio.ensure_future(ws.receive())
            closing = asyncio.ensure_future(hub.closing_event.wait())
            waits = {receive, closing} | ({self.decoder.failed} if self.decoder is not None else set())
            done, _ = await asyncio.wait(waits, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            if self.decoder is not None and self.decoder.failed.done():
                receive.cancel()
                return self._undecodable(self.decoder.failed.result())
            if receive not in done:
                receive.cancel()
                if closing in done:
                    return 1001, "", True
                hub.m_refused.labels("idle").inc()
                return 1008, f"Nothing received for {idle_s:g} s: the stream is closed to free its place.", True
            msg = receive.result()
            if msg["type"] == "websocket.disconnect":
                from starlette.websockets import WebSocketDisconnect

                raise WebSocketDisconnect(msg.get("code", 1006))
            data, text = msg.get("bytes"), msg.get("text")
            if data is not None:
                if len(data) > MAX_MESSAGE_BYTES:
                    why = f"A binary message holds at most {MAX_MESSAGE_BYTES} bytes; this one had {len(data)}."
                    return 1009, why, False
                if self.decoder is not None:
                    await self.decoder.put(data)
                    continue
                if len(data) % 2:
                    return (
                        1003,
                        f"Audio must be 16-bit samples (an even number of bytes); got {len(data)} bytes.",
                        False,
                    )
                hub.feed(stream, stream.cuts.push(stream.audio(data)))
                continue
            try:
                obj = json.loads(text or "")
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and obj.get("type") == "end":
                return 1000, "", True
            return 1003, f'Unknown text message {text[:80]!r}: the only one is {{"type": "end"}}.', False
