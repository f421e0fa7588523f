//! Interoperability: record batches written by another implementation,
//! kafka-python's own `DefaultRecordBatchBuilder`, read by Ferry, and
//! Ferry's builder checked byte for byte against it.
//!
//! The hex constants below were printed by this script (kafka-python 3.0.12,
//! python-snappy 0.7.3, lz4 4.4.5, zstandard 0.25.0). kafka-python writes
//! snappy in the xerial framing, LZ4 frames and zstd frames, as the Java
//! client does:
//!
//! ```text
//! # Writes magic v2 batches with kafka-python's own DefaultRecordBatchBuilder
//! # (kafka-python 3.0.12; python-snappy 0.7.3, lz4 4.4.5, zstandard 0.25.0).
//! from kafka.record.default_records import DefaultRecordBatchBuilder as B
//!
//! def batch(codec, n, value, headers, pid=1000, epoch=5, seq=7):
//!     b = B(magic=2, compression_type=codec, is_transactional=False,
//!           producer_id=pid, producer_epoch=epoch, base_sequence=seq, batch_size=1 << 22)
//!     ts = [1700000000000, 1700000000005, 1699999999990]
//!     for i in range(n):
//!         key = [b"key-0", None, b""][i % 3]
//!         b.append(i, ts[i % 3] + i, key, value(i), headers(i))
//!     out = bytes(b.build())
//!     assert out[22] & 7 == codec, "kafka-python kept the batch uncompressed"
//!     return out
//!
//! hdrs = lambda i: [[("h1", b"v1")], [], [("h2", None), ("", b"")]][i % 3]
//! val = lambda i: None if i % 3 == 2 else (b"value-%d " % i) * 8
//! for name, c in [("none", 0), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)]:
//!     print(name, batch(c, 3, val, hdrs).hex())
//! print("snappy_large", batch(2, 100, lambda i: (b"value-%d " % i) * 40, lambda i: [], -1, -1, -1).hex())
//! ```

// Test code: an unwrap that fails is a failing test. (clippy.toml allows
// unwrap in #[test] functions but not in their helpers.)
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use ferry_protocol::compression::{Compression, XERIAL_MAGIC};
use ferry_protocol::records::{
    fuzz_batches, Header, NewRecord, RecordBatch, RecordBatchBuilder, RecordBatches, Records,
};

const KAFKA_PYTHON_NONE: &str = "\
    0000000000000000000000db00000000026fce23d60000000000020000018bcfe568000000018bcfe5680600\
    000000000003e800050000000700000003a4010000000a6b65792d30800176616c75652d302076616c75652d\
    302076616c75652d302076616c75652d302076616c75652d302076616c75652d302076616c75652d30207661\
    6c75652d3020020468310476318e01000c0201800176616c75652d312076616c75652d312076616c75652d31\
    2076616c75652d312076616c75652d312076616c75652d312076616c75652d312076616c75652d3120001800\
    0f04000104046832010000";

const KAFKA_PYTHON_GZIP: &str = "\
    00000000000000000000007c00000000023627ae360001000000020000018bcfe568000000018bcfe5680600\
    000000000003e8000500000007000000031f8b0800982f056b02ff5bc2c8c0c0c0959d5aa96bd0c058969853\
    9aaa6ba0402ecdc49261c85266d8c7c8c0c3c40833ce50815c9a4182819f8581918525c308e84a007aafe1d1\
    aa000000";

const KAFKA_PYTHON_SNAPPY: &str = "\
    000000000000000000000086000000000222cbb39c0002000000020000018bcfe568000000018bcfe5680600\
    000000000003e80005000000070000000382534e4150505900000000010000000100000041aa0150a4010000\
    000a6b65792d30800176616c75652d3020de080030020468310476318e01000c0201114f00310d4fc6080034\
    0018000f04000104046832010000";

const KAFKA_PYTHON_LZ4: &str = "\
    00000000000000000000008900000000023b552af90003000000020000018bcfe568000000018bcfe5680600\
    000000000003e80005000000070000000304224d186840aa000000000000009441000000ff06a4010000000a\
    6b65792d30800176616c75652d3020080025d4020468310476318e01000c02014f0013314f000f08001fe000\
    18000f0400010404683201000000000000";

const KAFKA_PYTHON_ZSTD: &str = "\
    0000000000000000000000790000000002771672200004000000020000018bcfe568000000018bcfe5680600\
    000000000003e80005000000070000000328b52ffd20aafd01001403a4010000000a6b65792d30800176616c\
    75652d3020020468310476318e01000c0201310018000f0400010404683201000004008308902f29107f7716\
    26";

const KAFKA_PYTHON_SNAPPY_LARGE: &str = "\
    000000000000000000000be100000000023517d6310002000000630000018bcfe568000000018bcfe56866ff\
    ffffffffffffffffffffffffff0000006482534e4150505900000000010000000100000a3e80800250980500\
    00000a6b65792d30800576616c75652d3020fe0800fe0800fe0800fe0800de080018008e05000c0201314900\
    312d49fe0800fe0800fe0800fe0800c608002149080f0400314900322d49fe0800fe0800fe0800fe0800c608\
    001400980500060636e00300332d4efe0800fe0800fe0800fe0800c60800419704120875e000342d49fe0800\
    fe0800fe0800fe0800c60800214904090a75e000352d49fe0800fe0800fe0800fe0800c6080061e0040c0c36\
    e00300362d4efe0800fe0800fe0800fe0800c60800419704180e75e000372d49fe0800fe0800fe0800fe0800\
    c60800214904031075e000382d49fe0800fe0800fe0800fe0800c6080061e004121236e00300392d4efe0800\
    fe0800fe0800fe0800c608001c00de05001e1401d01ae90c00311eea0cfe0900fe0900fe0900fe0900fe0900\
    6209002171080216003571220a0dfe0900fe0900fe0900fe0900fe09005e09001400e805001818893035761e\
    370dfe0900fe0900fe0900fe0900fe090062090041e704241a99581e5a0dfe0900fe0900fe0900fe0900fe09\
    00620900217104081c99581e820dfe0900fe0900fe0900fe0900fe09006209008158041e1e3a58041eaf0dfe\
    0900fe0900fe0900fe0900fe090062090041e7042a2099581ed20dfe0900fe0900fe0900fe0900fe09006209\
    002171040e2299581efa0dfe0900fe0900fe0900fe0900fe090062090081580424243a58041e270efe0900fe\
    0900fe0900fe0900fe090062090041e704302699581e4a0efe0900fe0900fe0900fe0900fe09006209002171\
    041428955800321e790efe0900fe0900fe0900fe0900fe09006209008158042a2a36580400321e750efe0900\
    fe0900fe0900fe0900fe090062090041e704362c955800321e790efe0900fe0900fe0900fe0900fe09006209\
    002171041a2e99581e790efe0900fe0900fe0900fe0900fe090062090081580430303a58041e7e0efe0900fe\
    0900fe0900fe0900fe090062090041e7043c3299581e790efe0900fe0900fe0900fe0900fe09006209002171\
    04203499581e790efe0900fe0900fe0900fe0900fe090062090081580436363a58041e7e0efe0900fe0900fe\
    0900fe0900fe090062090041e704423899581e790efe0900fe0900fe0900fe0900fe0900620900217104263a\
    99581e790efe0900fe0900fe0900fe0900fe09006209008158043c3c36580400331e7e0efe0900fe0900fe09\
    00fe0900fe090062090041e704483e955800331e790efe0900fe0900fe0900fe0900fe09006209002171042c\
    40955800331e790efe0900fe0900fe0900fe0900fe090062090081580442423a58041e7e0efe0900fe0900fe\
    0900fe0900fe090062090041e7044e4499581e790efe0900fe0900fe0900fe0900fe09006209002171043246\
    99581e790efe0900fe0900fe0900fe0900fe090062090081580448483a58041e7e0efe0900fe0900fe0900fe\
    0900fe090062090041e704544a99581e790efe0900fe0900fe0900fe0900fe0900620900217104384c99581e\
    790efe0900fe0900fe0900fe0900fe09006209008158044e4e3a58041e7e0efe0900fe0900fe0900fe0900fe\
    090062090041e7045a50955800341e790efe0900fe0900fe0900fe0900fe09006209002171043e5295580034\
    1e790efe0900fe0900fe0900fe0900fe0900620900815804545436580400341e7e0efe0900fe0900fe0900fe\
    0900fe090062090041e704605699581e790efe0900fe0900fe0900fe0900fe0900620900217104445899581e\
    790efe0900fe0900fe0900fe0900fe09006209008158045a5a3a58041e7e0efe0900fe0900fe0900fe0900fe\
    090062090041e704665c99581e790efe0900fe0900fe0900fe0900fe09006209002171044a5e99581e790efe\
    0900fe0900fe0900fe0900fe090062090081580460603a58041e7e0efe0900fe0900fe0900fe0900fe090062\
    090041e7046c6299581e790efe0900fe0900fe0900fe0900fe09006209002171045064955800351e790efe09\
    00fe0900fe0900fe0900fe0900620900815804666636580400351e7e0efe0900fe0900fe0900fe0900fe0900\
    62090041e7047268955800351e790efe0900fe0900fe0900fe0900fe0900620900217104566a99581e790efe\
    0900fe0900fe0900fe0900fe09006209008158046c6c3a58041e7e0efe0900fe0900fe0900fe0900fe090062\
    090041e704786e99581e790efe0900fe0900fe0900fe0900fe09006209002171045c7099581e790efe0900fe\
    0900fe0900fe0900fe090062090081580472723a58041e7e0efe0900fe0900fe0900fe0900fe090062090041\
    e7047e7499581e790efe0900fe0900fe0900fe0900fe0900620900217104627699581e790efe0900fe0900fe\
    0900fe0900fe0900620900815804787836580400361e7e0efe0900fe0900fe0900fe0900fe09006209001800\
    e0050084017a955900361e7a0efe0900fe0900fe0900fe0900fe0900620900815904687c955900361e7a0efe\
    0900fe0900fe0900fe0900fe09006209008159047e7e3a59041e7f0efe0900fe0900fe0900fe0900fe090062\
    09001c00e205008a018001995a1e7c0efe0900fe0900fe0900fe0900fe0900620900a1cc086e8201995b1e7d\
    0efe0900fe0900fe0900fe0900fe09006209000400ece13e0484013a5d041e840efe0900fe0900fe0900fe09\
    00fe0900620900815d089001869d5d1e810efe0900fe0900fe0900fe0900fe0900620900815d0474889d5d1e\
    820efe0900fe0900fe0900fe0900fe0900620900815d088a018a3e5d041e890efe0900fe0900fe0900fe0900\
    fe0900620900815d0896018c995d00371e860efe0900fe0900fe0900fe0900fe0900620900815d047a8e995d\
    00371e860efe0900fe0900fe0900fe0900fe0900620900815d089001903a5d0400371e8d0efe0900fe0900fe\
    0900fe0900fe0900620900815d089c01929d5d1e8a0efe0900fe0900fe0900fe0900fe090062090021730880\
    01949d5e1e8a0efe0900fe0900fe0900fe0900fe0900620900815e089601963e5e041e900efe0900fe0900fe\
    0900fe0900fe090062090041eb08a201989d5e1e8b0efe0900fe0900fe0900fe0900fe090062090021730886\
    019a9d5e1e8b0efe0900fe0900fe0900fe0900fe0900620900815e089c019c3e5e041e910efe0900fe0900fe\
    0900fe0900fe090062090041eb08a8019e9d5e1e8c0efe0900fe0900fe0900fe0900fe09006209002173088c\
    01a0995e00381e8c0efe0900fe0900fe0900fe0900fe0900620900815e08a201a23a5e0400381e920efe0900\
    fe0900fe0900fe0900fe090062090041eb08ae01a4995e00381e8d0efe0900fe0900fe0900fe0900fe090062\
    09002173089201a69d5e1e8d0efe0900fe0900fe0900fe0900fe0900620900815e08a801a83e5e041e920efe\
    0900fe0900fe0900fe0900fe090062090041eb08b401aa9d5e1e8d0efe0900fe0900fe0900fe0900fe090062\
    09002173089801ac9d5e1e8d0efe0900fe0900fe0900fe0900fe0900620900815e08ae01ae3e5e041e920efe\
    0900fe0900fe0900fe0900fe090062090041eb08ba01b09d5e1e8d0efe0900fe0900fe0900fe0900fe090062\
    09002173089e01b29d5e1e8d0efe09009e09000000015a841f206c75652d3839207661fe0900fe0900fe0900\
    9e09003c00ec0500b401b4010a6b65792d30d00509fa0439302d03fe0900fe0900fe0900fe0900fe09006209\
    002000e20500c001b60101357300313173fe0900fe0900fe0900fe0900fe09005e0900217310a401b8010035\
    7300323173fe0900fe0900fe0900fe0900fe09005e0900815e08ba01ba3e5e0400333178fe0900fe0900fe09\
    00fe0900fe09005e090041eb08c601bc9d5e00343173fe0900fe0900fe0900fe0900fe09005e0900217308aa\
    01be9d5e00353173fe0900fe0900fe0900fe0900fe09005e0900815e08c001c03e5e0400363178fe0900fe09\
    00fe0900fe0900fe09005e090041eb08cc01c29d5e00373173fe0900fe0900fe0900fe0900fe09005e090021\
    7308b001c49d5e00383173fe0900fe0900fe0900fe0900fe09005e0900815e08c601c63e5e041e1d0efe0900\
    fe0900fe0900fe0900fe09006209000000";

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0);
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn only_batch(hex: &str) -> RecordBatch {
    let mut batches = RecordBatches::new(Bytes::from(unhex(hex)));
    let batch = batches.next().unwrap().unwrap();
    assert!(batches.next().is_none());
    batch
}

/// What the script wrote for record `i` of the small batches.
fn expected_small(i: usize) -> NewRecord {
    let timestamp = [1_700_000_000_000i64, 1_700_000_000_005, 1_699_999_999_990][i % 3] + i as i64;
    let key: Option<&[u8]> = [Some(&b"key-0"[..]), None, Some(&b""[..])][i % 3];
    let value = (i % 3 != 2).then(|| format!("value-{i} ").repeat(8).into_bytes());
    let mut record = NewRecord::new(timestamp, key, value.as_deref());
    match i % 3 {
        0 => record = record.header(b"h1", Some(b"v1")),
        2 => record = record.header(b"h2", None).header(b"", Some(b"")),
        _ => {}
    }
    record
}

fn check_small(name: &str, hex: &str, codec: Compression) {
    let batch = only_batch(hex);
    assert_eq!(batch.verify_crc(), Ok(()), "{name}");
    assert_eq!(batch.compression(), Ok(codec), "{name}");
    assert_eq!(batch.base_offset(), 0, "{name}");
    assert_eq!(
        batch.partition_leader_epoch(),
        0,
        "{name}: kafka-python writes 0"
    );
    assert_eq!(batch.magic(), 2);
    assert_eq!(batch.last_offset_delta(), 2, "{name}");
    assert_eq!(batch.records_count(), 3, "{name}");
    assert_eq!(batch.base_timestamp(), 1_700_000_000_000, "{name}");
    assert_eq!(batch.max_timestamp(), 1_700_000_000_006, "{name}");
    assert_eq!(
        (
            batch.producer_id(),
            batch.producer_epoch(),
            batch.base_sequence()
        ),
        (1000, 5, 7),
        "{name}"
    );
    assert_eq!(batch.last_sequence(), 9, "{name}");
    assert!(!batch.is_transactional() && !batch.is_control(), "{name}");
    assert_eq!(batch.check_produce_header(), Ok(()), "{name}");

    let data = batch.decompress(1 << 20).unwrap();
    let records = Records::new(&data, batch.records_count()).unwrap();
    let mut n = 0;
    for (i, record) in records.enumerate() {
        let record = record.unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = expected_small(i);
        assert_eq!(record.offset(batch.base_offset()), i as i64, "{name}");
        assert_eq!(
            record.timestamp(batch.base_timestamp()),
            want.timestamp,
            "{name} {i}"
        );
        assert_eq!(record.key(), want.key.as_deref(), "{name} {i}");
        assert_eq!(record.value(), want.value.as_deref(), "{name} {i}");
        let headers: Vec<Header<'_>> = record.headers().map(Result::unwrap).collect();
        let want_headers: Vec<Header<'_>> = want
            .headers
            .iter()
            .map(|(k, v)| Header::new(k, v.as_deref()))
            .collect();
        assert_eq!(headers, want_headers, "{name} {i}");
        n += 1;
    }
    assert_eq!(n, 3, "{name}");
    // Compressed or not, the records inside are the same bytes.
    let plain = only_batch(KAFKA_PYTHON_NONE);
    assert_eq!(&data[..], plain.records_data(), "{name}");
}

#[test]
fn reads_kafka_python_batches_in_every_codec() {
    check_small("none", KAFKA_PYTHON_NONE, Compression::None);
    check_small("gzip", KAFKA_PYTHON_GZIP, Compression::Gzip);
    check_small("snappy", KAFKA_PYTHON_SNAPPY, Compression::Snappy);
    check_small("lz4", KAFKA_PYTHON_LZ4, Compression::Lz4);
    check_small("zstd", KAFKA_PYTHON_ZSTD, Compression::Zstd);
}

#[test]
fn builder_writes_the_same_bytes_as_kafka_python() {
    let mut builder = RecordBatchBuilder::new()
        .partition_leader_epoch(0)
        .producer(1000, 5, 7);
    for i in 0..3 {
        builder.push(expected_small(i));
    }
    assert_eq!(builder.build().unwrap(), unhex(KAFKA_PYTHON_NONE));
    // Compressed, the codec bytes may differ (levels, headers), the batch
    // around them may not, and the records inside must be the same.
    for (codec, hex) in [
        (Compression::Gzip, KAFKA_PYTHON_GZIP),
        (Compression::Snappy, KAFKA_PYTHON_SNAPPY),
        (Compression::Lz4, KAFKA_PYTHON_LZ4),
        (Compression::Zstd, KAFKA_PYTHON_ZSTD),
    ] {
        let ours = builder.clone().compression(codec).build_batch().unwrap();
        let theirs = only_batch(hex);
        assert_eq!(
            ours.as_bytes()[21..61],
            theirs.as_bytes()[21..61],
            "{codec} header"
        );
        assert_eq!(
            ours.decompress(1 << 20).unwrap(),
            theirs.decompress(1 << 20).unwrap(),
            "{codec} records"
        );
    }
}

#[test]
fn reads_multi_block_xerial_snappy() {
    let batch = only_batch(KAFKA_PYTHON_SNAPPY_LARGE);
    assert_eq!(batch.verify_crc(), Ok(()));
    assert_eq!(batch.compression(), Ok(Compression::Snappy));
    assert!(!batch.has_producer_id());
    // The xerial stream holds more than one block.
    let stream = batch.records_data();
    assert_eq!(stream[..8], XERIAL_MAGIC);
    let mut blocks = 0;
    let mut pos = 16;
    while pos < stream.len() {
        let n = u32::from_be_bytes(stream[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 4 + n;
        blocks += 1;
    }
    assert_eq!(pos, stream.len());
    assert!(blocks >= 2, "{blocks} block(s)");

    let data = batch.decompress(1 << 20).unwrap();
    let mut n = 0;
    for (i, record) in Records::new(&data, batch.records_count())
        .unwrap()
        .enumerate()
    {
        let record = record.unwrap();
        let want = expected_small(i);
        assert_eq!(record.key(), want.key.as_deref());
        assert_eq!(
            record.value(),
            Some(format!("value-{i} ").repeat(40).as_bytes())
        );
        assert_eq!(record.timestamp(batch.base_timestamp()), want.timestamp);
        assert_eq!(record.headers().len(), 0);
        n += 1;
    }
    assert_eq!(n, 100);
    // The bound applies to real data too.
    assert!(batch.decompress(data.len() - 1).is_err());
}

#[test]
fn every_prefix_of_a_real_batch_is_refused() {
    for hex in [
        KAFKA_PYTHON_NONE,
        KAFKA_PYTHON_GZIP,
        KAFKA_PYTHON_SNAPPY,
        KAFKA_PYTHON_LZ4,
        KAFKA_PYTHON_ZSTD,
    ] {
        let full = unhex(hex);
        for cut in 1..full.len() {
            let prefix = Bytes::from(full[..cut].to_vec());
            let first = RecordBatches::new(prefix.clone()).next().unwrap();
            assert!(
                first.is_err(),
                "a {cut}-byte prefix of {} passed",
                full.len()
            );
            assert!(RecordBatch::new(prefix).is_err());
            fuzz_batches(&full[..cut]);
        }
        fuzz_batches(&full);
    }
}
