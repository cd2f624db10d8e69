"""An ejabberd a provider already runs, driven through its HTTP API (``mod_http_api``).

Needs ``mod_http_api`` on a listener (``request_handlers: {/api: mod_http_api}``) and
``mod_admin_extra`` (for ``change_password`` and ``stats_host``), and an ``api_permissions``
rule that lets imhost call the commands: from its address, or with HTTP Basic credentials of
an admin account (``auth``). Tested against Debian's ejabberd 23.01.

ejabberd's HTTP API cannot make a virtual host refuse logins, so :meth:`suspend_host` and
:meth:`reactivate_host` raise :class:`EngineError` saying so: with this engine, suspend a
service by removing its host from ejabberd's configuration.
"""

from __future__ import annotations

from typing import Any

import httpx

from imhost.hosting.engines.base import EngineError, ImEngine


class EjabberdEngine(ImEngine):
    name = "ejabberd"

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``base_url``: the API root, e.g. ``http://127.0.0.1:5280/api``; ``auth``: an admin
        JID and its password, when the API requires them."""
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(auth=auth, timeout=timeout, transport=transport)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, command: str, args: dict[str, Any]) -> tuple[int, Any]:
        try:
            response = await self._client.post(f"{self.base_url}/{command}", json=args)
        except httpx.HTTPError as exc:
            raise EngineError(f"ejabberd is not reachable at {self.base_url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code in (401, 403):
            raise EngineError(
                f"ejabberd refused the command {command} ({response.status_code}): check "
                "api_permissions and the credentials"
            )
        return response.status_code, body

    @staticmethod
    def _message(body: Any) -> str:
        if isinstance(body, dict):
            return str(body.get("message") or body)
        return str(body)

    async def create_account(self, domain: str, localpart: str, password: str) -> None:
        status, body = await self._call(
            "register", {"user": localpart, "host": domain, "password": password}
        )
        if status == 409:  # already registered: make the password the one asked for
            await self.set_password(domain, localpart, password)
            return
        if status != 200:
            raise EngineError(
                f"ejabberd could not create {localpart}@{domain}: {self._message(body)}"
            )

    async def delete_account(self, domain: str, localpart: str) -> None:
        status, body = await self._call("unregister", {"user": localpart, "host": domain})
        if status != 200:
            raise EngineError(
                f"ejabberd could not delete {localpart}@{domain}: {self._message(body)}"
            )

    async def set_password(self, domain: str, localpart: str, password: str) -> None:
        status, body = await self._call(
            "change_password", {"user": localpart, "host": domain, "newpass": password}
        )
        if status != 200 or body != 0:
            raise EngineError(
                f"ejabberd could not set the password of {localpart}@{domain}: "
                f"{self._message(body)}"
            )

    async def kick_sessions(self, domain: str, localpart: str, reason: str) -> int:
        # kick_user takes no reason in ejabberd 23.01; the client sees ejabberd's own text.
        status, body = await self._call("kick_user", {"user": localpart, "host": domain})
        if status != 200 or not isinstance(body, dict):
            raise EngineError(
                f"ejabberd could not close the sessions of {localpart}@{domain}: "
                f"{self._message(body)}"
            )
        return int(body.get("num_resources", 0))

    async def suspend_host(self, domain: str, reason: str) -> None:
        raise EngineError(
            "ejabberd's HTTP API cannot make a host refuse logins; suspend "
            f"{domain} by removing it from ejabberd's configuration (hosts) and reloading it"
        )

    async def reactivate_host(self, domain: str) -> None:
        raise EngineError(
            f"ejabberd's HTTP API cannot change hosts; add {domain} back to ejabberd's "
            "configuration and reload it"
        )

    async def connected_sessions(self, domain: str) -> int:
        status, body = await self._call("stats_host", {"name": "onlineusers", "host": domain})
        if status != 200 or not isinstance(body, dict):
            raise EngineError(f"ejabberd could not count the sessions of {domain}: {body}")
        return int(body.get("stat", 0))
