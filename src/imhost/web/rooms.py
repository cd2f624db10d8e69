"""Group chat rooms (XEP-0045) of a service, as the API and the portal show them: the stored
(persistent) rooms, and with an engine in this process the temporary ones and their
occupants."""

from __future__ import annotations

from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.hosting.schemas import RoomList, RoomOut
from imhost.runtime import Runtime
from imhost.web.deps import Db, Principal


def room_list(db: Db, runtime: Runtime, service: HostedService) -> RoomList:
    """The service's rooms: the stored (persistent) ones, and with an engine in this process
    the temporary ones too and how many people are in each."""
    conference = hosting.conference_domain(service)
    rooms: dict[str, RoomOut] = {}
    for row in hosting.list_rooms(db, service):
        rooms[row.name] = RoomOut(
            name=row.name,
            jid=f"{row.name}@{conference}",
            title=str((row.config or {}).get("muc#roomconfig_roomname", "")),
            persistent=True,
            occupants=None,
        )
    server = runtime.xmpp
    if server is not None and hasattr(server, "rooms"):
        for live in server.rooms(service.domain):
            rooms[live.name] = RoomOut(
                name=live.name,
                jid=live.jid,
                title=live.title,
                persistent=live.persistent,
                occupants=live.occupants,
            )
    return RoomList(
        conference=conference,
        max_rooms=service.max_rooms,
        max_room_occupants=service.max_room_occupants,
        items=[rooms[name] for name in sorted(rooms)],
    )


def destroy_room(
    db: Db, runtime: Runtime, service: HostedService, name: str, reason: str, principal: Principal
) -> None:
    live = [r.name for r in room_list(db, runtime, service).items]
    hosting.destroy_room(
        db, runtime.clock, service, name, reason=reason, live=live, actor=principal.actor
    )
