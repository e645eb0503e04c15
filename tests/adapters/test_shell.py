"""Kept remote shells against a real sshd: the same answers as a session per command, one
shell reused, several side by side, and nothing lost when a shell is killed, cancelled or refused."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from replicator.adapters.runner import Completed, SshRunner, ssh_hosts
from replicator.adapters.shell import RemoteShell, ShellPool
from replicator.cli.common import run_async
from replicator.core.config import Config, Host
from replicator.engine.context import open_context
from replicator.sandbox import SshServer
from waiting import pids, wait_until

pytestmark = pytest.mark.ssh

# The process a command runs under: a kept `sh`, or sshd itself (bash execs a lone command).
PARENT = ["sh", "-c", "echo $PPID $(cat /proc/$PPID/comm)"]
ANSWERS = [
    ["printf", "%s", "no newline at the end"],
    ["printf", "a\nb\n\n\n"],
    ["sh", "-c", "echo out; echo err >&2; exit 3"],
    ["echo", "it's \"quoted\" $HOME `id` ; exit 9\n and a newline"],
    ["echo", "replicator-end-0123456789abcdef0123456789abcdef 0"],
    ["replicator-no-such-command"],
    ["cat"],  # stdin is /dev/null: it must not read the shell's input
    ["sh", "-c", "head -c 300000 /dev/zero | od -An -tx1 -v; head -c 70000 /dev/zero | tr '\\0' e >&2"],
]


def host_of(server: SshServer) -> Host:
    return Host(name="loop", address=server.address, port=server.port, user=server.user,
                identity_file=str(server.identity_file), known_hosts=str(server.known_hosts))


def with_runner(server: SshServer, work, *, shells: bool):
    """Run `work(runner, hosts)` on one connection, its kept shells on or off."""

    async def main():
        async with ssh_hosts({"loop": host_of(server)}) as hosts:
            if shells:
                hosts.enable_shells("loop")
            return await work(await hosts.runner("loop"), hosts)

    return run_async(main)


def same_answer(done: Completed) -> tuple:
    return done.status, done.stdout, done.stderr


def test_a_kept_shell_answers_like_a_session_per_command(sshd):
    async def answers(runner, hosts):
        return [same_answer(await runner.run(argv)) for argv in ANSWERS]

    plain = with_runner(sshd, answers, shells=False)
    kept = with_runner(sshd, answers, shells=True)
    # Only the wording of "not found" differs: bash says it for the session, sh for the kept shell.
    missing = ANSWERS.index(["replicator-no-such-command"])
    assert [a for i, a in enumerate(kept) if i != missing] == [a for i, a in enumerate(plain) if i != missing]
    assert kept[missing][:2] == plain[missing][:2] == (127, "") and "not found" in kept[missing][2]
    assert plain[2] == (3, "out\n", "err\n")
    assert len(plain[7][1]) > 900_000 and plain[7][2] == "e" * 70000


def test_commands_reuse_one_shell_and_overlapping_ones_get_their_own(sshd):
    async def parents(runner, hosts):
        one_after_another = [(await runner.run(PARENT)).stdout for _ in range(3)]
        side_by_side = []

        async def one() -> None:
            side_by_side.append((await runner.run(["sh", "-c", "sleep 0.5; " + PARENT[2]])).stdout)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        return one_after_another, side_by_side

    sequential, concurrent = with_runner(sshd, parents, shells=True)
    assert len(set(sequential)) == 1, "each command started a shell of its own"
    assert sequential[0].split()[1] == "sh"
    assert len(set(concurrent)) == 3, "overlapping commands waited for one shell"
    assert {p.split()[1] for p in concurrent} == {"sh"}
    plain, _ = with_runner(sshd, parents, shells=False)
    assert {p.split()[1] for p in plain} == {"sshd"}, "without kept shells sshd runs each command"


def test_start_up_output_is_not_taken_for_a_command_output(sshd):
    async def work(runner, hosts):
        shell = await RemoteShell.start(runner._connection, 10,
                                        "echo noise; echo more noise >&2; printf partial; exec sh")
        try:
            return await shell.run("echo hello")
        finally:
            shell.close()

    assert with_runner(sshd, work, shells=False) == (0, b"hello\n", b"")


def test_a_cancelled_command_abandons_only_its_shell(sshd):
    async def work(runner, hosts):
        before = (await runner.run(PARENT)).stdout
        asleep = f"sleep 60.{os.getpid()}"   # a name of its own, to see it on this machine
        cancelled = trio.CancelScope()

        async def sleeper() -> None:
            with cancelled:
                await runner.run(asleep.split())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await wait_until(lambda: pids(f"^{asleep}$"), "the remote sleep to start")
            cancelled.cancel()
        after = [(await runner.run(PARENT)).stdout for _ in range(2)]
        return cancelled.cancelled_caught, before, after

    cancelled, before, after = with_runner(sshd, work, shells=True)
    assert cancelled
    assert after[0] == after[1] != before, "the cancelled shell was used again"


def test_a_shell_that_died_while_idle_is_replaced(sshd):
    async def work(runner: SshRunner, hosts):
        first = (await runner.run(PARENT)).stdout
        os.kill(int(first.split()[0]), signal.SIGKILL)   # the sshd is on this machine
        shell = runner._shells._idle[0]
        await wait_until(lambda: not shell.alive, "the killed shell to be seen dead")
        return first, await runner.run(PARENT)

    first, second = with_runner(sshd, work, shells=True)
    assert second.status == 0 and second.stdout != first


def test_a_host_that_refuses_the_shell_gets_a_session_per_command(sshd):
    async def work(runner: SshRunner, hosts):
        refusing = ShellPool(runner._connection, "loop", 10, enabled=True,
                             session_command="echo 'replicator serve: rejected' >&2; exit 1")
        answer = await refusing.run("echo hello")
        fallback = SshRunner(runner.host, runner._connection, shells=refusing)
        return answer, refusing.enabled, await fallback.run(["echo", "hello"])

    answer, enabled, done = with_runner(sshd, work, shells=False)
    assert answer is None and not enabled
    assert same_answer(done) == (0, "hello\n", "")


def test_the_engine_uses_kept_shells_once_the_probe_finds_a_full_shell(sshd, tmp_path):
    async def main():
        config = Config(hosts={"loop": host_of(sshd)}, jobs=(), state_dir=str(tmp_path))
        async with open_context(config) as ctx:
            runner = await ctx.runner("loop")
            return ctx.endpoints, (await runner.run(PARENT)).stdout.split()[1]

    endpoints, parent = run_async(main)
    assert endpoints == {"loop": None}
    assert parent == "sh"
