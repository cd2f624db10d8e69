"""Request bodies are received whole, and bounded, before the application sees them.

:class:`BodyLimit` is the outermost ASGI middleware. For a request with a body it

1. refuses at once a ``Content-Length`` above the route's limit (413, problem+json, without
   reading a byte of it);
2. otherwise receives the body into memory, counting the bytes as they arrive, and refuses
   with 413 as soon as the count passes the limit (a chunked upload has no length to check);
3. only then calls the application, replaying the body from memory.

So no route, dependency or database transaction ever waits for a slow client: a body that
trickles in for a minute is waited for here, before anything else happens, and memory per
request is bounded by the route's limit. The limits are per route (:func:`body_limit_for`): a
small default for JSON and forms, more for a usage batch and for a CSV import.

It also carries out :func:`delay_response`: a route that wants its answer to wait (a refused
sign-in, say) asks for it, and the wait happens here, after the route's transaction has
committed, without a worker thread or the database being held meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request

from imhost.billing.sepa.camt053 import MAX_STATEMENT_BYTES
from imhost.hosting.service import CSV_MAX_BYTES
from imhost.support.tickets import DEFAULT_ATTACHMENTS_PER_MESSAGE, DEFAULT_MAX_ATTACHMENT_BYTES
from imhost.web.problems import MEDIA_TYPE, PROBLEM_BASE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KIB = 1024
MIB = 1024 * KIB
DEFAULT_LIMIT = 1 * MIB
"""JSON bodies and forms."""
MULTIPART_OVERHEAD = 64 * KIB
"""Room for the multipart framing and the other small fields around an uploaded file."""
ROUTE_LIMITS: tuple[tuple[re.Pattern[str], int], ...] = (
    # CSV import of XMPP accounts (API and portal): the file's bound plus the form around it.
    (
        re.compile(
            r"^/(api/v1/orgs/[^/]+/services|portal/orgs/[^/]+/service)/[^/]+/accounts/import$"
        ),
        CSV_MAX_BYTES + MULTIPART_OVERHEAD,
    ),
    # Ticket messages with attachments (portal, the public contact form, console).
    (
        re.compile(
            r"^/(portal/orgs/[^/]+/support/tickets(/[^/]+/reply)?|help/contact"
            r"|help/tickets/[^/]+/[^/]+/reply|console/support/tickets(/new|/[^/]+/reply)?)$"
        ),
        DEFAULT_MAX_ATTACHMENT_BYTES * DEFAULT_ATTACHMENTS_PER_MESSAGE + MULTIPART_OVERHEAD,
    ),
    # Usage batches: up to 10,000 records (metering.schemas.MAX_BATCH).
    (re.compile(r"^/api/v1/(orgs/[^/]+/usage|admin/usage)$"), 8 * MIB),
    # camt.053 bank statements (staff API and console).
    (
        re.compile(r"^/(api/v1/admin/billing/sepa|console/sepa)/statements$"),
        MAX_STATEMENT_BYTES + MULTIPART_OVERHEAD,
    ),
)
DELAY_KEY = "imhost_response_delay"
MAX_DELAY_SECONDS = 30.0


def body_limit_for(path: str) -> int:
    """The most bytes a request body to ``path`` may have."""
    for pattern, limit in ROUTE_LIMITS:
        if pattern.match(path):
            return limit
    return DEFAULT_LIMIT


def delay_response(request: Request, seconds: float) -> None:
    """Make the answer to ``request`` wait ``seconds`` (at most 30), after the route's
    transaction has ended (a refused sign-in's growing delay, for instance). The wait holds
    no database lock and no thread: the route returns, its unit of work commits, then the
    answer waits here."""
    current = float(request.scope.setdefault("state", {}).get(DELAY_KEY, 0.0))
    request.scope["state"][DELAY_KEY] = min(MAX_DELAY_SECONDS, max(current, seconds))


def _size_text(limit: int) -> str:
    if limit >= MIB and limit % MIB == 0:
        return f"{limit // MIB} MiB"
    if limit >= MIB:
        return f"{limit / MIB:.1f} MiB"
    return f"{limit // KIB} KiB"


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int] = body_limit_for) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._delayed(scope, send)
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and not _declares_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        try:
            body = await _receive_body(receive, limit)
        except BodyTooLarge:
            await _too_large(send, limit)
            return
        except _ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    def _delayed(scope: Scope, send: Send) -> Send:
        async def send_after_delay(message: Message) -> None:
            if message["type"] == "http.response.start":
                delay = float(scope.get("state", {}).get(DELAY_KEY, 0.0) or 0.0)
                if delay > 0:
                    await asyncio.sleep(delay)
            await send(message)

        return send_after_delay


class _ClientGone(Exception):
    pass


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _declares_body(scope: Scope) -> bool:
    return _header(scope, b"content-length") not in (None, b"0") or (
        _header(scope, b"transfer-encoding") is not None
    )


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    if raw is None or not raw.strip().isdigit():
        return None  # the server rejects a malformed length; counting still bounds the body
    return int(raw)


async def _receive_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as a server does

    return replay


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": PROBLEM_BASE + "body-too-large",
            "title": "Request too large",
            "status": 413,
            "detail": (
                f"The request body is larger than this address accepts ({_size_text(limit)}). "
                "Send less at once: split the file or the batch."
            ),
            "limit_bytes": limit,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
