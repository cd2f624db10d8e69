"""``MucStore`` (:mod:`imhost.xmpp.ports`): the persistent XEP-0045 rooms of each service,
one row per room in ``xmpp_rooms``. Written when an owner or admin changes a persistent room
(never on the message path) and read once when the engine loads the host."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from imhost.hosting.dataplane.hosts import HostCache
from imhost.hosting.dataplane.runner import DbRunner
from imhost.hosting.models import XmppRoom
from imhost.kit.clock import Clock
from imhost.xmpp.ports import StoredRoom


def stored_room(row: XmppRoom) -> StoredRoom:
    return StoredRoom(
        name=row.name,
        config={str(k): str(v) for k, v in (row.config or {}).items()},
        affiliations={str(k): str(v) for k, v in (row.affiliations or {}).items()},
        nicks={str(k): str(v) for k, v in (row.nicks or {}).items()},
        subject=row.subject,
        subject_by=row.subject_by,
    )


class DbMucStore:
    """``MucStore`` keyed by the hosted domain; a domain this process does not host reads as
    no rooms and its writes are ignored (as for the other stores)."""

    def __init__(self, runner: DbRunner, hosts: HostCache, clock: Clock) -> None:
        self.runner = runner
        self.hosts = hosts
        self.clock = clock

    async def load_rooms(self, domain: str) -> list[StoredRoom]:
        service_id = self.hosts.service_id_of(domain)
        if service_id is None:
            return []

        def read(session: Session) -> list[StoredRoom]:
            rows = session.scalars(
                select(XmppRoom).where(XmppRoom.service_id == service_id).order_by(XmppRoom.name)
            )
            return [stored_room(r) for r in rows]

        return await self.runner.run(read)

    async def save_room(self, domain: str, room: StoredRoom) -> None:
        service_id = self.hosts.service_id_of(domain)
        if service_id is None:
            return
        now = self.clock.now()

        def write(session: Session) -> None:
            row = session.scalars(
                select(XmppRoom).where(
                    XmppRoom.service_id == service_id, XmppRoom.name == room.name
                )
            ).one_or_none()
            if row is None:
                row = XmppRoom(service_id=service_id, name=room.name, created_at=now)
                session.add(row)
            row.config = dict(room.config)
            row.affiliations = dict(room.affiliations)
            row.nicks = dict(room.nicks)
            row.subject = room.subject
            row.subject_by = room.subject_by
            row.updated_at = now

        await self.runner.run(write, write=True)

    async def delete_room(self, domain: str, name: str) -> None:
        service_id = self.hosts.service_id_of(domain)
        if service_id is None:
            return
        await self.runner.run(
            lambda s: s.execute(
                delete(XmppRoom).where(XmppRoom.service_id == service_id, XmppRoom.name == name)
            ),
            write=True,
        )
