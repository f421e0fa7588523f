//! Property tests for record batches: what the builder writes, the views
//! read back unchanged in every codec, and hostile input (truncation, bit
//! flips, forged lengths) gives errors, never panics.

// Test code: an unwrap that fails is a failing test. (clippy.toml allows
// unwrap in #[test] functions but not in their helpers.)
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use ferry_protocol::compression::Compression;
use ferry_protocol::records::{
    fuzz_batches, set_base_offset, set_partition_leader_epoch, NewRecord, RecordBatch,
    RecordBatchBuilder, RecordBatchMut, RecordBatches, Records, RecordsError, TimestampType,
};
use proptest::prelude::*;

const DECOMPRESSED_BYTES_MAX: usize = 1 << 22;

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Mostly compressible text, sometimes random bytes.
        3 => "[a-z0-9 ]{0,64}".prop_map(|s| s.repeat(1 + s.len() % 4).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..max),
    ]
}

fn arb_timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1_600_000_000_000i64..1_800_000_000_000,
        1 => any::<i64>(),
        1 => Just(-1i64),
    ]
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        arb_timestamp(),
        proptest::option::of(arb_bytes(48)),
        proptest::option::of(arb_bytes(300)),
        proptest::collection::vec((arb_bytes(16), proptest::option::of(arb_bytes(32))), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| NewRecord {
            timestamp,
            key,
            value,
            headers,
        })
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

#[derive(Clone, Debug)]
struct BatchSpec {
    records: Vec<NewRecord>,
    codec: Compression,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer: (i64, i16, i32),
    transactional: bool,
    log_append_time: bool,
    base_timestamp: Option<i64>,
}

fn arb_spec() -> impl Strategy<Value = BatchSpec> {
    (
        proptest::collection::vec(arb_record(), 1..12),
        arb_codec(),
        any::<i64>(),
        any::<i32>(),
        (any::<i64>(), any::<i16>(), any::<i32>()),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(arb_timestamp()),
    )
        .prop_map(
            |(
                records,
                codec,
                base_offset,
                partition_leader_epoch,
                producer,
                transactional,
                log_append_time,
                base_timestamp,
            )| BatchSpec {
                records,
                codec,
                base_offset,
                partition_leader_epoch,
                producer,
                transactional,
                log_append_time,
                base_timestamp,
            },
        )
}

fn build(spec: &BatchSpec) -> Vec<u8> {
    let mut builder = RecordBatchBuilder::new()
        .compression(spec.codec)
        .base_offset(spec.base_offset)
        .partition_leader_epoch(spec.partition_leader_epoch)
        .producer(spec.producer.0, spec.producer.1, spec.producer.2)
        .transactional(spec.transactional)
        .timestamp_type(if spec.log_append_time {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        });
    if let Some(ts) = spec.base_timestamp {
        builder = builder.base_timestamp(ts);
    }
    for record in &spec.records {
        builder.push(record.clone());
    }
    builder.build().unwrap()
}

/// Reads every record of `batch` back into `NewRecord`s, failing on any
/// error or on offset deltas other than 0, 1, 2, ...
fn read_back(batch: &RecordBatch) -> Result<Vec<NewRecord>, String> {
    let text = |e: RecordsError| e.to_string();
    let data = batch.decompress(DECOMPRESSED_BYTES_MAX).map_err(text)?;
    let records = Records::new(&data, batch.records_count()).map_err(text)?;
    let mut out = Vec::new();
    for (i, record) in records.enumerate() {
        let record = record.map_err(text)?;
        if record.offset_delta() as usize != i {
            return Err(format!(
                "record {i} has offsetDelta {}",
                record.offset_delta()
            ));
        }
        let mut headers = Vec::new();
        for header in record.headers() {
            let header = header.map_err(text)?;
            headers.push((header.key().to_vec(), header.value().map(<[u8]>::to_vec)));
        }
        out.push(NewRecord {
            timestamp: record.timestamp(batch.base_timestamp()),
            key: record.key().map(<[u8]>::to_vec),
            value: record.value().map(<[u8]>::to_vec),
            headers,
        });
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn builder_then_view_gives_back_every_field(spec in arb_spec()) {
        let raw = build(&spec);
        let mut batches = RecordBatches::new(Bytes::from(raw.clone()));
        let batch = batches.next().unwrap().unwrap();
        prop_assert!(batches.next().is_none());
        prop_assert_eq!(batch.batch_len(), raw.len());
        prop_assert_eq!(batch.verify_crc(), Ok(()));
        prop_assert_eq!(batch.compression(), Ok(spec.codec));
        prop_assert_eq!(batch.base_offset(), spec.base_offset);
        prop_assert_eq!(batch.partition_leader_epoch(), spec.partition_leader_epoch);
        prop_assert_eq!(batch.producer_id(), spec.producer.0);
        prop_assert_eq!(batch.producer_epoch(), spec.producer.1);
        prop_assert_eq!(batch.base_sequence(), spec.producer.2);
        prop_assert_eq!(batch.is_transactional(), spec.transactional);
        prop_assert!(!batch.is_control());
        prop_assert_eq!(
            batch.timestamp_type() == TimestampType::LogAppendTime,
            spec.log_append_time
        );
        let n = spec.records.len() as i32;
        prop_assert_eq!(batch.records_count(), n);
        prop_assert_eq!(batch.last_offset_delta(), n - 1);
        prop_assert_eq!(
            batch.base_timestamp(),
            spec.base_timestamp.unwrap_or(spec.records[0].timestamp)
        );
        prop_assert_eq!(
            batch.max_timestamp(),
            spec.records.iter().map(|r| r.timestamp).max().unwrap()
        );
        prop_assert_eq!(read_back(&batch).unwrap(), spec.records.clone());
        if spec.codec == Compression::None {
            // The borrowed path reads the same records.
            prop_assert_eq!(batch.records().unwrap().count(), spec.records.len());
        } else {
            prop_assert_eq!(batch.records().unwrap_err(), RecordsError::Compressed(spec.codec));
        }
    }

    #[test]
    fn concatenated_batches_are_cut_exactly(specs in proptest::collection::vec(arb_spec(), 1..4)) {
        let mut all = Vec::new();
        let mut lens = Vec::new();
        for spec in &specs {
            let raw = build(spec);
            lens.push(raw.len());
            all.extend_from_slice(&raw);
        }
        let batches: Vec<RecordBatch> =
            RecordBatches::new(Bytes::from(all)).map(Result::unwrap).collect();
        prop_assert_eq!(batches.iter().map(RecordBatch::batch_len).collect::<Vec<_>>(), lens);
        for (batch, spec) in batches.iter().zip(&specs) {
            prop_assert_eq!(read_back(batch).unwrap(), spec.records.clone());
        }
    }

    #[test]
    fn patching_outside_the_crc_never_breaks_it(
        spec in arb_spec(),
        base_offset in any::<i64>(),
        epoch in any::<i32>(),
    ) {
        let mut raw = build(&spec);
        let covered = raw[21..].to_vec();
        let crc = raw[17..21].to_vec();
        set_base_offset(&mut raw, base_offset).unwrap();
        set_partition_leader_epoch(&mut raw, epoch).unwrap();
        prop_assert_eq!(&raw[21..], &covered[..]);
        prop_assert_eq!(&raw[17..21], &crc[..]);
        let batch = RecordBatch::new(Bytes::from(raw)).unwrap();
        prop_assert_eq!(batch.verify_crc(), Ok(()));
        prop_assert_eq!(batch.base_offset(), base_offset);
        prop_assert_eq!(batch.partition_leader_epoch(), epoch);
        prop_assert_eq!(read_back(&batch).unwrap(), spec.records.clone());
    }

    #[test]
    fn any_flip_in_covered_bytes_fails_the_crc(spec in arb_spec(), at in any::<usize>(), bit in 0u8..8) {
        let mut raw = build(&spec);
        let at = 21 + at % (raw.len() - 21);
        raw[at] ^= 1 << bit;
        let batch = RecordBatch::new(Bytes::from(raw)).unwrap();
        let is_crc_mismatch = matches!(batch.verify_crc(), Err(RecordsError::CrcMismatch { .. }));
        prop_assert!(is_crc_mismatch);
        // Reading on anyway must not panic.
        let _ = read_back(&batch);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_batches(&data);
        let mut it = RecordBatches::new(Bytes::from(data.clone()));
        let mut consumed = 0;
        for batch in it.by_ref() {
            match batch {
                Ok(b) => consumed += b.batch_len(),
                Err(_) => break,
            }
        }
        prop_assert!(consumed <= data.len());
    }

    /// Mutations inside the records data, with the CRC fixed up so the
    /// record parser and the decompressors see them: errors or records,
    /// never a panic, and never more records than declared.
    #[test]
    fn forged_records_are_errors_not_panics(
        spec in arb_spec(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        count in prop_oneof![Just(None), Just(Some(-1i32)), Just(Some(i32::MAX)), (0i32..40).prop_map(Some)],
    ) {
        let mut raw = build(&spec);
        if raw.len() > 61 {
            for (at, byte) in edits {
                let at = 61 + at % (raw.len() - 61);
                raw[at] = byte;
            }
        }
        if let Some(count) = count {
            raw[57..61].copy_from_slice(&count.to_be_bytes());
        }
        let crc = crc32c::crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        fuzz_batches(&raw);
        let batch = RecordBatch::new(Bytes::from(raw)).unwrap();
        prop_assert_eq!(batch.verify_crc(), Ok(()));
        if let Ok(data) = batch.decompress(DECOMPRESSED_BYTES_MAX) {
            if let Ok(records) = Records::new(&data, batch.records_count()) {
                let ok = records.filter(Result::is_ok).count();
                prop_assert!(ok as i64 <= i64::from(batch.records_count()));
            }
        }
    }
}

/// Small batches in every codec, with several records and headers.
fn samples() -> Vec<Vec<u8>> {
    Compression::ALL
        .iter()
        .map(|&codec| {
            RecordBatchBuilder::new()
                .compression(codec)
                .producer(9, 1, 0)
                .record(
                    NewRecord::new(1, Some(b"a"), Some(b"first value")).header(b"h", Some(b"1")),
                )
                .record(NewRecord::new(2, None, None))
                .record(NewRecord::new(3, Some(b"c"), Some(&[7; 100])).header(b"x", None))
                .build()
                .unwrap()
        })
        .collect()
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    for raw in samples() {
        for cut in 1..raw.len() {
            let prefix = Bytes::from(raw[..cut].to_vec());
            let mut it = RecordBatches::new(prefix.clone());
            let err = it.next().unwrap().unwrap_err();
            assert!(
                matches!(err, RecordsError::Truncated { offset: 0, .. }),
                "cut {cut}: {err}"
            );
            assert!(it.next().is_none());
            assert!(RecordBatch::new(prefix).is_err());
        }
        // A whole first batch and a truncated second: the first reads, the
        // second is refused, never dropped silently.
        let mut two = raw.clone();
        two.extend_from_slice(&raw[..raw.len() - 1]);
        let mut it = RecordBatches::new(Bytes::from(two));
        assert!(it.next().unwrap().is_ok());
        assert!(matches!(
            it.next().unwrap(),
            Err(RecordsError::Truncated { offset, .. }) if offset == raw.len()
        ));
    }
}

#[test]
fn truncated_records_data_is_an_error() {
    // Cut the records data (with a fixed-up CRC) at every byte: the batch
    // frames fine, and the records then fail.
    let raw = &samples()[0];
    let records_len = raw.len() - 61;
    for cut in 0..records_len {
        let mut forged = raw[..61 + cut].to_vec();
        let length = (forged.len() - 12) as i32;
        forged[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&forged[21..]);
        forged[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = RecordBatch::new(Bytes::from(forged)).unwrap();
        assert_eq!(batch.verify_crc(), Ok(()));
        let result = batch.records().unwrap().check_all();
        assert!(result.is_err(), "cut {cut} read as {result:?}");
    }
}

#[test]
fn every_bit_flip_is_caught_or_harmless() {
    for raw in samples() {
        let original = RecordBatch::new(Bytes::from(raw.clone())).unwrap();
        for at in 0..raw.len() {
            for bit in 0..8 {
                let mut flipped = raw.clone();
                flipped[at] ^= 1 << bit;
                let results: Vec<_> = RecordBatches::new(Bytes::from(flipped)).collect();
                let first = &results[0];
                match at {
                    // baseOffset and partitionLeaderEpoch: outside the CRC,
                    // by design; the batch reads with the new value.
                    0..=7 | 12..=15 => {
                        let batch = first.as_ref().unwrap();
                        assert_eq!(batch.verify_crc(), Ok(()));
                        assert_ne!(
                            (batch.base_offset(), batch.partition_leader_epoch()),
                            (original.base_offset(), original.partition_leader_epoch())
                        );
                        assert_eq!(results.len(), 1);
                    }
                    // batchLength: an error, or a batch cut elsewhere whose
                    // CRC fails.
                    8..=11 => {
                        let caught = results.iter().any(|r| match r {
                            Err(_) => true,
                            Ok(b) => b.verify_crc().is_err(),
                        });
                        assert!(caught, "batchLength flip at byte {at} bit {bit} passed");
                    }
                    16 => assert!(
                        matches!(first, Err(RecordsError::UnsupportedMagic(m)) if *m == 2 ^ (1 << bit)),
                        "magic flip: {first:?}"
                    ),
                    _ => {
                        let batch = first.as_ref().unwrap();
                        assert!(
                            matches!(batch.verify_crc(), Err(RecordsError::CrcMismatch { .. })),
                            "flip at byte {at} bit {bit} passed the CRC"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn hostile_counts_in_a_valid_batch() {
    for count in [-1, i32::MIN, 0, 2, 4, i32::MAX] {
        let mut raw = samples()[0].clone();
        raw[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = RecordBatch::new(Bytes::from(raw)).unwrap();
        let err = match batch.records() {
            Err(e) => e,
            Ok(records) => records.check_all().unwrap_err(),
        };
        match count {
            c if c < 0 => assert_eq!(err, RecordsError::NegativeRecordCount(c)),
            0 | 2 => assert!(
                matches!(err, RecordsError::TrailingRecordBytes { .. }),
                "{err}"
            ),
            _ => assert!(
                matches!(err, RecordsError::MissingRecords { found: 3, .. }),
                "{err}"
            ),
        }
    }
}

#[test]
fn patched_batches_stay_valid_through_the_mut_view() {
    for raw in samples() {
        let mut raw = raw;
        let mut view = RecordBatchMut::new(&mut raw).unwrap();
        view.set_base_offset(123_456);
        view.set_partition_leader_epoch(3);
        view.set_max_timestamp(TimestampType::LogAppendTime, 99);
        let batch = RecordBatch::new(Bytes::from(raw)).unwrap();
        assert_eq!(batch.verify_crc(), Ok(()));
        assert_eq!(batch.base_offset(), 123_456);
        assert_eq!(batch.last_offset(), 123_458);
        assert_eq!(batch.max_timestamp(), 99);
        assert_eq!(read_back(&batch).unwrap().len(), 3);
    }
}
