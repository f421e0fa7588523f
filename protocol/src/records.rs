//! Magic v2 record batches (KIP-98), read as zero-copy views over the
//! request buffer, patched in place, and built for tests and for the
//! batches a broker writes itself (transaction markers).
//!
//! # Batch layout (magic v2, all integers big-endian)
//!
//! ```text
//! byte  size  field                  covered by the CRC
//!    0     8  baseOffset             no   (patched by the leader)
//!    8     4  batchLength            no   (bytes after this field)
//!   12     4  partitionLeaderEpoch   no   (patched by the leader)
//!   16     1  magic = 2              no   (byte 16 in every format)
//!   17     4  crc (CRC-32C, u32)     no
//!   21     2  attributes             yes
//!   23     4  lastOffsetDelta        yes
//!   27     8  baseTimestamp          yes
//!   35     8  maxTimestamp           yes
//!   43     8  producerId             yes
//!   51     2  producerEpoch          yes
//!   53     4  baseSequence           yes
//!   57     4  recordsCount           yes
//!   61     …  records (compressed as a whole when attributes say so)
//! ```
//!
//! Attributes: bits 0-2 codec ([`Compression`]), bit 3 timestamp type
//! (0 create time, 1 log append time), bit 4 transactional, bit 5 control,
//! bit 6 delete horizon set (KIP-534: `baseTimestamp` is then the time after
//! which tombstones may go).
//!
//! The CRC covers attributes to the end, so the two fields a leader patches,
//! `baseOffset` and `partitionLeaderEpoch`, can be written in place without
//! touching it (see [`RecordBatchMut`]).
//!
//! # Record layout
//!
//! Each record is a zigzag varint `length` followed by `length` bytes:
//!
//! ```text
//! attributes      i8 (unused, 0)
//! timestampDelta  varlong   (added to baseTimestamp)
//! offsetDelta     varint    (added to baseOffset)
//! keyLength       varint, -1 for a null key; then the key bytes
//! valueLength     varint, -1 for a null value; then the value bytes
//! headerCount     varint
//! headers         headerKeyLength varint (>= 0), key bytes,
//!                 headerValueLength varint (-1 for null), value bytes
//! ```
//!
//! Varints are zigzag LEB128: at most 5 bytes for a varint and 10 for a
//! varlong, as in Kafka's `ByteUtils`.
//!
//! # Reading
//!
//! [`RecordBatches`] cuts a produce request's `records` field into
//! [`RecordBatch`] views (`Bytes::slice`, no copy). [`RecordBatch::records`]
//! walks an uncompressed batch as [`Record`] views that borrow the buffer;
//! a compressed batch is first inflated with [`RecordBatch::decompress`],
//! whose bound stops decompression bombs, and then walked with
//! [`Records::new`]. Neither allocates per record. A key or value can be
//! turned into a `Bytes` without copying with `batch.as_bytes().slice_ref(key)`.
//!
//! # Legacy message sets
//!
//! Magic 0 and 1 message sets (Kafka before 0.11) are refused with
//! [`RecordsError::UnsupportedMagic`]; see that variant for the error code a
//! produce gets and why.

use std::hint::black_box;

use bytes::Bytes;
use thiserror::Error;

use crate::compression::{Compression, CompressionError};
use crate::error_code::ErrorCode;

/// The only message format Ferry reads and writes.
pub const MAGIC_V2: u8 = 2;
/// `baseOffset` and `batchLength`: the bytes before the length-counted part.
pub const LOG_OVERHEAD: usize = 12;
/// Length of a v2 batch header; the records start here.
pub const BATCH_HEADER_LEN: usize = 61;
/// The smallest valid `batchLength` (a header with no records).
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;
/// `producerId` of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch from a producer that is not idempotent.
pub const NO_SEQUENCE: i32 = -1;
/// `partitionLeaderEpoch` as clients send it, before a leader sets it.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// A timestamp that is not set.
pub const NO_TIMESTAMP: i64 = -1;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const ATTR_TIMESTAMP_TYPE: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;
const ATTR_DELETE_HORIZON: i16 = 1 << 6;

const VARINT_BYTES_MAX: usize = 5;
const VARLONG_BYTES_MAX: usize = 10;

/// What is wrong with a record batch or a record, and where.
///
/// Byte offsets in batch-level errors count from the start of the buffer
/// handed to [`RecordBatches`] (a produce request's `records` field); in
/// record-level errors they count from the start of the records data (byte
/// 61 of an uncompressed batch, or byte 0 of the decompressed records).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordsError {
    /// The buffer ends inside a batch.
    #[error("record batch at byte {offset} is truncated: it needs {needed} bytes, {available} are present")]
    Truncated {
        /// Where the batch starts.
        offset: usize,
        /// Bytes the batch needs (the header, or 12 + `batchLength`).
        needed: usize,
        /// Bytes left in the buffer from `offset`.
        available: usize,
    },
    /// `batchLength` is below the size of a batch header (negative included).
    #[error("record batch at byte {offset} has batchLength {length}, below the minimum of 49")]
    InvalidBatchLength {
        /// Where the batch starts.
        offset: usize,
        /// The `batchLength` field.
        length: i32,
    },
    /// A buffer given to [`RecordBatch::new`] or [`RecordBatchMut::new`] is
    /// longer than the one batch it holds.
    #[error("buffer holds a {batch_len}-byte record batch and {extra} bytes more")]
    TrailingBytes {
        /// 12 + `batchLength`.
        batch_len: usize,
        /// Bytes after the batch.
        extra: usize,
    },
    /// The magic byte (byte 16) is not 2.
    ///
    /// Ferry stores and serves only magic v2 record batches. Magic 0 and 1
    /// message sets come only from clients older than Kafka 0.11, or from
    /// Produce v0-v2, which Ferry does not offer (Kafka 4.0 dropped them
    /// too, KIP-896): every current client (Java, librdkafka 1.0 and later,
    /// kafka-python 1.4 and later against 0.11+ brokers) writes magic 2
    /// once Produce v3 or later is negotiated.
    ///
    /// For a produce, [`RecordsError::produce_error_code`] answers
    /// `INVALID_RECORD` (87) for magic 0 and 1, as Kafka does: its
    /// `ProduceRequest.validateRecords` refuses a v3+ produce whose batch is
    /// not magic 2 with `InvalidRecordException`, which Kafka maps to
    /// `INVALID_RECORD`. `CORRUPT_MESSAGE` (2) would be wrong for data that
    /// is intact, and clients treat it as retriable, so they would resend the
    /// same bytes until their delivery timeout; `INVALID_RECORD` fails the
    /// send at once. `UNSUPPORTED_FOR_MESSAGE_FORMAT` (43) means the reverse
    /// case (a request needs a newer format than the topic is configured
    /// for) and is not what Kafka sends here. Any other magic byte is not a
    /// Kafka format at all and gets `CORRUPT_MESSAGE`, as Kafka's
    /// "invalid magic" check does.
    #[error("record batch has message format magic {0}; Ferry accepts only magic 2 (Kafka 0.11 and later)")]
    UnsupportedMagic(u8),
    /// The CRC-32C in the header does not match the batch.
    #[error("record batch CRC mismatch: header says {stored:#010x}, bytes 21..{batch_len} compute {computed:#010x}")]
    CrcMismatch {
        /// The `crc` field.
        stored: u32,
        /// CRC-32C of the batch from the attributes on.
        computed: u32,
        /// 12 + `batchLength`.
        batch_len: usize,
    },
    /// Decompression, or the codec id in the attributes, failed.
    #[error(transparent)]
    Compression(#[from] CompressionError),
    /// [`RecordBatch::records`] was called on a compressed batch.
    #[error("the batch is {0}-compressed: decompress it and read it with Records::new")]
    Compressed(Compression),
    /// `recordsCount` is negative.
    #[error("record batch declares a negative record count {0}")]
    NegativeRecordCount(i32),
    /// A record is malformed.
    #[error("record {index} is invalid at byte {offset} of the records data: {fault}")]
    InvalidRecord {
        /// The record's position in the batch, from 0.
        index: u32,
        /// Where the fault was found.
        offset: usize,
        /// What is wrong.
        fault: RecordFault,
    },
    /// The records data ends before `recordsCount` records were read.
    #[error(
        "record batch declares {declared} records but its data ends at byte {offset} after {found}"
    )]
    MissingRecords {
        /// `recordsCount`.
        declared: i32,
        /// Records read.
        found: u32,
        /// Where the data ended.
        offset: usize,
    },
    /// Bytes follow the last of `recordsCount` records.
    #[error("{extra} bytes follow the last of {declared} records, from byte {offset} of the records data")]
    TrailingRecordBytes {
        /// `recordsCount`.
        declared: i32,
        /// Where the last record ended.
        offset: usize,
        /// Bytes after it.
        extra: usize,
    },
    /// The batch breaks a rule Kafka applies to batches from producers.
    #[error("record batch refused for produce: {0}")]
    InvalidForProduce(String),
    /// A control record's key or value is malformed.
    #[error("invalid control record: {0}")]
    InvalidControlRecord(String),
    /// [`RecordBatchBuilder::build`] was asked for a batch it cannot write.
    #[error("cannot build the record batch: {0}")]
    Build(String),
}

/// What is wrong inside one record.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordFault {
    /// A field runs past the end of the record or of the data.
    #[error("{field} needs {needed} bytes, {available} are left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes it needs (1 for a varint that stops early).
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A varint has more bytes than its type allows.
    #[error("{field} varint is longer than {max_bytes} bytes")]
    VarintTooLong {
        /// The field being read.
        field: &'static str,
        /// 5 for a varint, 10 for a varlong.
        max_bytes: usize,
    },
    /// A varint's value does not fit its type.
    #[error("{field} varint does not fit in {bits} bits")]
    VarintOverflow {
        /// The field being read.
        field: &'static str,
        /// 32 or 64.
        bits: u32,
    },
    /// A length is negative where it may not be (or below -1 for nullable
    /// fields).
    #[error("invalid {field} length {length}")]
    InvalidLength {
        /// The field whose length it is.
        field: &'static str,
        /// The length read.
        length: i32,
    },
    /// The header count is negative.
    #[error("negative header count {0}")]
    NegativeHeaderCount(i32),
    /// The record's fields do not fill exactly its declared length.
    #[error("record length is {declared} bytes but its fields take {actual}")]
    LengthMismatch {
        /// The record's `length` varint.
        declared: usize,
        /// Bytes its fields took.
        actual: usize,
    },
}

impl RecordsError {
    /// The error code a Produce response should carry for this error.
    ///
    /// It follows what Kafka answers for the same fault, where Kafka has
    /// one: a failed CRC, an impossible `batchLength` and undecodable
    /// compressed data are `CORRUPT_MESSAGE` (retriable, as corruption in
    /// transit may not repeat); a batch that breaks the format's rules (old
    /// magic, bad records, wrong counts) is `INVALID_RECORD` (not
    /// retriable), and so is a batch cut short, which Kafka reports as a
    /// produce with no complete batch. Codec ids 5-7 are
    /// `UNSUPPORTED_COMPRESSION_TYPE`. A batch that inflates past Ferry's
    /// bound is `MESSAGE_TOO_LARGE`, which makes the Java producer split the
    /// batch and retry. Errors that come from the caller's use of this
    /// module rather than from the input are `UNKNOWN_SERVER_ERROR`.
    pub fn produce_error_code(&self) -> ErrorCode {
        match self {
            RecordsError::UnsupportedMagic(0 | 1) => ErrorCode::INVALID_RECORD,
            RecordsError::UnsupportedMagic(_) => ErrorCode::CORRUPT_MESSAGE,
            RecordsError::InvalidBatchLength { .. } | RecordsError::CrcMismatch { .. } => {
                ErrorCode::CORRUPT_MESSAGE
            }
            RecordsError::Truncated { .. }
            | RecordsError::TrailingBytes { .. }
            | RecordsError::NegativeRecordCount(_)
            | RecordsError::InvalidRecord { .. }
            | RecordsError::MissingRecords { .. }
            | RecordsError::TrailingRecordBytes { .. }
            | RecordsError::InvalidForProduce(_)
            | RecordsError::InvalidControlRecord(_) => ErrorCode::INVALID_RECORD,
            RecordsError::Compression(e) => match e {
                CompressionError::UnknownCodec(_) => ErrorCode::UNSUPPORTED_COMPRESSION_TYPE,
                CompressionError::TooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
                CompressionError::Corrupt { .. } => ErrorCode::CORRUPT_MESSAGE,
                _ => ErrorCode::UNKNOWN_SERVER_ERROR,
            },
            RecordsError::Compressed(_) | RecordsError::Build(_) => ErrorCode::UNKNOWN_SERVER_ERROR,
        }
    }
}

/// How a batch's timestamps were set (attributes bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker on append (`maxTimestamp` holds the append time).
    LogAppendTime,
}

fn read<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn write(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn crc_of(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(ATTRIBUTES_AT..).unwrap_or_default())
}

/// Checks that a v2 header starts at `pos` of `buf` (magic first, so legacy
/// message sets are named as such).
fn check_header_at(buf: &[u8], pos: usize) -> Result<(), RecordsError> {
    let rest = buf.get(pos..).unwrap_or_default();
    let truncated = || RecordsError::Truncated {
        offset: pos,
        needed: BATCH_HEADER_LEN,
        available: rest.len(),
    };
    let magic = *rest.get(MAGIC_AT).ok_or_else(truncated)?;
    if magic != MAGIC_V2 {
        return Err(RecordsError::UnsupportedMagic(magic));
    }
    if rest.len() < BATCH_HEADER_LEN {
        return Err(truncated());
    }
    Ok(())
}

/// Checks the batch starting at `pos` of `buf` and returns its length
/// (12 + `batchLength`).
fn check_batch_at(buf: &[u8], pos: usize) -> Result<usize, RecordsError> {
    let rest = buf.get(pos..).unwrap_or_default();
    match rest.get(MAGIC_AT) {
        Some(&magic) if magic != MAGIC_V2 => return Err(RecordsError::UnsupportedMagic(magic)),
        _ => {}
    }
    if rest.len() >= LOG_OVERHEAD {
        let length = i32::from_be_bytes(read(rest, BATCH_LENGTH_AT));
        if length < BATCH_LENGTH_MIN {
            return Err(RecordsError::InvalidBatchLength {
                offset: pos,
                length,
            });
        }
        // `length` is positive, so the sum fits any usize of 32 bits or more.
        let needed = LOG_OVERHEAD + length as usize;
        if needed > rest.len() {
            return Err(RecordsError::Truncated {
                offset: pos,
                needed,
                available: rest.len(),
            });
        }
        return Ok(needed);
    }
    Err(RecordsError::Truncated {
        offset: pos,
        needed: BATCH_HEADER_LEN,
        available: rest.len(),
    })
}

/// A view of one magic v2 record batch, held in a `Bytes` that is exactly
/// the batch (12 + `batchLength` bytes). Cloning it clones the `Bytes`
/// handle, not the data.
///
/// Construction checks only the framing (magic, `batchLength`); the CRC is
/// checked by [`RecordBatch::verify_crc`] and the records when they are read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordBatch {
    buf: Bytes,
}

impl RecordBatch {
    /// Wraps a buffer that holds exactly one v2 batch.
    pub fn new(buf: Bytes) -> Result<Self, RecordsError> {
        let batch_len = check_batch_at(&buf, 0)?;
        if batch_len != buf.len() {
            return Err(RecordsError::TrailingBytes {
                batch_len,
                extra: buf.len() - batch_len,
            });
        }
        Ok(RecordBatch { buf })
    }

    /// The whole batch.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The whole batch, giving up the view.
    pub fn into_bytes(self) -> Bytes {
        self.buf
    }

    /// Total size of the batch in bytes: 12 + `batchLength`.
    pub fn batch_len(&self) -> usize {
        self.buf.len()
    }

    /// The `baseOffset` field.
    pub fn base_offset(&self) -> i64 {
        i64::from_be_bytes(read(&self.buf, BASE_OFFSET_AT))
    }

    /// The `batchLength` field: the bytes after it.
    pub fn batch_length(&self) -> i32 {
        i32::from_be_bytes(read(&self.buf, BATCH_LENGTH_AT))
    }

    /// The `partitionLeaderEpoch` field.
    pub fn partition_leader_epoch(&self) -> i32 {
        i32::from_be_bytes(read(&self.buf, PARTITION_LEADER_EPOCH_AT))
    }

    /// The magic byte (always 2 for a constructed view).
    pub fn magic(&self) -> u8 {
        u8::from_be_bytes(read(&self.buf, MAGIC_AT))
    }

    /// The `crc` field as stored.
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(read(&self.buf, CRC_AT))
    }

    /// The CRC-32C of the batch from the attributes to the end.
    pub fn computed_crc(&self) -> u32 {
        crc_of(&self.buf)
    }

    /// Checks the stored CRC against the batch.
    pub fn verify_crc(&self) -> Result<(), RecordsError> {
        let (stored, computed) = (self.crc(), self.computed_crc());
        if stored == computed {
            Ok(())
        } else {
            Err(RecordsError::CrcMismatch {
                stored,
                computed,
                batch_len: self.batch_len(),
            })
        }
    }

    /// The `attributes` field.
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(read(&self.buf, ATTRIBUTES_AT))
    }

    /// The codec of the records (attributes bits 0-2); ids 5-7 are errors.
    pub fn compression(&self) -> Result<Compression, RecordsError> {
        Ok(Compression::from_attributes(self.attributes())?)
    }

    /// Attributes bit 3.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Attributes bit 4: the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }

    /// Attributes bit 5: the batch holds control records (transaction
    /// markers), not user data.
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }

    /// Attributes bit 6 (KIP-534): `baseTimestamp` is the delete horizon.
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & ATTR_DELETE_HORIZON != 0
    }

    /// The delete horizon, when attributes bit 6 is set.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        self.has_delete_horizon().then(|| self.base_timestamp())
    }

    /// The `lastOffsetDelta` field.
    pub fn last_offset_delta(&self) -> i32 {
        i32::from_be_bytes(read(&self.buf, LAST_OFFSET_DELTA_AT))
    }

    /// The offset of the batch's last record: `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }

    /// The `baseTimestamp` field.
    pub fn base_timestamp(&self) -> i64 {
        i64::from_be_bytes(read(&self.buf, BASE_TIMESTAMP_AT))
    }

    /// The `maxTimestamp` field.
    pub fn max_timestamp(&self) -> i64 {
        i64::from_be_bytes(read(&self.buf, MAX_TIMESTAMP_AT))
    }

    /// The `producerId` field ([`NO_PRODUCER_ID`] when not idempotent).
    pub fn producer_id(&self) -> i64 {
        i64::from_be_bytes(read(&self.buf, PRODUCER_ID_AT))
    }

    /// Whether the batch carries a producer id (an idempotent producer).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id() >= 0
    }

    /// The `producerEpoch` field.
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes(read(&self.buf, PRODUCER_EPOCH_AT))
    }

    /// The `baseSequence` field.
    pub fn base_sequence(&self) -> i32 {
        i32::from_be_bytes(read(&self.buf, BASE_SEQUENCE_AT))
    }

    /// The sequence of the last record, wrapping past `i32::MAX` to 0 as
    /// Kafka's producers do; [`NO_SEQUENCE`] when the batch has none.
    pub fn last_sequence(&self) -> i32 {
        let base = self.base_sequence();
        if base == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        increment_sequence(base, self.last_offset_delta())
    }

    /// The `recordsCount` field.
    pub fn records_count(&self) -> i32 {
        i32::from_be_bytes(read(&self.buf, RECORDS_COUNT_AT))
    }

    /// The records data (compressed when the batch is), after the header.
    pub fn records_data(&self) -> &[u8] {
        self.buf.get(BATCH_HEADER_LEN..).unwrap_or_default()
    }

    /// The records data as a `Bytes` slice of the batch (no copy).
    pub fn records_bytes(&self) -> Bytes {
        self.buf.slice(BATCH_HEADER_LEN.min(self.buf.len())..)
    }

    /// Iterates the records of an uncompressed batch, borrowing the buffer.
    /// A compressed batch gives [`RecordsError::Compressed`].
    pub fn records(&self) -> Result<Records<'_>, RecordsError> {
        match self.compression()? {
            Compression::None => Records::new(self.records_data(), self.records_count()),
            codec => Err(RecordsError::Compressed(codec)),
        }
    }

    /// The records data uncompressed, for [`Records::new`] with
    /// [`RecordBatch::records_count`]. An uncompressed batch gives a slice of
    /// its own buffer; a compressed one is inflated into a new buffer of at
    /// most `max_len` bytes, and fails past that.
    pub fn decompress(&self, max_len: usize) -> Result<Bytes, RecordsError> {
        match self.compression()? {
            Compression::None => {
                if self.records_data().len() > max_len {
                    return Err(CompressionError::TooLarge {
                        codec: Compression::None,
                        max_len,
                    }
                    .into());
                }
                Ok(self.records_bytes())
            }
            codec => Ok(Bytes::from(codec.decompress(self.records_data(), max_len)?)),
        }
    }

    /// Checks the header rules Kafka applies to a batch a producer sends
    /// (`LogValidator.validateBatch` and the append path): a base offset of
    /// 0, at least one record, `lastOffsetDelta + 1 == recordsCount`, no
    /// control batch, and a sequence and producer id where the producer is
    /// idempotent or transactional. It reads only the header; check the CRC
    /// with [`RecordBatch::verify_crc`].
    pub fn check_produce_header(&self) -> Result<(), RecordsError> {
        let reject = |reason: String| Err(RecordsError::InvalidForProduce(reason));
        let count = self.records_count();
        if self.base_offset() != 0 {
            return reject(format!(
                "baseOffset is {}, producers send 0",
                self.base_offset()
            ));
        }
        if count <= 0 {
            return reject(format!("recordsCount is {count}"));
        }
        if i64::from(self.last_offset_delta()) + 1 != i64::from(count) {
            return reject(format!(
                "lastOffsetDelta {} does not match recordsCount {count}",
                self.last_offset_delta()
            ));
        }
        if self.is_control() {
            return reject("producers may not write control batches".into());
        }
        if self.has_producer_id() && self.base_sequence() < 0 {
            return reject(format!(
                "baseSequence {} with producerId {}",
                self.base_sequence(),
                self.producer_id()
            ));
        }
        if self.is_transactional() && !self.has_producer_id() {
            return reject("transactional batch without a producerId".into());
        }
        Ok(())
    }
}

/// `sequence + increment`, wrapping from `i32::MAX` to 0 as Kafka does.
fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if increment > 0 && sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence.wrapping_add(increment)
    }
}

/// Cuts a buffer of concatenated batches (a produce request's `records`
/// field) into [`RecordBatch`] views without copying.
///
/// Each length is checked against the buffer. A batch that does not fit
/// (a truncated last batch, a hostile `batchLength`), a legacy message set or
/// a length below a header's yields one error, after which the iterator
/// ends: Kafka refuses a produce with a partial batch rather than dropping
/// the tail.
#[derive(Clone, Debug)]
pub struct RecordBatches {
    buf: Bytes,
    pos: usize,
    failed: bool,
}

impl RecordBatches {
    /// Iterates the batches of `buf`.
    pub fn new(buf: Bytes) -> Self {
        RecordBatches {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Where the next batch starts in the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for RecordBatches {
    type Item = Result<RecordBatch, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match check_batch_at(&self.buf, self.pos) {
            Ok(len) => {
                let batch = RecordBatch {
                    buf: self.buf.slice(self.pos..self.pos + len),
                };
                self.pos += len;
                Some(Ok(batch))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for RecordBatches {}

/// A reader over one record's bytes that names its faults.
struct Cursor<'a> {
    /// The records data, cut at the end of the current record when known.
    data: &'a [u8],
    pos: usize,
    index: u32,
}

impl<'a> Cursor<'a> {
    fn fault(&self, offset: usize, fault: RecordFault) -> RecordsError {
        RecordsError::InvalidRecord {
            index: self.index,
            offset,
            fault,
        }
    }

    fn left(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], RecordsError> {
        let data = self.data;
        match self
            .pos
            .checked_add(n)
            .and_then(|end| data.get(self.pos..end))
        {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(self.fault(
                self.pos,
                RecordFault::Truncated {
                    field,
                    needed: n,
                    available: self.left(),
                },
            )),
        }
    }

    fn uvarint(&mut self, max_bytes: usize, field: &'static str) -> Result<u64, RecordsError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..max_bytes {
            let Some(&byte) = self.data.get(self.pos) else {
                return Err(self.fault(
                    self.pos,
                    RecordFault::Truncated {
                        field,
                        needed: 1,
                        available: 0,
                    },
                ));
            };
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            if i == VARLONG_BYTES_MAX - 1 && bits > 1 {
                return Err(self.fault(start, RecordFault::VarintOverflow { field, bits: 64 }));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.fault(start, RecordFault::VarintTooLong { field, max_bytes }))
    }

    fn varint(&mut self, field: &'static str) -> Result<i32, RecordsError> {
        let start = self.pos;
        let raw = self.uvarint(VARINT_BYTES_MAX, field)?;
        let raw = u32::try_from(raw)
            .map_err(|_| self.fault(start, RecordFault::VarintOverflow { field, bits: 32 }))?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self, field: &'static str) -> Result<i64, RecordsError> {
        let raw = self.uvarint(VARLONG_BYTES_MAX, field)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// A length-prefixed byte string; -1 means null when `nullable`.
    fn bytes(
        &mut self,
        field: &'static str,
        nullable: bool,
    ) -> Result<Option<&'a [u8]>, RecordsError> {
        let start = self.pos;
        let length = self.varint(field)?;
        if length == -1 && nullable {
            return Ok(None);
        }
        let n = usize::try_from(length)
            .map_err(|_| self.fault(start, RecordFault::InvalidLength { field, length }))?;
        self.take(n, field).map(Some)
    }
}

/// Reads one record starting at `start` of `data`; returns it and where the
/// next record starts.
fn parse_record(
    data: &[u8],
    start: usize,
    index: u32,
) -> Result<(Record<'_>, usize), RecordsError> {
    let mut cur = Cursor {
        data,
        pos: start,
        index,
    };
    let length = cur.varint("record length")?;
    let body_len = usize::try_from(length).map_err(|_| {
        cur.fault(
            start,
            RecordFault::InvalidLength {
                field: "record",
                length,
            },
        )
    })?;
    let body_start = cur.pos;
    let body = cur.take(body_len, "record body")?;
    let end = body_start + body.len();
    // Read the fields within the record's own bytes.
    let mut cur = Cursor {
        data: data.get(..end).unwrap_or_default(),
        pos: body_start,
        index,
    };
    let attributes = i8::from_be_bytes(read(cur.take(1, "attributes")?, 0));
    let timestamp_delta = cur.varlong("timestampDelta")?;
    let offset_delta = cur.varint("offsetDelta")?;
    let key = cur.bytes("key", true)?;
    let value = cur.bytes("value", true)?;
    let count_at = cur.pos;
    let header_count = cur.varint("header count")?;
    let header_count = u32::try_from(header_count)
        .map_err(|_| cur.fault(count_at, RecordFault::NegativeHeaderCount(header_count)))?;
    let headers_start = cur.pos;
    for _ in 0..header_count {
        cur.bytes("header key", false)?;
        cur.bytes("header value", true)?;
    }
    if cur.pos != end {
        return Err(cur.fault(
            start,
            RecordFault::LengthMismatch {
                declared: body_len,
                actual: cur.pos - body_start,
            },
        ));
    }
    let record = Record {
        raw: data.get(start..end).unwrap_or_default(),
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: Headers {
            data: data.get(headers_start..end).unwrap_or_default(),
            remaining: header_count,
        },
    };
    Ok((record, end))
}

/// The records of one batch, read from uncompressed records data.
///
/// Yields exactly `recordsCount` records, then an error if bytes are left
/// over; a record that cannot be read, or data that ends early, yields one
/// error and ends the iteration. Nothing is allocated.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    declared: i32,
    index: u32,
    done: bool,
}

impl<'a> Records<'a> {
    /// Reads `count` records from `data` (the bytes after a batch header, or
    /// their decompressed form). A negative count is an error.
    pub fn new(data: &'a [u8], count: i32) -> Result<Self, RecordsError> {
        if count < 0 {
            return Err(RecordsError::NegativeRecordCount(count));
        }
        Ok(Records {
            data,
            pos: 0,
            declared: count,
            index: 0,
            done: false,
        })
    }

    /// Reads every record and returns how many there were, or the first
    /// fault.
    pub fn check_all(self) -> Result<u32, RecordsError> {
        let mut n = 0;
        for record in self {
            record?;
            n += 1;
        }
        Ok(n)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // `declared` is not negative (checked in `new`).
        if i64::from(self.index) >= i64::from(self.declared) {
            self.done = true;
            let extra = self.data.len().saturating_sub(self.pos);
            return (extra > 0).then_some(Err(RecordsError::TrailingRecordBytes {
                declared: self.declared,
                offset: self.pos,
                extra,
            }));
        }
        if self.pos >= self.data.len() {
            self.done = true;
            return Some(Err(RecordsError::MissingRecords {
                declared: self.declared,
                found: self.index,
                offset: self.pos,
            }));
        }
        match parse_record(self.data, self.pos, self.index) {
            Ok((record, next)) => {
                self.pos = next;
                self.index += 1;
                Some(Ok(record))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            return (0, Some(0));
        }
        let left = i64::from(self.declared) - i64::from(self.index);
        // Each record is at least 7 bytes, so the data bounds the count too.
        let by_data = self.data.len().saturating_sub(self.pos) / 7;
        (0, Some(usize::try_from(left).unwrap_or(0).min(by_data) + 1))
    }
}

impl std::iter::FusedIterator for Records<'_> {}

/// One record, borrowing the batch (or decompressed) buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    raw: &'a [u8],
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Headers<'a>,
}

impl<'a> Record<'a> {
    /// The record's attributes byte (unused by Kafka so far).
    pub fn attributes(&self) -> i8 {
        self.attributes
    }

    /// The `timestampDelta` field.
    pub fn timestamp_delta(&self) -> i64 {
        self.timestamp_delta
    }

    /// The `offsetDelta` field.
    pub fn offset_delta(&self) -> i32 {
        self.offset_delta
    }

    /// The record's timestamp, given its batch's `baseTimestamp`.
    pub fn timestamp(&self, base_timestamp: i64) -> i64 {
        base_timestamp.wrapping_add(self.timestamp_delta)
    }

    /// The record's offset, given its batch's `baseOffset`.
    pub fn offset(&self, base_offset: i64) -> i64 {
        base_offset.wrapping_add(i64::from(self.offset_delta))
    }

    /// The key; `None` for a null key.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value; `None` for a null value (a tombstone).
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// The headers, in order.
    pub fn headers(&self) -> Headers<'a> {
        self.headers.clone()
    }

    /// The record as encoded, its length varint included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// One record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    key: &'a [u8],
    value: Option<&'a [u8]>,
}

impl<'a> Header<'a> {
    /// A header with these parts (for comparisons in tests).
    pub fn new(key: &'a [u8], value: Option<&'a [u8]>) -> Self {
        Header { key, value }
    }

    /// The key: a string in Kafka's clients, not checked for UTF-8 here.
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    /// The key as UTF-8 text.
    pub fn key_str(&self) -> Result<&'a str, std::str::Utf8Error> {
        std::str::from_utf8(self.key)
    }

    /// The value; `None` for null.
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }
}

/// The headers of a [`Record`].
///
/// Every header was already read once when [`Records`] yielded the record
/// (a record is only valid if its headers fill it exactly), so for such a
/// record no item is ever an error; the `Result` keeps the iterator honest
/// about reading bytes, and matches [`Records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers<'a> {
    data: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<Header<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let mut cur = Cursor {
            data: self.data,
            pos: 0,
            index: 0,
        };
        let parsed = cur.bytes("header key", false).and_then(|key| {
            let value = cur.bytes("header value", true)?;
            Ok(Header {
                key: key.unwrap_or_default(),
                value,
            })
        });
        match parsed {
            Ok(header) => {
                self.data = self.data.get(cur.pos..).unwrap_or_default();
                self.remaining -= 1;
                Some(Ok(header))
            }
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Headers<'_> {}
impl std::iter::FusedIterator for Headers<'_> {}

/// Write access to one batch's header fields, in place.
///
/// `baseOffset` and `partitionLeaderEpoch` are outside the CRC, so setting
/// them leaves the CRC valid; [`RecordBatchMut::set_max_timestamp`] changes
/// covered bytes and recomputes it.
#[derive(Debug)]
pub struct RecordBatchMut<'a> {
    buf: &'a mut [u8],
}

impl<'a> RecordBatchMut<'a> {
    /// Wraps a buffer that holds exactly one v2 batch.
    pub fn new(buf: &'a mut [u8]) -> Result<Self, RecordsError> {
        let batch_len = check_batch_at(buf, 0)?;
        if batch_len != buf.len() {
            return Err(RecordsError::TrailingBytes {
                batch_len,
                extra: buf.len() - batch_len,
            });
        }
        Ok(RecordBatchMut { buf })
    }

    /// Sets `baseOffset` (the leader's offset assignment).
    pub fn set_base_offset(&mut self, base_offset: i64) {
        write(self.buf, BASE_OFFSET_AT, &base_offset.to_be_bytes());
    }

    /// Sets `partitionLeaderEpoch`.
    pub fn set_partition_leader_epoch(&mut self, epoch: i32) {
        write(self.buf, PARTITION_LEADER_EPOCH_AT, &epoch.to_be_bytes());
    }

    /// Sets the timestamp type and `maxTimestamp` (for topics with
    /// `message.timestamp.type=LogAppendTime`, the append time), and
    /// recomputes the CRC, which covers both. This reads the whole batch.
    pub fn set_max_timestamp(&mut self, timestamp_type: TimestampType, max_timestamp: i64) {
        let attributes = i16::from_be_bytes(read(self.buf, ATTRIBUTES_AT));
        let attributes = match timestamp_type {
            TimestampType::CreateTime => attributes & !ATTR_TIMESTAMP_TYPE,
            TimestampType::LogAppendTime => attributes | ATTR_TIMESTAMP_TYPE,
        };
        write(self.buf, ATTRIBUTES_AT, &attributes.to_be_bytes());
        write(self.buf, MAX_TIMESTAMP_AT, &max_timestamp.to_be_bytes());
        let crc = crc_of(self.buf);
        write(self.buf, CRC_AT, &crc.to_be_bytes());
    }
}

/// Sets `baseOffset` of the batch whose header starts `batch`. Only the
/// header is checked (61 bytes, magic 2); the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), RecordsError> {
    check_header_at(batch, 0)?;
    write(batch, BASE_OFFSET_AT, &base_offset.to_be_bytes());
    Ok(())
}

/// Sets `partitionLeaderEpoch` of the batch whose header starts `batch`.
/// Only the header is checked (61 bytes, magic 2); the CRC stays valid.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), RecordsError> {
    check_header_at(batch, 0)?;
    write(batch, PARTITION_LEADER_EPOCH_AT, &epoch.to_be_bytes());
    Ok(())
}

/// The type of a control record (the second field of its key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlRecordType {
    /// Type 0: the transaction was aborted.
    Abort,
    /// Type 1: the transaction was committed.
    Commit,
    /// Any other type (KRaft uses 2 and up in its own logs).
    Other(i16),
}

impl ControlRecordType {
    /// The type for a code.
    pub fn from_code(code: i16) -> Self {
        match code {
            0 => ControlRecordType::Abort,
            1 => ControlRecordType::Commit,
            other => ControlRecordType::Other(other),
        }
    }

    /// The code on the wire.
    pub fn code(self) -> i16 {
        match self {
            ControlRecordType::Abort => 0,
            ControlRecordType::Commit => 1,
            ControlRecordType::Other(code) => code,
        }
    }
}

/// The key of a control record: version (i16, 0 today) and type (i16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlRecordKey {
    /// Key version; Kafka reads newer versions by their first 4 bytes too.
    pub version: i16,
    /// Abort, commit or other.
    pub kind: ControlRecordType,
}

impl ControlRecordKey {
    /// Length of the key as written.
    pub const LEN: usize = 4;

    /// Reads a control record's key (bytes after the first 4 are ignored,
    /// as Kafka does for newer versions).
    pub fn parse(key: &[u8]) -> Result<Self, RecordsError> {
        if key.len() < Self::LEN {
            return Err(RecordsError::InvalidControlRecord(format!(
                "key is {} bytes, at least {} needed",
                key.len(),
                Self::LEN
            )));
        }
        let version = i16::from_be_bytes(read(key, 0));
        if version < 0 {
            return Err(RecordsError::InvalidControlRecord(format!(
                "negative key version {version}"
            )));
        }
        Ok(ControlRecordKey {
            version,
            kind: ControlRecordType::from_code(i16::from_be_bytes(read(key, 2))),
        })
    }

    /// The key's bytes.
    pub fn encode(self) -> [u8; 4] {
        let mut out = [0u8; 4];
        write(&mut out, 0, &self.version.to_be_bytes());
        write(&mut out, 2, &self.kind.code().to_be_bytes());
        out
    }
}

/// The value of an abort or commit marker: version (i16, 0 today) and the
/// transaction coordinator's epoch (i32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndTxnMarker {
    /// Value version.
    pub version: i16,
    /// Epoch of the coordinator that wrote the marker.
    pub coordinator_epoch: i32,
}

impl EndTxnMarker {
    /// Length of the value as written.
    pub const LEN: usize = 6;

    /// Reads an abort or commit marker's value (bytes after the first 6 are
    /// ignored, as Kafka does for newer versions).
    pub fn parse(value: &[u8]) -> Result<Self, RecordsError> {
        if value.len() < Self::LEN {
            return Err(RecordsError::InvalidControlRecord(format!(
                "transaction marker value is {} bytes, at least {} needed",
                value.len(),
                Self::LEN
            )));
        }
        let version = i16::from_be_bytes(read(value, 0));
        if version < 0 {
            return Err(RecordsError::InvalidControlRecord(format!(
                "negative transaction marker version {version}"
            )));
        }
        Ok(EndTxnMarker {
            version,
            coordinator_epoch: i32::from_be_bytes(read(value, 2)),
        })
    }

    /// The value's bytes.
    pub fn encode(self) -> [u8; 6] {
        let mut out = [0u8; 6];
        write(&mut out, 0, &self.version.to_be_bytes());
        write(&mut out, 2, &self.coordinator_epoch.to_be_bytes());
        out
    }
}

/// A record to put in a [`RecordBatchBuilder`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// Absolute timestamp in milliseconds.
    pub timestamp: i64,
    /// The key; `None` for null.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for null.
    pub value: Option<Vec<u8>>,
    /// Headers: key and nullable value.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl NewRecord {
    /// A record with no headers.
    pub fn new(timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        NewRecord {
            timestamp,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, key: &[u8], value: Option<&[u8]>) -> Self {
        self.headers.push((key.to_vec(), value.map(<[u8]>::to_vec)));
        self
    }
}

/// Writes a valid magic v2 batch with a correct CRC. Tests build their
/// input with it; the broker builds the batches it writes itself
/// (transaction markers) with it.
///
/// Defaults are what a plain (not idempotent) producer sends: base offset 0,
/// partition leader epoch -1, no compression, create time, no producer id,
/// epoch or sequence. The base timestamp defaults to the first record's;
/// offset deltas are 0, 1, 2, …
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatchBuilder {
    base_offset: i64,
    partition_leader_epoch: i32,
    compression: Compression,
    timestamp_type: TimestampType,
    transactional: bool,
    control: bool,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: Option<i64>,
    records: Vec<NewRecord>,
}

impl Default for RecordBatchBuilder {
    fn default() -> Self {
        RecordBatchBuilder {
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            transactional: false,
            control: false,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            base_timestamp: None,
            records: Vec::new(),
        }
    }
}

impl RecordBatchBuilder {
    /// A builder with the defaults above and no records.
    pub fn new() -> Self {
        Self::default()
    }

    /// A commit or abort marker batch, as a transaction coordinator has the
    /// partition leader write it.
    pub fn end_txn_marker(
        kind: ControlRecordType,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        timestamp: i64,
    ) -> Self {
        let key = ControlRecordKey { version: 0, kind }.encode();
        let value = EndTxnMarker {
            version: 0,
            coordinator_epoch,
        }
        .encode();
        RecordBatchBuilder::new()
            .control(true)
            .transactional(true)
            .producer(producer_id, producer_epoch, NO_SEQUENCE)
            .record(NewRecord::new(timestamp, Some(&key), Some(&value)))
    }

    /// Sets `baseOffset`.
    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    /// Sets `partitionLeaderEpoch`.
    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Compresses the records with `compression`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets the timestamp type bit.
    pub fn timestamp_type(mut self, timestamp_type: TimestampType) -> Self {
        self.timestamp_type = timestamp_type;
        self
    }

    /// Sets the transactional bit.
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Sets the control bit.
    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    /// Sets `producerId`, `producerEpoch` and `baseSequence`.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets `baseTimestamp` (by default the first record's timestamp).
    pub fn base_timestamp(mut self, base_timestamp: i64) -> Self {
        self.base_timestamp = Some(base_timestamp);
        self
    }

    /// Adds a record.
    pub fn record(mut self, record: NewRecord) -> Self {
        self.records.push(record);
        self
    }

    /// Adds a record through a reference.
    pub fn push(&mut self, record: NewRecord) -> &mut Self {
        self.records.push(record);
        self
    }

    /// How many records have been added.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record has been added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Writes the batch.
    pub fn build(&self) -> Result<Vec<u8>, RecordsError> {
        let build_error = |reason: &str| RecordsError::Build(reason.to_owned());
        let Some(first) = self.records.first() else {
            return Err(build_error("a batch needs at least one record"));
        };
        let count = i32::try_from(self.records.len())
            .map_err(|_| build_error("more than 2^31 - 1 records"))?;
        let base_timestamp = self.base_timestamp.unwrap_or(first.timestamp);
        let max_timestamp = self
            .records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(NO_TIMESTAMP);

        let mut out = vec![0u8; BATCH_HEADER_LEN];
        let mut scratch = Vec::new();
        if self.compression == Compression::None {
            for (delta, record) in (0..count).zip(&self.records) {
                encode_record(&mut out, &mut scratch, record, delta, base_timestamp)?;
            }
        } else {
            let mut plain = Vec::new();
            for (delta, record) in (0..count).zip(&self.records) {
                encode_record(&mut plain, &mut scratch, record, delta, base_timestamp)?;
            }
            self.compression.compress_into(&plain, &mut out)?;
        }
        let batch_length = i32::try_from(out.len() - LOG_OVERHEAD)
            .map_err(|_| build_error("batch is larger than 2 GiB"))?;

        let mut attributes = i16::from(self.compression.id());
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= ATTR_TIMESTAMP_TYPE;
        }
        if self.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        if self.control {
            attributes |= ATTR_CONTROL;
        }
        write(&mut out, BASE_OFFSET_AT, &self.base_offset.to_be_bytes());
        write(&mut out, BATCH_LENGTH_AT, &batch_length.to_be_bytes());
        write(
            &mut out,
            PARTITION_LEADER_EPOCH_AT,
            &self.partition_leader_epoch.to_be_bytes(),
        );
        write(&mut out, MAGIC_AT, &[MAGIC_V2]);
        write(&mut out, ATTRIBUTES_AT, &attributes.to_be_bytes());
        write(&mut out, LAST_OFFSET_DELTA_AT, &(count - 1).to_be_bytes());
        write(&mut out, BASE_TIMESTAMP_AT, &base_timestamp.to_be_bytes());
        write(&mut out, MAX_TIMESTAMP_AT, &max_timestamp.to_be_bytes());
        write(&mut out, PRODUCER_ID_AT, &self.producer_id.to_be_bytes());
        write(
            &mut out,
            PRODUCER_EPOCH_AT,
            &self.producer_epoch.to_be_bytes(),
        );
        write(
            &mut out,
            BASE_SEQUENCE_AT,
            &self.base_sequence.to_be_bytes(),
        );
        write(&mut out, RECORDS_COUNT_AT, &count.to_be_bytes());
        let crc = crc_of(&out);
        write(&mut out, CRC_AT, &crc.to_be_bytes());
        Ok(out)
    }

    /// Writes the batch and wraps it in a view.
    pub fn build_batch(&self) -> Result<RecordBatch, RecordsError> {
        RecordBatch::new(Bytes::from(self.build()?))
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_uvarint(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) -> Result<(), RecordsError> {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, length_i32(bytes.len())?);
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

fn length_i32(n: usize) -> Result<i32, RecordsError> {
    i32::try_from(n).map_err(|_| RecordsError::Build(format!("length {n} does not fit an i32")))
}

fn encode_record(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    record: &NewRecord,
    offset_delta: i32,
    base_timestamp: i64,
) -> Result<(), RecordsError> {
    scratch.clear();
    scratch.push(0); // attributes
    put_varlong(scratch, record.timestamp.wrapping_sub(base_timestamp));
    put_varint(scratch, offset_delta);
    put_bytes(scratch, record.key.as_deref())?;
    put_bytes(scratch, record.value.as_deref())?;
    put_varint(scratch, length_i32(record.headers.len())?);
    for (key, value) in &record.headers {
        put_bytes(scratch, Some(key))?;
        put_bytes(scratch, value.as_deref())?;
    }
    put_varint(out, length_i32(scratch.len())?);
    out.extend_from_slice(scratch);
    Ok(())
}

/// Decompression bound used by [`fuzz_batches`].
const FUZZ_DECOMPRESSED_BYTES_MAX: usize = 256 * 1024;

/// Fuzzing entry point: reads `data` as a produce request's `records` field
/// through every path of this module (batches, CRC, header checks, records,
/// headers, control records, decompression with a small bound, patching a
/// copy) and must never panic, whatever `data` is. It asserts the module's
/// own invariants, so a panic here is a bug.
pub fn fuzz_batches(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    let mut batches = RecordBatches::new(buf);
    for batch in batches.by_ref() {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                black_box((e.to_string(), e.produce_error_code()));
                break;
            }
        };
        let crc_ok = batch.verify_crc().is_ok();
        black_box((
            batch.base_offset(),
            batch.batch_length(),
            batch.partition_leader_epoch(),
            batch.magic(),
            batch.attributes(),
            batch.timestamp_type(),
            batch.is_transactional(),
            batch.is_control(),
            batch.delete_horizon_ms(),
            batch.last_offset(),
            batch.max_timestamp(),
            batch.producer_id(),
            batch.producer_epoch(),
            batch.last_sequence(),
        ));
        black_box(batch.check_produce_header().is_ok());
        match batch.decompress(FUZZ_DECOMPRESSED_BYTES_MAX) {
            Ok(records) => fuzz_records(&records, batch.records_count(), batch.is_control()),
            Err(e) => {
                black_box((e.to_string(), e.produce_error_code()));
            }
        }

        // Patching a copy keeps the batch readable and the CRC as it was.
        let mut copy = batch.as_bytes().to_vec();
        let patched = RecordBatchMut::new(&mut copy).map(|mut m| {
            m.set_base_offset(batch.base_offset().wrapping_add(1));
            m.set_partition_leader_epoch(7);
        });
        assert!(patched.is_ok(), "a valid view must be patchable");
        let reread = RecordBatch::new(Bytes::from(copy));
        assert!(
            reread
                .as_ref()
                .is_ok_and(|b| b.verify_crc().is_ok() == crc_ok && b.partition_leader_epoch() == 7),
            "patching outside the CRC changed the batch"
        );
    }
    black_box(batches.position());

    // The record parser on its own, so fuzzing reaches it without having to
    // forge a CRC or a header.
    if let Some((&count, rest)) = data.split_first() {
        fuzz_records(rest, i32::from(count), true);
    }
    // Every codec on the raw input.
    for codec in Compression::ALL {
        black_box(codec.decompress(data, FUZZ_DECOMPRESSED_BYTES_MAX).is_ok());
    }
}

fn fuzz_records(data: &[u8], count: i32, control: bool) {
    let records = match Records::new(data, count) {
        Ok(records) => records,
        Err(e) => {
            black_box(e.to_string());
            return;
        }
    };
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                black_box((e.to_string(), e.produce_error_code()));
                break;
            }
        };
        let declared = record.headers().len();
        let mut seen = 0;
        for header in record.headers() {
            let header = header.expect("a checked record's headers must all read");
            black_box((header.key(), header.value()));
            seen += 1;
        }
        assert_eq!(seen, declared, "a checked record's headers must all read");
        black_box((
            record.key(),
            record.value(),
            record.timestamp(0),
            record.offset(0),
            record.attributes(),
            record.as_bytes().len(),
        ));
        if control {
            if let Some(key) = record.key() {
                black_box(ControlRecordKey::parse(key).is_ok());
            }
            if let Some(value) = record.value() {
                black_box(EndTxnMarker::parse(value).is_ok());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_builder() -> RecordBatchBuilder {
        RecordBatchBuilder::new()
            .base_timestamp(1_700_000_000_000)
            .producer(4242, 3, 100)
            .record(
                NewRecord::new(1_700_000_000_005, Some(b"k1"), Some(b"v1"))
                    .header(b"h", Some(b"x")),
            )
            .record(NewRecord::new(1_699_999_999_990, None, Some(b"")))
            .record(NewRecord::new(1_700_000_000_100, Some(b""), None).header(b"", None))
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The check value of CRC-32C (Castagnoli), distinct from zlib's CRC-32.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn builder_writes_the_documented_layout() {
        // One record, key null, value "abc", no headers, written by hand.
        let built = RecordBatchBuilder::new()
            .base_offset(5)
            .partition_leader_epoch(9)
            .record(NewRecord::new(1000, None, Some(b"abc")))
            .build()
            .unwrap();
        let record: &[u8] = &[
            0x12, // length 9 (zigzag 18)
            0x00, // attributes
            0x00, // timestampDelta 0
            0x00, // offsetDelta 0
            0x01, // key length -1
            0x06, b'a', b'b', b'c', // value length 3
            0x00, // header count 0
        ];
        let mut expected = Vec::new();
        expected.extend_from_slice(&5i64.to_be_bytes());
        expected.extend_from_slice(&((49 + record.len()) as i32).to_be_bytes());
        expected.extend_from_slice(&9i32.to_be_bytes());
        expected.push(2);
        expected.extend_from_slice(&[0; 4]); // crc, filled below
        expected.extend_from_slice(&0i16.to_be_bytes()); // attributes
        expected.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
        expected.extend_from_slice(&1000i64.to_be_bytes()); // baseTimestamp
        expected.extend_from_slice(&1000i64.to_be_bytes()); // maxTimestamp
        expected.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        expected.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        expected.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        expected.extend_from_slice(&1i32.to_be_bytes()); // recordsCount
        expected.extend_from_slice(record);
        let crc = crc32c::crc32c(&expected[21..]);
        expected[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(built, expected);
    }

    #[test]
    fn header_accessors() {
        let batch = sample_builder()
            .base_offset(77)
            .partition_leader_epoch(12)
            .compression(Compression::Lz4)
            .transactional(true)
            .build_batch()
            .unwrap();
        assert_eq!(batch.base_offset(), 77);
        assert_eq!(batch.batch_length() as usize + 12, batch.batch_len());
        assert_eq!(batch.partition_leader_epoch(), 12);
        assert_eq!(batch.magic(), 2);
        assert_eq!(batch.compression(), Ok(Compression::Lz4));
        assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
        assert!(batch.is_transactional());
        assert!(!batch.is_control());
        assert!(!batch.has_delete_horizon());
        assert_eq!(batch.delete_horizon_ms(), None);
        assert_eq!(batch.last_offset_delta(), 2);
        assert_eq!(batch.last_offset(), 79);
        assert_eq!(batch.base_timestamp(), 1_700_000_000_000);
        assert_eq!(batch.max_timestamp(), 1_700_000_000_100);
        assert_eq!(batch.producer_id(), 4242);
        assert!(batch.has_producer_id());
        assert_eq!(batch.producer_epoch(), 3);
        assert_eq!(batch.base_sequence(), 100);
        assert_eq!(batch.last_sequence(), 102);
        assert_eq!(batch.records_count(), 3);
        assert_eq!(batch.verify_crc(), Ok(()));
        assert_eq!(batch.crc(), batch.computed_crc());
        assert_eq!(
            batch.records().unwrap_err(),
            RecordsError::Compressed(Compression::Lz4)
        );
    }

    #[test]
    fn records_read_back() {
        let batch = sample_builder().build_batch().unwrap();
        let records: Vec<Record<'_>> = batch.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(records.len(), 3);
        let base = batch.base_timestamp();
        assert_eq!(records[0].key(), Some(&b"k1"[..]));
        assert_eq!(records[0].value(), Some(&b"v1"[..]));
        assert_eq!(records[0].timestamp(base), 1_700_000_000_005);
        assert_eq!(records[0].offset(10), 10);
        let headers: Vec<Header<'_>> = records[0].headers().map(Result::unwrap).collect();
        assert_eq!(headers, vec![Header::new(b"h", Some(b"x"))]);
        assert_eq!(headers[0].key_str(), Ok("h"));
        assert_eq!(records[1].key(), None);
        assert_eq!(records[1].value(), Some(&b""[..]));
        assert_eq!(records[1].timestamp_delta(), -10);
        assert_eq!(records[1].offset_delta(), 1);
        assert_eq!(records[1].headers().len(), 0);
        assert_eq!(records[2].key(), Some(&b""[..]));
        assert_eq!(records[2].value(), None);
        assert_eq!(
            records[2].headers().collect::<Vec<_>>(),
            vec![Ok(Header::new(b"", None))]
        );
        // The views point into the batch: slicing them out copies nothing.
        let value = batch.as_bytes().slice_ref(records[0].value().unwrap());
        assert_eq!(&value[..], b"v1");
        assert_eq!(
            records.iter().map(|r| r.as_bytes().len()).sum::<usize>(),
            batch.records_data().len()
        );
    }

    #[test]
    fn compressed_batches_read_back() {
        for codec in Compression::ALL {
            let batch = sample_builder().compression(codec).build_batch().unwrap();
            assert_eq!(batch.verify_crc(), Ok(()), "{codec}");
            let data = batch.decompress(1 << 20).unwrap();
            let plain = sample_builder().build_batch().unwrap();
            assert_eq!(&data[..], plain.records_data(), "{codec}");
            assert_eq!(
                Records::new(&data, batch.records_count())
                    .unwrap()
                    .check_all(),
                Ok(3)
            );
            assert!(matches!(
                batch.decompress(data.len() - 1),
                Err(RecordsError::Compression(CompressionError::TooLarge { .. }))
            ));
        }
    }

    #[test]
    fn unknown_codec_is_an_error() {
        let mut raw = sample_builder().build().unwrap();
        raw[22] |= 0b101; // codec 5
        let batch = RecordBatch::new(Bytes::from(raw)).unwrap();
        let err = batch.compression().unwrap_err();
        assert_eq!(
            err,
            RecordsError::Compression(CompressionError::UnknownCodec(5))
        );
        assert_eq!(
            err.produce_error_code(),
            ErrorCode::UNSUPPORTED_COMPRESSION_TYPE
        );
        assert!(batch.records().is_err());
        assert!(batch.decompress(1 << 20).is_err());
    }

    #[test]
    fn patching_outside_the_crc_keeps_it_valid() {
        let mut raw = sample_builder()
            .compression(Compression::Zstd)
            .build()
            .unwrap();
        let before = RecordBatch::new(Bytes::from(raw.clone())).unwrap();
        set_base_offset(&mut raw, 1_000_000).unwrap();
        set_partition_leader_epoch(&mut raw, 42).unwrap();
        let after = RecordBatch::new(Bytes::from(raw.clone())).unwrap();
        assert_eq!(after.base_offset(), 1_000_000);
        assert_eq!(after.partition_leader_epoch(), 42);
        assert_eq!(after.crc(), before.crc(), "CRC field untouched");
        assert_eq!(after.verify_crc(), Ok(()), "and still valid");
        assert_eq!(
            &raw[21..],
            &before.as_bytes()[21..],
            "covered bytes unchanged"
        );

        let mut view = RecordBatchMut::new(&mut raw).unwrap();
        view.set_base_offset(7);
        view.set_partition_leader_epoch(8);
        let again = RecordBatch::new(Bytes::from(raw)).unwrap();
        assert_eq!(
            (again.base_offset(), again.partition_leader_epoch()),
            (7, 8)
        );
        assert_eq!(again.verify_crc(), Ok(()));
    }

    #[test]
    fn set_max_timestamp_recomputes_the_crc() {
        let mut raw = sample_builder().build().unwrap();
        RecordBatchMut::new(&mut raw)
            .unwrap()
            .set_max_timestamp(TimestampType::LogAppendTime, 1_800_000_000_000);
        let batch = RecordBatch::new(Bytes::from(raw.clone())).unwrap();
        assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(batch.max_timestamp(), 1_800_000_000_000);
        assert_eq!(batch.verify_crc(), Ok(()));
        // Changing a covered field without the CRC update is caught.
        raw[40] ^= 1;
        let tampered = RecordBatch::new(Bytes::from(raw)).unwrap();
        assert!(matches!(
            tampered.verify_crc(),
            Err(RecordsError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn patching_needs_a_v2_header() {
        let mut short = vec![0u8; 20];
        short[16] = 2;
        assert!(matches!(
            set_base_offset(&mut short, 1),
            Err(RecordsError::Truncated { .. })
        ));
        let mut legacy = vec![0u8; 80];
        legacy[16] = 1;
        assert_eq!(
            set_partition_leader_epoch(&mut legacy, 1),
            Err(RecordsError::UnsupportedMagic(1))
        );
        assert_eq!(legacy[..16], [0u8; 16], "nothing written");
        let mut two = sample_builder().build().unwrap();
        let one_len = two.len();
        two.extend_from_slice(&two.clone());
        assert_eq!(
            RecordBatchMut::new(&mut two).unwrap_err(),
            RecordsError::TrailingBytes {
                batch_len: one_len,
                extra: one_len
            }
        );
    }

    #[test]
    fn control_records() {
        let batch = RecordBatchBuilder::end_txn_marker(ControlRecordType::Commit, 99, 4, 17, 123)
            .build_batch()
            .unwrap();
        assert!(batch.is_control());
        assert!(batch.is_transactional());
        assert_eq!(batch.producer_id(), 99);
        assert_eq!(batch.producer_epoch(), 4);
        assert_eq!(batch.base_sequence(), NO_SEQUENCE);
        assert_eq!(batch.last_sequence(), NO_SEQUENCE);
        let record = batch.records().unwrap().next().unwrap().unwrap();
        let key = ControlRecordKey::parse(record.key().unwrap()).unwrap();
        assert_eq!(
            key,
            ControlRecordKey {
                version: 0,
                kind: ControlRecordType::Commit
            }
        );
        let marker = EndTxnMarker::parse(record.value().unwrap()).unwrap();
        assert_eq!(
            marker,
            EndTxnMarker {
                version: 0,
                coordinator_epoch: 17
            }
        );
        assert_eq!(
            ControlRecordKey::parse(&[0, 0, 0, 0]).unwrap().kind,
            ControlRecordType::Abort
        );
        assert_eq!(
            ControlRecordKey::parse(&[0, 0, 0, 5]).unwrap().kind,
            ControlRecordType::Other(5)
        );
        assert!(matches!(
            ControlRecordKey::parse(&[0, 0, 1]),
            Err(RecordsError::InvalidControlRecord(_))
        ));
        assert!(matches!(
            ControlRecordKey::parse(&[0xff, 0xff, 0, 1]),
            Err(RecordsError::InvalidControlRecord(_))
        ));
        assert!(matches!(
            EndTxnMarker::parse(&[0, 0, 0, 0, 1]),
            Err(RecordsError::InvalidControlRecord(_))
        ));
        // A control batch is not something a producer may send.
        assert!(matches!(
            batch.check_produce_header(),
            Err(RecordsError::InvalidForProduce(_))
        ));
    }

    #[test]
    fn produce_header_rules() {
        let ok = sample_builder().build_batch().unwrap();
        assert_eq!(ok.check_produce_header(), Ok(()));
        let offset = sample_builder().base_offset(5).build_batch().unwrap();
        assert!(offset.check_produce_header().is_err());
        let no_seq = sample_builder().producer(5, 0, -1).build_batch().unwrap();
        assert!(no_seq.check_produce_header().is_err());
        let txn_no_pid = sample_builder()
            .producer(-1, -1, -1)
            .transactional(true)
            .build_batch()
            .unwrap();
        assert!(txn_no_pid.check_produce_header().is_err());
        let mut raw = sample_builder().build().unwrap();
        raw[23..27].copy_from_slice(&5i32.to_be_bytes()); // lastOffsetDelta
        let mismatch = RecordBatch::new(Bytes::from(raw)).unwrap();
        let err = mismatch.check_produce_header().unwrap_err();
        assert_eq!(err.produce_error_code(), ErrorCode::INVALID_RECORD);
        assert!(err.to_string().contains("lastOffsetDelta 5"), "{err}");
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(i32::MAX, 0), i32::MAX);
        let batch = sample_builder()
            .producer(1, 0, i32::MAX - 1)
            .build_batch()
            .unwrap();
        assert_eq!(batch.last_sequence(), 0);
    }

    #[test]
    fn legacy_magic_is_refused_with_invalid_record() {
        // A magic 0 message: offset, size, crc, magic 0, attributes, key -1,
        // value "hi". And the same as magic 1, with a timestamp.
        let mut v0 = Vec::new();
        v0.extend_from_slice(&0i64.to_be_bytes());
        v0.extend_from_slice(&16i32.to_be_bytes());
        v0.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        v0.extend_from_slice(&[0, 0]);
        v0.extend_from_slice(&(-1i32).to_be_bytes());
        v0.extend_from_slice(&2i32.to_be_bytes());
        v0.extend_from_slice(b"hi");
        let mut v1 = v0.clone();
        v1[16] = 1;
        for (set, magic) in [(v0, 0u8), (v1, 1u8)] {
            let err = RecordBatches::new(Bytes::from(set.clone()))
                .next()
                .unwrap()
                .unwrap_err();
            assert_eq!(err, RecordsError::UnsupportedMagic(magic));
            assert_eq!(err.produce_error_code(), ErrorCode::INVALID_RECORD);
            assert_eq!(
                RecordBatch::new(Bytes::from(set)).unwrap_err(),
                RecordsError::UnsupportedMagic(magic)
            );
        }
        // A magic byte no Kafka version wrote is corruption.
        let mut raw = sample_builder().build().unwrap();
        raw[16] = 3;
        let err = RecordBatch::new(Bytes::from(raw)).unwrap_err();
        assert_eq!(err, RecordsError::UnsupportedMagic(3));
        assert_eq!(err.produce_error_code(), ErrorCode::CORRUPT_MESSAGE);
        assert!(err.to_string().contains("magic 3"), "{err}");
    }

    #[test]
    fn several_batches_are_cut_without_copying() {
        let a = sample_builder().build().unwrap();
        let b = sample_builder()
            .compression(Compression::Gzip)
            .base_offset(3)
            .build()
            .unwrap();
        let mut both = a.clone();
        both.extend_from_slice(&b);
        let buf = Bytes::from(both);
        let mut batches = RecordBatches::new(buf.clone());
        let first = batches.next().unwrap().unwrap();
        assert_eq!(batches.position(), a.len());
        let second = batches.next().unwrap().unwrap();
        assert!(batches.next().is_none());
        assert_eq!(first.as_bytes(), &a[..]);
        assert_eq!(second.as_bytes(), &b[..]);
        assert_eq!(second.base_offset(), 3);
        // Same memory as the parent buffer.
        assert_eq!(second.as_bytes().as_ptr(), buf[a.len()..].as_ptr());
        assert!(RecordBatches::new(Bytes::new()).next().is_none());
    }

    #[test]
    fn hostile_batch_lengths() {
        let good = sample_builder().build().unwrap();
        for length in [i32::MIN, -1, 0, 48] {
            let mut raw = good.clone();
            raw[8..12].copy_from_slice(&length.to_be_bytes());
            let err = RecordBatches::new(Bytes::from(raw))
                .next()
                .unwrap()
                .unwrap_err();
            assert_eq!(err, RecordsError::InvalidBatchLength { offset: 0, length });
            assert_eq!(err.produce_error_code(), ErrorCode::CORRUPT_MESSAGE);
        }
        for length in [good.len() as i32 - 11, i32::MAX] {
            let mut raw = good.clone();
            raw[8..12].copy_from_slice(&length.to_be_bytes());
            let err = RecordBatches::new(Bytes::from(raw))
                .next()
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(err, RecordsError::Truncated { offset: 0, .. }),
                "{err}"
            );
        }
        // A shorter batchLength cuts the batch early: the rest must then fail
        // as a batch of its own, and the shortened one fails its CRC.
        let mut raw = good.clone();
        raw[8..12].copy_from_slice(&(good.len() as i32 - 13).to_be_bytes());
        let mut it = RecordBatches::new(Bytes::from(raw));
        let short = it.next().unwrap().unwrap();
        assert!(short.verify_crc().is_err());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none(), "fused after an error");
    }

    #[test]
    fn hostile_records() {
        // Each case: records data, count, and the fault expected.
        fn err_of(data: &[u8], count: i32) -> RecordsError {
            let mut records = Records::new(data, count).unwrap();
            loop {
                match records.next() {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return e,
                    None => panic!("no error for {data:?}"),
                }
            }
        }
        // Negative record length.
        let e = err_of(&[0x01], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    index: 0,
                    offset: 0,
                    fault: RecordFault::InvalidLength { length: -1, .. }
                }
            ),
            "{e}"
        );
        // Huge record length (i32::MAX) with no data.
        let e = err_of(&[0xfe, 0xff, 0xff, 0xff, 0x0f], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    fault: RecordFault::Truncated {
                        needed: 2147483647,
                        ..
                    },
                    ..
                }
            ),
            "{e}"
        );
        // Varint of 6 bytes.
        let e = err_of(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    fault: RecordFault::VarintTooLong { max_bytes: 5, .. },
                    ..
                }
            ),
            "{e}"
        );
        // 5-byte varint beyond 32 bits.
        let e = err_of(&[0xff, 0xff, 0xff, 0xff, 0x7f], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    fault: RecordFault::VarintOverflow { bits: 32, .. },
                    ..
                }
            ),
            "{e}"
        );
        // Key length -2.
        let e = err_of(&[0x0a, 0, 0, 0, 0x03, 0x00, 0x00], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    offset: 4,
                    fault: RecordFault::InvalidLength { length: -2, .. },
                    ..
                }
            ),
            "{e}"
        );
        // Key length larger than the record.
        let e = err_of(&[0x0a, 0, 0, 0, 0x7e, 0x00, 0x00], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    fault: RecordFault::Truncated {
                        field: "key",
                        needed: 63,
                        ..
                    },
                    ..
                }
            ),
            "{e}"
        );
        // Negative header count.
        let e = err_of(&[0x0c, 0, 0, 0, 0x01, 0x01, 0x03], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    offset: 6,
                    fault: RecordFault::NegativeHeaderCount(-2),
                    ..
                }
            ),
            "{e}"
        );
        // Huge header count with no headers behind it.
        let e = err_of(
            &[0x14, 0, 0, 0, 0x01, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f],
            1,
        );
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    fault: RecordFault::Truncated {
                        field: "header key",
                        ..
                    },
                    ..
                }
            ),
            "{e}"
        );
        // Negative header key length.
        let e = err_of(&[0x0e, 0, 0, 0, 0x01, 0x01, 0x02, 0x01], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    fault: RecordFault::InvalidLength {
                        field: "header key",
                        length: -1
                    },
                    ..
                }
            ),
            "{e}"
        );
        // Record longer than its fields.
        let e = err_of(&[0x0e, 0, 0, 0, 0x01, 0x01, 0x00, 0x00], 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    fault: RecordFault::LengthMismatch {
                        declared: 7,
                        actual: 6
                    },
                    ..
                }
            ),
            "{e}"
        );
        // A valid record, then a count that wants more.
        let one = [0x0c, 0, 0, 0, 0x01, 0x01, 0x00];
        let e = err_of(&one, i32::MAX);
        assert_eq!(
            e,
            RecordsError::MissingRecords {
                declared: i32::MAX,
                found: 1,
                offset: 7
            }
        );
        assert_eq!(e.produce_error_code(), ErrorCode::INVALID_RECORD);
        // A count of zero with data behind it.
        let e = err_of(&one, 0);
        assert_eq!(
            e,
            RecordsError::TrailingRecordBytes {
                declared: 0,
                offset: 0,
                extra: 7
            }
        );
        // A negative count.
        assert_eq!(
            Records::new(&one, -1).unwrap_err(),
            RecordsError::NegativeRecordCount(-1)
        );
        assert_eq!(Records::new(&one, 1).unwrap().check_all(), Ok(1));
        // 10-byte varlong timestamps: the largest is fine, one more bit is not.
        let mut max_ts = vec![0x1e, 0];
        max_ts.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        max_ts.extend_from_slice(&[0, 1, 1, 0]);
        let record = Records::new(&max_ts, 1).unwrap().next().unwrap().unwrap();
        assert_eq!(record.timestamp_delta(), i64::MAX);
        max_ts[11] = 0x02;
        let e = err_of(&max_ts, 1);
        assert!(
            matches!(
                e,
                RecordsError::InvalidRecord {
                    offset: 2,
                    fault: RecordFault::VarintOverflow { bits: 64, .. },
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn error_messages_say_where() {
        let e = RecordsError::Truncated {
            offset: 128,
            needed: 61,
            available: 20,
        }
        .to_string();
        assert!(
            e.contains("byte 128") && e.contains("61") && e.contains("20"),
            "{e}"
        );
        let e = RecordsError::InvalidRecord {
            index: 3,
            offset: 40,
            fault: RecordFault::InvalidLength {
                field: "key",
                length: -7,
            },
        }
        .to_string();
        assert!(
            e.contains("record 3") && e.contains("byte 40") && e.contains("key length -7"),
            "{e}"
        );
    }

    #[test]
    fn builder_refuses_an_empty_batch() {
        assert!(matches!(
            RecordBatchBuilder::new().build(),
            Err(RecordsError::Build(_))
        ));
        let mut b = RecordBatchBuilder::new();
        assert!(b.is_empty());
        b.push(NewRecord::default());
        assert_eq!(b.len(), 1);
        assert!(b.build().is_ok());
    }

    #[test]
    fn varints_match_kafka_encoding() {
        let mut out = Vec::new();
        for (value, bytes) in [
            (0i32, &[0x00][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            out.clear();
            put_varint(&mut out, value);
            assert_eq!(out, bytes, "{value}");
            let mut cur = Cursor {
                data: &out,
                pos: 0,
                index: 0,
            };
            assert_eq!(cur.varint("test"), Ok(value));
            assert_eq!(cur.pos, out.len());
        }
        for value in [i64::MIN, i64::MAX, -1, 0, 1 << 40] {
            out.clear();
            put_varlong(&mut out, value);
            let mut cur = Cursor {
                data: &out,
                pos: 0,
                index: 0,
            };
            assert_eq!(cur.varlong("test"), Ok(value));
        }
    }

    #[test]
    fn fuzz_hook_survives_samples() {
        let good = sample_builder()
            .compression(Compression::Snappy)
            .build()
            .unwrap();
        fuzz_batches(&good);
        fuzz_batches(&[]);
        fuzz_batches(&[0xff; 100]);
        for cut in 0..good.len() {
            fuzz_batches(&good[..cut]);
        }
    }
}
