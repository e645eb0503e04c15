"""The raw decision (`core/raw.py`) and how `decide()` carries it: which datasets go raw to which
target, and which cannot be sent at all as configured."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from replicator.core import raw
from replicator.core.actions import Decision, Send, Sides, Strategy, decide
from replicator.core.config import parse_config
from replicator.core.errors import ConfigError
from replicator.core.model import Snapshot
from replicator.core.planner import Conflict, ConflictKind
from replicator.core.raw import Encryption, RawChoice

PLAIN = Encryption()
LOCKED = Encryption("aes-256-gcm", "unavailable", "tank/secret")
OPEN = Encryption("aes-256-gcm", "available", "tank/secret")

encryptions = st.one_of(st.none(), st.builds(Encryption, st.sampled_from(["off", "aes-256-gcm", "on", "-"]),
                                             st.sampled_from(["available", "unavailable", "-"]),
                                             st.sampled_from(["-", "tank/secret"])))
settings = st.sampled_from([None, True, False])


def choose(setting, source, copy=None):
    return raw.choose(setting, source, copy, dataset="tank/secret/data", target="offsite")


@given(settings, encryptions, encryptions)
def test_nothing_encrypted_ever_leaves_decrypted_without_its_key(setting, source, copy):
    choice = choose(setting, source, copy)
    if source is not None and source.encrypted and not source.key_loaded:
        assert choice.raw or choice.refused, "a locked dataset is sent raw or not at all"
    if choice.refused:
        assert not choice.raw
        assert "offsite" in choice.refused


@given(encryptions, encryptions)
def test_auto_is_raw_exactly_where_the_dataset_is_encrypted_unless_the_copy_was_received_decrypted(source, copy):
    choice = choose(None, source, copy)
    encrypted = source is not None and source.encrypted
    decrypted_copy = copy is not None and not copy.encrypted
    if not decrypted_copy:
        assert choice == RawChoice(encrypted)
    elif encrypted:
        assert not choice.raw and bool(choice.refused) == (not source.key_loaded)


def test_auto_keeps_an_encrypted_dataset_encrypted_and_needs_no_key():
    assert choose(None, LOCKED) == RawChoice(True)
    assert choose(None, OPEN) == RawChoice(True)
    assert choose(None, PLAIN) == RawChoice(False)


def test_auto_on_zfs_fuse_is_not_raw_without_a_word():
    assert choose(None, None) == RawChoice(False)
    assert choose(False, None) == RawChoice(False)


def test_raw_true_on_zfs_fuse_is_refused_with_the_fix():
    choice = choose(True, None)
    assert not choice.raw and "no raw send" in choice.refused and 'set raw = "auto" or false' in choice.refused


def test_raw_true_sends_an_unencrypted_dataset_raw_too():
    assert choose(True, PLAIN) == RawChoice(True)


def test_raw_false_on_a_locked_dataset_names_both_fixes():
    choice = choose(False, LOCKED)
    assert not choice.raw
    assert "zfs load-key tank/secret)" in choice.refused and "set raw" in choice.refused
    assert choose(False, OPEN) == RawChoice(False)


def test_a_copy_received_decrypted_goes_on_decrypted_while_the_key_is_loaded():
    assert choose(None, OPEN, PLAIN) == RawChoice(False)
    assert "decrypted copy" in choose(None, LOCKED, PLAIN).refused
    assert "decrypted copy" in choose(True, OPEN, PLAIN).refused
    assert choose(None, OPEN, OPEN) == RawChoice(True)


def test_a_copy_that_only_inherits_an_encrypted_backup_pool_counts_as_received_decrypted():
    # backup/hostA/tank/secret received decrypted into the encrypted pool `backup`: it is
    # encrypted, but by the pool's key, not by anything its stream carried.
    pooled = Encryption("aes-256-gcm", "available", "backup")
    at_the_target = Encryption("aes-256-gcm", "available", "backup/hostA")
    received_raw = Encryption("aes-256-gcm", "unavailable", "backup/hostA/tank/secret")
    assert raw.own_encryption(pooled, "backup/hostA") == PLAIN
    assert raw.own_encryption(at_the_target, "backup/hostA/") == PLAIN
    assert raw.own_encryption(received_raw, "backup/hostA") == received_raw
    assert raw.own_encryption(None, "backup/hostA") is None
    assert choose(None, OPEN, raw.own_encryption(pooled, "backup/hostA")) == RawChoice(False)
    assert choose(None, OPEN, raw.own_encryption(received_raw, "backup/hostA")) == RawChoice(True)


def snap(n: int) -> Snapshot:
    return Snapshot(name=f"s{n}", guid=f"g{n}", order=n)


@given(st.integers(1, 6), st.integers(0, 6), st.booleans())
def test_every_send_carries_the_raw_choice_and_a_refusal_stops_only_what_has_to_send(count, received, is_raw):
    source = tuple(snap(n) for n in range(count))
    target = source[:min(received, count)] or None
    refusal = RawChoice(False, "load the key")
    for choice in (RawChoice(is_raw), refusal):
        decision = decide(Sides(source, target), Strategy(intermediates=True, holds=True, raw=choice))
        up_to_date = target is not None and len(target) == count
        if choice.refused and not up_to_date:
            assert isinstance(decision, Conflict) and decision.kind is ConflictKind.SEND_MODE
            assert decision.message == "load the key"
            continue
        assert isinstance(decision, Decision)
        assert all(s.step.raw == choice.raw for s in decision.actions if isinstance(s, Send))
        assert bool(decision.sends) == (not up_to_date)


CONFIG = """
[[job]]
name = "z"
source = {{ kind = "zfs", datasets = ["tank/secret"] }}
target = [{{ path = "backup/z", {line} }}]
[[job]]
name = "b"
source = {{ kind = "btrfs", subvolumes = ["/srv/home"], snapshot_dir = "/srv/.snapshots" }}
target = [{{ path = "/mnt/backup", {btrfs} }}]
"""


@pytest.mark.parametrize("line, value", [('name = "t"', None), ('raw = "auto"', None), ("raw = true", True),
                                         ("raw = false", False)])
def test_raw_is_auto_true_or_false(line, value):
    assert parse_config(CONFIG.format(line=line, btrfs='name = "t"')).jobs[0].targets[0].raw is value


@pytest.mark.parametrize("line", ['raw = "yes"', "raw = 1", 'raw = "on"', "raw = []"])
def test_another_raw_value_lists_the_choices(line):
    with pytest.raises(ConfigError) as e:
        parse_config(CONFIG.format(line=line, btrfs='name = "t"'))
    [problem] = e.value.problems
    assert problem.startswith(f"job[0].target[0].raw: {line.partition(' = ')[2]} is not a choice: write \"auto\"")


def test_raw_on_a_btrfs_target_is_refused():
    with pytest.raises(ConfigError) as e:
        parse_config(CONFIG.format(line='name = "t"', btrfs="raw = true"))
    assert e.value.problems == ["job[1].target[0].raw: raw sends are ZFS's (zfs send -w); btrfs has no "
                                "encryption to keep: leave raw out"]


# Cut from `zfs send -w tank/enc@b | head -c 2000000 | zfs receive -s backup/enc2` on OpenZFS 2.3.2.
RAW_TOKEN = ("1-b939fa48d-f0-789c636064000310a500c4ec50360710e72765a52697303030419460caa7a515a796806464e0f26c48f249"
             "9525a9c5405a44490eabfe92fcf4d2cc140686d9555c4d0a53a2ae6b20c97382e5f31273538174625eb67e6a5eb24312c2"
             "1ddc0c087727e7e71614a51617e76743c424a0ee80c9172596c3a4180010f01b92")


def test_a_raw_streams_resume_token_says_so():
    from replicator.core.resume_token import decode
    decoded = decode(RAW_TOKEN)
    assert (decoded.toname, decoded.raw) == ("tank/enc@b", True)
