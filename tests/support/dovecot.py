"""A private dovecot IMAP server on loopback for tests: its own configuration, run and mail
directories in a temporary folder, one mailbox user with a plain password (allowed because it
listens on 127.0.0.1 only). Debian's package: dovecot-imapd."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def dovecot_missing() -> str | None:
    """Why dovecot cannot run here, or None."""
    if not os.path.exists(DOVECOT):
        return "dovecot is not installed (apt-get install dovecot-imapd)"
    if os.geteuid() != 0:
        return "the private dovecot of the tests runs as root (as CI does)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Dovecot:
    host: str
    port: int
    user: str
    password: str
    root: Path


@contextmanager
def running_dovecot(tmp: Path) -> Iterator[Dovecot]:
    mail_user = pwd.getpwnam("nobody")
    port = _free_port()
    for name in ("run", "state", "home/support"):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)  # noqa: S103 - dovecot's auth and mail users must enter it
    shutil.chown(tmp / "home", mail_user.pw_uid, mail_user.pw_gid)
    shutil.chown(tmp / "home" / "support", mail_user.pw_uid, mail_user.pw_gid)
    (tmp / "passwd").write_text("support:{PLAIN}s3cret-test-pass\n")
    conf = tmp / "dovecot.conf"
    conf.write_text(
        f"""
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {mail_user.pw_uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={tmp}/home/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  mailbox Processed {{
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    )
    process = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log = (tmp / "dovecot.log").read_text() if (tmp / "dovecot.log").exists() else ""
                raise RuntimeError(f"dovecot did not start: {log[-2000:]}")
            time.sleep(0.1)
        yield Dovecot("127.0.0.1", port, "support", "s3cret-test-pass", tmp)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
