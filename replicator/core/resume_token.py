"""Read a ZFS `receive_resume_token`: which snapshot a `zfs send -t TOKEN` would send.

A token is `1-CHECKSUM-LENGTH-HEX`: HEX is a zlib-compressed nvlist in the sender's native
encoding (libzfs `zfs_send_resume_token_to_nvlist`), LENGTH its uncompressed size and CHECKSUM
the first word of the fletcher-4 sum of the compressed bytes. The restricted endpoint must know
the `toname` before it lets `zfs send -t` run, so this reads the token as strictly as zfs does:
anything zfs might read differently (a duplicate name, a bad size, trailing bytes) is refused.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

_TOKEN = re.compile(r"1-([0-9a-f]{1,16})-([0-9a-f]{1,16})-((?:[0-9a-f]{2})+)", re.ASCII)
# nvpair data types (sys/nvpair.h) whose values this reader interprets.
_UINT64 = 8
_STRING = 9
_PAIR_HEADER = 16  # nvp_size, nvp_name_sz, nvp_reserve, nvp_value_elem, nvp_type
MAX_PACKED = 1 << 16


class TokenError(ValueError):
    """The token is not one zfs would accept; the message says why."""


@dataclass(frozen=True, slots=True)
class ResumeToken:
    toname: str
    toguid: int | None = None
    fromguid: int | None = None
    raw: bool = False   # the interrupted stream was raw (`rawok`): `send -t` resumes it raw


def decode(token: str) -> ResumeToken:
    """The snapshot and guids a resume token names; raises TokenError if it is malformed."""
    match = _TOKEN.fullmatch(token)
    if not match:
        raise TokenError("not of the form 1-CHECKSUM-LENGTH-HEX")
    checksum, length = int(match[1], 16), int(match[2], 16)
    compressed = bytes.fromhex(match[3])
    if length > MAX_PACKED:
        raise TokenError(f"claims {length} bytes of payload, more than a token holds")
    if _fletcher4_first_word(compressed) != checksum:
        raise TokenError("checksum mismatch")
    inflater = zlib.decompressobj()
    try:
        packed = inflater.decompress(compressed, length + 1)
    except zlib.error as e:
        raise TokenError(f"payload does not decompress: {e}") from None
    if len(packed) != length or not inflater.eof or inflater.unused_data:
        raise TokenError("payload length does not match the header")
    try:
        pairs = _native_nvlist(packed)
    except (UnicodeDecodeError, struct.error) as e:
        raise TokenError(f"malformed nvlist: {e}") from None
    toname = pairs.get("toname")
    if not isinstance(toname, str):
        raise TokenError("names no snapshot (toname)")
    toguid, fromguid = pairs.get("toguid"), pairs.get("fromguid")
    return ResumeToken(toname=toname, toguid=toguid if isinstance(toguid, int) else None,
                       fromguid=fromguid if isinstance(fromguid, int) else None, raw="rawok" in pairs)


def _fletcher4_first_word(data: bytes) -> int:
    # The first word of fletcher-4 is the sum of the little-endian 32-bit words; zfs ignores a
    # trailing partial word (fletcher_4_native_varsize) and so does this.
    words = struct.unpack(f"<{len(data) // 4}I", data[:len(data) // 4 * 4])
    return sum(words) & 0xFFFFFFFFFFFFFFFF


def _native_nvlist(packed: bytes) -> dict[str, str | int | None]:
    """The pairs of an NV_ENCODE_NATIVE nvlist; strings and uint64s decoded, others None."""
    if len(packed) < 16 or packed[0] != 0 or packed[1] not in (0, 1):
        raise TokenError("payload is not a native-encoded nvlist")
    order = "<" if packed[1] == 1 else ">"
    _version, _flags = struct.unpack_from(f"{order}iI", packed, 4)
    offset, pairs = 12, {}
    while True:
        if offset + 4 > len(packed):
            raise TokenError("nvlist ends without its terminator")
        (size,) = struct.unpack_from(f"{order}i", packed, offset)
        if size == 0:
            if offset + 4 != len(packed):
                raise TokenError("bytes after the end of the nvlist")
            return pairs
        if size < _PAIR_HEADER or size % 8 or offset + size > len(packed):
            raise TokenError("an nvpair has an impossible size")
        name_size, _reserved, count, kind = struct.unpack_from(f"{order}hhii", packed, offset + 4)
        body = packed[offset + _PAIR_HEADER:offset + size]
        value_at = _align8(name_size)
        if name_size < 2 or value_at > len(body) or body[name_size - 1] != 0 or 0 in body[:name_size - 1]:
            raise TokenError("an nvpair has a malformed name")
        name = body[:name_size - 1].decode("utf-8", errors="strict")
        if name in pairs:
            raise TokenError(f"the nvlist names {name!r} twice")
        value = body[value_at:]
        if kind == _STRING:
            end = value.find(0)
            if count != 1 or end < 0 or _align8(end + 1) != len(value):
                raise TokenError(f"{name!r} is not a well-formed string")
            pairs[name] = value[:end].decode("utf-8", errors="strict")
        elif kind == _UINT64:
            if count != 1 or len(value) != 8:
                raise TokenError(f"{name!r} is not a well-formed uint64")
            pairs[name] = struct.unpack(f"{order}Q", value)[0]
        else:
            pairs[name] = None
        offset += size


def _align8(n: int) -> int:
    return (n + 7) & ~7
