"""One typed, bounded Settings object for the whole process.

Read from ``IMHOST_*`` environment variables (nested sections with ``__``, e.g.
``IMHOST_XMPP__C2S_PORT=5222``) and from an optional ``imhost.toml`` in the working
directory (or the file named by ``IMHOST_CONFIG``). A bad value fails at start with a message
that names the setting.
"""

from __future__ import annotations

import os
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class SecuritySettings(BaseModel):
    """Account-security defaults (docs/security.md explains each)."""

    password_min_length: int = Field(12, ge=8, le=128)
    password_min_score: int = Field(3, ge=0, le=4)
    session_idle_minutes: int = Field(30, ge=5, le=24 * 60)
    session_absolute_hours: int = Field(12, ge=1, le=24 * 30)
    # Brute-force protection, in the spirit of Keycloak's defaults.
    lockout_threshold: int = Field(5, ge=1, le=100)
    lockout_wait_seconds: int = Field(60, ge=1, le=3600)
    lockout_max_wait_seconds: int = Field(900, ge=1, le=86400)
    lockout_reset_seconds: int = Field(12 * 3600, ge=60, le=7 * 86400)
    address_failure_threshold: int = Field(20, ge=1, le=10000)
    account_failure_threshold: int = Field(
        10,
        ge=1,
        le=1000,
        description="Failures of one account from addresses it has not signed in from, "
        "before those addresses are held back.",
    )
    trusted_address_days: int = Field(
        90, ge=1, le=730, description="How long a sign-in makes its address trusted."
    )
    password_reset_minutes: int = Field(60, ge=5, le=24 * 60)
    email_requests_per_hour: int = Field(
        5,
        ge=1,
        le=1000,
        description="Password-reset and sign-up e-mails to one address, and requests from "
        "one client address, per hour.",
    )
    access_review_months: int = Field(3, ge=1, le=12)
    token_stale_days: int = Field(90, ge=1, le=3650)
    cookie_secure: bool = Field(
        True, description="Mark cookies Secure. Turned off by --demo on plain-http localhost."
    )


class MetricsSettings(BaseModel):
    """Who may read ``/metrics`` (README, "Metrics"): it names every tenant's domain and traffic.

    A request is let in when it carries ``Authorization: Bearer <token>`` with the configured
    token, or when it comes straight (no proxy header) from an address of ``allow_networks``.
    """

    token: SecretStr | None = Field(
        None, min_length=32, description="Bearer token Prometheus sends (bearer_token_file)."
    )
    allow_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network("127.0.0.0/8"), ip_network("::1/128")],
        max_length=100,
        description="Addresses let in without the token; [] lets in only the token.",
    )


def resolver_address(item: str) -> tuple[str, int]:
    """``"192.0.2.1"``, ``"192.0.2.1:5353"``, ``"2001:db8::1"`` or ``"[2001:db8::1]:5353"`` as
    (address, port); ValueError with a plain message otherwise."""
    from ipaddress import ip_address

    host, port = item.strip(), "53"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
    try:
        address = str(ip_address(host))
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address (or IP:port)") from None
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{item!r} has a bad port")
    return address, int(port)


class DnsSettings(BaseModel):
    """How custom domains are verified (docs/domains.md): which resolvers are asked, how long
    to wait, and which host and ports the customers' SRV records must point at."""

    resolvers: list[str] = Field(
        default_factory=lambda: ["1.1.1.1", "9.9.9.9"],
        min_length=1,
        max_length=10,
        description="Resolver addresses, each 'IP' or 'IP:port' ('[IPv6]:port').",
    )
    timeout_seconds: float = Field(3.0, gt=0, le=30, description="Wait per resolver and query.")
    lifetime_seconds: float = Field(
        6.0, gt=0, le=120, description="Total time one lookup may take, retries included."
    )
    srv_target: str | None = Field(
        None, description="Host the SRV records must point at; default: the base domain."
    )
    addresses: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="IPv4/IPv6 addresses of the XMPP host, for domains that are the host "
        "themselves (A/AAAA records); empty: such domains cannot be verified.",
    )
    s2s_port: int = Field(5269, ge=1, le=65535, description="Port of _xmpp-server._tcp.")
    recheck_first_minutes: int = Field(
        5, ge=1, le=1440, description="First re-check of an unverified domain after this."
    )
    recheck_max_hours: int = Field(
        6, ge=1, le=168, description="Re-checks back off (doubling) up to this interval."
    )

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, value: list[str]) -> list[str]:
        for item in value:
            resolver_address(item)
        return value

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        from ipaddress import ip_address

        try:
            return [str(ip_address(item)) for item in value]
        except ValueError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("srv_target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower().rstrip(".")
        if not value or any(not label or len(label) > 63 for label in value.split(".")):
            raise ValueError("must be a DNS name such as xmpp.example.net")
        return value


class SupportMailSettings(BaseModel):
    """Support e-mail in (docs/support.md, "E-mail"): the mailbox polled over IMAP and the
    LMTP listener a mail server forwards to. Both are off until configured."""

    address: str | None = Field(
        None,
        pattern=r"^[^@\s+]+@[^@\s]+$",
        description="The support address, e.g. support@example.net (replies: support+<token>@).",
    )
    imap_host: str | None = Field(None, description="IMAP server of the support mailbox.")
    imap_port: int | None = Field(None, ge=1, le=65535, description="Default: 993 (tls), 143.")
    imap_security: Literal["tls", "starttls", "plain"] = Field(
        "tls", description="plain is allowed only to a loopback address."
    )
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_mailbox: str = Field("INBOX", max_length=200)
    imap_processed_mailbox: str | None = Field(
        None, max_length=200, description="Move handled mail here (else it is only marked seen)."
    )
    poll_seconds: int = Field(60, ge=5, le=3600)
    lmtp_host: str | None = Field(None, description="Listen for LMTP here (e.g. 127.0.0.1).")
    lmtp_port: int = Field(24024, ge=1, le=65535)
    max_message_bytes: int = Field(25 * 1024 * 1024, ge=64 * 1024, le=200 * 1024 * 1024)

    @field_validator("imap_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return value.strip() or None if value else None


class MonitoringSettings(BaseModel):
    """Probes of every hosted service and of the platform (docs/monitoring.md)."""

    enabled: bool = True
    interval_seconds: int = Field(
        60, ge=10, le=3600, description="How often each service is probed (never under 10 s)."
    )
    step_timeout_seconds: float = Field(5.0, gt=0, le=60)
    concurrency: int = Field(100, ge=1, le=10_000, description="Probes running at once.")
    down_after: int = Field(3, ge=1, le=100, description="Failures in a row before down.")
    up_after: int = Field(2, ge=1, le=100, description="Successes in a row before up again.")
    probe_host: str | None = Field(
        None, description="Where probes connect; default: the XMPP listener's bind address."
    )
    ca_file: Path | None = Field(
        None,
        description="CA bundle the probes check certificates against; default: the system's "
        "when a certificate is configured, else the generated self-signed one.",
    )
    expiry_warning_days: int = Field(14, ge=1, le=365)
    latency_retention_days: int = Field(35, ge=1, le=3650)


class XmppSettings(BaseModel):
    """The data plane's listeners and limits (docs/xmpp.md)."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    c2s_port: int = Field(5222, ge=0, le=65535)
    c2s_direct_tls_port: int = Field(5223, ge=0, le=65535)
    require_encryption: bool = True
    allow_plain_without_tls: bool = Field(
        False, description="Only for benchmarks on loopback: SASL PLAIN without TLS."
    )
    certificate: Path | None = None
    private_key: Path | None = None
    max_stanza_bytes: int = Field(262_144, ge=1024, le=16 * 1024 * 1024)
    max_stanza_bytes_before_auth: int = Field(
        8192,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Before sign-in (SASL, registration): an unfinished element costs the "
        "server CPU on every read (expat parses it again), so it is kept small.",
    )
    negotiation_timeout_seconds: float = Field(30.0, gt=0, le=600)
    tls_handshake_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="Direct TLS and STARTTLS: the handshake's time limit."
    )
    connection_rate_per_address: float = Field(
        10.0, gt=0, le=100_000, description="New connections per second per address (or /64)."
    )
    connection_burst_per_address: int = Field(
        50, ge=1, le=100_000, description="New connections one address may open at once."
    )
    unauthenticated_per_address: int = Field(
        200,
        ge=1,
        le=100_000,
        description="Concurrent connections per address not yet signed in (a memory bound).",
    )
    metering_flush_seconds: float = Field(1.0, gt=0, le=3600)
    listen_backlog: int = Field(1024, ge=1, le=65535)
    direct_tls_enabled: bool = Field(True, description="Listen for XEP-0368 Direct TLS.")
    max_auth_failures_per_connection: int = Field(3, ge=1, le=100)
    sm_resume_timeout_seconds: int = Field(
        300, ge=1, le=86400, description="XEP-0198: how long a lost session can be resumed."
    )
    sm_max_unacked: int = Field(5000, ge=10, le=1_000_000)
    max_write_buffer_bytes: int = Field(
        16 * 1024 * 1024, ge=65536, description="A client that does not read is disconnected."
    )
    node_id: str = Field(
        "xmpp1",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Names this node (one running process per name; in usage keys).",
    )
    node_lease_seconds: int = Field(
        30,
        ge=5,
        le=3600,
        description="How long a stopped or cut-off node keeps its name before another "
        "process may take it (renewed every third of it while the node runs).",
    )
    idle_parser_seconds: float = Field(
        10.0, ge=0, le=3600, description="Free the parser of connections idle this long (0: never)."
    )
    certificate_dir: Path | None = Field(
        None, description="Where a self-signed certificate is generated if none is configured."
    )


class StripeSettings(BaseModel):
    """The Stripe gateway (docs/billing.md, "Stripe"). Off until ``api_key`` is set."""

    api_key: SecretStr | None = Field(
        None, min_length=8, description="Secret key (sk_live_... or sk_test_...)."
    )
    webhook_secret: SecretStr | None = Field(
        None, min_length=8, description="Signing secret of the webhook endpoint (whsec_...)."
    )
    api_base: str = Field(
        "https://api.stripe.com",
        pattern=r"^https?://[^\s/]+(:\d+)?$",
        description="Where the API is (a stand-in in tests).",
    )
    timeout_seconds: float = Field(20.0, gt=0, le=120)
    webhook_tolerance_seconds: int = Field(
        300, ge=10, le=3600, description="Oldest webhook signature accepted."
    )


class SupportSettings(BaseModel):
    """Support tickets (docs/support.md, "Tickets")."""

    support_domain: str | None = Field(
        None,
        description="Where replies to ticket e-mails go: support+<token>@<this domain> "
        "(default: the base domain).",
    )
    attachment_max_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, description="Largest attachment."
    )
    attachments_per_message: int = Field(5, ge=0, le=20, description="Most files per message.")
    auto_close_days: int = Field(
        7, ge=1, le=365, description="A resolved ticket closes itself after this many days."
    )
    guest_tickets_per_address_per_hour: int = Field(
        3, ge=1, le=100, description="Public contact form: tickets per e-mail address an hour."
    )
    guest_tickets_per_ip_per_hour: int = Field(
        10, ge=1, le=1000, description="Public contact form: tickets per client address an hour."
    )
    guest_form_min_seconds: float = Field(
        3.0, ge=0, le=120, description="A contact form sent faster than this is refused."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMHOST_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path("imhost-data")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite in the data dir."
    )
    base_domain: str = Field("localhost", description="Hosted services get <slug>.<base_domain>.")
    public_url: str = "http://127.0.0.1:8080"
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    secret_key: str | None = Field(
        None, min_length=32, description="Signs sessions; generated into the data dir if unset."
    )
    smtp_url: str | None = Field(
        None, description="smtp://user:pass@host:port or smtps://...; outbox in data dir if unset"
    )
    mail_from: str = "imhost <noreply@localhost>"
    webhooks_allow_private: bool = Field(
        False, description="Let webhooks target private/loopback addresses (tests, labs)."
    )
    provider_name: str = "imhost"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    role: Literal["all", "web", "xmpp", "worker"] = "all"
    security: SecuritySettings = SecuritySettings()
    support_mail: SupportMailSettings = SupportMailSettings()
    metrics: MetricsSettings = MetricsSettings()
    xmpp: XmppSettings = XmppSettings()
    stripe: StripeSettings = StripeSettings()
    dns: DnsSettings = DnsSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    support: SupportSettings = SupportSettings()

    @property
    def support_domain(self) -> str:
        """The domain of the support address (``support+<token>@...``)."""
        return self.support.support_domain or self.base_domain

    @field_validator("base_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if not value or any(not label or len(label) > 63 for label in value.split(".")):
            raise ValueError("must be a DNS name such as im.example.net")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("IMHOST_CONFIG", "imhost.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'imhost.db').resolve()}"


class ConfigError(Exception):
    """A setting is wrong; the message names it."""


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning validation errors into one readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "IMHOST_" + "__".join(str(p).upper() for p in err["loc"])
            lines.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
