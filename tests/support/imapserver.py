"""A real IMAP server on 127.0.0.1 for the tests: Dovecot (Debian's dovecot-imapd), run in the
foreground with a configuration of its own, IMAP over TLS only (a certificate made here for
127.0.0.1), one user from a passwd-file, mail in a Maildir under the test's folder."""

from __future__ import annotations

import imaplib
import ipaddress
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

from tests.support.certs import self_signed

LOOPBACK = ipaddress.ip_address("127.0.0.1")
DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ImapServer:
    user = "bounces"
    password = "imap-test-password"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert: Path | None = None

    def __enter__(self) -> ImapServer:
        assert DOVECOT is not None
        f = self.folder
        for sub in ("run", "state", "mail", "home"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        self.cert, key = self_signed(f)
        (f / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        uid, gid = os.getuid(), os.getgid()
        user = pwd.getpwuid(uid).pw_name
        if uid == 0:
            # Dovecot will not give mail to uid 0 ("userdb returned 0 as uid"): its own user keeps
            # the mail, and may enter this folder (made world-searchable: the caller's own folder)
            account = pwd.getpwnam("dovecot")
            user, uid, gid = account.pw_name, account.pw_uid, account.pw_gid
            f.chmod(0o755)
            for sub in ("mail", "home", "state"):
                os.chown(f / sub, uid, gid)
        (f / "dovecot.conf").write_text(
            f"""
base_dir = {f}/run
state_dir = {f}/state
log_path = {f}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{self.cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain
first_valid_uid = 0
default_internal_user = {user}
default_login_user = {"dovenull" if os.getuid() == 0 else user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {f}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={f}/home/%u
}}
mail_location = maildir:{f}/mail/%u
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""
        )
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(f / "dovecot.conf")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"dovecot exited: {out} {self.log()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.cert))
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def append(self, data: bytes, folder: str = "INBOX") -> None:
        imap = self.client()
        try:
            status, said = imap.append(
                folder, None, None, data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            )
            assert status == "OK", said
        finally:
            imap.logout()

    def count(self, folder: str) -> int:
        imap = self.client()
        try:
            status, data = imap.select(f'"{folder}"', readonly=True)
            return int(data[0] or 0) if status == "OK" else -1
        finally:
            imap.logout()
