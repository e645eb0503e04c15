"""A throwaway OpenSSH server on 127.0.0.1 with its own host key and one client key.

Nothing here reads or writes ~/.ssh or /etc/ssh: the server gets its own config file and
every client command carries `-F none` and explicit key and known_hosts options.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .common import SandboxError, SandboxUnavailable, require_tool, run, wait_until

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class SshServer:
    """Where the sandbox sshd listens and the files a client needs to reach it."""

    address: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    host_key_pub: Path
    authorized_keys: Path
    log: Path
    pid: int

    def ssh_options(
        self, known_hosts: Path | None = None, identity_file: Path | None = None
    ) -> list[str]:
        """OpenSSH client options that reach this server and nothing else."""
        return [
            "-F", "none",
            "-i", str(identity_file or self.identity_file),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-p", str(self.port),
        ]  # fmt: skip

    def ssh_argv(self, *command: str, known_hosts: Path | None = None) -> list[str]:
        """A complete `ssh` command line that runs `command` on this server."""
        return [
            "ssh",
            *self.ssh_options(known_hosts),
            f"{self.user}@{self.address}",
            *command,
        ]


def check_available() -> None:
    """Raise SandboxUnavailable unless OpenSSH's server and client are installed."""
    require_tool("ssh-keygen", "openssh-client")
    require_tool("ssh", "openssh-client")
    if not os.access(SSHD, os.X_OK):
        raise SandboxUnavailable(f"{SSHD} not found: apt-get install openssh-server")


@contextmanager
def loopback_sshd(workdir: Path, extra_config: str = "") -> Iterator[SshServer]:
    """Run sshd on a free port of 127.0.0.1 and yield how to log in to it.

    `extra_config` is appended to the sshd_config (e.g. `SetEnv PATH=...` to hide a tool).

    Returns once a real `ssh ... true` has succeeded. Raises SandboxUnavailable when
    OpenSSH is missing, SandboxError (with sshd's log) when it does not come up. On
    exit, also after an exception: stops sshd and its sessions, deletes its files.
    """
    check_available()
    workdir = Path(workdir).resolve()
    with ExitStack() as cleanup:
        home = Path(tempfile.mkdtemp(prefix="sshd-", dir=workdir))
        cleanup.callback(_remove_files, home)
        host_key = _keygen(home / "host_ed25519")
        client_key = _keygen(home / "client_ed25519")
        authorized_keys = home / "authorized_keys"
        authorized_keys.write_text(Path(f"{client_key}.pub").read_text())
        port = _free_port()
        config = home / "sshd_config"
        config.write_text(_config(home, host_key, authorized_keys, port) + extra_config)
        known_hosts = write_known_hosts(
            home / "known_hosts", port, Path(f"{host_key}.pub")
        )

        # sshd's privilege separation directory; the package creates it at boot only.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = home / "sshd.log"
        with open(log, "wb") as out:
            # A session of its own keeps a terminal's Ctrl-C away; we stop it ourselves.
            daemon = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", config],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        cleanup.callback(_stop, daemon)
        server = SshServer(
            address="127.0.0.1",
            port=port,
            user=pwd.getpwuid(os.geteuid()).pw_name,
            identity_file=client_key,
            known_hosts=known_hosts,
            host_key_pub=Path(f"{host_key}.pub"),
            authorized_keys=authorized_keys,
            log=log,
            pid=daemon.pid,
        )
        _wait_ready(server, daemon)
        yield server


def write_known_hosts(path: Path, port: int, host_key_pub: Path) -> Path:
    """Write a known_hosts file that trusts `host_key_pub` for 127.0.0.1:`port`."""
    key_type, key = Path(host_key_pub).read_text().split()[:2]
    path.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    return path


def write_wrong_known_hosts(server: SshServer, path: Path) -> Path:
    """Write a known_hosts file that pins a fresh, wrong host key for `server`.

    A client using it must refuse to connect, as it would to an impostor.
    """
    with tempfile.TemporaryDirectory() as scratch:
        impostor = _keygen(Path(scratch) / "impostor")
        return write_known_hosts(Path(path), server.port, Path(f"{impostor}.pub"))


def _keygen(path: Path) -> Path:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", path])
    return path


def _free_port() -> int:
    # The kernel picks a port that is free now; sshd binds it a moment later. A clash
    # in between is possible but rare, and shows as "Address already in use" in the log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(home: Path, host_key: Path, authorized_keys: Path, port: int) -> str:
    return f"""\
ListenAddress 127.0.0.1:{port}
HostKey {host_key}
PidFile {home / "sshd.pid"}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowAgentForwarding no
PermitUserEnvironment no
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
# Tests open many connections and sessions at once; the defaults (10) would drop some.
MaxStartups 100
MaxSessions 100
"""


def _wait_ready(server: SshServer, daemon: subprocess.Popen[bytes]) -> None:
    last_try = "(port never opened)"

    def port_open() -> bool:
        try:
            socket.create_connection((server.address, server.port), timeout=1).close()
        except OSError:
            return False
        return True

    def logs_in() -> bool:
        nonlocal last_try
        probe = run(server.ssh_argv("true"), check=False, timeout=10)
        last_try = probe.stderr.strip() or f"exit status {probe.returncode}"
        return probe.returncode == 0

    def ready() -> bool:
        return daemon.poll() is not None or (port_open() and logs_in())

    up = wait_until(ready, timeout=READY_TIMEOUT, interval=0.2)
    if not up or daemon.poll() is not None:
        log_tail = server.log.read_text().strip().splitlines()[-30:]
        raise SandboxError(
            f"sshd on 127.0.0.1:{server.port} is not usable (exit status "
            f"{daemon.poll()}); last `ssh ... true`: {last_try}\n"
            f"end of sshd's log:\n" + "\n".join(log_tail)
        )


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is not None:
        return
    # Each connection, and each command run over it, gets a session of its own, so
    # signalling the listener's process group would miss them: walk the tree instead.
    for pid in [daemon.pid, *_descendants(daemon.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        daemon.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        raise SandboxError(
            f"sshd (pid {daemon.pid}) ignored SIGTERM; killed it"
        ) from None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name before it may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _remove_files(home: Path) -> None:
    for path in home.iterdir():
        path.unlink()
    home.rmdir()
