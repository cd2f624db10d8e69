"""Webhooks in the portal: add an endpoint (its secret shown once), events chosen from a plain
list, hostile addresses refused with plain words, a new secret, a test event and its delivery
in the list, sending it again, disabling and deleting; audited, and only for those who may
manage the organization."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent, OrgRole
from imhost.config import SecuritySettings, load_settings
from imhost.kit.clock import FrozenClock
from imhost.notify.models import WebhookDelivery, WebhookEndpoint
from imhost.runtime import Runtime, build_runtime
from imhost.web import portal
from imhost.web.app import create_app
from tests.factories import World, make_world
from tests.web.test_pages import as_user

SECRET = re.compile(r'id="new-secret">(whsec_[^<]+)<')


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    return app


def _add(client: TestClient, csrf: str, world: World, url: str, *events: str) -> Response:
    data: dict[str, str | list[str]] = {
        "csrf_token": csrf,
        "url": url,
        "event_types": list(events),
    }
    response: Response = client.post(f"/portal/orgs/{world.org.slug}/webhooks", data=data)
    return response


def test_adding_an_endpoint_shows_its_secret_once(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.ADMIN])
    base = f"/portal/orgs/{world.org.slug}/webhooks"
    listing = client.get(base)
    assert listing.status_code == 200 and "An invoice is paid" in listing.text
    assert "invoice.paid" not in re.sub(r'value="[^"]*"', "", listing.text)  # plain words

    added = _add(client, csrf, world, "http://127.0.0.1:9/hook", "invoice.paid", "payment.recorded")
    assert added.status_code == 200
    match = SECRET.search(added.text)
    assert match is not None and "shown only once" in added.text
    with session_factory() as session:
        endpoint = session.scalars(select(WebhookEndpoint)).one()
        assert endpoint.secret == match.group(1)
        assert endpoint.event_types == ["invoice.paid", "payment.recorded"]
        assert endpoint.organization_id == world.org.id
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "webhook.created")
        ).one()
        assert audit.actor_user_id == world.members[OrgRole.ADMIN].id
    page = client.get(f"{base}/{endpoint.id}")
    assert page.status_code == 200 and match.group(1) not in page.text  # never again
    assert "An invoice is paid; A payment is received" in page.text
    assert "http://127.0.0.1:9/hook" in client.get(base).text


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("javascript:alert(document.cookie)", "Enter a full https:// address"),
        ("http://example.com/hook", "Use an https:// address"),
        ("", "Enter the address"),
    ],
)
def test_hostile_addresses_are_refused_with_plain_words(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], url: str, words: str
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    refused = _add(client, csrf, world, url)
    assert refused.status_code == 422
    assert words in refused.text and "data-error-summary" in refused.text
    assert 'href="#f-url"' in refused.text
    with session_factory() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []


def test_unknown_events_are_refused(pages: FastAPI, world: World) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    refused = _add(client, csrf, world, "https://127.0.0.1/h", "org.deleted")
    assert refused.status_code == 422 and "Choose events from the list" in refused.text


@pytest.fixture
def strict(engine: Engine, clock: FrozenClock, tmp_path: Path) -> FastAPI:
    """An app whose provider does not allow private webhook targets (the default)."""
    settings = load_settings(
        data_dir=tmp_path / "strict",
        secret_key="k" * 40,
        security=SecuritySettings(cookie_secure=False),
    )
    runtime: Runtime = build_runtime(settings, clock=clock, engine=engine)
    app = create_app(runtime)
    portal.install(app)
    return app


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "http://127.0.0.1:8000/hook",
    ],
)
def test_private_addresses_are_refused_where_the_api_refuses_them(
    strict: FastAPI, world: World, url: str
) -> None:
    client, csrf = as_user(strict, world.members[OrgRole.OWNER])
    refused = _add(client, csrf, world, url)
    assert refused.status_code == 422, refused.text
    assert "public internet" in refused.text or "https://" in refused.text


def _endpoint(client: TestClient, csrf: str, world: World) -> tuple[str, str]:
    added = _add(client, csrf, world, "http://127.0.0.1:9/hook")
    match = re.search(r'/webhooks/([0-9a-f]{32})/test"', added.text)
    assert match is not None
    secret = SECRET.search(added.text)
    assert secret is not None
    return match.group(1), secret.group(1)


def test_a_test_event_shows_in_the_deliveries_and_can_be_sent_again(
    pages: FastAPI, world: World, runtime: Runtime, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    endpoint_id, _ = _endpoint(client, csrf, world)
    page = f"/portal/orgs/{world.org.slug}/webhooks/{endpoint_id}"
    sent = client.post(f"{page}/test", data={"csrf_token": csrf})
    assert sent.status_code == 303
    assert client.post(f"{page}/test", data={"csrf_token": csrf}).status_code == 303
    shown = client.get(page).text
    assert "Test event" in shown and "waiting to be sent" in shown
    assert "webhook.test" not in shown
    with session_factory() as session:
        assert len(session.scalars(select(WebhookDelivery)).all()) == 1  # sent twice, one test

    runtime.webhooks.deliver_pending(runtime.session_factory, runtime.clock)  # port 9: no one
    shown = client.get(page).text
    assert "failed (no more attempts)" in shown and "no answer" in shown
    with session_factory() as session:
        delivery = session.scalars(select(WebhookDelivery)).one()
    again = client.post(f"{page}/deliveries/{delivery.id}/redeliver", data={"csrf_token": csrf})
    assert again.status_code == 303
    assert "waiting to be sent" in client.get(page).text
    with session_factory() as session:
        assert session.get(WebhookDelivery, delivery.id).status == "queued"  # type: ignore[union-attr]
        actions = {e.action for e in session.scalars(select(AuditEvent))}
        assert {"webhook.test_sent", "webhook.redelivered"} <= actions


def test_rotating_asks_first_then_shows_the_new_secret_once(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    endpoint_id, old = _endpoint(client, csrf, world)
    url = f"/portal/orgs/{world.org.slug}/webhooks/{endpoint_id}/rotate"
    asked = client.post(url, data={"csrf_token": csrf})
    assert asked.status_code == 200 and "Please confirm" in asked.text
    with session_factory() as session:
        assert session.get(WebhookEndpoint, endpoint_id).secret == old  # type: ignore[union-attr]
    done = client.post(url, data={"csrf_token": csrf, "confirmed": "yes"})
    new = SECRET.search(done.text)
    assert new is not None and new.group(1) != old
    with session_factory() as session:
        assert session.get(WebhookEndpoint, endpoint_id).secret == new.group(1)  # type: ignore[union-attr]


def test_disable_enable_and_delete(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.ADMIN])
    endpoint_id, _ = _endpoint(client, csrf, world)
    page = f"/portal/orgs/{world.org.slug}/webhooks/{endpoint_id}"
    assert client.post(f"{page}/disable", data={"csrf_token": csrf}).status_code == 303
    shown = client.get(page).text
    assert "disabled" in shown and f"{page}/test" not in shown
    refused = client.post(f"{page}/test", data={"csrf_token": csrf})
    assert refused.status_code == 409 and "enable it" in refused.text
    assert client.post(f"{page}/enable", data={"csrf_token": csrf}).status_code == 303
    asked = client.post(f"{page}/delete", data={"csrf_token": csrf})
    assert asked.status_code == 200 and "delivery history is deleted" in asked.text
    done = client.post(f"{page}/delete", data={"csrf_token": csrf, "confirmed": "yes"})
    assert done.status_code == 303
    assert client.get(page).status_code == 404
    with session_factory() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []
        actions = [e.action for e in session.scalars(select(AuditEvent))]
        for action in ("webhook.disabled", "webhook.enabled", "webhook.deleted"):
            assert action in actions


@pytest.mark.parametrize("role", [OrgRole.BILLING, OrgRole.TECHNICAL, OrgRole.READ_ONLY])
def test_only_those_who_manage_the_organization_see_webhooks(
    pages: FastAPI, world: World, role: OrgRole
) -> None:
    client, csrf = as_user(pages, world.members[role])
    assert client.get(f"/portal/orgs/{world.org.slug}/webhooks").status_code == 403
    assert _add(client, csrf, world, "https://example.com/h").status_code == 403


def test_another_organizations_endpoint_is_not_found(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    endpoint_id, _ = _endpoint(client, csrf, world)
    outsider, other_csrf = as_user(pages, world.outsider)
    theirs = f"/portal/orgs/{world.other_org.slug}/webhooks/{endpoint_id}"
    assert outsider.get(theirs).status_code == 404
    gone = outsider.post(f"{theirs}/delete", data={"csrf_token": other_csrf, "confirmed": "yes"})
    assert gone.status_code == 404
    with session_factory() as session:
        assert session.get(WebhookEndpoint, endpoint_id) is not None


def test_the_security_log_names_webhook_changes_in_words_and_filters_by_them(
    pages: FastAPI, world: World
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    endpoint_id, _ = _endpoint(client, csrf, world)
    page = f"/portal/orgs/{world.org.slug}/webhooks/{endpoint_id}"
    assert client.post(f"{page}/disable", data={"csrf_token": csrf}).status_code == 303
    log = f"/portal/orgs/{world.org.slug}/security/log"
    shown = client.get(log).text
    assert ">Webhook: created</a>" in shown and ">Webhook: disabled</a>" in shown
    assert f'href="{log}?action=webhook.disabled"' in shown
    only = client.get(f"{log}?action=webhook.disabled").text
    assert "Webhook: disabled" in only and "Webhook: created" not in only
