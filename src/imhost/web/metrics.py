"""Prometheus metrics for the web app (and a registry the XMPP engine adds to)."""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from imhost.config import MetricsSettings
from imhost.kit.errors import PermissionDenied, Unauthenticated

# A request relayed by a reverse proxy comes from the proxy's (often loopback) address: it is
# not a local scraper, whatever its address says.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def check_metrics_access(request: Request, settings: MetricsSettings) -> None:
    """Let a scraper in (the configured bearer token, or a direct request from an allowed
    network); refuse everyone else: the figures name every tenant's domain and traffic."""
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if settings.token is not None and scheme.lower() == "bearer" and sent:
        if hmac.compare_digest(sent.strip().encode(), settings.token.get_secret_value().encode()):
            return
        raise Unauthenticated("The metrics token is wrong.")
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    relayed = any(name in request.headers for name in PROXY_HEADERS)
    if (
        address is not None
        and not relayed
        and any(address in network for network in settings.allow_networks)
    ):
        return
    raise PermissionDenied(
        "The metrics are open only to the monitoring system: send the metrics token as "
        "'Authorization: Bearer <token>' (IMHOST_METRICS__TOKEN), or scrape from an address "
        "in IMHOST_METRICS__ALLOW_NETWORKS without a proxy in between."
    )


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "imhost_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "imhost_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            registry=registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

    def route_of(self, request: Request) -> str:
        """The matched route's template (never the raw path: ids would explode the labels)."""
        route = request.scope.get("route")
        template = getattr(route, "path", None)
        if not template:
            return "unmatched"
        # A route of an included router knows only its own part of the path; the prefix is
        # what precedes that part, filled with this request's parameters, in the real path.
        try:
            concrete = str(getattr(route, "path_format", template)).format(
                **request.scope.get("path_params", {})
            )
        except (KeyError, IndexError, ValueError):
            return str(template)
        path = str(request.scope.get("path", ""))
        if concrete and path.endswith(concrete):
            return path[: len(path) - len(concrete)] + str(template)
        return str(template)

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = self.route_of(request)
            self.requests.labels(request.method, route, str(status)).inc()
            self.latency.labels(request.method, route).observe(time.perf_counter() - start)


_GAUGES = {"connections"}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_engine_metrics(per_host: dict[str, dict[str, int]], engine: dict[str, int]) -> str:
    """The XMPP engine's figures in the Prometheus text format (per virtual host, and totals).

    ``connections`` is a gauge (open now); every other per-host figure is a counter since start.
    """
    lines: list[str] = []
    names = sorted({name for counters in per_host.values() for name in counters})
    for name in names:
        metric = f"imhost_xmpp_{name}" if name in _GAUGES else f"imhost_xmpp_{name}_total"
        kind = "gauge" if name in _GAUGES else "counter"
        lines.append(f"# HELP {metric} XMPP {name.replace('_', ' ')} per virtual host.")
        lines.append(f"# TYPE {metric} {kind}")
        for host in sorted(per_host):
            if name in per_host[host]:
                lines.append(f'{metric}{{host="{_label(host)}"}} {per_host[host][name]}')
    for name, value in sorted(engine.items()):
        metric = f"imhost_xmpp_engine_{name}"
        lines.append(f"# HELP {metric} XMPP engine {name.replace('_', ' ')}.")
        lines.append(f"# TYPE {metric} gauge")
        lines.append(f"{metric} {value}")
    return "\n".join(lines) + ("\n" if lines else "")


def render_domain_metrics(counts: dict[str, int]) -> str:
    """``imhost_custom_domains{status="..."}``: customers' own domains by verification status
    (one grouped count per scrape)."""
    lines = [
        "# HELP imhost_custom_domains Custom domains of hosted services by status.",
        "# TYPE imhost_custom_domains gauge",
    ]
    lines += [
        f'imhost_custom_domains{{status="{_label(status)}"}} {n}'
        for status, n in sorted(counts.items())
    ]
    return "\n".join(lines) + "\n"
