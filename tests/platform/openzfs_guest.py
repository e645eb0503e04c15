"""A throwaway qemu guest running OpenZFS 2.x, reached over ssh on a 127.0.0.1 port.

`build_guest()` runs tests/hosts/openzfs/build, which builds the guest once and caches it.
`booted_guest()` boots a throwaway instance of it: the root image is opened read-only
(the guest writes into a tmpfs overlay), the pool disks are fresh sparse files, the network is
qemu's user-mode network restricted to the one forwarded ssh port. On exit the guest is killed
by its pid and its files are removed; if the test run itself is killed, the kernel kills qemu
(parent-death signal) and the next run removes the files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "hosts" / "openzfs" / "build"
# Under TCG on a busy 2-core machine the guest reaches sshd in 10-40 s.
BOOT_TIMEOUT = 300.0
STOP_TIMEOUT = 10.0
MEMORY_MB = 1536
POOL_DISKS = ("tank", "backup")
POOL_DISK_MB = 1024
TEMP_PREFIX = "replicator-openzfs-"


class GuestUnavailable(RuntimeError):
    """This machine cannot build or run the guest; the message says why."""


class GuestError(RuntimeError):
    """The guest was built but misbehaved (did not boot, died)."""


@dataclass(frozen=True)
class Guest:
    """A running guest: what an ssh client needs, like replicator.sandbox.SshServer."""

    address: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    host_key_pub: Path
    pid: int
    console_log: Path
    control_path: Path
    info: dict[str, str]

    def ssh_options(self) -> list[str]:
        # Commands share the connection of the master that `booted_guest` starts: a new
        # connection costs ~0.5 s of key exchange under TCG. Without the master, ssh connects
        # on its own.
        return ["-F", "none", "-i", str(self.identity_file), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "ControlMaster=no", "-o", f"ControlPath={self.control_path}",
                "-p", str(self.port)]

    def ssh_argv(self, command: str) -> list[str]:
        """`ssh` running the shell command line `command` on the guest as root."""
        return ["ssh", *self.ssh_options(), f"{self.user}@{self.address}", command]

    def sh(self, command: str, *, input: bytes | str | None = None, check: bool = True,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a shell command line on the guest; raises GuestError with its stderr if it fails."""
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(self.ssh_argv(command), input=data, capture_output=True, timeout=timeout)
        result = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                             done.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise GuestError(f"on the guest: {command}\nexited {done.returncode}: {result.stderr.strip()}")
        return result

    def run(self, *argv: str, check: bool = True, timeout: float = 300) -> str:
        """Run one command (an argv, quoted for the remote shell) and return its stdout."""
        return self.sh(shlex.join(argv), check=check, timeout=timeout).stdout

    def put(self, paths: list[Path], remote_dir: str, *, exclude: tuple[str, ...] = ()) -> None:
        """Copy files and directory trees into `remote_dir` on the guest, in one tar over ssh."""
        argv = ["tar", *[f"--exclude={e}" for e in exclude], "-cf", "-"]
        for path in paths:
            argv += ["-C", str(Path(path).parent), Path(path).name]
        tar = subprocess.run(argv, capture_output=True, check=True)
        self.sh(f"mkdir -p {shlex.quote(remote_dir)} && tar -C {shlex.quote(remote_dir)} -xf -",
                input=tar.stdout)


def build_guest(progress: Callable[[str], None] = lambda line: None) -> Path:
    """Build the guest, or find it in the cache, and return its directory.

    `progress` gets each line the build prints as it happens. Raises GuestUnavailable when
    this machine cannot (not root, not Debian amd64, the build failed: its end is in the
    message)."""
    if os.geteuid() != 0:
        raise GuestUnavailable("building and booting the OpenZFS guest needs root")
    if platform.machine() != "x86_64" or not shutil.which("apt-get"):
        raise GuestUnavailable("the OpenZFS guest is built from Debian amd64 packages: "
                               "needs Debian 12 on x86_64")
    build = subprocess.Popen(["bash", str(BUILD_SCRIPT)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, errors="replace")
    output = []
    for line in build.stderr:
        progress(line)
        output.append(line)
    stdout = build.stdout.read().strip().splitlines()
    if build.wait() != 0 or not stdout:
        tail = "".join(output[-30:])
        raise GuestUnavailable(f"{BUILD_SCRIPT} failed (exit {build.returncode}):\n{tail}")
    return Path(stdout[-1])


@contextlib.contextmanager
def booted_guest(image: Path) -> Iterator[Guest]:
    """Boot a throwaway guest from the built `image` directory and yield it once ssh answers.

    Raises GuestUnavailable without qemu, GuestError (with the console's end) if it does not
    come up. On exit, also after an exception: kills qemu and removes the guest's files."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise GuestUnavailable("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        disks = [sparse_disk(workdir / f"{name}.img") for name in POOL_DISKS]
        for attempt in range(3):
            port = free_port()
            process, console = start_qemu(qemu, image, workdir, disks, port)
            cleanup.callback(stop, process)
            guest = Guest(address="127.0.0.1", port=port, user="root",
                          identity_file=image / "id_ed25519",
                          known_hosts=write_known_hosts(workdir / "known_hosts", port,
                                                        image / "ssh_host_ed25519_key.pub"),
                          host_key_pub=image / "ssh_host_ed25519_key.pub", pid=process.pid,
                          console_log=console, control_path=workdir / "ssh-control",
                          info=read_env(image / "guest.env"))
            if wait_for_ssh(guest, process):
                break
            # Another program may have taken the port between our check and qemu's bind.
            if "Could not set up host forwarding" not in (workdir / "qemu.log").read_text() or attempt == 2:
                raise GuestError(why_not_up(guest, process, workdir))
        master = start_ssh_master(guest, workdir)
        cleanup.callback(stop, master)
        create_pools(guest)
        yield guest


def start_qemu(qemu: str, image: Path, workdir: Path, disks: list[Path],
               port: int) -> tuple[subprocess.Popen[bytes], Path]:
    console = workdir / "console.log"
    argv = [
        qemu, "-accel", "tcg", "-cpu", "qemu64", "-smp", "2", "-m", str(MEMORY_MB),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        # panic=-1 with -no-reboot: a kernel panic ends qemu instead of hanging until timeout.
        "-append", "console=ttyS0 net.ifnames=0 panic=-1",
        "-serial", f"file:{console}",
        "-drive", f"file={image / 'root.img'},format=raw,if=virtio,readonly=on",
        *[a for disk in disks for a in ("-drive", f"file={disk},format=raw,if=virtio,cache=unsafe")],
        # restrict=on: the guest reaches nothing outside; only the forwarded ssh port comes in.
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
    ]  # fmt: skip
    with open(workdir / "qemu.log", "wb") as log:
        # A session of its own keeps a terminal's Ctrl-C away (we stop it ourselves); the
        # parent-death signal stops it if this test run is killed without cleaning up.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    return process, console


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_for_ssh(guest: Guest, process: subprocess.Popen[bytes]) -> bool:
    """True once `ssh guest true` succeeds; False if qemu exits or BOOT_TIMEOUT passes."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        # Until sshd listens, qemu accepts the connection and drops it at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            if guest.sh("true", check=False, timeout=20).returncode == 0:
                return True
        time.sleep(0.5)
    return False


def start_ssh_master(guest: Guest, workdir: Path) -> subprocess.Popen[bytes]:
    """An ssh connection that later commands share (see Guest.ssh_options); our child, so
    that it is stopped by its pid like qemu."""
    options = [o.replace("ControlMaster=no", "ControlMaster=yes") for o in guest.ssh_options()]
    with open(workdir / "ssh-master.log", "wb") as log:
        master = subprocess.Popen(["ssh", *options, "-N", f"{guest.user}@{guest.address}"],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 20
    while not guest.control_path.exists() and master.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return master


def why_not_up(guest: Guest, process: subprocess.Popen[bytes], workdir: Path) -> str:
    state = f"qemu exited {process.poll()}" if process.poll() is not None else \
        f"no ssh after {BOOT_TIMEOUT:g} s"
    console = guest.console_log.read_text(errors="replace").strip().splitlines()[-25:]
    qemu_log = (workdir / "qemu.log").read_text(errors="replace").strip()
    return (f"the OpenZFS guest did not come up ({state}); qemu said: {qemu_log or '(nothing)'}\n"
            "end of its console:\n" + "\n".join(console))


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop qemu by its pid: the guest has nothing to save, so no clean shutdown."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_pools(guest: Guest) -> None:
    """One pool per disk, named as in POOL_DISKS (/dev/vdb, /dev/vdc, ...)."""
    for name, device in zip(POOL_DISKS, ("vdb", "vdc", "vdd")):
        guest.run("zpool", "create", "-o", "ashift=12", name, f"/dev/{device}", timeout=120)


def sparse_disk(path: Path) -> Path:
    with open(path, "xb") as f:
        f.truncate(POOL_DISK_MB << 20)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_known_hosts(path: Path, port: int, host_key_pub: Path) -> Path:
    key_type, key = host_key_pub.read_text().split()[:2]
    path.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    return path


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def remove_stale_workdirs() -> None:
    """Remove the files of guests whose test run was killed (their qemu died with it)."""
    stale = re.compile(rf"{TEMP_PREFIX}(\d+)-")
    for entry in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        match = stale.match(entry.name)
        if match and not Path(f"/proc/{match[1]}").exists():
            shutil.rmtree(entry, ignore_errors=True)
