"""Request bodies are bounded per route before anything parses them (issue 9: a 50 MB JSON
to sign-up took 15 s and 1.3 GB of memory)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.requests import Request

from imhost.accounts.models import User
from imhost.hosting.service import CSV_MAX_BYTES
from imhost.runtime import Runtime
from imhost.web.body import DEFAULT_LIMIT, BodyLimit, body_limit_for, delay_response


def _users(runtime: Runtime) -> int:
    with runtime.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)


def test_a_declared_length_over_the_limit_is_refused_before_the_route_runs(
    app_client: TestClient, runtime: Runtime
) -> None:
    big = b'{"email": "a@example.com", "password": "' + b"x" * (2 * DEFAULT_LIMIT) + b'"}'
    resp = app_client.post(
        "/api/v1/signup", content=big, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == 413 and problem["title"] == "Request too large"
    assert "larger than this address accepts (1 MiB)" in problem["detail"]
    assert _users(runtime) == 0


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_limit(
    app_client: TestClient,
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(3 * DEFAULT_LIMIT // 65536):
            yield b" " * 65536

    resp = app_client.post(
        "/portal/sign-in",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413
    assert resp.json()["type"].endswith("/body-too-large")


def test_the_csv_import_route_accepts_more_than_the_default() -> None:
    path = "/api/v1/orgs/acme/services/s1/accounts/import"
    assert body_limit_for(path) > CSV_MAX_BYTES > DEFAULT_LIMIT
    assert body_limit_for("/portal/orgs/acme/service/s1/accounts/import") > CSV_MAX_BYTES
    assert body_limit_for("/api/v1/signup") == DEFAULT_LIMIT
    assert body_limit_for("/api/v1/orgs/acme/usage") > DEFAULT_LIMIT


def test_a_body_under_the_limit_reaches_the_route_whole(app_client: TestClient) -> None:
    resp = app_client.post("/api/v1/signup", json={"email": "not an address"})
    assert resp.status_code == 422  # parsed by the route: the body arrived intact


def _http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


def test_an_oversized_length_is_refused_without_reading_a_byte() -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append("app")

    async def receive() -> dict[str, Any]:
        calls.append("receive")
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _http_scope("/api/v1/signup", [(b"content-length", str(50 * 1024**2).encode())])
    asyncio.run(BodyLimit(app)(scope, receive, send))
    assert calls == []
    assert sent[0]["status"] == 413


def test_the_app_runs_only_once_the_whole_body_has_arrived() -> None:
    """The route (and its transaction) never waits for a slow client."""
    events: list[str] = []
    parts = [b"a=", b"1", b"&b=2"]

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.01)
        chunk = parts.pop(0)
        events.append(f"received {chunk!r}")
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    async def app(scope: Any, rcv: Any, send: Any) -> None:
        events.append("app")
        message = await rcv()
        events.append(f"app read {message['body']!r}")

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = _http_scope("/portal/sign-in", [(b"content-length", b"7")])
    asyncio.run(BodyLimit(app)(scope, receive, send))
    assert events == [
        "received b'a='",
        "received b'1'",
        "received b'&b=2'",
        "app",
        "app read b'a=1&b=2'",
    ]


def test_a_delayed_answer_waits_after_the_route_without_holding_it() -> None:
    app = FastAPI()
    finished: list[float] = []

    @app.post("/slow-refusal")
    def refuse(request: Request) -> dict[str, str]:
        delay_response(request, 0.3)
        finished.append(time.monotonic())
        return {"status": "refused"}

    with TestClient(BodyLimit(app)) as client:  # type: ignore[arg-type]
        started = time.monotonic()
        resp = client.post("/slow-refusal")
        answered = time.monotonic()
    assert resp.status_code == 200
    assert finished[0] - started < 0.3 <= answered - started
