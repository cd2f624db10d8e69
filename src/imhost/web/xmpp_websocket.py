"""XMPP over WebSocket (RFC 7395) at ``/xmpp-websocket``, served by the running engine.

The web layer only accepts the connection with the ``xmpp`` subprotocol and hands it to
``runtime.xmpp.serve_websocket``; authentication is the XMPP stream's own (SASL). A process
that runs no engine (``--role web`` on another node) refuses the upgrade.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

router = APIRouter()

SUBPROTOCOL = "xmpp"


class StarletteAdapter:
    """The ``WebSocketAdapter`` the engine expects, over a Starlette WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.client_address = websocket.client.host if websocket.client else ""
        # Only TLS this process terminated counts: a forwarded-protocol header is the client's
        # word, so behind a TLS proxy PLAIN stays off and SCRAM is used.
        self.is_secure = websocket.url.scheme == "wss"

    async def receive_text(self) -> str:
        return await self.websocket.receive_text()

    async def send_text(self, data: str) -> None:
        await self.websocket.send_text(data)

    async def close(self, code: int = 1000) -> None:
        await self.websocket.close(code)


@router.websocket("/xmpp-websocket")
async def xmpp_websocket(websocket: WebSocket) -> None:
    server = getattr(websocket.app.state.runtime, "xmpp", None)
    offered = [p.strip() for p in websocket.scope.get("subprotocols", [])]
    if server is None or SUBPROTOCOL not in offered:
        # RFC 7395 §3.1: no "xmpp" subprotocol, no XMPP; no engine here, nothing to serve.
        await websocket.close(code=1008)
        return
    await websocket.accept(subprotocol=SUBPROTOCOL)
    await server.serve_websocket(StarletteAdapter(websocket))
