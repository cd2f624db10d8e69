"""Admission of new client connections, per address, from the moment they are accepted.

Two limits, both counted before a byte is parsed or a TLS handshake begins:

- a **rate**: a token bucket of new connections per address (``connection_rate_per_address``
  per second, bursts up to ``connection_burst_per_address``). Many real users behind one
  NAT connect at a steady pace and pass; a flood from one address is refused at once;
- a **cap** of concurrent unauthenticated connections per address
  (``unauthenticated_per_address``): the memory bound against connections opened slowly and
  left idle until the negotiation (or TLS handshake) timeout closes them.

A connection stops counting against the cap when it authenticates or closes. IPv6 addresses
are grouped by /64, the block one subscriber usually gets: an attacker with one /64 has one
bucket and one cap, not 2^64 of them.
"""

from __future__ import annotations

import ipaddress

from imhost.config import XmppSettings
from imhost.kit.clock import Clock

_PRUNE_ABOVE = 4096
"""Buckets kept before full, unused ones are forgotten (a full bucket is the default)."""


class _Bucket:
    __slots__ = ("stamp", "tokens", "unauthenticated")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.unauthenticated = 0


def address_key(address: str) -> str:
    """The address as counted: an IPv6 address stands for its /64, anything else for itself."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class ConnectionAdmission:
    """Rate and concurrency limits on new connections, per address (see the module doc)."""

    def __init__(self, settings: XmppSettings, clock: Clock) -> None:
        self.rate = settings.connection_rate_per_address
        self.burst = float(settings.connection_burst_per_address)
        self.cap = settings.unauthenticated_per_address
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0
        """Connections refused since start (for the engine's figures)."""

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; return why it is refused, or None.

        An admitted connection counts as unauthenticated until :meth:`release`."""
        now = self.clock.monotonic()
        key = address_key(address)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_ABOVE:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.unauthenticated >= self.cap:
            self.refused += 1
            return "too many connections from your address are waiting to sign in"
        if bucket.tokens < 1.0:
            self.refused += 1
            wait = max(1, round((1.0 - bucket.tokens) / self.rate))
            return f"too many new connections from your address; try again in {wait} s"
        bucket.tokens -= 1.0
        bucket.unauthenticated += 1
        return None

    def release(self, address: str) -> None:
        """An admitted connection authenticated or closed: it no longer counts."""
        bucket = self._buckets.get(address_key(address))
        if bucket is not None and bucket.unauthenticated > 0:
            bucket.unauthenticated -= 1

    def unauthenticated(self, address: str) -> int:
        """Admitted connections from this address (its /64) not yet authenticated."""
        bucket = self._buckets.get(address_key(address))
        return bucket.unauthenticated if bucket is not None else 0

    def total_unauthenticated(self) -> int:
        return sum(b.unauthenticated for b in self._buckets.values())

    def _prune(self, now: float) -> None:
        """Forget addresses whose bucket has refilled and that have nothing in progress."""
        full = self.burst
        rate = self.rate
        for key, bucket in list(self._buckets.items()):
            if not bucket.unauthenticated and bucket.tokens + (now - bucket.stamp) * rate >= full:
                del self._buckets[key]
