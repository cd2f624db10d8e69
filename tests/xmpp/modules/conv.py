"""Conversation helpers for the module tests: send XML, read what comes back as elements."""

from __future__ import annotations

from imhost.xmpp.core.xml import NS_STANZA_ERRORS, Element

from ..harness import Client, Harness

__all__ = ["Client", "Harness", "error_of", "exchange", "named", "online_pair", "presences"]


def error_of(el: Element) -> str | None:
    """The defined condition of a stanza error (RFC 6120 §8.3.3), or None."""
    if el.get("type") != "error":
        return None
    err = el.find("error")
    if err is None:
        return None
    for child in err.elements():
        if child.ns == NS_STANZA_ERRORS and child.name != "text":
            return child.name
    return None


def error_text(el: Element) -> str:
    err = el.find("error")
    return (err.find_text("text", NS_STANZA_ERRORS) or "") if err is not None else ""


async def exchange(client: Client, xml: str, rounds: int = 30) -> tuple[Element, list[Element]]:
    """Send an iq and return (its answer, everything else received meanwhile)."""
    start = xml.find("id='") + 4
    iq_id = xml[start : xml.find("'", start)]
    client.send(xml)
    others: list[Element] = []
    for _ in range(50):
        for el in await client.recv(rounds):
            if el.name == "iq" and el.get("id") == iq_id and el.get("type") in ("result", "error"):
                others.extend(await client.recv(rounds))
                return el, others
            others.append(el)
    raise AssertionError(f"no answer to {iq_id}; got {others}")


def named(els: list[Element], name: str, **attrs: str | None) -> list[Element]:
    """Elements with this name whose attributes match (None means absent)."""
    return [e for e in els if e.name == name and all(e.get(k) == v for k, v in attrs.items())]


def presences(els: list[Element]) -> list[Element]:
    return [e for e in els if e.name == "presence"]


async def online_pair(h: Harness, roster: bool = True) -> tuple[Client, Client]:
    """alice and bob online, both having fetched their roster (interested resources)."""
    alice = await h.online("alice")
    bob = await h.online("bob")
    if roster:
        for c in (alice, bob):
            await exchange(c, "<iq type='get' id='roster0'><query xmlns='jabber:iq:roster'/></iq>")
    await alice.recv()
    await bob.recv()
    return alice, bob
