"""A real Dovecot IMAP server on loopback for tests: TLS (trustme certificate), passwd-file auth.

``DovecotServer(leaf)`` writes a private configuration in a temporary directory and starts
``/usr/sbin/dovecot -F`` (Debian's ``dovecot-imapd``, installed by ``.ci/run``); ``stop()``
ends it. Running as root, mail is owned by ``nobody`` (Dovecot refuses uid 0 for mail);
otherwise by the current user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import trustme

DOVECOT = Path("/usr/sbin/dovecot")
USER = "bounces"
PASSWORD = "imap-Pa55-word"
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DovecotServer:
    """One Dovecot instance serving IMAPS for one user on 127.0.0.1.

    Attributes:
        port: the IMAPS port.
        maildir: the user's Maildir on disk (INBOX).
    """

    def __init__(self, leaf: trustme.LeafCert) -> None:
        if not DOVECOT.exists():
            raise RuntimeError(f"{DOVECOT} is missing; install dovecot-imapd (.ci/run does)")
        # Not under pytest's tmp_path: that is mode 700, and the mail user must traverse it.
        root = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
        root.chmod(0o755)
        self.root = root
        self.port = _free_port()
        run = root / "run"
        run.mkdir(parents=True)
        home = root / "home" / USER
        home.mkdir(parents=True)
        self.maildir = home / "Maildir"
        if os.geteuid() == 0:
            mail_user = pwd.getpwnam("nobody")
            login_user, internal_user = "dovenull", "dovecot"
        else:
            mail_user = pwd.getpwuid(os.getuid())
            login_user = internal_user = mail_user.pw_name
        shutil.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        cert, key = root / "cert.pem", root / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        self.log = root / "dovecot.log"
        self.config = root / "dovecot.conf"
        self.config.write_text(
            f"""
base_dir = {run}
state_dir = {root / "state"}
log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "passwd"}
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={root / "home"}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
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
"""
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DovecotServer:
        """Start Dovecot and wait until the IMAPS port accepts connections."""
        self._proc = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"dovecot exited: {err} {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not listen on {self.port} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Stop Dovecot (and its children) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
