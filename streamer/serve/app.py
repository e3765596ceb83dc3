"""The HTTP side of `emomon serve`: the routes (the page, /healthz, /metrics, the stream
socket) and the Host check every request passes first (DNS rebinding)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..net import is_ip_address, is_loopback
from .hub import Hub
from .session import StreamSession

PAGE = Path(__file__).resolve().parent / "web" / "index.html"


def create_app(hub: Hub):
    """The Starlette application: routes over the hub."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def healthz(request):
        health = hub.health()
        return JSONResponse(health, status_code=503 if health["status"] == "degraded" else 200)

    async def metrics(request):
        return Response(generate_latest(hub.registry), media_type=CONTENT_TYPE_LATEST)

    async def page(request):
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def stream_endpoint(ws: WebSocket) -> None:
        await StreamSession(hub, ws).run()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            WebSocketRoute("/v1/stream", stream_endpoint),
        ]
    )
    return HostGuard(app, hub)


def host_allowed(host_header: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's Host names this server: a loopback name, an IP address (a page
    can only send one by being served from that address), or one of `allowed` ("*": any).
    A page that DNS rebinding moved onto this machine sends its own name, and is refused."""
    if "*" in allowed:
        return True
    try:
        host = urlsplit(f"//{host_header}").hostname or ""
    except ValueError:  # a malformed bracket or port
        return False
    return bool(host) and (is_loopback(host) or is_ip_address(host) or host in {h.lower() for h in allowed})


class HostGuard:
    """ASGI middleware: a request whose Host is not allowed gets 403 (a WebSocket is refused
    before its handshake completes), before any route, Origin or token check."""

    def __init__(self, app, hub: Hub) -> None:
        self.app, self.hub = app, hub

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not host_allowed(host, self.hub.settings.allow_hosts):
                self.hub.m_refused.labels("host").inc()
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = f"Host {host[:80]!r} is not one this server answers to ([serve] allow_hosts).".encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
