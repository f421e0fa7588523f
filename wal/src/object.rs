//! The WAL object format, version 2 (version 1 is still read).
//!
//! A WAL object holds the record batches of many partitions, written by one
//! node in one `batchInterval`. It is built to be read in three small steps:
//! the footer (fixed size, at the end), then the index it points to, then ONE
//! ranged GET per partition, because the writer stores each partition's
//! entries next to each other.
//!
//! All integers are little-endian.
//!
//! ```text
//! offset        size  field
//! ------------  ----  ---------------------------------------------------------
//! header (HEADER_LEN = 32 bytes)
//! 0             8     magic "FERRYWAL"
//! 8             2     format version (u16) = 2 (1 in objects of older builds)
//! 10            2     flags (u16) = 0; a reader rejects bits it does not know
//! 12            4     node id (u32)
//! 16            8     object sequence number (u64), per node, increasing
//! 24            8     creation time, ms since the Unix epoch (u64)
//! data
//! 32            ...   entries' bytes back to back, grouped by partition
//! index (starts at index_offset, index_len bytes)
//! +0            4     entry count (u32)
//!               per entry (INDEX_ENTRY_FIXED_LEN = 84 bytes + topic in version 1,
//!               INDEX_ENTRY_V2_FIXED_LEN = 90 bytes + topic [+ external ref] in 2):
//!               2     topic length (u16), then the topic (UTF-8)
//!               16    topic id: tells a topic from an earlier one of the same name
//!               4     partition (i32)
//!               8     base offset (i64)
//!               8     last offset (i64)
//!               8     position of the entry's data in the object (u64)
//!               4     length of the entry's data (u32)
//!               4     CRC32C of the entry's data (u32)
//!               4     record count (u32)
//!               8     max timestamp, ms (i64)
//!               8     producer id (i64), -1 without an idempotent producer
//!               2     producer epoch (i16)
//!               4     first sequence of the batch (i32)
//!               4     last sequence of the batch (i32)
//!               version 2 only, after the fields above:
//!               4     leader epoch (i32) of the leader that wrote the entry
//!               2     external key length (u16), 0 = no external reference;
//!                     if not 0 (EXTERNAL_REF_FIXED_LEN = 16 bytes + key):
//!                     the key of the object holding the data (UTF-8, at
//!                     most EXTERNAL_KEY_LEN_MAX bytes, a valid object path)
//!               8       position of the data in that object (u64)
//!               4       length of the data (u32), not 0
//!               4       CRC32C of the data (u32)
//! footer (FOOTER_LEN = 24 bytes, the last bytes of the object)
//! len-24        8     index_offset (u64)
//! len-16        4     index_len (u32)
//! len-12        4     CRC32C over header bytes [0, 32) then the index bytes
//! len-8         8     magic "FERRYEND"
//! ```
//!
//! Checks: the footer's CRC covers the header and the index; each entry's CRC
//! covers its data. The index must describe entries inside the data section,
//! in order and without overlap. The writer verifies an encoded object before
//! uploading it ([`EncodedObject::verify`]), and readers verify what they get
//! back ([`decode_index`], [`verify_entry`]).
//!
//! # Kinds of entries (version 2)
//!
//! - A **data entry** holds its batches' bytes in this object.
//! - An **external entry** holds none (`len` 0 here): its batches' bytes
//!   are in another object (a proxy's handoff object) at the external
//!   range. The index entry is what makes the leader's offset assignment
//!   durable; the bytes were made durable by the proxy.
//! - An **epoch marker** has `record_count` 0, no data, no external
//!   reference and `last_offset == base_offset - 1`: "epoch `leader_epoch`
//!   of this partition starts at `base_offset`". Recovery uses markers to
//!   fence the late writes of an older leader (`recovery::rebuild_fenced`).
//!
//! Version history: 1 is the first version. 2 adds the leader epoch and the
//! external reference to each index entry, and epoch markers; a version 1
//! entry reads as leader epoch 0 without an external reference.

use std::ops::Range;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use object_store::PutPayload;

use crate::error::FormatError;

/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const FORMAT_VERSION_MIN: u16 = 1;
/// Magic at the start of every WAL object.
pub const HEADER_MAGIC: [u8; 8] = *b"FERRYWAL";
/// Magic at the end of every WAL object.
pub const FOOTER_MAGIC: [u8; 8] = *b"FERRYEND";
/// Size of the header.
pub const HEADER_LEN: usize = 32;
/// Size of the footer.
pub const FOOTER_LEN: usize = 24;
/// Size of one version 1 index entry without its topic name (the smallest
/// an entry of any version can be).
pub const INDEX_ENTRY_FIXED_LEN: usize = 84;
/// Size of one version 2 index entry without its topic name and without an
/// external reference.
pub const INDEX_ENTRY_V2_FIXED_LEN: usize = INDEX_ENTRY_FIXED_LEN + 6;
/// Size of an external reference in a version 2 index entry, without its key.
pub const EXTERNAL_REF_FIXED_LEN: usize = 16;
/// Longest external key the format accepts (S3's own limit on keys).
pub const EXTERNAL_KEY_LEN_MAX: usize = 1024;

/// The idempotent-producer fields of an entry's batch. They are kept in the
/// index so that recovery rebuilds producer state (duplicate detection)
/// without reading any data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

impl Default for ProducerFields {
    /// No producer: Kafka's "no producer id" values.
    fn default() -> ProducerFields {
        ProducerFields {
            id: -1,
            epoch: -1,
            first_sequence: -1,
            last_sequence: -1,
        }
    }
}
/// Where an external entry's bytes are: a range of another object (a
/// proxy's handoff object), with their CRC32C.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalRef {
    /// The key of the object holding the bytes.
    pub key: Arc<str>,
    /// Position of the bytes in that object.
    pub position: u64,
    /// Length of the bytes (not 0).
    pub len: u32,
    /// CRC32C of the bytes.
    pub crc: u32,
}

impl ExternalRef {
    /// The byte range in the external object.
    pub fn range(&self) -> Range<u64> {
        self.position..self.position + u64::from(self.len)
    }

    /// Checks what the format needs: a key of 1..=`EXTERNAL_KEY_LEN_MAX`
    /// bytes that is a valid object path as written, a length that is not
    /// 0, and a range that does not overflow.
    pub fn check(&self) -> Result<(), String> {
        let key = &*self.key;
        if key.is_empty() || key.len() > EXTERNAL_KEY_LEN_MAX {
            return Err(format!(
                "external key length {} is not in 1..={EXTERNAL_KEY_LEN_MAX}",
                key.len()
            ));
        }
        if !object_store::path::Path::parse(key).is_ok_and(|p| p.as_ref() == key) {
            return Err(format!("external key {key:?} is not an object path"));
        }
        if self.len == 0 {
            return Err("external reference of 0 bytes".into());
        }
        if self.position.checked_add(u64::from(self.len)).is_none() {
            return Err(format!(
                "external range {}+{} overflows",
                self.position, self.len
            ));
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        EXTERNAL_REF_FIXED_LEN + self.key.len()
    }
}

/// Longest topic name the format holds (Kafka's own limit is 249).
pub const TOPIC_LEN_MAX: usize = u16::MAX as usize;
/// Largest single entry (the length field is a u32).
pub const ENTRY_LEN_MAX: usize = u32::MAX as usize;

/// The identity of one WAL object, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHeader {
    pub node_id: u32,
    pub seq: u64,
    pub created_ms: u64,
}

impl ObjectHeader {
    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&HEADER_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&0u16.to_le_bytes());
        b[12..16].copy_from_slice(&self.node_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        b
    }

    /// Parses the header from the first bytes of an object. Checks magic,
    /// version and flags; the CRC is checked with the index ([`decode_index`]).
    pub fn decode(b: &[u8]) -> Result<ObjectHeader, FormatError> {
        ObjectHeader::decode_versioned(b).map(|(h, _)| h)
    }

    /// [`ObjectHeader::decode`], with the object's format version.
    pub fn decode_versioned(b: &[u8]) -> Result<(ObjectHeader, u16), FormatError> {
        let b = b.get(..HEADER_LEN).ok_or(FormatError::Truncated {
            what: "header",
            needed: HEADER_LEN as u64,
            available: b.len() as u64,
        })?;
        if b[0..8] != HEADER_MAGIC {
            return Err(FormatError::BadMagic { what: "header" });
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                version,
                supported: FORMAT_VERSION,
            });
        }
        let flags = u16::from_le_bytes([b[10], b[11]]);
        if flags != 0 {
            return Err(FormatError::UnknownFlags { flags });
        }
        let mut r = Cursor { b, pos: 12 };
        let header = ObjectHeader {
            node_id: r.u32(),
            seq: r.u64(),
            created_ms: r.u64(),
        };
        Ok((header, version))
    }
}

/// The fixed-size trailer that says where the index is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub index_len: u32,
    /// CRC32C over the header bytes, then the index bytes.
    pub crc: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.index_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.crc.to_le_bytes());
        b[16..24].copy_from_slice(&FOOTER_MAGIC);
        b
    }

    /// Parses the footer from the LAST `FOOTER_LEN` bytes of `tail`, and checks
    /// that it fits an object of `object_len` bytes.
    pub fn decode(tail: &[u8], object_len: u64) -> Result<Footer, FormatError> {
        if tail.len() < FOOTER_LEN || object_len < (HEADER_LEN + FOOTER_LEN + 4) as u64 {
            return Err(FormatError::Truncated {
                what: "object (no room for header, index and footer)",
                needed: (HEADER_LEN + FOOTER_LEN + 4) as u64,
                available: object_len.min(tail.len() as u64),
            });
        }
        let b = &tail[tail.len() - FOOTER_LEN..];
        if b[16..24] != FOOTER_MAGIC {
            return Err(FormatError::BadMagic { what: "footer" });
        }
        let mut r = Cursor { b, pos: 0 };
        let footer = Footer {
            index_offset: r.u64(),
            index_len: r.u32(),
            crc: r.u32(),
        };
        let index_end = footer.index_offset.checked_add(u64::from(footer.index_len));
        if footer.index_offset < HEADER_LEN as u64
            || footer.index_len < 4
            || index_end != Some(object_len - FOOTER_LEN as u64)
        {
            return Err(FormatError::BadIndex {
                reason: format!(
                    "footer places the index at {}..+{} in an object of {} bytes",
                    footer.index_offset, footer.index_len, object_len
                ),
            });
        }
        Ok(footer)
    }

    /// Where the index is in the object.
    pub fn index_range(&self) -> Range<u64> {
        self.index_offset..self.index_offset + u64::from(self.index_len)
    }
}

/// The metadata and bytes of one entry: one or more record batches of one
/// partition, handed to the writer by the shard that owns the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    pub topic: Arc<str>,
    /// The topic's id, so that a topic deleted and created again under the
    /// same name never gets the old one's data back at recovery.
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: u32,
    pub max_timestamp: i64,
    pub producer: ProducerFields,
    /// The entry's bytes, possibly in several segments; they are uploaded as
    /// they are, without being copied into one buffer. Empty for an
    /// external entry and for an epoch marker.
    pub data: Vec<Bytes>,
    /// The leader epoch of the leader that wrote the entry (0 where epochs
    /// are not used).
    pub leader_epoch: i32,
    /// For an external entry: where its batches' bytes are (another
    /// object); `data` is then empty.
    pub external: Option<ExternalRef>,
    /// The CRC32C of `data`, when the caller knows it without reading the
    /// bytes (a Kafka batch whose own CRC was checked; an entry read back
    /// from an object whose index gave it): [`ObjectBuilder::push`] then
    /// takes it instead of computing it. Debug builds check it.
    pub data_crc: Option<u32>,
}

impl WalEntry {
    /// Total data length over all segments.
    pub fn data_len(&self) -> usize {
        self.data.iter().map(Bytes::len).sum()
    }

    /// An epoch marker: "epoch `leader_epoch` of this partition starts at
    /// `start_offset`" (see the module doc).
    pub fn epoch_marker(
        topic: Arc<str>,
        topic_id: [u8; 16],
        partition: i32,
        leader_epoch: i32,
        start_offset: i64,
        max_timestamp: i64,
    ) -> WalEntry {
        WalEntry {
            data_crc: None,
            topic,
            topic_id,
            partition,
            base_offset: start_offset,
            last_offset: start_offset.wrapping_sub(1),
            record_count: 0,
            max_timestamp,
            producer: ProducerFields::default(),
            data: Vec::new(),
            leader_epoch,
            external: None,
        }
    }

    /// True for an epoch marker (see the module doc).
    pub fn is_epoch_marker(&self) -> bool {
        is_marker_shape(
            self.record_count,
            self.base_offset,
            self.last_offset,
            self.data_len() as u64,
            self.external.is_some(),
        )
    }

    /// Bytes the entry's index entry takes in a version 2 object.
    pub fn index_entry_len(&self) -> usize {
        INDEX_ENTRY_V2_FIXED_LEN
            + self.topic.len()
            + self.external.as_ref().map_or(0, ExternalRef::encoded_len)
    }

    /// Checks what the format needs: a topic that fits, data that fits a
    /// u32, `last_offset >= base_offset`, or else exactly the shape of an
    /// epoch marker for an entry of no records, and for an external entry a
    /// valid reference and no data of its own.
    pub fn check(&self) -> Result<(), String> {
        if self.topic.is_empty() || self.topic.len() > TOPIC_LEN_MAX {
            return Err(format!(
                "topic name length {} is not in 1..={TOPIC_LEN_MAX}",
                self.topic.len()
            ));
        }
        if self.data_len() > ENTRY_LEN_MAX {
            return Err(format!(
                "data length {} is over {ENTRY_LEN_MAX}",
                self.data_len()
            ));
        }
        if let Some(ext) = &self.external {
            ext.check()?;
            if self.data_len() != 0 {
                return Err(format!(
                    "an external entry carries no data, this one has {} bytes",
                    self.data_len()
                ));
            }
        }
        check_offsets(
            self.record_count,
            self.base_offset,
            self.last_offset,
            self.data_len() as u64,
            self.external.is_some(),
        )
    }
}

/// The shape of an epoch marker: no records, no data, no external
/// reference, and `last_offset == base_offset - 1`.
fn is_marker_shape(
    record_count: u32,
    base_offset: i64,
    last_offset: i64,
    data_len: u64,
    external: bool,
) -> bool {
    record_count == 0
        && data_len == 0
        && !external
        && base_offset.checked_sub(1) == Some(last_offset)
}

/// Offsets of a version 2 entry: an epoch marker's shape for no records,
/// `last_offset >= base_offset` otherwise.
fn check_offsets(
    record_count: u32,
    base_offset: i64,
    last_offset: i64,
    data_len: u64,
    external: bool,
) -> Result<(), String> {
    if record_count == 0 {
        if !is_marker_shape(record_count, base_offset, last_offset, data_len, external) {
            return Err(format!(
                "an entry of no records must be an epoch marker (no data, no external \
                 reference, last offset = base offset - 1); this one has offsets \
                 {base_offset}..={last_offset}, {data_len} bytes{}",
                if external {
                    ", an external reference"
                } else {
                    ""
                }
            ));
        }
        return Ok(());
    }
    if last_offset < base_offset {
        return Err(format!(
            "last offset {last_offset} is before base offset {base_offset}"
        ));
    }
    Ok(())
}

/// One entry of the index: where an entry's bytes are, and what they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub topic: Arc<str>,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// Byte position of the entry's data in the object.
    pub position: u64,
    /// Length of the entry's data.
    pub len: u32,
    /// CRC32C of the entry's data.
    pub crc: u32,
    pub record_count: u32,
    pub max_timestamp: i64,
    pub producer: ProducerFields,
    /// The leader epoch of the leader that wrote the entry (0 in version 1).
    pub leader_epoch: i32,
    /// For an external entry: where its batches' bytes are. `len` is then 0.
    pub external: Option<ExternalRef>,
}

impl IndexEntry {
    /// The byte range of the entry's data in the object.
    pub fn range(&self) -> Range<u64> {
        self.position..self.position + u64::from(self.len)
    }

    /// True for an epoch marker (see the module doc).
    pub fn is_epoch_marker(&self) -> bool {
        is_marker_shape(
            self.record_count,
            self.base_offset,
            self.last_offset,
            u64::from(self.len),
            self.external.is_some(),
        )
    }

    /// Bytes the entry takes in a version 2 index.
    pub fn encoded_len(&self) -> usize {
        INDEX_ENTRY_V2_FIXED_LEN
            + self.topic.len()
            + self.external.as_ref().map_or(0, ExternalRef::encoded_len)
    }

    fn encode(&self, out: &mut BytesMut) {
        // Checked by `WalEntry::check` before an entry reaches the builder.
        debug_assert!(self.topic.len() <= TOPIC_LEN_MAX);
        out.put_u16_le(self.topic.len() as u16);
        out.put_slice(self.topic.as_bytes());
        out.put_slice(&self.topic_id);
        out.put_i32_le(self.partition);
        out.put_i64_le(self.base_offset);
        out.put_i64_le(self.last_offset);
        out.put_u64_le(self.position);
        out.put_u32_le(self.len);
        out.put_u32_le(self.crc);
        out.put_u32_le(self.record_count);
        out.put_i64_le(self.max_timestamp);
        out.put_i64_le(self.producer.id);
        out.put_i16_le(self.producer.epoch);
        out.put_i32_le(self.producer.first_sequence);
        out.put_i32_le(self.producer.last_sequence);
        out.put_i32_le(self.leader_epoch);
        match &self.external {
            None => out.put_u16_le(0),
            Some(ext) => {
                // Checked by `ExternalRef::check` before the builder.
                debug_assert!(!ext.key.is_empty() && ext.key.len() <= EXTERNAL_KEY_LEN_MAX);
                out.put_u16_le(ext.key.len() as u16);
                out.put_slice(ext.key.as_bytes());
                out.put_u64_le(ext.position);
                out.put_u32_le(ext.len);
                out.put_u32_le(ext.crc);
            }
        }
    }
}

/// A decoded, CRC-checked index of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIndex {
    pub header: ObjectHeader,
    /// The object's format version (from its header).
    pub version: u16,
    pub footer: Footer,
    /// Size of the whole object in bytes.
    pub object_len: u64,
    /// Entries in the order of their data in the object (grouped by partition).
    pub entries: Vec<IndexEntry>,
}

impl ObjectIndex {
    /// The entries of one partition: a contiguous run, since the writer groups
    /// a partition's entries together. Empty if the object has none.
    pub fn partition_entries(&self, topic: &str, partition: i32) -> &[IndexEntry] {
        let is_it = |e: &IndexEntry| &*e.topic == topic && e.partition == partition;
        let Some(start) = self.entries.iter().position(is_it) else {
            return &[];
        };
        let run = self.entries[start..]
            .iter()
            .take_while(|e| is_it(e))
            .count();
        &self.entries[start..start + run]
    }

    /// The byte range holding all of one partition's entries: one ranged GET.
    pub fn partition_range(&self, topic: &str, partition: i32) -> Option<Range<u64>> {
        let run = self.partition_entries(topic, partition);
        let first = run.first()?;
        let last = run.last()?;
        Some(first.position..last.range().end)
    }
}

/// A built object, ready to upload, with its index.
#[derive(Debug, Clone)]
pub struct EncodedObject {
    /// The object's bytes in order: header, data segments, index, footer.
    pub segments: Vec<Bytes>,
    pub index: ObjectIndex,
    /// For each index entry, which `segments` hold its data.
    entry_segments: Vec<Range<usize>>,
}

impl EncodedObject {
    /// Total size in bytes.
    pub fn len(&self) -> u64 {
        self.index.object_len
    }

    /// Never true: an object has at least a header, an index and a footer.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The PUT body, sharing the segments (no copy).
    pub fn payload(&self) -> PutPayload {
        PutPayload::from_iter(self.segments.iter().cloned())
    }

    /// The object as one contiguous buffer (copies; for tests and tools).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.index.object_len as usize);
        for s in &self.segments {
            out.extend_from_slice(s);
        }
        out.freeze()
    }

    /// Re-checks the object before upload: the header and index decode back
    /// to the same index, the footer CRC matches, and every entry's data
    /// matches its CRC and position. Cheap next to a PUT (CRC32C runs at
    /// memory speed), and it catches a builder bug before it reaches S3.
    pub fn verify(&self) -> Result<(), FormatError> {
        let (Some(header), Some(footer)) = (self.segments.first(), self.segments.last()) else {
            return Err(FormatError::BadIndex {
                reason: "encoded object has no segments".into(),
            });
        };
        let index_bytes = &self.segments[self.segments.len() - 2];
        let total: u64 = self.segments.iter().map(|s| s.len() as u64).sum();
        let decoded_footer = Footer::decode(footer, total)?;
        let decoded = decode_index(header, index_bytes, &decoded_footer, total)?;
        if decoded != self.index {
            return Err(FormatError::BadIndex {
                reason: "encoded index does not decode to the built index".into(),
            });
        }
        let mut pos = HEADER_LEN as u64;
        for (entry, segs) in self.index.entries.iter().zip(&self.entry_segments) {
            let data = &self.segments[segs.clone()];
            let len: u64 = data.iter().map(|s| s.len() as u64).sum();
            if entry.position != pos || u64::from(entry.len) != len {
                return Err(FormatError::BadIndex {
                    reason: format!(
                        "entry {}-{} at {}+{} but its data is at {pos}+{len}",
                        entry.topic, entry.partition, entry.position, entry.len
                    ),
                });
            }
            // The data's CRC is the builder's (or its caller's, see
            // `WalEntry::data_crc`); reading every byte again is left to
            // debug builds.
            if cfg!(debug_assertions) {
                let crc = data.iter().fold(0, |c, s| crc32c::crc32c_append(c, s));
                check_crc(entry, crc)?;
            }
            pos += len;
        }
        Ok(())
    }
}

/// Builds one object from entries, in the order they are pushed.
#[derive(Debug)]
pub struct ObjectBuilder {
    header: ObjectHeader,
    segments: Vec<Bytes>,
    entries: Vec<IndexEntry>,
    entry_segments: Vec<Range<usize>>,
    position: u64,
    index_len: usize,
}

impl ObjectBuilder {
    pub fn new(header: ObjectHeader) -> ObjectBuilder {
        ObjectBuilder {
            header,
            segments: vec![Bytes::copy_from_slice(&header.encode())],
            entries: Vec::new(),
            entry_segments: Vec::new(),
            position: HEADER_LEN as u64,
            index_len: 4,
        }
    }

    /// Appends an entry's data (computing its CRC) and returns its index entry.
    /// The caller has run [`WalEntry::check`].
    pub fn push(&mut self, entry: &WalEntry) -> Result<&IndexEntry, FormatError> {
        let len = entry.data_len();
        if len > ENTRY_LEN_MAX {
            return Err(FormatError::TooLarge {
                what: "entry data length",
                len: len as u64,
                max: ENTRY_LEN_MAX as u64,
            });
        }
        if entry.topic.len() > TOPIC_LEN_MAX {
            return Err(FormatError::TooLarge {
                what: "topic name length",
                len: entry.topic.len() as u64,
                max: TOPIC_LEN_MAX as u64,
            });
        }
        if let Err(reason) = entry.check() {
            return Err(FormatError::BadIndex {
                reason: format!("entry {}-{}: {reason}", entry.topic, entry.partition),
            });
        }
        let first = self.segments.len();
        let computed = || {
            entry
                .data
                .iter()
                .fold(0, |crc, s| crc32c::crc32c_append(crc, s))
        };
        let crc = match entry.data_crc {
            Some(known) => {
                debug_assert_eq!(
                    known,
                    computed(),
                    "a wrong data_crc for {}-{}",
                    entry.topic,
                    entry.partition
                );
                known
            }
            None => computed(),
        };
        for s in &entry.data {
            if !s.is_empty() {
                self.segments.push(s.clone());
            }
        }
        let index_entry = IndexEntry {
            topic: entry.topic.clone(),
            topic_id: entry.topic_id,
            partition: entry.partition,
            base_offset: entry.base_offset,
            last_offset: entry.last_offset,
            position: self.position,
            len: len as u32,
            crc,
            record_count: entry.record_count,
            max_timestamp: entry.max_timestamp,
            producer: entry.producer,
            leader_epoch: entry.leader_epoch,
            external: entry.external.clone(),
        };
        self.position += len as u64;
        self.index_len += index_entry.encoded_len();
        self.entry_segments.push(first..self.segments.len());
        self.entries.push(index_entry);
        Ok(&self.entries[self.entries.len() - 1])
    }

    /// Bytes the object will have if finished now.
    pub fn len(&self) -> u64 {
        self.position + (self.index_len + FOOTER_LEN) as u64
    }

    /// True if no entry was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the index and footer.
    pub fn finish(mut self) -> Result<EncodedObject, FormatError> {
        if self.index_len > u32::MAX as usize {
            return Err(FormatError::TooLarge {
                what: "index length",
                len: self.index_len as u64,
                max: u64::from(u32::MAX),
            });
        }
        let mut index = BytesMut::with_capacity(self.index_len);
        index.put_u32_le(self.entries.len() as u32);
        for e in &self.entries {
            e.encode(&mut index);
        }
        debug_assert_eq!(index.len(), self.index_len);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&self.segments[0]), &index);
        let footer = Footer {
            index_offset: self.position,
            index_len: index.len() as u32,
            crc,
        };
        let object_len = self.position + (index.len() + FOOTER_LEN) as u64;
        self.segments.push(index.freeze());
        self.segments.push(Bytes::copy_from_slice(&footer.encode()));
        Ok(EncodedObject {
            segments: self.segments,
            index: ObjectIndex {
                header: self.header,
                version: FORMAT_VERSION,
                footer,
                object_len,
                entries: self.entries,
            },
            entry_segments: self.entry_segments,
        })
    }
}

/// Decodes and checks the index, given the header bytes (at least the first
/// `HEADER_LEN`), the index bytes (exactly `footer.index_len`) and the
/// footer. Checks the CRC over header and index, and that every entry lies
/// inside the data section, in order, without overlap.
pub fn decode_index(
    header: &[u8],
    index: &[u8],
    footer: &Footer,
    object_len: u64,
) -> Result<ObjectIndex, FormatError> {
    let header_bytes = header.get(..HEADER_LEN).ok_or(FormatError::Truncated {
        what: "header",
        needed: HEADER_LEN as u64,
        available: header.len() as u64,
    })?;
    if index.len() != footer.index_len as usize {
        return Err(FormatError::Truncated {
            what: "index",
            needed: u64::from(footer.index_len),
            available: index.len() as u64,
        });
    }
    let computed = crc32c::crc32c_append(crc32c::crc32c(header_bytes), index);
    if computed != footer.crc {
        return Err(FormatError::ChecksumMismatch {
            what: "header and index".into(),
            stored: footer.crc,
            computed,
        });
    }
    let (parsed_header, version) = ObjectHeader::decode_versioned(header_bytes)?;
    let fixed_len = if version >= 2 {
        INDEX_ENTRY_V2_FIXED_LEN
    } else {
        INDEX_ENTRY_FIXED_LEN
    };
    let mut r = Cursor { b: index, pos: 0 };
    let count = r.u32() as usize;
    // Bound the allocation by what the index can hold before trusting `count`.
    let count_max = (index.len() - 4) / fixed_len;
    if count > count_max {
        return Err(FormatError::BadIndex {
            reason: format!(
                "{count} entries cannot fit in an index of {} bytes",
                index.len()
            ),
        });
    }
    let mut entries = Vec::with_capacity(count);
    let mut next_position = HEADER_LEN as u64;
    for i in 0..count {
        if r.remaining() < fixed_len {
            return Err(FormatError::Truncated {
                what: "index entry",
                needed: fixed_len as u64,
                available: r.remaining() as u64,
            });
        }
        let topic_len = r.u16() as usize;
        if r.remaining() < topic_len + fixed_len - 2 {
            return Err(FormatError::Truncated {
                what: "index entry",
                needed: (topic_len + fixed_len - 2) as u64,
                available: r.remaining() as u64,
            });
        }
        let topic = std::str::from_utf8(r.take(topic_len)).map_err(|_| FormatError::BadIndex {
            reason: format!("entry {i}: topic name is not UTF-8"),
        })?;
        let mut e = IndexEntry {
            topic: Arc::from(topic),
            topic_id: r.array(),
            partition: r.i32(),
            base_offset: r.i64(),
            last_offset: r.i64(),
            position: r.u64(),
            len: r.u32(),
            crc: r.u32(),
            record_count: r.u32(),
            max_timestamp: r.i64(),
            producer: ProducerFields {
                id: r.i64(),
                epoch: r.i16(),
                first_sequence: r.i32(),
                last_sequence: r.i32(),
            },
            leader_epoch: 0,
            external: None,
        };
        if version >= 2 {
            e.leader_epoch = r.i32();
            e.external = decode_external(&mut r, i)?;
        }
        let end = e.position.checked_add(u64::from(e.len));
        if e.position != next_position || end.is_none_or(|end| end > footer.index_offset) {
            return Err(FormatError::BadIndex {
                reason: format!(
                    "entry {i} ({}-{}) at {}+{} is not where the data continues ({next_position}) \
                     or runs past the data section (ends at {})",
                    e.topic, e.partition, e.position, e.len, footer.index_offset
                ),
            });
        }
        if version >= 2 {
            if e.external.is_some() && e.len != 0 {
                return Err(FormatError::BadIndex {
                    reason: format!(
                        "entry {i} ({}-{}): an external entry with {} bytes of its own",
                        e.topic, e.partition, e.len
                    ),
                });
            }
            check_offsets(
                e.record_count,
                e.base_offset,
                e.last_offset,
                u64::from(e.len),
                e.external.is_some(),
            )
            .map_err(|reason| FormatError::BadIndex {
                reason: format!("entry {i} ({}-{}): {reason}", e.topic, e.partition),
            })?;
        } else if e.last_offset < e.base_offset {
            return Err(FormatError::BadIndex {
                reason: format!(
                    "entry {i} ({}-{}): last offset {} before base offset {}",
                    e.topic, e.partition, e.last_offset, e.base_offset
                ),
            });
        }
        next_position = end.unwrap_or(next_position);
        entries.push(e);
    }
    if r.remaining() != 0 || next_position != footer.index_offset {
        return Err(FormatError::BadIndex {
            reason: format!(
                "{} bytes left after the last index entry; data ends at {next_position}, \
                 index starts at {}",
                r.remaining(),
                footer.index_offset
            ),
        });
    }
    Ok(ObjectIndex {
        header: parsed_header,
        version,
        footer: *footer,
        object_len,
        entries,
    })
}

/// Reads the external reference of a version 2 index entry: its key length
/// (0 = none), then the key, position, length and CRC, each checked.
fn decode_external(r: &mut Cursor<'_>, i: usize) -> Result<Option<ExternalRef>, FormatError> {
    let key_len = r.u16() as usize;
    if key_len == 0 {
        return Ok(None);
    }
    if key_len > EXTERNAL_KEY_LEN_MAX {
        return Err(FormatError::BadIndex {
            reason: format!(
                "entry {i}: external key of {key_len} bytes, more than {EXTERNAL_KEY_LEN_MAX}"
            ),
        });
    }
    if r.remaining() < key_len + EXTERNAL_REF_FIXED_LEN {
        return Err(FormatError::Truncated {
            what: "external reference",
            needed: (key_len + EXTERNAL_REF_FIXED_LEN) as u64,
            available: r.remaining() as u64,
        });
    }
    let key = std::str::from_utf8(r.take(key_len)).map_err(|_| FormatError::BadIndex {
        reason: format!("entry {i}: external key is not UTF-8"),
    })?;
    let ext = ExternalRef {
        key: Arc::from(key),
        position: r.u64(),
        len: r.u32(),
        crc: r.u32(),
    };
    ext.check().map_err(|reason| FormatError::BadIndex {
        reason: format!("entry {i}: {reason}"),
    })?;
    Ok(Some(ext))
}

/// Decodes a whole object held in memory and checks every CRC.
pub fn decode_object(object: &[u8]) -> Result<ObjectIndex, FormatError> {
    let len = object.len() as u64;
    let footer = Footer::decode(object, len)?;
    let index_range = footer.index_range();
    let index = decode_index(
        object,
        &object[index_range.start as usize..index_range.end as usize],
        &footer,
        len,
    )?;
    for e in &index.entries {
        let r = e.range();
        verify_entry(e, &object[r.start as usize..r.end as usize])?;
    }
    Ok(index)
}

/// Checks an entry's data against its index entry (length and CRC32C).
pub fn verify_entry(entry: &IndexEntry, data: &[u8]) -> Result<(), FormatError> {
    if data.len() != entry.len as usize {
        return Err(FormatError::Truncated {
            what: "entry data",
            needed: u64::from(entry.len),
            available: data.len() as u64,
        });
    }
    check_crc(entry, crc32c::crc32c(data))
}

fn check_crc(entry: &IndexEntry, computed: u32) -> Result<(), FormatError> {
    if computed != entry.crc {
        return Err(FormatError::ChecksumMismatch {
            what: format!(
                "data of {}-{} offsets {}..={}",
                entry.topic, entry.partition, entry.base_offset, entry.last_offset
            ),
            stored: entry.crc,
            computed,
        });
    }
    Ok(())
}

/// Reads fixed-width little-endian fields. Callers check lengths first.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N));
        a
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
    fn i16(&mut self) -> i16 {
        i16::from_le_bytes(self.array())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(topic: &str, partition: i32, base: i64, segs: &[&[u8]]) -> WalEntry {
        WalEntry {
            data_crc: None,
            topic: Arc::from(topic),
            topic_id: [7; 16],
            partition,
            base_offset: base,
            last_offset: base + 9,
            record_count: 10,
            max_timestamp: 1_700_000_000_000 + base,
            producer: ProducerFields {
                id: base,
                epoch: 3,
                first_sequence: partition,
                last_sequence: partition + 9,
            },
            data: segs.iter().map(|s| Bytes::copy_from_slice(s)).collect(),
            leader_epoch: 5,
            external: None,
        }
    }

    fn build(entries: &[WalEntry]) -> EncodedObject {
        let mut b = ObjectBuilder::new(ObjectHeader {
            node_id: 7,
            seq: 42,
            created_ms: 1_700_000_000_123,
        });
        for e in entries {
            b.push(e).unwrap();
        }
        b.finish().unwrap()
    }

    fn sample() -> EncodedObject {
        build(&[
            entry("orders", 0, 100, &[b"abc", b"", b"defgh"]),
            entry("orders", 0, 110, &[b"second batch of orders-0"]),
            entry("clicks", 3, 0, &[b"x"]),
            entry("orders", 1, 5, &[&[0u8; 300], &[1u8; 17]]),
        ])
    }

    #[test]
    fn round_trip_keeps_header_entries_and_data() {
        let obj = sample();
        obj.verify().unwrap();
        let bytes = obj.to_bytes();
        assert_eq!(bytes.len() as u64, obj.len());
        assert_eq!(obj.payload().content_length() as u64, obj.len());
        let index = decode_object(&bytes).unwrap();
        assert_eq!(index, obj.index);
        assert_eq!(index.header.node_id, 7);
        assert_eq!(index.header.seq, 42);
        assert_eq!(index.header.created_ms, 1_700_000_000_123);
        let e0 = &index.entries[0];
        assert_eq!(
            &bytes[e0.range().start as usize..e0.range().end as usize],
            b"abcdefgh"
        );
        assert_eq!(e0.crc, crc32c::crc32c(b"abcdefgh"));
        let run = index.partition_entries("orders", 0);
        assert_eq!(run.len(), 2);
        assert_eq!(run[1].base_offset, 110);
        assert_eq!(index.partition_range("orders", 0), Some(32..32 + 8 + 24));
        assert!(index.partition_entries("orders", 9).is_empty());
        assert_eq!(index.partition_range("nope", 0), None);
    }

    #[test]
    fn empty_object_round_trips() {
        let obj = build(&[]);
        obj.verify().unwrap();
        let index = decode_object(&obj.to_bytes()).unwrap();
        assert!(index.entries.is_empty());
        assert_eq!(obj.len(), (HEADER_LEN + 4 + FOOTER_LEN) as u64);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = sample().to_bytes();
        for byte in 0..bytes.len() {
            for bit in [0u8, 3, 7] {
                let mut bad = bytes.to_vec();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode_object(&bad).is_err(),
                    "flip of bit {bit} in byte {byte} (of {}) went unnoticed",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn bit_flips_name_the_damaged_part() {
        let obj = sample();
        let bytes = obj.to_bytes();
        let flip = |at: usize| {
            let mut bad = bytes.to_vec();
            bad[at] ^= 0x10;
            decode_object(&bad).unwrap_err()
        };
        // Header (node id): caught by the header+index CRC.
        assert!(
            matches!(flip(13), FormatError::ChecksumMismatch { ref what, .. } if what == "header and index")
        );
        // Data of the first entry: caught by the entry CRC, named by partition.
        assert!(
            matches!(flip(HEADER_LEN + 1), FormatError::ChecksumMismatch { ref what, .. } if what.contains("orders-0"))
        );
        // Index.
        let index_at = obj.index.footer.index_offset as usize + 10;
        assert!(matches!(
            flip(index_at),
            FormatError::ChecksumMismatch { .. }
        ));
        // Footer magic.
        assert_eq!(
            flip(bytes.len() - 1),
            FormatError::BadMagic { what: "footer" }
        );
        // Footer index offset: the index no longer ends where the footer starts.
        assert!(matches!(
            flip(bytes.len() - FOOTER_LEN),
            FormatError::BadIndex { .. }
        ));
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            assert!(
                decode_object(&bytes[..len]).is_err(),
                "truncation to {len} went unnoticed"
            );
        }
        // Bytes appended after the footer make it unreadable too.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"junk");
        assert!(decode_object(&longer).is_err());
    }

    #[test]
    fn version_and_flags_are_checked() {
        let mut h = ObjectHeader {
            node_id: 1,
            seq: 2,
            created_ms: 3,
        }
        .encode();
        h[8] = 3;
        assert_eq!(
            ObjectHeader::decode(&h),
            Err(FormatError::UnsupportedVersion {
                version: 3,
                supported: 2
            })
        );
        h[8] = 0;
        assert!(ObjectHeader::decode(&h).is_err());
        h[8] = 1;
        assert_eq!(ObjectHeader::decode_versioned(&h).map(|(_, v)| v), Ok(1));
        let mut h = ObjectHeader {
            node_id: 1,
            seq: 2,
            created_ms: 3,
        }
        .encode();
        h[10] = 1;
        assert_eq!(
            ObjectHeader::decode(&h),
            Err(FormatError::UnknownFlags { flags: 1 })
        );
    }

    #[test]
    fn a_huge_entry_count_is_refused_before_allocating() {
        let obj = build(&[entry("t", 0, 0, &[b"a"])]);
        let mut index = obj.segments[obj.segments.len() - 2].to_vec();
        index[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let header = &obj.segments[0];
        let footer = Footer {
            crc: crc32c::crc32c_append(crc32c::crc32c(header), &index),
            ..obj.index.footer
        };
        let err = decode_index(header, &index, &footer, obj.len()).unwrap_err();
        assert!(matches!(err, FormatError::BadIndex { .. }), "{err}");
    }

    #[test]
    fn verify_catches_a_wrong_crc_before_upload() {
        let mut obj = sample();
        obj.index.entries[1].crc ^= 1;
        assert!(obj.verify().is_err());
    }

    #[test]
    fn entry_check_refuses_what_the_format_cannot_hold() {
        let mut e = entry("t", 0, 10, &[b"a"]);
        e.last_offset = 9;
        assert!(e.check().unwrap_err().contains("before base offset"));
        let e = entry("", 0, 10, &[b"a"]);
        assert!(e.check().is_err());
        let e = entry(&"x".repeat(TOPIC_LEN_MAX + 1), 0, 10, &[b"a"]);
        assert!(e.check().is_err());
    }

    fn ext(key: &str, position: u64, len: u32) -> ExternalRef {
        ExternalRef {
            key: Arc::from(key),
            position,
            len,
            crc: 0xfeed_0000 ^ len,
        }
    }

    fn external_entry(topic: &str, partition: i32, base: i64, epoch: i32) -> WalEntry {
        WalEntry {
            data_crc: None,
            data: Vec::new(),
            leader_epoch: epoch,
            external: Some(ext(
                "handoff/3/00000000000000000007.wal",
                32 + base as u64,
                61,
            )),
            ..entry(topic, partition, base, &[])
        }
    }

    /// A v2 object with every kind of entry: data, external, marker.
    fn sample_v2() -> EncodedObject {
        build(&[
            WalEntry::epoch_marker(Arc::from("orders"), [7; 16], 0, 4, 100, 9),
            entry("orders", 0, 100, &[b"abc", b"defgh"]),
            external_entry("orders", 0, 110, 4),
            entry("orders", 0, 120, &[b"after the external one"]),
            external_entry("clicks", 3, 0, 2),
            WalEntry::epoch_marker(Arc::from("clicks"), [7; 16], 3, 6, 10, 9),
        ])
    }

    /// Version 1 as older builds wrote it, encoded here by hand from the
    /// layout, independently of the builder.
    fn encode_v1(node_id: u32, seq: u64, entries: &[WalEntry]) -> Vec<u8> {
        let mut header = Vec::new();
        header.extend_from_slice(b"FERRYWAL");
        header.extend_from_slice(&1u16.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes());
        header.extend_from_slice(&node_id.to_le_bytes());
        header.extend_from_slice(&seq.to_le_bytes());
        header.extend_from_slice(&1_600_000_000_000u64.to_le_bytes());
        let mut data = Vec::new();
        let mut index = Vec::new();
        index.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            let bytes: Vec<u8> = e.data.iter().flat_map(|s| s.iter().copied()).collect();
            let position = (32 + data.len()) as u64;
            index.extend_from_slice(&(e.topic.len() as u16).to_le_bytes());
            index.extend_from_slice(e.topic.as_bytes());
            index.extend_from_slice(&e.topic_id);
            index.extend_from_slice(&e.partition.to_le_bytes());
            index.extend_from_slice(&e.base_offset.to_le_bytes());
            index.extend_from_slice(&e.last_offset.to_le_bytes());
            index.extend_from_slice(&position.to_le_bytes());
            index.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            index.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
            index.extend_from_slice(&e.record_count.to_le_bytes());
            index.extend_from_slice(&e.max_timestamp.to_le_bytes());
            index.extend_from_slice(&e.producer.id.to_le_bytes());
            index.extend_from_slice(&e.producer.epoch.to_le_bytes());
            index.extend_from_slice(&e.producer.first_sequence.to_le_bytes());
            index.extend_from_slice(&e.producer.last_sequence.to_le_bytes());
            data.extend_from_slice(&bytes);
        }
        let index_offset = (32 + data.len()) as u64;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header), &index);
        let mut out = header;
        out.extend_from_slice(&data);
        out.extend_from_slice(&index);
        out.extend_from_slice(&index_offset.to_le_bytes());
        out.extend_from_slice(&(index.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(b"FERRYEND");
        out
    }

    /// Decodes `obj` with its index bytes changed by `edit`, the footer's
    /// CRC and length made to match, so that only the entry checks decide.
    fn decode_edited(
        obj: &EncodedObject,
        edit: impl FnOnce(&mut Vec<u8>),
    ) -> Result<ObjectIndex, FormatError> {
        let mut index = obj.segments[obj.segments.len() - 2].to_vec();
        edit(&mut index);
        let header = &obj.segments[0];
        let footer = Footer {
            index_len: index.len() as u32,
            crc: crc32c::crc32c_append(crc32c::crc32c(header), &index),
            ..obj.index.footer
        };
        let object_len = footer.index_offset + index.len() as u64 + FOOTER_LEN as u64;
        decode_index(header, &index, &footer, object_len)
    }

    /// Where the external key length of the first entry (topic `topic_len`
    /// bytes long) is in the index.
    fn ext_key_len_at(topic_len: usize) -> usize {
        4 + INDEX_ENTRY_FIXED_LEN + topic_len + 4
    }

    #[test]
    fn version_1_objects_still_decode() {
        let entries = [
            entry("orders", 0, 100, &[b"abc", b"defgh"]),
            entry("clicks", 3, 0, &[b"x"]),
        ];
        let bytes = encode_v1(9, 77, &entries);
        let index = decode_object(&bytes).unwrap();
        assert_eq!(index.version, 1);
        assert_eq!((index.header.node_id, index.header.seq), (9, 77));
        assert_eq!(index.entries.len(), 2);
        for (e, ie) in entries.iter().zip(&index.entries) {
            assert_eq!(ie.leader_epoch, 0, "a v1 entry reads as epoch 0");
            assert_eq!(ie.external, None);
            assert!(!ie.is_epoch_marker());
            assert_eq!(
                (&*ie.topic, ie.partition, ie.base_offset, ie.last_offset),
                (&*e.topic, e.partition, e.base_offset, e.last_offset)
            );
            assert_eq!(ie.producer, e.producer);
        }
        let e0 = &index.entries[0];
        assert_eq!(
            &bytes[e0.range().start as usize..e0.range().end as usize],
            b"abcdefgh"
        );
        // And every truncation of it is refused, as for v2.
        for len in 0..bytes.len() {
            assert!(
                decode_object(&bytes[..len]).is_err(),
                "v1 truncated to {len}"
            );
        }
        // The same entries written now are version 2 and keep their epoch.
        let now = decode_object(&build(&entries).to_bytes()).unwrap();
        assert_eq!(now.version, FORMAT_VERSION);
        assert_eq!(now.entries[0].leader_epoch, 5);
    }

    #[test]
    fn version_2_round_trips_external_entries_and_markers() {
        let obj = sample_v2();
        obj.verify().unwrap();
        let bytes = obj.to_bytes();
        let index = decode_object(&bytes).unwrap();
        assert_eq!(index, obj.index);
        assert_eq!(index.version, 2);
        let kinds: Vec<_> = index
            .entries
            .iter()
            .map(|e| {
                (
                    e.base_offset,
                    e.leader_epoch,
                    e.is_epoch_marker(),
                    e.external.is_some(),
                    e.len,
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (100, 4, true, false, 0),
                (100, 5, false, false, 8),
                (110, 4, false, true, 0),
                (120, 5, false, false, 22),
                (0, 2, false, true, 0),
                (10, 6, true, false, 0),
            ]
        );
        let x = index.entries[2].external.as_ref().unwrap();
        assert_eq!(*x, ext("handoff/3/00000000000000000007.wal", 142, 61));
        assert_eq!(x.range(), 142..203);
        assert_eq!(index.entries[0].last_offset, 99);
        // Data entries around the data-less ones still lie back to back.
        let e3 = &index.entries[3];
        assert_eq!(
            &bytes[e3.range().start as usize..e3.range().end as usize],
            b"after the external one"
        );
        assert_eq!(index.partition_entries("orders", 0).len(), 4);
    }

    #[test]
    fn entry_check_knows_markers_and_external_entries() {
        let m = WalEntry::epoch_marker(Arc::from("t"), [1; 16], 0, 3, 50, 0);
        assert!(m.is_epoch_marker());
        m.check().unwrap();
        // No records but not a marker's shape: refused.
        let mut bad = m.clone();
        bad.last_offset = 50;
        assert!(bad.check().unwrap_err().contains("epoch marker"));
        let mut bad = m.clone();
        bad.data = vec![Bytes::from_static(b"x")];
        assert!(bad.check().is_err());
        let mut bad = m.clone();
        bad.external = Some(ext("h/1", 0, 5));
        assert!(bad.check().is_err());
        let bad = WalEntry::epoch_marker(Arc::from("t"), [1; 16], 0, 3, i64::MIN, 0);
        assert!(bad.check().is_err(), "no offset before i64::MIN");
        // An external entry carries no data, and its reference must be sane.
        let x = external_entry("t", 0, 10, 1);
        x.check().unwrap();
        let mut bad = x.clone();
        bad.data = vec![Bytes::from_static(b"x")];
        assert!(bad.check().unwrap_err().contains("no data"));
        for key in ["", "a//b", "../x", "a/./b", "trailing/"] {
            let mut bad = x.clone();
            bad.external = Some(ext(key, 0, 5));
            assert!(bad.check().is_err(), "key {key:?}");
        }
        let mut bad = x.clone();
        bad.external = Some(ext(&"k".repeat(EXTERNAL_KEY_LEN_MAX + 1), 0, 5));
        assert!(bad.check().is_err());
        let mut bad = x.clone();
        bad.external = Some(ext("h/1", 0, 0));
        assert!(bad.check().is_err());
        let mut bad = x.clone();
        bad.external = Some(ext("h/1", u64::MAX, 5));
        assert!(bad.check().is_err());
        // The builder refuses what check refuses.
        let mut b = ObjectBuilder::new(ObjectHeader {
            node_id: 1,
            seq: 1,
            created_ms: 1,
        });
        let mut bad = x;
        bad.data = vec![Bytes::from_static(b"x")];
        assert!(b.push(&bad).is_err());
    }

    #[test]
    fn hostile_v2_indexes_are_refused() {
        // One external entry of topic "t" and nothing else: the index is
        // 4 + 90 + 1 + 16 + key bytes.
        let key = "handoff/3/00000000000000000007.wal";
        let obj = build(&[external_entry("t", 0, 5, 1)]);
        decode_edited(&obj, |_| {}).unwrap();
        let at = ext_key_len_at(1);
        let set_len = |i: &mut Vec<u8>, n: u16| i[at..at + 2].copy_from_slice(&n.to_le_bytes());

        // A key length past the end of the index.
        let err = decode_edited(&obj, |i| set_len(i, key.len() as u16 + 100)).unwrap_err();
        assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
        // A key length over the bound, whatever follows.
        let err = decode_edited(&obj, |i| set_len(i, u16::MAX)).unwrap_err();
        assert!(matches!(err, FormatError::BadIndex { .. }), "{err}");
        // A shorter key length: the rest no longer adds up.
        assert!(decode_edited(&obj, |i| set_len(i, 3)).is_err());
        // A key that is not UTF-8.
        let err = decode_edited(&obj, |i| i[at + 2] = 0xff).unwrap_err();
        assert!(
            matches!(err, FormatError::BadIndex { ref reason } if reason.contains("UTF-8")),
            "{err}"
        );
        // A key that is not an object path.
        let err = decode_edited(&obj, |i| i[at + 2..at + 5].copy_from_slice(b"../")).unwrap_err();
        assert!(matches!(err, FormatError::BadIndex { .. }), "{err}");
        // An external length of 0.
        let len_at = at + 2 + key.len() + 8;
        let err = decode_edited(&obj, |i| {
            i[len_at..len_at + 4].copy_from_slice(&0u32.to_le_bytes())
        })
        .unwrap_err();
        assert!(matches!(err, FormatError::BadIndex { .. }), "{err}");
        // An external range that overflows.
        let pos_at = at + 2 + key.len();
        let err = decode_edited(&obj, |i| {
            i[pos_at..pos_at + 8].copy_from_slice(&u64::MAX.to_le_bytes())
        })
        .unwrap_err();
        assert!(matches!(err, FormatError::BadIndex { .. }), "{err}");
        // No records but offsets that are not a marker's.
        let rc_at = 4 + 2 + 1 + 16 + 4 + 8 + 8 + 8 + 4 + 4;
        let err = decode_edited(&obj, |i| {
            i[rc_at..rc_at + 4].copy_from_slice(&0u32.to_le_bytes())
        })
        .unwrap_err();
        assert!(
            matches!(err, FormatError::BadIndex { ref reason } if reason.contains("marker")),
            "{err}"
        );
        // Every truncation of the index, with a footer that agrees with it.
        let full = obj.segments[obj.segments.len() - 2].len();
        for cut in 4..full {
            assert!(
                decode_edited(&obj, |i| i.truncate(cut)).is_err(),
                "index cut to {cut} of {full} bytes went unnoticed"
            );
        }
        // Bytes added after the last entry.
        assert!(decode_edited(&obj, |i| i.extend_from_slice(&[0, 0])).is_err());

        // An external entry claiming bytes of its own in the WAL object:
        // build it with data, then mark it external in the index.
        let with_data = build(&[entry("t", 0, 5, &[b"abcd"])]);
        let err = decode_edited(&with_data, |i| {
            i.truncate(i.len() - 2);
            i.extend_from_slice(&(3u16).to_le_bytes());
            i.extend_from_slice(b"h/x");
            i.extend_from_slice(&0u64.to_le_bytes());
            i.extend_from_slice(&4u32.to_le_bytes());
            i.extend_from_slice(&0u32.to_le_bytes());
        })
        .unwrap_err();
        assert!(
            matches!(err, FormatError::BadIndex { ref reason } if reason.contains("external")),
            "{err}"
        );

        // A marker with bytes: build a data entry, then make it a marker.
        let err = decode_edited(&with_data, |i| {
            let at = 4 + 2 + 1 + 16 + 4;
            i[at + 8..at + 16].copy_from_slice(&4i64.to_le_bytes()); // last = base - 1
            i[at + 32..at + 36].copy_from_slice(&0u32.to_le_bytes()); // no records
        })
        .unwrap_err();
        assert!(
            matches!(err, FormatError::BadIndex { ref reason } if reason.contains("marker")),
            "{err}"
        );
    }

    #[test]
    fn every_bit_flip_and_truncation_of_a_v2_object_is_detected() {
        let bytes = sample_v2().to_bytes();
        for byte in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[byte] ^= 0x04;
            assert!(decode_object(&bad).is_err(), "flip in byte {byte}");
        }
        for len in 0..bytes.len() {
            assert!(decode_object(&bytes[..len]).is_err(), "truncation to {len}");
        }
    }

    proptest! {
        #[test]
        fn any_entries_round_trip(
            entries in proptest::collection::vec(
                ("[a-z]{1,20}", 0i32..8, 0i64..1_000_000, proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4)),
                0..12,
            )
        ) {
            let entries: Vec<WalEntry> = entries
                .into_iter()
                .map(|(t, p, base, segs)| WalEntry {
                    data_crc: None,
                    topic: Arc::from(t.as_str()),
                    topic_id: [p as u8; 16],
                    partition: p,
                    base_offset: base,
                    last_offset: base + 3,
                    record_count: 4,
                    max_timestamp: base,
                    producer: ProducerFields { id: base, epoch: p as i16, first_sequence: p, last_sequence: p + 3 },
                    data: segs.into_iter().map(Bytes::from).collect(),
                    leader_epoch: p,
                    external: None,
                })
                .collect();
            let obj = build(&entries);
            prop_assert!(obj.verify().is_ok());
            let bytes = obj.to_bytes();
            let index = decode_object(&bytes).unwrap();
            prop_assert_eq!(index.entries.len(), entries.len());
            for (e, ie) in entries.iter().zip(&index.entries) {
                let want: Vec<u8> = e.data.iter().flat_map(|s| s.iter().copied()).collect();
                let r = ie.range();
                prop_assert_eq!(&bytes[r.start as usize..r.end as usize], &want[..]);
                prop_assert_eq!(&*ie.topic, &*e.topic);
                prop_assert_eq!(ie.base_offset, e.base_offset);
            }
        }

        /// Any index bytes whose CRC matches (a writer's bug, or a
        /// store that returns other bytes with a matching CRC) decode or
        /// fail cleanly: never a panic, never an allocation beyond the index.
        #[test]
        fn random_v2_index_bytes_with_a_valid_crc_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let obj = sample_v2();
            let _ = decode_edited(&obj, |i| {
                for (at, v) in edits {
                    let n = i.len();
                    i[at % n] = v;
                }
                let keep = 4 + cut % (i.len() - 3);
                i.truncate(keep);
            });
        }

        #[test]
        fn any_v2_entries_round_trip(
            entries in proptest::collection::vec(
                (0i32..4, 1i64..1_000_000, -1i32..100, 0u8..3, proptest::collection::vec(any::<u8>(), 0..40), "[a-z0-9]{1,12}(/[a-z0-9]{1,12}){0,3}", any::<u64>(), 1u32..u32::MAX),
                0..12,
            )
        ) {
            let entries: Vec<WalEntry> = entries
                .into_iter()
                .map(|(p, base, epoch, kind, data, key, pos, len)| match kind {
                    0 => WalEntry { leader_epoch: epoch, ..entry("t", p, base, &[&data]) },
                    1 => WalEntry {
                        data_crc: None,
                        data: Vec::new(),
                        leader_epoch: epoch,
                        external: Some(ExternalRef { key: Arc::from(key.as_str()), position: pos / 2, len, crc: len ^ 7 }),
                        ..entry("t", p, base, &[])
                    },
                    _ => WalEntry::epoch_marker(Arc::from("t"), [1; 16], p, epoch, base, 0),
                })
                .collect();
            let obj = build(&entries);
            prop_assert!(obj.verify().is_ok());
            let index = decode_object(&obj.to_bytes()).unwrap();
            prop_assert_eq!(index.entries.len(), entries.len());
            for (e, ie) in entries.iter().zip(&index.entries) {
                prop_assert_eq!(ie.leader_epoch, e.leader_epoch);
                prop_assert_eq!(&ie.external, &e.external);
                prop_assert_eq!(ie.is_epoch_marker(), e.is_epoch_marker());
                prop_assert_eq!((ie.base_offset, ie.last_offset), (e.base_offset, e.last_offset));
                prop_assert_eq!(u64::from(ie.len), e.data_len() as u64);
            }
        }

        #[test]
        fn random_damage_never_panics(seed in any::<u64>(), cut in any::<usize>(), at in any::<usize>()) {
            let bytes = if seed % 2 == 0 { sample() } else { sample_v2() }.to_bytes().to_vec();
            let mut bad = bytes.clone();
            let at = at % bad.len();
            bad[at] = bad[at].wrapping_add((seed % 255 + 1) as u8);
            let cut = cut % (bad.len() + 1);
            prop_assert!(decode_object(&bad).is_err());
            let _ = decode_object(&bad[..cut]);
        }
    }
}
