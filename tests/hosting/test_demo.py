"""The demo customer's XMPP service for ``imhost serve --demo``."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.cli.demo import DemoLogins
from imhost.config import load_settings
from imhost.hosting import demo
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.kit.clock import FrozenClock
from imhost.kit.scram import ScramHash, verify_plain
from imhost.runtime import build_runtime

from .factories import make_org


def test_the_demo_service_has_alice_and_bob_and_a_second_run_changes_nothing(
    engine: Engine, session_factory: sessionmaker[Session], clock: FrozenClock, tmp_path: Path
) -> None:
    runtime = build_runtime(
        load_settings(data_dir=tmp_path, secret_key="k" * 40), clock=clock, engine=engine
    )
    saved: dict[str, str] = {}
    with runtime.session_factory() as session:
        org = make_org(session, clock, "Demo")
        first = DemoLogins()
        demo.seed(session, runtime, org, saved, first)
        again = DemoLogins()
        demo.seed(session, runtime, org, saved, again)
        session.commit()
        assert [jid for jid, _ in first.xmpp] == ["alice@demo.localhost", "bob@demo.localhost"]
        assert first.xmpp == again.xmpp
        assert saved == dict(first.xmpp)
        assert any("self-signed" in note and "5222" in note for note in first.notes)
        count = select(func.count()).select_from(HostedService)
        assert session.scalar(count) == 1
        service = hosting.get_service_by_domain(session, "demo.localhost")
        for jid, password in first.xmpp:
            account = hosting.get_account(session, service, jid.split("@")[0])
            creds = hosting.credentials_of(account, ScramHash.SHA256)
            assert verify_plain(password, creds, ScramHash.SHA256)


def test_a_lost_logins_file_gives_the_demo_accounts_new_passwords(
    engine: Engine, session_factory: sessionmaker[Session], clock: FrozenClock, tmp_path: Path
) -> None:
    runtime = build_runtime(
        load_settings(data_dir=tmp_path, secret_key="k" * 40), clock=clock, engine=engine
    )
    with runtime.session_factory() as session:
        org = make_org(session, clock, "Demo")
        old: dict[str, str] = {}
        demo.seed(session, runtime, org, old, DemoLogins())
        fresh: dict[str, str] = {}
        logins = DemoLogins()
        demo.seed(session, runtime, org, fresh, logins)
        service = hosting.get_service_by_domain(session, "demo.localhost")
        alice = hosting.get_account(session, service, "alice")
        creds = hosting.credentials_of(alice, ScramHash.SHA1)
        assert fresh["alice@demo.localhost"] != old["alice@demo.localhost"]
        assert verify_plain(fresh["alice@demo.localhost"], creds, ScramHash.SHA1)
