"""The endpoint's one pipeline: exactly `zstd -dcq | ` before a command that receives a stream.

Everything else with a `|` in it stays shell syntax, refused as before; behind the prefix the rest
is decided exactly as it would be alone.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from replicator.core.compress import DECOMPRESS_PREFIX
from replicator.core.endpoint import (PROBE, VOCABULARY, EndpointInfo, Rejection, Request, Role,
                                      _unquoted_special, confine, parse_probe_answer, parse_request,
                                      probe_answer)
from test_endpoint import (DROOT, RECEIVE, SEND, SNAP, SPOOL, ZROOT, anything, assert_confined, cmd,
                           fake_realpath, shape_argvs, values_for)

Z = DECOMPRESS_PREFIX


def test_the_prefix_is_what_the_client_sends():
    assert Z == "zstd -dcq | "


@pytest.mark.parametrize("command, argv", [
    (cmd("zfs", "receive", f"{ZROOT}/tank/my data"), None),
    (cmd("zfs", "receive", "-s", "-u", f"{ZROOT}/tank/data"), None),
    (cmd("btrfs", "receive", "--", f"{DROOT}/h"), ("btrfs", "receive", "--chroot", "--", f"{DROOT}/h")),
    (cmd("btrfs", "receive", "--chroot", "--", f"{DROOT}/h"), None),
    (cmd("dd", f"of={SPOOL}", "bs=1M", "status=none", "conv=fsync"), None),
    (cmd("dd", f"of={SPOOL}", "bs=1M", "status=none", "conv=notrunc,fsync", "oflag=append"), None),
], ids=lambda v: str(v)[:40])
def test_a_receiving_command_is_accepted_behind_the_prefix(command, argv):
    decision = parse_request(Z + command, RECEIVE)
    assert isinstance(decision, Request) and decision.decompress, decision
    assert decision.argv == (argv or tuple(shlex.split(command)))
    assert replace(decision, decompress=False) == parse_request(command, RECEIVE)


@pytest.mark.parametrize("request_text, says", [
    # another spelling of zstd, or of the pipe: shell syntax, refused as any '|' is
    (f"zstd -d | zfs receive {ZROOT}/x", "'|'"),
    (f"zstd -dc | zfs receive {ZROOT}/x", "'|'"),
    (f"zstd -dcq -T0 | zfs receive {ZROOT}/x", "'|'"),
    (f"zstd  -dcq | zfs receive {ZROOT}/x", "'|'"),
    (f"zstd -dcq |zfs receive {ZROOT}/x", "'|'"),
    (f"zstd -dcq|zfs receive {ZROOT}/x", "'|'"),
    (f"'zstd' -dcq | zfs receive {ZROOT}/x", "'|'"),
    (f"/usr/bin/zstd -dcq | zfs receive {ZROOT}/x", "'|'"),
    (f" zstd -dcq | zfs receive {ZROOT}/x", "'|'"),
    (f"zfs receive {ZROOT}/x | zstd -dcq", "'|'"),
    # more pipeline than the one
    (f"zstd -dcq | zstd -dcq | zfs receive {ZROOT}/x", "'|'"),
    (f"zstd -dcq | zfs receive {ZROOT}/x | sh", "'|'"),
    (f"zstd -dcq | zfs receive {ZROOT}/x; reboot", "';'"),
    (f"zstd -dcq | zfs receive {ZROOT}/x && reboot", "'&'"),
    (f"zstd -dcq | zfs receive {ZROOT}/x\nreboot", "newline"),
    (f"zstd -dcq |  zfs receive {ZROOT}/x", "not quoted the way"),
    ("zstd -dcq | ", "empty command"),
    ("zstd -dcq | zstd -dcq", "not a command this endpoint runs"),
    ("zstd -dcq | sh -c 'cat > /etc/passwd'", "not a command this endpoint runs"),
    # the rest is judged as it would be alone
    ("zstd -dcq | rm -rf /", "not accepted"),
    ("zstd -dcq | zfs receive backup/hostB/x", "outside the roots"),
    (f"zstd -dcq | zfs receive -F {ZROOT}/x", "not accepted"),
    (f"zstd -dcq | dd of={DROOT}/x bs=1M status=none conv=fsync", "not a spool file"),
    # accepted alone, but it reads no stream
    (Z + cmd("rm", "-f", "--", SPOOL), "receives a stream"),
    (Z + cmd("zfs", "receive", "-A", f"{ZROOT}/x"), "receives a stream"),
    (Z + cmd("btrfs", "receive", "-f", SPOOL, "--", f"{DROOT}/h"), "receives a stream"),
    (Z + cmd("zfs", "destroy", f"{ZROOT}/x@{SNAP}"), "receives a stream"),
    (Z + cmd("mkdir", "-p", "--", f"{DROOT}/x"), "receives a stream"),
    (Z + cmd("zfs", "get", "-H", "-o", "value", "type", ZROOT), "receives a stream"),
    (Z + PROBE, "receives a stream"),
], ids=lambda v: repr(v)[:50])
def test_anything_else_is_refused(request_text, says):
    decision = parse_request(request_text, RECEIVE)
    assert isinstance(decision, Rejection), decision
    assert says in decision.reason


@pytest.mark.parametrize("request_text, says", [
    (Z + cmd("zfs", "send", f"tank/data@{SNAP}"), "receives a stream"),
    (Z + cmd("btrfs", "send", "--", f"/srv/.snapshots/home@{SNAP}"), "receives a stream"),
    (Z + cmd("zfs", "receive", "tank/data/x"), "only for role receive"),
])
def test_a_send_endpoint_takes_no_compressed_stream(request_text, says):
    decision = parse_request(request_text, SEND)
    assert isinstance(decision, Rejection) and says in decision.reason


def test_symlinks_are_resolved_behind_the_prefix_too():
    request = parse_request(Z + cmd("btrfs", "receive", "--", f"{DROOT}/x"), RECEIVE)
    resolved = confine(request, RECEIVE, fake_realpath({f"{DROOT}/x": f"{DROOT}/y"}))
    assert isinstance(resolved, Request) and resolved.decompress
    assert resolved.argv == ("btrfs", "receive", "--chroot", "--", f"{DROOT}/y")
    escaped = confine(request, RECEIVE, fake_realpath({f"{DROOT}/x": "/etc"}))
    assert isinstance(escaped, Rejection) and "outside the roots" in escaped.reason


def stream_argvs():
    """argvs in the shape of a command that reads a stream, arguments friendly and hostile."""
    def fill(shape):
        rest = st.tuples(*[st.just(p) if isinstance(p, str) else values_for(p) for p in shape.pattern])
        return rest.map(lambda r: [*shape.command.split(), *r])
    return st.sampled_from([s for s in VOCABULARY[Role.RECEIVE] if s.reads_stream]).flatmap(fill)


@settings(max_examples=800)
@given(st.one_of(st.tuples(st.just(RECEIVE), stream_argvs()),
                 st.tuples(st.just(RECEIVE), shape_argvs(Role.RECEIVE)),
                 st.tuples(st.just(SEND), shape_argvs(Role.SEND))))
def test_the_prefix_admits_exactly_the_accepted_commands_that_read_a_stream(case):
    policy, argv = case
    alone = parse_request(shlex.join(argv), policy)
    behind = parse_request(Z + shlex.join(argv), policy)
    if isinstance(alone, Request) and alone.reads_stream:
        assert behind == replace(alone, decompress=True)
        assert_confined(behind, policy)
    else:
        assert isinstance(behind, Rejection)


@settings(max_examples=300)
@given(st.lists(anything, min_size=1, max_size=6), st.sampled_from([RECEIVE, SEND]))
def test_random_argvs_behind_the_prefix_are_refused_or_confined(argv, policy):
    decision = parse_request(Z + shlex.join(argv), policy)
    if isinstance(decision, Request):
        assert decision.decompress and decision.reads_stream and policy is RECEIVE
        assert_confined(decision, policy)


@given(st.text(max_size=200), st.sampled_from([RECEIVE, SEND]))
def test_no_unquoted_pipe_but_the_prefix_is_ever_accepted(text, policy):
    for request_text in (text, Z + text, text + " | " + text):
        decision = parse_request(request_text, policy)
        if isinstance(decision, Request):
            rest = request_text[len(Z):] if decision.decompress else request_text
            assert _unquoted_special(rest) is None, request_text
            assert decision.decompress == request_text.startswith(Z)


def test_the_probe_says_whether_compressed_streams_are_taken():
    answer = probe_answer(RECEIVE, "1.2.3", decompress=True)
    assert json.loads(answer)["decompress"] is True
    assert parse_probe_answer(answer) == EndpointInfo("1.2.3", "receive", (ZROOT, DROOT), decompress=True,
                                                       restore=True)
    # Only the receive role takes them; an endpoint from before says nothing, which means no.
    assert parse_probe_answer(probe_answer(SEND, "1", decompress=True)).decompress is False
    old = json.dumps({"endpoint": "replicator", "version": "0.1", "role": "receive", "roots": [ZROOT]})
    assert parse_probe_answer(old).decompress is False
    assert parse_probe_answer(old.replace("}", ', "decompress": "yes"}')) is None
