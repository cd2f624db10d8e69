"""XEP-0077 conversations: password change for an authenticated user, and its refusals."""

from __future__ import annotations

import base64

import pytest

from imhost.xmpp.core.xml import NS_SASL
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.register import NS_REGISTER, RegisterModule

from ..harness import DOMAIN, PASSWORD
from .conv import Harness, error_of, error_text, exchange

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [RegisterModule]


def change(password: str, username: str = "alice", to: str = DOMAIN) -> str:
    return (
        f"<iq type='set' id='r1' to='{to}'><query xmlns='{NS_REGISTER}'>"
        f"<username>{username}</username><password>{password}</password></query></iq>"
    )


async def test_password_change_takes_effect_for_the_next_login() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, change("a much better passphrase"))
        assert reply.get("type") == "result"
        assert (await h.client().login_plain("alice", PASSWORD)).name == "failure"
        assert (await h.client().login_plain("alice", "a much better passphrase")).name == "success"


async def test_get_says_registered_with_the_username() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='get' id='g' to='{DOMAIN}'><query xmlns='{NS_REGISTER}'/></iq>"
        )
        query = reply.find("query", NS_REGISTER)
        assert query is not None and query.find("registered") is not None
        assert query.find_text("username") == "alice"


async def test_policy_refusal_is_not_acceptable_with_the_policys_text() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, change("short"))
        assert error_of(reply) == "not-acceptable"
        assert "at least 8 characters" in error_text(reply)
        assert (await h.client().login_plain("alice", PASSWORD)).name == "success"


@pytest.mark.parametrize(
    ("xml", "condition"),
    [
        (change("another good password", username="bob"), "not-allowed"),
        (
            f"<iq type='set' id='r1' to='{DOMAIN}'><query xmlns='{NS_REGISTER}'>"
            "<username>alice</username></query></iq>",
            "bad-request",
        ),
        (
            f"<iq type='set' id='r1' to='{DOMAIN}'>"
            f"<query xmlns='{NS_REGISTER}'><remove/></query></iq>",
            "not-allowed",
        ),
        (change("another good password", to="bob@example.test"), "forbidden"),
        (change("p" * 2000), "not-acceptable"),
    ],
    ids=["other-username", "no-password", "remove", "others-account", "too-long"],
)
async def test_refused_changes_leave_the_password_alone(xml: str, condition: str) -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, xml)
        assert error_of(reply) == condition
        for user in ("alice", "bob"):
            assert (await h.client().login_plain(user, PASSWORD)).name == "success"


async def test_no_register_stream_feature_while_registration_is_off() -> None:
    async with Harness(modules=MODULES) as h:
        features = (await h.client().open())[0]
        assert features.find("register", "http://jabber.org/features/iq-register") is None


async def test_registration_when_the_host_allows_it() -> None:
    from imhost.xmpp.ports import HostLimits

    limits = HostLimits(message_rate=None, registration_allowed=True)
    async with Harness(modules=MODULES, limits=limits) as h:
        c = h.client()
        features = (await c.open())[0]
        assert features.find("register", "http://jabber.org/features/iq-register") is not None
        c.send(
            f"<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'>"
            "<username>dave</username><password>a fine long password</password></query></iq>"
        )
        reply = await c.wait_for("iq")
        assert reply.get("type") == "result"
        assert await h.backend.account_exists(DOMAIN, "dave")
        taken = h.client()
        await taken.open()
        taken.send(
            f"<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'>"
            "<username>alice</username><password>a fine long password</password></query></iq>"
        )
        assert error_of(await taken.wait_for("iq")) == "conflict"


async def test_registration_form_then_a_new_account_that_can_sign_in() -> None:
    from imhost.xmpp.ports import HostLimits

    limits = HostLimits(message_rate=None, registration_allowed=True)
    async with Harness(modules=MODULES, limits=limits) as h:
        c = h.client()
        await c.open()
        c.send(f"<iq type='get' id='form'><query xmlns='{NS_REGISTER}'/></iq>")
        form = await c.wait_for("iq")
        query = form.find("query", NS_REGISTER)
        assert form.get("type") == "result" and query is not None
        assert query.find("username") is not None and query.find("password") is not None
        c.send(
            f"<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'>"
            "<username>Erin</username><password>a fine long password</password></query></iq>"
        )
        assert (await c.wait_for("iq")).get("type") == "result"
        signed_in = await h.client().login_plain("erin", "a fine long password")
        assert signed_in.name == "success"


async def test_registration_is_refused_while_the_host_does_not_allow_it() -> None:
    async with Harness(modules=MODULES) as h:
        c = h.client()
        await c.open()
        c.send(
            f"<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'>"
            "<username>dave</username><password>a fine long password</password></query></iq>"
        )
        reply = await c.wait_for("iq")
        assert error_of(reply) == "not-allowed"
        assert error_text(reply) == "this service does not allow registration"
        assert not await h.backend.account_exists(DOMAIN, "dave")
        blob = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{blob}</auth>")
        assert (await c.wait_for_any(("success", "failure"))).name == "success"
