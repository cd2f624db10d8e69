"""The webhook API does what the portal does, with the same service: a new secret, a test
event, the deliveries and sending one again, disable/enable; hostile URLs are a 422."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole
from imhost.kit.clock import FrozenClock
from tests.factories import World, make_world
from tests.web.conftest import signed_in


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def test_managing_an_endpoint_through_the_api(app: FastAPI, world: World) -> None:
    client = signed_in(app, world.members[OrgRole.ADMIN])
    base = f"/api/v1/orgs/{world.org.id}/webhooks"
    hostile = client.post(base, json={"url": "javascript:alert(1)"})
    assert hostile.status_code == 422 and "https://" in hostile.json()["detail"]
    created = client.post(
        base, json={"url": "https://127.0.0.1/h", "event_types": ["invoice.paid"]}
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    rotated = client.post(f"{base}/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200 and rotated.json()["secret"] != hook["secret"]

    test = client.post(f"{base}/{hook['id']}/test")
    assert test.status_code == 202 and test.json()["event_type"] == "webhook.test"
    again = client.post(f"{base}/{hook['id']}/test")
    assert again.json()["id"] == test.json()["id"]  # one test waiting, not two
    deliveries = client.get(f"{base}/{hook['id']}/deliveries").json()
    assert [(d["id"], d["status"]) for d in deliveries] == [(test.json()["id"], "queued")]
    redone = client.post(f"{base}/{hook['id']}/deliveries/{test.json()['id']}/redeliver")
    assert redone.status_code == 202 and redone.json()["status"] == "queued"

    off = client.post(f"{base}/{hook['id']}/disable")
    assert off.status_code == 200 and off.json()["active"] is False
    assert client.post(f"{base}/{hook['id']}/test").status_code == 409
    assert client.post(f"{base}/{hook['id']}/enable").json()["active"] is True
    assert client.post(f"{base}/{'f' * 32}/rotate-secret").status_code == 404
