#!/usr/bin/env python3
"""Writes the hand-made seed corpus of the three fuzz targets.

    python3 protocol/fuzz/make_seeds.py

corpus/decode_request/ holds request frames without their 4-byte size prefix
(what `ferry_protocol::frame::fuzz_request` takes); corpus/record_batch/ holds
the contents of a `records` field: zero or more record batches back to back
(what `ferry_protocol::records::fuzz_batches` takes); corpus/ferry_message/
holds one byte that picks one of Ferry's own node-to-node messages (bit 0:
response; the rest: 0 handoff commit, 1 replica read, 2 forward) and then
that message's version 0 body (what `ferry_protocol::frame::fuzz_ferry_message`
takes, as schemas/ferry/*.json describe it). Each seed is small, is
named for what it is, and is either valid or broken in one named way, so the
fuzzer starts next to the interesting branches. The output is the same on
every run: the seeds are committed, and so is this script.

Files that `cargo fuzz run` adds to these folders (named by their SHA-1) are
not seeds: run the fuzzer with a scratch folder first (see the README).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


# ---- primitive encodings ------------------------------------------------


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(v: int) -> bytes:
    """Zig-zag signed varint, as record fields use (64-bit zig-zag covers both)."""
    return uvarint((v << 1) ^ (v >> 63))


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    raw = s.encode()
    return i16(len(raw)) + raw


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    raw = s.encode()
    return uvarint(len(raw) + 1) + raw


def compact_bytes(b: bytes | None) -> bytes:
    if b is None:
        return uvarint(0)
    return uvarint(len(b) + 1) + b


NO_TAGS = uvarint(0)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), reflected, as Kafka's record batches use."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value


# ---- request headers ----------------------------------------------------

CLIENT_ID = "ferry-seed"


def header_v1(api_key: int, version: int, correlation_id: int) -> bytes:
    return i16(api_key) + i16(version) + i32(correlation_id) + string(CLIENT_ID)


def header_v2(api_key: int, version: int, correlation_id: int) -> bytes:
    # The client id stays a classic nullable string even in header v2.
    return header_v1(api_key, version, correlation_id) + NO_TAGS


# ---- record batches (magic v2) ------------------------------------------

ATTR_GZIP = 1
ATTR_TRANSACTIONAL = 1 << 4
ATTR_CONTROL = 1 << 5
TIMESTAMP_MS = 1_700_000_000_000


def record(offset_delta: int, key: bytes | None, value: bytes | None,
           headers: list[tuple[str, bytes | None]]) -> bytes:
    def blob(b: bytes | None) -> bytes:
        return varint(-1) if b is None else varint(len(b)) + b

    body = i8(0) + varint(offset_delta * 10) + varint(offset_delta)  # attributes, ts delta, offset delta
    body += blob(key) + blob(value) + varint(len(headers))
    for name, hvalue in headers:
        body += varint(len(name.encode())) + name.encode() + blob(hvalue)
    return varint(len(body)) + body


def batch(records: list[bytes], base_offset: int = 0, attributes: int = 0,
          producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
          compress=None) -> bytes:
    count = len(records)
    payload = b"".join(records)
    if compress is not None:
        payload = compress(payload)
    after_crc = (
        i16(attributes)
        + i32(count - 1)  # last offset delta
        + i64(TIMESTAMP_MS)  # base timestamp
        + i64(TIMESTAMP_MS + 10 * (count - 1))  # max timestamp
        + i64(producer_id)
        + i16(producer_epoch)
        + i32(base_sequence)
        + i32(count)
        + payload
    )
    after_length = i32(0) + i8(2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return i64(base_offset) + i32(len(after_length)) + after_length


def gzip_fixed(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def two_records() -> list[bytes]:
    return [
        record(0, b"key-0", b"value-0", [("golden-header", b"header-0"), ("null", None)]),
        record(1, None, b"value-1", []),
    ]


ONE_BATCH = batch(two_records())
SECOND_BATCH = batch([record(0, b"k", b"v", [])], base_offset=2)
GZIP_BATCH = batch(two_records(), attributes=ATTR_GZIP, compress=gzip_fixed)
# An end-transaction marker: control record key (version 0, type 1 = commit),
# value (version 0, coordinator epoch 0).
CONTROL_BATCH = batch(
    [record(0, i16(0) + i16(1), i16(0) + i32(0), [])],
    attributes=ATTR_TRANSACTIONAL | ATTR_CONTROL,
    producer_id=1000,
    producer_epoch=0,
)


def bad_crc(b: bytes) -> bytes:
    flipped = bytearray(b)
    flipped[-2] ^= 0x01  # a byte of the last value, so only the CRC disagrees
    return bytes(flipped)


def legacy_magic1_message() -> bytes:
    """A magic v1 message set entry, which current brokers refuse or convert."""
    after_crc = i8(1) + i8(0) + i64(TIMESTAMP_MS) + i32(1) + b"k" + i32(1) + b"v"
    message = struct.pack(">I", 0) + after_crc  # the v1 CRC is CRC-32 (IEEE); zero here on purpose
    return i64(0) + i32(len(message)) + message


# ---- requests -----------------------------------------------------------

API_PRODUCE, API_METADATA, API_API_VERSIONS = 0, 3, 18


def produce_v9(records: bytes) -> bytes:
    body = (
        compact_string(None)  # transactional id
        + i16(-1)  # acks=all
        + i32(30_000)  # timeout ms
        + uvarint(1 + 1)  # one topic
        + compact_string("golden-topic")
        + uvarint(1 + 1)  # one partition
        + i32(0)
        + compact_bytes(records)
        + NO_TAGS  # partition
        + NO_TAGS  # topic
        + NO_TAGS  # request
    )
    return header_v2(API_PRODUCE, 9, 3) + body


def metadata_v12(topics: list[str]) -> bytes:
    body = uvarint(len(topics) + 1)
    for name in topics:
        body += bytes(16) + compact_string(name) + NO_TAGS  # zero topic id, name
    body += i8(1) + i8(0) + NO_TAGS  # allow auto-create, include topic authorized ops
    return header_v2(API_METADATA, 12, 2) + body


# ---- Ferry's own messages (schemas/ferry/) ------------------------------

HANDOFF, REPLICA, FORWARD = 0, 1, 2
KEY = "handoff/zone-a/node-7/000000000000000001"


def ferry(api: int, response: bool, body: bytes) -> bytes:
    return bytes([(api << 1) | int(response)]) + body


def array(items: list[bytes]) -> bytes:
    return i32(len(items)) + b"".join(items)


def handoff_batch(key_index: int) -> bytes:
    return (
        i32(key_index)
        + i64(1 << 20)  # position
        + struct.pack(">I", 16 << 10)  # length
        + struct.pack(">I", 0xDEADBEEF)  # crc
        + i32(100)  # record count
        + i32(99)  # last offset delta
        + i64(TIMESTAMP_MS)
        + i64(1234)  # producer id
        + i16(0)  # producer epoch
        + i32(5000)  # base sequence
    )


def handoff_commit(key_index: int) -> bytes:
    partition = string("golden-topic") + bytes(range(16)) + i32(0) + array([handoff_batch(key_index)] * 2)
    return i32(3) + i64(17) + array([string(KEY)]) + array([partition])


def replica_entry(key_index: int) -> bytes:
    return (
        i64(0) + i64(99) + i64(TIMESTAMP_MS) + i32(key_index)
        + i64(1 << 20) + struct.pack(">I", 16 << 10) + struct.pack(">I", 0xDEADBEEF)
    )


FERRY_SEEDS = {
    "handoff_commit": ferry(HANDOFF, False, handoff_commit(0)),
    "handoff_commit_response": ferry(
        HANDOFF, True, array([array([i16(0) + i64(0) + i64(0), i16(6) + i64(-1) + i64(-1)])])
    ),
    "replica_read": ferry(REPLICA, False, string("golden-topic") + i32(0) + i64(0) + i32(1 << 20) + i32(500)),
    "replica_read_response": ferry(
        REPLICA, True, i16(0) + i64(100) + i64(0) + i32(1) + array([string(KEY)]) + array([replica_entry(0)])
    ),
    "forward": ferry(
        FORWARD,
        False,
        string("10.0.0.1") + string("User:alice") + i32(len(metadata_v12(["t"]))) + metadata_v12(["t"]),
    ),
    "forward_response_null": ferry(FORWARD, True, i16(0) + i32(-1)),
    # Decodes: the index is checked where the key table is resolved, in ferry-node.
    "handoff_commit_key_index_outside": ferry(HANDOFF, False, handoff_commit(7)),
    # Claims 2^31-1 object keys in a few bytes: must fail before allocating.
    "handoff_commit_huge_key_count": ferry(HANDOFF, False, i32(3) + i64(17) + i32(0x7FFF_FFFF) + string(KEY)),
    "forward_negative_length": ferry(FORWARD, False, string("h") + string("User:a") + i32(-2)),
    "replica_read_response_truncated": ferry(
        REPLICA, True, (i16(0) + i64(100) + i64(0) + i32(1) + array([string(KEY)]) + array([replica_entry(0)]))[:-3]
    ),
    "empty": b"",
}


SEEDS = {
    "decode_request": {
        "api_versions_v3": header_v2(API_API_VERSIONS, 3, 1)
        + compact_string("ferry-seed") + compact_string("0.1.0") + NO_TAGS,
        "api_versions_v0": header_v1(API_API_VERSIONS, 0, 1),
        # A version past the newest: the broker must answer with a v0 response.
        "api_versions_v99_unknown": header_v2(API_API_VERSIONS, 99, 1)
        + compact_string("ferry-seed") + compact_string("0.1.0") + NO_TAGS,
        "metadata_v1": header_v1(API_METADATA, 1, 2) + i32(1) + string("golden-topic"),
        "metadata_v1_null_topics": header_v1(API_METADATA, 1, 2) + i32(-1),
        "metadata_v12": metadata_v12(["golden-topic", "other"]),
        "produce_v9_one_batch": produce_v9(ONE_BATCH),
        # Claims 2^31-1 topics in a 30-byte frame: must fail before allocating.
        "metadata_v1_huge_count": header_v1(API_METADATA, 1, 2) + i32(0x7FFF_FFFF) + string("t"),
        # Claims a 32767-byte client id that is not there.
        "header_huge_client_id": i16(API_METADATA) + i16(1) + i32(2) + i16(0x7FFF) + b"x",
        "unknown_api_key": header_v1(0x7F00, 0, 4),
        "empty": b"",
        "garbage": bytes((i * 167 + 13) % 256 for i in range(64)),
    },
    "record_batch": {
        "one_batch": ONE_BATCH,
        "two_batches": ONE_BATCH + SECOND_BATCH,
        "gzip_batch": GZIP_BATCH,
        "control_batch": CONTROL_BATCH,
        "bad_crc": bad_crc(ONE_BATCH),
        "truncated": ONE_BATCH[:40],
        # batchLength says 2^31-1 bytes follow.
        "huge_length": ONE_BATCH[:8] + i32(0x7FFF_FFFF) + ONE_BATCH[12:],
        "legacy_magic1": legacy_magic1_message(),
        "empty": b"",
        "garbage": bytes((i * 89 + 7) % 256 for i in range(64)),
    },
    "ferry_message": FERRY_SEEDS,
}


def main() -> None:
    for target, seeds in SEEDS.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{folder}: {len(seeds)} seed(s)")


if __name__ == "__main__":
    main()
