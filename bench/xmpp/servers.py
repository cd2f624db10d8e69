"""Start and stop the servers under test on loopback, each with its own temporary config.

``ImhostServe`` ("imhost-serve") is the product as people run it: ``imhost serve`` (web, worker
and XMPP in one process, metering on) on a SQLite data dir seeded once per benchmark run by
``seed_imhost.py`` (:meth:`ImhostServe.prepare`) and copied for every fresh process, so every
measurement starts on the same data. ``Imhost`` ("imhost") is the in-memory engine alone
(``python -m imhost.xmpp``). Both run the code of the checkout this file is in (its ``src`` is
put first on ``PYTHONPATH``). Prosody 0.12 and ejabberd 23.01 run from their Debian packages
with the settings and traps listed in /work/shared/PEERS.md. Every server is pinned to core 0
with ``taskset``; TLS is off and SASL PLAIN allowed everywhere.

``hashed=True`` makes a peer store salted SCRAM-SHA-1 keys instead of plain passwords
(Prosody ``internal_hashed``, ejabberd ``auth_password_format: scram``), 4,096 iterations
everywhere; imhost always stores SCRAM keys only. :meth:`Server.cpu_times` reads the CPU the
server used and the time it waited for a CPU (``/proc/<pid>/task/*/schedstat``, all threads
of the process that listens on the c2s port); :meth:`Server.rss_kb` its resident memory.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER_CORE = "0"
SCRAM_ITERATIONS = 4096
REPO = Path(__file__).resolve().parents[2]
"""The checkout this benchmark belongs to: its ``src`` is the imhost that is measured."""


def imhost_env(**extra: str) -> dict[str, str]:
    """The environment of an imhost process: this checkout's ``src`` first on the path, no
    ``IMHOST_*`` variable of the caller's (a database URL or config file of the shell would
    change what is measured), then ``extra``."""
    path = os.environ.get("PYTHONPATH", "")
    src = str(REPO / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMHOST_")}
    return env | {"PYTHONPATH": f"{src}:{path}" if path else src} | extra


def scram_sha1_keys(password: str, salt: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """RFC 5802 §3: (ClientKey, ServerKey, StoredKey, ServerKey) for SCRAM-SHA-1."""
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha1").digest()
    server_key = hmac.new(salted, b"Server Key", "sha1").digest()
    stored_key = hashlib.sha1(client_key).digest()  # noqa: S324 - SCRAM-SHA-1 by definition
    return client_key, server_key, stored_key, server_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_listening(port: int) -> int | None:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    m = re.search(r"pid=(\d+)", out.stdout)
    return int(m.group(1)) if m else None


def cpu_times(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one), summed over all threads."""
    run = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def wait_port(
    port: int, timeout: float = 60, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until ``port`` accepts a connection (or ``proc``, the server, has ended)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server ended with status {proc.returncode} before listening")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


class Server(abc.ABC):
    name = "server"
    version = ""

    def __init__(
        self, domain: str, users: int, password: str, prefix: str = "u", hashed: bool = False
    ) -> None:
        self.domain = domain
        self.users = users
        self.password = password
        self.prefix = prefix
        self.hashed = hashed
        self.scram_cache: dict[bytes, tuple[bytes, bytes]] = {}
        """Client keys the load generator may use at once (when the salts are known here)."""
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        os.chmod(self.dir, 0o755)  # noqa: S103 - servers run as their own users

    @classmethod
    def prepare(cls, domain: str, users: int, password: str, prefix: str = "u") -> None:
        """Work done once per benchmark run, before any process starts (default: none)."""
        return

    @classmethod
    def release(cls) -> None:
        """Undo :meth:`prepare` at the end of the run (default: nothing to undo)."""
        return

    @property
    def pid(self) -> int:
        pid = pid_listening(self.port)
        if pid is None:
            raise RuntimeError(f"{self.name}: no process on port {self.port}")
        return pid

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def cpu_times(self) -> tuple[float, float]:
        return cpu_times(self.pid)

    @property
    def storage(self) -> str:
        return "scram" if self.hashed else "plain"

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the server on loopback with its private config (each peer its own way)."""

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Imhost(Server):
    name = "imhost"

    def __init__(
        self,
        *a: object,
        metering: bool = True,
        modules: str = "roster,presence,disco,ping",
        **kw: object,
    ) -> None:
        self.metering = metering
        self.modules = modules
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.version = imhost_version()

    @property
    def storage(self) -> str:
        return "scram"  # SCRAM-SHA-1 and SCRAM-SHA-256 keys only, whatever ``hashed`` says

    async def start(self) -> None:
        cmd = [
            "taskset",
            "-c",
            SERVER_CORE,
            sys.executable,
            "-m",
            "imhost.xmpp",
            "--domain",
            self.domain,
            "--users",
            str(self.users),
            "--user-prefix",
            self.prefix,
            "--password",
            self.password,
            "--port",
            str(self.port),
            "--no-tls",
            "--plain-without-tls",
            "--no-rate-limit",
            "--uvloop",
            "--log",
            "WARNING",
            "--cert-dir",
            str(self.dir / "tls"),
            "--modules",
            self.modules,
        ]
        if not self.metering:
            cmd.append("--no-metering")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=imhost_env()
        )
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), 120)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"imhost did not start: {line!r}")


class ImhostNoMetering(Imhost):
    """The in-memory engine with metering off: what metering costs (not in the default set)."""

    name = "imhost-nometering"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, metering=False, **kw)


class ImhostServe(Server):
    """``imhost serve`` (role all: web, worker and XMPP; metering on) on a copy of the data
    dir :meth:`prepare` seeded: SQLite, migrated, a staff admin, a plan without limits (no
    per-account message rate), an organization subscribed to it with its hosted service on
    the bench domain, and the accounts. Own free ports for HTTP and c2s, TLS off, PLAIN
    allowed, the per-address connection limits raised as ``python -m imhost.xmpp`` does."""

    name = "imhost-serve"
    template: Path | None = None
    template_scram: dict[bytes, tuple[bytes, bytes]] = {}

    @property
    def storage(self) -> str:
        return "scram"  # SCRAM-SHA-1 and SCRAM-SHA-256 keys only, whatever ``hashed`` says

    @classmethod
    def prepare(cls, domain: str, users: int, password: str, prefix: str = "u") -> None:
        """Seed the template data dir (``seed_imhost.py``, the package's own service
        functions) and learn every account's SCRAM-SHA-1 salt from it, so that the load
        generator derives each client key once, here, and never during a measurement."""
        root = Path(tempfile.mkdtemp(prefix="bench-imhost-template-"))
        data = root / "data"
        try:
            subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).with_name("seed_imhost.py")),
                    "--domain",
                    domain,
                    "--users",
                    str(users),
                    "--password",
                    password,
                    "--prefix",
                    prefix,
                ],
                check=True,
                env=imhost_env(IMHOST_DATA_DIR=str(data)),
                cwd=root,  # no imhost.toml of the caller's directory
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        cls.template = data
        with sqlite3.connect(data / "imhost.db") as db:
            rows = db.execute("SELECT sha1_salt, sha1_iterations FROM xmpp_accounts").fetchall()
        cache: dict[bytes, tuple[bytes, bytes]] = {}
        for salt, iterations in rows:
            salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
            cache[bytes(salt) + str(iterations).encode()] = (
                hmac.new(salted, b"Client Key", "sha1").digest(),
                hmac.new(salted, b"Server Key", "sha1").digest(),
            )
        cls.template_scram = cache

    @classmethod
    def release(cls) -> None:
        if cls.template is not None:
            shutil.rmtree(cls.template.parent, ignore_errors=True)
            cls.template = None

    async def start(self) -> None:
        if self.template is None:
            raise RuntimeError("ImhostServe.prepare() was not called")
        data = self.dir / "data"
        shutil.copytree(self.template, data)
        self.http_port = free_port()
        env = imhost_env(
            IMHOST_DATA_DIR=str(data),
            IMHOST_LOG_LEVEL="WARNING",
            IMHOST_HTTP_HOST="127.0.0.1",
            IMHOST_HTTP_PORT=str(self.http_port),
            IMHOST_XMPP__BIND="127.0.0.1",
            IMHOST_XMPP__C2S_PORT=str(self.port),
            IMHOST_XMPP__C2S_DIRECT_TLS_PORT=str(free_port()),
            IMHOST_XMPP__REQUIRE_ENCRYPTION="false",
            IMHOST_XMPP__ALLOW_PLAIN_WITHOUT_TLS="true",
            IMHOST_XMPP__DIRECT_TLS_ENABLED="false",
            IMHOST_XMPP__UNAUTHENTICATED_PER_ADDRESS="100000",
            IMHOST_XMPP__CONNECTION_RATE_PER_ADDRESS="100000",
            IMHOST_XMPP__CONNECTION_BURST_PER_ADDRESS="100000",
            IMHOST_XMPP__NEGOTIATION_TIMEOUT_SECONDS="60",
        )
        log = (self.dir / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, imhost_script(), "serve", "--role", "all"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.dir,
        )
        log.close()
        await wait_port(self.port, 120, self.proc)
        self.version = imhost_version()
        self.scram_cache = dict(self.template_scram)

    def log_tail(self) -> str:
        try:
            return (self.dir / "serve.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""


class Prosody(Server):
    name = "prosody"

    async def start(self) -> None:
        data = self.dir / "data"
        accounts = data / self.domain.replace(".", "%2e") / "accounts"
        accounts.mkdir(parents=True)
        for i in range(self.users):
            (accounts / f"{self.prefix}{i}.dat").write_text(self._account_file(i))
        cfg = self.dir / "prosody.cfg.lua"
        cfg.write_text(f"""
pidfile = "{self.dir}/prosody.pid"
data_path = "{data}"
log = {{ warn = "{self.dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "{"internal_hashed" if self.hashed else "internal_plain"}"
modules_enabled = {{ "roster", "saslauth", "disco", "ping" }}
modules_disabled = {{ "s2s" }}
network_backend = "epoll"
network_settings = {{ tcp_backlog = 1024 }}
VirtualHost "{self.domain}"
""")
        subprocess.run(["chown", "-R", "prosody:prosody", str(self.dir)], check=True)
        self.proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                SERVER_CORE,
                "setpriv",
                "--reuid=prosody",
                "--regid=prosody",
                "--init-groups",
                "--",
                "prosody",
                "-F",
                "--config",
                str(cfg),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_port(self.port)
        self.version = _package_version("prosody")

    def _account_file(self, i: int) -> str:
        """One account in Prosody's internal storage (a Lua table): the plain password, or
        (``internal_hashed``) salt, iteration count and hex StoredKey/ServerKey."""
        if not self.hashed:
            return f'return {{\n\t["password"] = "{self.password}";\n}};\n'
        salt = f"salt-{self.prefix}{i}-{self.port}"
        client_key, server_key, stored_key, _ = scram_sha1_keys(self.password, salt.encode())
        # the load generator's SCRAM cache, keyed like loadgen.Conn (salt + iterations)
        self.scram_cache[salt.encode() + str(SCRAM_ITERATIONS).encode()] = (
            client_key,
            server_key,
        )
        return (
            f'return {{\n\t["iteration_count"] = {SCRAM_ITERATIONS};\n'
            f'\t["salt"] = "{salt}";\n'
            f'\t["stored_key"] = "{stored_key.hex()}";\n'
            f'\t["server_key"] = "{server_key.hex()}";\n}};\n'
        )


class Ejabberd(Server):
    name = "ejabberd"

    async def start(self) -> None:
        d = self.dir
        for sub in ("logs", "spool", "conf"):
            (d / sub).mkdir()
        (d / "conf" / "ejabberd.yml").write_text(f"""
hosts:
  - "{self.domain}"
loglevel: warning
log_rotate_count: 0
listen:
  -
    port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    shaper: none
    backlog: 1024
    max_stanza_size: 262144
auth_method: internal
auth_password_format: {"scram" if self.hashed else "plain"}
auth_scram_hash: sha
registration_timeout: infinity
acl:
  local:
    user_regexp: ""
access_rules:
  register:
    allow: all
  local:
    allow: local
shaper_rules:
  max_user_sessions: 1000
  c2s_shaper: none
modules:
  mod_disco: {{}}
  mod_offline: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_register:
    ip_access: all
    access: register
""")
        self.node = f"bench{self.port}@localhost"
        self.epmd_before = set(_pids_named("epmd"))
        (d / "conf" / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE={self.node}\nINET_DIST_INTERFACE=127.0.0.1\n"
            f'ERL_EPMD_ADDRESS=127.0.0.1\nERL_OPTIONS="+S 1:1"\n'
        )
        (d / ".erlang.cookie").write_text(os.urandom(16).hex())
        os.chmod(d / ".erlang.cookie", 0o400)
        subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(d)], check=True)
        env = dict(os.environ, HOME=str(d), EJABBERD_CONFIG_PATH=str(d / "conf/ejabberd.yml"))
        self.proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                SERVER_CORE,
                "setpriv",
                "--reuid=ejabberd",
                "--regid=ejabberd",
                "--init-groups",
                "--",
                "ejabberdctl",
                "--config-dir",
                str(d / "conf"),
                "--config",
                str(d / "conf/ejabberd.yml"),
                "--ctl-config",
                str(d / "conf/ejabberdctl.cfg"),
                "--logs",
                str(d / "logs"),
                "--spool",
                str(d / "spool"),
                "--node",
                self.node,
                "foreground",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        await wait_port(self.port, 120)
        self.version = _package_version("ejabberd")
        await self.register_users()

    async def register_users(self) -> None:
        """XEP-0077 in-band registration, 20 at a time (ejabberdctl per user is slow)."""
        sem = asyncio.Semaphore(20)

        async def one(i: int) -> None:
            async with sem:
                r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.write(
                    (
                        f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
                        f"'http://etherx.jabber.org/streams' to='{self.domain}' version='1.0'>"
                        f"<iq type='set' id='r'><query xmlns='jabber:iq:register'>"
                        f"<username>{self.prefix}{i}</username><password>{self.password}</password>"
                        f"</query></iq>"
                    ).encode()
                )
                buf = b""
                while b"id='r'" not in buf and b'id="r"' not in buf:
                    chunk = await asyncio.wait_for(r.read(4096), 10)
                    if not chunk:
                        break
                    buf += chunk
                w.close()

        await asyncio.gather(*(one(i) for i in range(self.users)))

    async def stop(self) -> None:
        # ejabberdctl runs beam as a child: stop the beam (the process on our port) first
        beam = pid_listening(self.port)
        if beam is not None:
            os.kill(beam, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{beam}").exists():
                    break
                await asyncio.sleep(0.1)
            else:
                os.kill(beam, signal.SIGKILL)
        await super().stop()
        # stop the epmd daemon this run started (by its pid; one that ran before is left)
        for pid in set(_pids_named("epmd")) - getattr(self, "epmd_before", set()):
            os.kill(pid, signal.SIGTERM)


def _package_version(package: str) -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10
    )
    return out.stdout.strip()


def _pids_named(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def imhost_script() -> str:
    """The ``imhost`` console script of this Python (the entry point people run)."""
    beside = Path(sys.executable).with_name("imhost")
    if beside.exists():
        return str(beside)
    found = shutil.which("imhost")
    if found is None:
        raise RuntimeError("no imhost script: pip install -e . first")
    return found


def imhost_version() -> str:
    """``__version__`` of the measured checkout and its commit (plus ``+dirty``)."""
    text = (REPO / "src" / "imhost" / "__init__.py").read_text()
    m = re.search(r'__version__ = "([^"]+)"', text)
    version = m.group(1) if m else "?"
    out = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    commit = out.stdout.strip()
    return f"{version} ({commit})" if commit else version
