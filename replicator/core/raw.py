"""Whether a ZFS stream is sent raw (`zfs send -w`): the blocks as they lie on disk, encrypted
where the dataset is, so that the target stores ciphertext and never needs the key.

A target's `raw` setting decides: "auto" (None here) sends raw exactly when the dataset is
encrypted (also a copy that was itself received raw and is sent onward, which has no key
loaded either); true always (an unencrypted dataset then goes as a plaintext raw stream);
false never, which needs the key loaded. Pure: the facts come from `zfs get`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Encryption:
    """A dataset's native encryption as `zfs get encryption,keystatus,encryptionroot` reports it
    ("-" for keystatus and encryptionroot where it is not encrypted)."""

    encryption: str = "off"
    keystatus: str = "-"
    encryptionroot: str = "-"

    @property
    def encrypted(self) -> bool:
        return self.encryption not in ("off", "-", "")

    @property
    def key_loaded(self) -> bool:
        return not self.encrypted or self.keystatus == "available"


@dataclass(frozen=True, slots=True)
class RawChoice:
    """How one dataset is sent to one target: raw or not, or `refused` (why it cannot be sent
    as configured, with the fix)."""

    raw: bool
    refused: str | None = None


def own_encryption(found: Encryption | None, target_path: str) -> Encryption | None:
    """A target copy's encryption as far as its streams are concerned. A copy received raw is
    its own encryption root, below the target's path; one received decrypted under an encrypted
    backup pool (or an encrypted target path) only inherits the pool's encryption, which says
    nothing of how it was sent: for it, as for an unencrypted copy, the answer is "none"."""
    if found is None or not found.encrypted:
        return found
    if found.encryptionroot.startswith(target_path.rstrip("/") + "/"):
        return found
    return Encryption()


def choose(setting: bool | None, source: Encryption | None, copy: Encryption | None = None, *,
           dataset: str, target: str) -> RawChoice:
    """The send mode of `dataset` to `target` under its `raw` setting (None: "auto").

    `source` is None where this ZFS has no native encryption (zfs-fuse, pool v23): nothing is
    encrypted there and `zfs send -w` does not exist. `copy` is the target's copy, where it has
    snapshots: one received decrypted (before raw sends, or with raw = false) can only be
    continued decrypted, since a raw incremental needs a raw-received base."""
    if source is None:
        if setting:
            return RawChoice(False, (
                f"target {target} has raw = true, but the ZFS that holds {dataset} has no native "
                "encryption and no raw send (zfs send -w; zfs-fuse, pool version 23): set raw = \"auto\" "
                "or false for this target"))
        return RawChoice(False)
    raw = source.encrypted if setting is None else setting
    root = source.encryptionroot if source.encryptionroot not in ("", "-") else dataset
    if raw and source.encrypted and copy is not None and not copy.encrypted:
        if setting is None and source.key_loaded:
            return RawChoice(False)
        return RawChoice(False, (
            f"target {target} holds a decrypted copy of the encrypted {dataset} (received without raw), "
            "and no raw stream can follow a decrypted base: load the key (zfs load-key "
            f"{root}) and leave raw at \"auto\" or false to go on decrypted, or move that copy away so "
            "that a full raw stream starts a new copy"))
    if not raw and not source.key_loaded:
        return RawChoice(False, (
            f"{dataset} is encrypted and its key is not loaded, so it cannot be sent decrypted as target "
            f"{target}'s raw = false asks: load the key (zfs load-key {root}), or set raw = \"auto\" (the "
            "default) or true for this target to send the ciphertext, which the target stores without the key"))
    return RawChoice(raw)
