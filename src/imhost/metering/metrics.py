"""The metrics metering knows: what the engine sends (source metrics) and what plans bill
(billable metrics), with their units and how one is computed from the other.

Source metrics come from the XMPP engine (``imhost.xmpp.ports.METRICS``), one record per
virtual host, metric and minute bucket. An external engine may also send the billable codes
themselves (``messages``, ``traffic_gb``, ...); they are aggregated together with the sources.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

# --- source metrics (exact names the engine sends) ------------------------------------------

MESSAGES = "messages"
STANZAS_MESSAGE = "stanzas_message"
STANZAS_PRESENCE = "stanzas_presence"
STANZAS_IQ = "stanzas_iq"
BYTES_IN = "bytes_in"
BYTES_OUT = "bytes_out"
CONNECTIONS_PEAK = "connections_peak"
ACTIVE_USERS = "active_users"
OFFLINE_STORAGE_BYTES = "offline_storage_bytes"
PRIVATE_STORAGE_BYTES = "private_storage_bytes"
ARCHIVE_STORAGE_BYTES = "archive_storage_bytes"
"""Bytes of the services' message archives (XEP-0313)."""
ROOM_MESSAGES = "room_messages"
"""Group chat (XEP-0045) messages a room accepted, each counted once."""
ROOM_DELIVERIES = "room_deliveries"
"""Copies of those messages the rooms delivered to their occupants (the fan-out)."""

SOURCE_METRICS: tuple[str, ...] = (
    MESSAGES,
    STANZAS_MESSAGE,
    STANZAS_PRESENCE,
    STANZAS_IQ,
    BYTES_IN,
    BYTES_OUT,
    CONNECTIONS_PEAK,
    ACTIVE_USERS,
    OFFLINE_STORAGE_BYTES,
    PRIVATE_STORAGE_BYTES,
    ARCHIVE_STORAGE_BYTES,
    ROOM_MESSAGES,
    ROOM_DELIVERIES,
)

# --- billable metrics (what price components rate) ----------------------------------------

TRAFFIC_GB = "traffic_gb"
PEAK_CONNECTIONS = "peak_connections"
MONTHLY_ACTIVE_USERS = "monthly_active_users"
STORAGE_GB = "storage_gb"

BYTES_PER_GB = 10**9
"""GB is the SI gigabyte: 10^9 bytes (not 2^30)."""


class Aggregation(enum.StrEnum):
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    TIME_WEIGHTED_AVERAGE = "time_weighted_average"


@dataclass(frozen=True, slots=True)
class BillableMetric:
    code: str
    unit: str
    aggregation: Aggregation
    sources: tuple[str, ...]
    """Source metrics it is computed from (the billable code itself is always accepted too)."""
    description: str
    label: str = ""
    """What customers read: ``Messages``, ``Traffic``..."""
    noun: str = ""
    """The quantity's words after a number: ``1,200 messages``, ``3.5 GB of traffic``."""


BILLABLE_METRICS: dict[str, BillableMetric] = {
    m.code: m
    for m in (
        BillableMetric(
            MESSAGES,
            "messages",
            Aggregation.SUM,
            (MESSAGES,),
            "Chat messages routed for the organization's services (sum over the period).",
            "Messages",
            "messages",
        ),
        BillableMetric(
            TRAFFIC_GB,
            "GB (10^9 bytes), fractional",
            Aggregation.SUM,
            (BYTES_IN, BYTES_OUT),
            "Bytes received plus bytes sent by the services, in GB (sum over the period).",
            "Traffic (GB)",
            "GB of traffic",
        ),
        BillableMetric(
            PEAK_CONNECTIONS,
            "concurrent connections",
            Aggregation.MAX,
            (CONNECTIONS_PEAK,),
            "The highest number of concurrent client connections in any minute of the "
            "period, the services' peaks of that minute added together.",
            "Connections at the busiest moment",
            "connections at once",
        ),
        BillableMetric(
            MONTHLY_ACTIVE_USERS,
            "users",
            Aggregation.UNIQUE_COUNT,
            (ACTIVE_USERS,),
            "Distinct accounts (the record's subject) active at least once in the period.",
            "Monthly active users",
            "active users",
        ),
        BillableMetric(
            STORAGE_GB,
            "GB (10^9 bytes), time-weighted average",
            Aggregation.TIME_WEIGHTED_AVERAGE,
            (OFFLINE_STORAGE_BYTES, PRIVATE_STORAGE_BYTES, ARCHIVE_STORAGE_BYTES),
            "Stored bytes (offline messages + private storage + message history) averaged "
            "over the period's "
            "time; a sample holds until the next sample of the same service and gauge.",
            "Storage (GB, average over the period)",
            "GB stored on average",
        ),
        BillableMetric(
            ROOM_MESSAGES,
            "messages",
            Aggregation.SUM,
            (ROOM_MESSAGES,),
            "Messages sent to group chats, each counted once however many people read it "
            "(sum over the period). They are also counted in Messages.",
            "Group chat messages",
            "group chat messages",
        ),
        BillableMetric(
            ROOM_DELIVERIES,
            "deliveries",
            Aggregation.SUM,
            (ROOM_DELIVERIES,),
            "Copies of group chat messages delivered to the people in the room: a message "
            "in a room of 30 people is 30 deliveries (sum over the period).",
            "Group chat deliveries",
            "group chat deliveries",
        ),
    )
}

BILLABLE_CODES: tuple[str, ...] = tuple(BILLABLE_METRICS)

INGESTIBLE_METRICS: frozenset[str] = frozenset(SOURCE_METRICS) | frozenset(BILLABLE_CODES)
"""What a usage record may carry: a source metric or a billable code."""

GAUGE_METRICS: frozenset[str] = frozenset(
    {OFFLINE_STORAGE_BYTES, PRIVATE_STORAGE_BYTES, ARCHIVE_STORAGE_BYTES, STORAGE_GB}
)
"""Metrics whose records are samples of a level, not counts in a bucket."""

FRACTIONAL_METRICS: frozenset[str] = frozenset({TRAFFIC_GB, STORAGE_GB})
"""Metrics whose quantity may have a fraction; every other metric counts whole units."""

SUBJECT_METRICS: frozenset[str] = frozenset({ACTIVE_USERS, MONTHLY_ACTIVE_USERS})
"""Metrics counted by distinct ``subject``; a record of these must name its subject."""

SUM_SOURCES: dict[str, tuple[str, ...]] = {
    MESSAGES: (MESSAGES,),
    TRAFFIC_GB: (BYTES_IN, BYTES_OUT),
    ROOM_MESSAGES: (ROOM_MESSAGES,),
    ROOM_DELIVERIES: (ROOM_DELIVERIES,),
}
"""Sum metrics and the byte/count sources behind them (the billable code is added as is)."""


def metric_label(code: str) -> str:
    """The name customers read for a billable metric (the code itself for an unknown one,
    made readable)."""
    metric = BILLABLE_METRICS.get(code)
    return metric.label if metric is not None else code.replace("_", " ").capitalize()


def quantity_words(code: str, quantity: Decimal) -> str:
    """A quantity of a billable metric as customers read it: ``2,013,300 messages``,
    ``1.25 GB of traffic``; fractional GB shown to two decimals (``under 0.01 GB of
    traffic`` for a trace)."""
    metric = BILLABLE_METRICS.get(code)
    noun = metric.noun if metric is not None else code.replace("_", " ")
    if code in FRACTIONAL_METRICS:
        if 0 < quantity < Decimal("0.01"):
            return f"under 0.01 {noun}"
        shown = quantity.quantize(Decimal("0.01"))
        text = f"{shown:,.2f}".rstrip("0").rstrip(".")
        return f"{text} {noun}"
    return f"{int(quantity):,} {noun}" if quantity == int(quantity) else f"{quantity:,f} {noun}"


def is_ingestible(metric: str) -> bool:
    return metric in INGESTIBLE_METRICS
