//! One partition's log, owned by exactly one shard.
//!
//! Batches arrive as views of request frames. The shard checks each one
//! (magic, CRC32C, client-batch rules, producer sequence), assigns offsets,
//! and keeps the batch as two `Bytes`: a new 16-byte head (base offset, batch
//! length, leader epoch: the fields outside the CRC) and the rest of the batch
//! as sent. Nothing is copied. The same two segments go to the WAL and, later,
//! into fetch responses.
//!
//! The high watermark moves when the WAL object holding a batch is in the
//! bucket. WAL objects are written strictly in order and retried until they
//! land, so every batch below a durable one is durable too.

pub use crate::storage::durable::LogBatch;
use crate::storage::durable::{AppendEntry, Location, ProducerFields};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::records::{RecordBatch, RecordBatches, RecordsError};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How many recent batches per producer are remembered for duplicate
/// detection, as Kafka does.
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

/// The header fields of a batch that placing it needs: from the batch
/// itself, or from a proxy's handoff commit (the leader never sees those
/// bytes on the way in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub records_count: i32,
    /// The batch's length in bytes.
    pub len: u32,
}

impl BatchMeta {
    pub fn of(b: &RecordBatch) -> BatchMeta {
        BatchMeta {
            producer_id: b.producer_id(),
            producer_epoch: b.producer_epoch(),
            base_sequence: b.base_sequence(),
            last_offset_delta: b.last_offset_delta(),
            max_timestamp: b.max_timestamp(),
            records_count: b.records_count(),
            len: b.as_bytes().len() as u32,
        }
    }

    /// The checks of a produced batch's header
    /// ([`RecordBatch::check_produce_header`]) that these fields allow: at
    /// least one record, `lastOffsetDelta` one less than the record count
    /// (so a negative or overflowing delta never moves a partition's
    /// offsets), and a sequence where there is a producer id.
    pub fn check_for_produce(&self) -> Result<(), RecordsError> {
        let reject = |reason: String| Err(RecordsError::InvalidForProduce(reason));
        if self.records_count <= 0
            || i64::from(self.last_offset_delta) + 1 != i64::from(self.records_count)
        {
            return reject(format!(
                "lastOffsetDelta {} with recordsCount {}",
                self.last_offset_delta, self.records_count
            ));
        }
        if self.producer_id >= 0 && self.base_sequence < 0 {
            return reject(format!(
                "baseSequence {} with producerId {}",
                self.base_sequence, self.producer_id
            ));
        }
        Ok(())
    }

    /// The last sequence number, wrapping as Kafka's do (-1: none).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let next = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if next > i64::from(i32::MAX) {
            (next - i64::from(i32::MAX) - 1) as i32
        } else {
            next as i32
        }
    }
}

/// Where an appended batch's bytes are.
#[derive(Debug, Clone)]
pub enum Payload {
    /// In hand: the batch as the client sent it.
    Local(Bytes),
    /// In another object already (a proxy's handoff object), with the
    /// batch's bytes when the leader has read them back (then they go into
    /// the log cache, so fetches do not read them again).
    External(Location, Option<Bytes>),
}

#[derive(Debug, Clone, Default)]
struct ProducerState {
    epoch: i16,
    /// (first sequence, last sequence, base offset) of recent batches.
    recent: VecDeque<(i32, i32, i64)>,
}

/// What appending one batch came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// A new batch at these offsets; wait for the WAL before answering.
    New {
        base_offset: i64,
        entry_index: usize,
    },
    /// A retry of a batch already in the log: answer with its offset.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("{0}")]
    Records(#[from] RecordsError),
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// A batch past the next one expected of a producer this partition
    /// knows at this epoch: an earlier batch of it was refused (while the
    /// partition was loading, say) and will come again.
    #[error("producer {producer_id}: sequence {got} is ahead of {expected}; send the earlier batches first")]
    Ahead {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id}: epoch {got} is older than {current}")]
    Fenced {
        producer_id: i64,
        current: i16,
        got: i16,
    },
}

impl AppendError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AppendError::Records(e) => e.produce_error_code(),
            AppendError::OutOfOrder { .. } => ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
            // Not Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER: on that, librdkafka
            // bumps the producer's epoch and numbers every batch not yet
            // acknowledged again from 0, a batch an earlier attempt wrote
            // (its answer lost when a leader died) included, which the
            // partition then takes a second time. LEADER_NOT_AVAILABLE is
            // "not persisted, retry": the client sends the missing batch
            // first, which is taken or found a duplicate, then this one.
            AppendError::Ahead { .. } => ErrorCode::LEADER_NOT_AVAILABLE,
            AppendError::Fenced { .. } => ErrorCode::INVALID_PRODUCER_EPOCH,
        }
    }
}

#[derive(Debug)]
pub struct PartitionLog {
    pub topic: Arc<str>,
    /// The id of the topic this log belongs to; a topic created again under
    /// the same name has another id and another log.
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub leader_epoch: i32,
    log_start: i64,
    next_offset: i64,
    high_watermark: i64,
    /// Every batch from `log_start`, in offset order.
    batches: VecDeque<LogBatch>,
    /// Index in `batches` of the front element, so entries can be named by a
    /// stable number while old ones are trimmed.
    front_index: usize,
    producers: HashMap<i64, ProducerState>,
    /// Bumped each time a failed write rolls the log back, so a late report
    /// about an older write cannot roll back batches appended since.
    generation: u64,
}

impl PartitionLog {
    pub fn new(topic: Arc<str>, topic_id: [u8; 16], partition: i32) -> PartitionLog {
        PartitionLog {
            topic,
            topic_id,
            partition,
            leader_epoch: 0,
            log_start: 0,
            next_offset: 0,
            high_watermark: 0,
            batches: VecDeque::new(),
            front_index: 0,
            producers: HashMap::new(),
            generation: 0,
        }
    }

    /// The current write generation (see [`PartitionLog::fail_from`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn log_start(&self) -> i64 {
        self.log_start
    }

    pub fn log_end(&self) -> i64 {
        self.next_offset
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Checks every batch of a produce request before any is appended: a
    /// request is all or nothing per partition, as in Kafka.
    pub fn check(records: &Bytes) -> Result<Vec<RecordBatch>, AppendError> {
        let mut out = Vec::new();
        for b in RecordBatches::new(records.clone()) {
            let b = b?;
            b.check_produce_header()?;
            b.verify_crc()?;
            b.compression()?;
            out.push(b);
        }
        if out.is_empty() {
            return Err(RecordsError::InvalidForProduce("no record batch".into()).into());
        }
        Ok(out)
    }

    /// Checks the producer sequences of several batches bound for this
    /// partition in one request, as if each were appended in turn, without
    /// changing anything: a request is all or nothing per partition, as in
    /// Kafka, so a later batch's sequence error must refuse the earlier ones.
    pub fn check_sequences(&self, batches: &[RecordBatch]) -> Result<(), AppendError> {
        let metas: Vec<BatchMeta> = batches.iter().map(BatchMeta::of).collect();
        self.check_sequences_meta(&metas)
    }

    /// [`PartitionLog::check_sequences`] from header fields.
    pub fn check_sequences_meta(&self, batches: &[BatchMeta]) -> Result<(), AppendError> {
        // Each producer as the appends so far would leave it.
        let mut sim: HashMap<i64, SimulatedProducer> = HashMap::new();
        for b in batches {
            let pid = b.producer_id;
            if pid < 0 {
                continue;
            }
            let (epoch, first, last) = (b.producer_epoch, b.base_sequence, b.last_sequence());
            let st = sim
                .entry(pid)
                .or_insert_with(|| match self.producers.get(&pid) {
                    Some(p) => SimulatedProducer {
                        epoch: p.epoch,
                        recent: p.recent.iter().map(|&(f, l, _)| (f, l)).collect(),
                        from_log: p.recent.len(),
                    },
                    None => SimulatedProducer {
                        epoch,
                        recent: Vec::new(),
                        from_log: 0,
                    },
                });
            if epoch < st.epoch {
                return Err(AppendError::Fenced {
                    producer_id: pid,
                    current: st.epoch,
                    got: epoch,
                });
            }
            if epoch > st.epoch {
                *st = SimulatedProducer {
                    epoch,
                    recent: Vec::new(),
                    from_log: 0,
                };
            }
            if st.recent.contains(&(first, last)) {
                continue;
            }
            // As `append_meta` checks it: a producer or epoch new here
            // starts at sequence 0.
            let expected = match st.recent.last() {
                Some(&(_, i32::MAX)) | None => 0,
                Some(&(_, prev_last)) => prev_last + 1,
            };
            if first != expected {
                // Ahead of the log's last batch, a missing batch may come
                // again; ahead of one in this same request, it will not.
                let known = !st.recent.is_empty() && st.recent.len() == st.from_log;
                return Err(sequence_error(known, pid, expected, first));
            }
            st.recent.push((first, last));
        }
        Ok(())
    }

    /// Appends one checked batch: duplicate check, offsets, and the WAL entry
    /// to write.
    pub fn append(
        &mut self,
        batch: &RecordBatch,
    ) -> Result<(Appended, Option<AppendEntry>), AppendError> {
        self.append_meta(
            &BatchMeta::of(batch),
            Payload::Local(batch.as_bytes().clone()),
        )
    }

    /// Appends one batch given its header fields: its bytes (`Local`), or
    /// where a proxy put them (`External`: a handoff object's range, whose
    /// batch header still has the producer's base offset).
    pub fn append_meta(
        &mut self,
        batch: &BatchMeta,
        payload: Payload,
    ) -> Result<(Appended, Option<AppendEntry>), AppendError> {
        // Every caller checked the header already (a client's batch, or a
        // proxy's fields); this keeps the offsets dense whatever comes.
        batch.check_for_produce()?;
        let pid = batch.producer_id;
        if pid >= 0 {
            let epoch = batch.producer_epoch;
            let first = batch.base_sequence;
            let last = batch.last_sequence();
            // Nothing changes until the batch is appended: a refused batch
            // (even one of a new epoch) leaves the producer's state as it was,
            // and made-up ids leave none.
            let recent = match self.producers.get(&pid) {
                Some(st) if epoch < st.epoch => {
                    return Err(AppendError::Fenced {
                        producer_id: pid,
                        current: st.epoch,
                        got: epoch,
                    });
                }
                Some(st) if epoch == st.epoch => Some(&st.recent),
                // A new producer, or a new epoch: its sequence starts over.
                _ => None,
            };
            if let Some(&(_, _, base)) =
                recent.and_then(|r| r.iter().find(|(f, l, _)| *f == first && *l == last))
            {
                let last_offset = base + i64::from(batch.last_offset_delta);
                return Ok((
                    Appended::Duplicate {
                        base_offset: base,
                        last_offset,
                    },
                    None,
                ));
            }
            let expected = match recent.and_then(|r| r.back()) {
                Some(&(_, prev_last, _)) if prev_last == i32::MAX => 0,
                Some(&(_, prev_last, _)) => prev_last + 1,
                // A producer (or an epoch) new to this partition starts at
                // sequence 0, as Kafka requires. A later batch of it that
                // overtook its first one (refused while the partition was
                // loading, say) is refused too, and the client sends them
                // again in order; taken, it would make the first batch look
                // out of order, which librdkafka counts as already written.
                None => 0,
            };
            if first != expected {
                return Err(sequence_error(
                    recent.is_some_and(|r| !r.is_empty()),
                    pid,
                    expected,
                    first,
                ));
            }
        }
        let base = self.next_offset;
        let count = i64::from(batch.last_offset_delta) + 1;
        let last = base + count - 1;
        // The batch as the log holds it: a new 16-byte head (base offset,
        // length, leader epoch) in front of the rest, unchanged.
        let placed = |raw: &Bytes| {
            let mut head = BytesMut::with_capacity(16);
            head.put_i64(base);
            head.put_slice(&raw[8..12]);
            head.put_i32(self.leader_epoch);
            [head.freeze(), raw.slice(16..)]
        };
        let (segments, external, cached) = match payload {
            Payload::Local(raw) => {
                let segments = placed(&raw);
                (segments.clone(), None, Some(segments))
            }
            Payload::External(location, raw) => (
                [Bytes::new(), Bytes::new()],
                Some(location),
                raw.as_ref().map(placed),
            ),
        };
        let handoff = external.as_ref().map(|l| l.key.clone());
        let entry = AppendEntry {
            topic: self.topic.clone(),
            topic_id: self.topic_id,
            partition: self.partition,
            base_offset: base,
            last_offset: last,
            max_timestamp: batch.max_timestamp,
            record_count: batch.records_count,
            producer: if pid >= 0 {
                ProducerFields {
                    id: pid,
                    epoch: batch.producer_epoch,
                    first_sequence: batch.base_sequence,
                    last_sequence: batch.last_sequence(),
                }
            } else {
                ProducerFields::default()
            },
            segments,
            leader_epoch: self.leader_epoch,
            external,
        };
        self.next_offset = last + 1;
        let entry_index = self.front_index + self.batches.len();
        self.batches.push_back(LogBatch {
            base_offset: base,
            last_offset: last,
            max_timestamp: batch.max_timestamp,
            len: batch.len,
            data: cached,
            location: None,
            handoff,
        });
        if pid >= 0 {
            let st = self.producers.entry(pid).or_default();
            if st.epoch != batch.producer_epoch {
                // The first batch of a producer, or of its new epoch: its
                // epoch is the one later batches are checked against.
                st.epoch = batch.producer_epoch;
                st.recent.clear();
            }
            st.recent
                .push_back((batch.base_sequence, batch.last_sequence(), base));
            while st.recent.len() > PRODUCER_BATCHES_REMEMBERED {
                st.recent.pop_front();
            }
        }
        Ok((
            Appended::New {
                base_offset: base,
                entry_index,
            },
            Some(entry),
        ))
    }

    /// Records that the batch at `entry_index`, whose base offset is
    /// `base_offset`, is durable at `location`. A batch rolled back and
    /// replaced meanwhile is left alone.
    pub fn made_durable(&mut self, entry_index: usize, base_offset: i64, location: Location) {
        if let Some(b) = entry_index
            .checked_sub(self.front_index)
            .and_then(|i| self.batches.get_mut(i))
            .filter(|b| b.base_offset == base_offset && b.location.is_none())
        {
            b.location = Some(location);
            b.handoff = None;
            self.high_watermark = self.high_watermark.max(b.last_offset + 1);
        }
    }

    /// Where an empty log starts: a new leader's log whose history ends at
    /// `offset` (a newer epoch's start) though no batch is left before it.
    pub fn start_at(&mut self, offset: i64) {
        if self.batches.is_empty() && offset > self.next_offset {
            self.log_start = offset;
            self.next_offset = offset;
            self.high_watermark = offset;
        }
    }

    /// Adds a batch found in the bucket at recovery.
    pub fn recover(&mut self, b: LogBatch, producer: Option<(i64, i16, i32, i32)>) {
        if self.batches.is_empty() {
            self.log_start = b.base_offset;
        }
        self.next_offset = b.last_offset + 1;
        self.high_watermark = self.next_offset;
        if let Some((pid, epoch, first, last)) = producer {
            let st = self.producers.entry(pid).or_default();
            if epoch > st.epoch {
                st.epoch = epoch;
                st.recent.clear();
            }
            st.recent.push_back((first, last, b.base_offset));
            while st.recent.len() > PRODUCER_BATCHES_REMEMBERED {
                st.recent.pop_front();
            }
        }
        self.batches.push_back(b);
    }

    /// Index of the first batch holding offsets at or past `offset`.
    fn find(&self, offset: i64) -> usize {
        self.batches.partition_point(|b| b.last_offset < offset)
    }

    /// The batches to serve a fetch from `offset`, up to `max_bytes` (at
    /// least one batch, as KIP-74 asks) and below the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Vec<LogBatch> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut i = self.find(offset);
        while let Some(b) = self.batches.get(i) {
            if b.last_offset >= self.high_watermark {
                break;
            }
            if !out.is_empty() && bytes + b.len as usize > max_bytes {
                break;
            }
            bytes += b.len as usize;
            out.push(b.clone());
            i += 1;
        }
        out
    }

    /// Puts bytes read back from the bucket into the cache.
    pub fn fill(&mut self, base_offset: i64, data: [Bytes; 2]) {
        let i = self.find(base_offset);
        if let Some(b) = self.batches.get_mut(i) {
            if b.base_offset == base_offset && b.data.is_none() {
                b.data = Some(data);
            }
        }
    }

    /// Whether the batch at `base_offset` is here with its bytes cached
    /// (the shard's cache entry for it is still live).
    pub fn holds_cached(&self, base_offset: i64) -> bool {
        self.batches
            .get(self.find(base_offset))
            .is_some_and(|b| b.base_offset == base_offset && b.data.is_some())
    }

    /// Drops the cached bytes of the batch at `base_offset` if it is durable.
    /// `Some(false)`: not durable yet, kept; `None`: no such cached batch.
    pub fn evict(&mut self, base_offset: i64) -> Option<bool> {
        let i = self.find(base_offset);
        match self.batches.get_mut(i) {
            Some(b) if b.base_offset == base_offset && b.data.is_some() => {
                if b.location.is_none() {
                    return Some(false);
                }
                b.data = None;
                Some(true)
            }
            _ => None,
        }
    }

    /// After the WAL failed to store the batch at `base_offset`: forgets it
    /// and every later batch (none of them was acknowledged, since
    /// acknowledgements follow object order), so the offsets are assigned
    /// again and stay dense.
    pub fn fail_from(&mut self, base_offset: i64, generation: u64) {
        if generation != self.generation {
            return;
        }
        self.generation += 1;
        let i = self.find(base_offset);
        if i >= self.batches.len() {
            return;
        }
        self.batches.truncate(i);
        self.next_offset = self.next_offset.min(base_offset);
        for st in self.producers.values_mut() {
            st.recent.retain(|&(_, _, base)| base < base_offset);
        }
    }

    /// Notes the objects this partition reads from: its durable batches'
    /// WAL (or compacted) objects and handoff objects, and the handoff
    /// objects of proxies' batches not durable yet.
    pub fn note_refs(&self, refs: &mut crate::storage::refs::Refs) {
        for b in &self.batches {
            if let Some(l) = &b.location {
                refs.note(l);
            }
            if let Some(k) = &b.handoff {
                refs.note_handoff(k);
            }
        }
    }

    /// The first offset whose timestamp is at or after `ts`, for ListOffsets.
    pub fn offset_for_timestamp(&self, ts: i64) -> Option<(i64, i64)> {
        self.batches
            .iter()
            .find(|b| b.max_timestamp >= ts && b.last_offset < self.high_watermark)
            .map(|b| (b.base_offset, b.max_timestamp))
    }

    /// Drops batches older than `before_ms` or beyond `bytes_max` of total
    /// size. It keeps the batches at or above the high watermark, and always
    /// the last batch, as Kafka keeps the active segment: the WAL object that
    /// holds it is what tells recovery where the log ends, so offsets are
    /// never given out again after a restart.
    ///
    /// Compacted objects none of whose batches is left are pushed to
    /// `unreferenced`, for the caller to delete.
    pub fn apply_retention(
        &mut self,
        before_ms: Option<i64>,
        bytes_max: Option<u64>,
        unreferenced: &mut Vec<Arc<str>>,
    ) -> usize {
        let mut total: u64 = self.batches.iter().map(|b| u64::from(b.len)).sum();
        let mut dropped = 0;
        while let Some(front) = self.batches.front() {
            let too_old = before_ms.is_some_and(|t| front.max_timestamp < t);
            let too_big = bytes_max.is_some_and(|m| total > m);
            if !(too_old || too_big)
                || front.last_offset >= self.high_watermark
                || self.batches.len() == 1
            {
                break;
            }
            total -= u64::from(front.len);
            self.log_start = front.last_offset + 1;
            if let Some(b) = self.batches.pop_front() {
                if let Some(key) = b.location.filter(is_compacted).map(|l| l.key) {
                    // A compacted object holds a run of adjacent batches:
                    // once the new front is elsewhere, none of it is left.
                    let next = self.batches.front().and_then(|n| n.location.as_ref());
                    if next.is_none_or(|n| n.key != key) {
                        unreferenced.push(key);
                    }
                }
            }
            self.front_index += 1;
            dropped += 1;
        }
        if dropped > 0 {
            // A producer none of whose recent batches is left is forgotten,
            // so producer state does not outgrow the log.
            let start = self.log_start;
            self.producers
                .retain(|_, st| st.recent.back().is_some_and(|&(_, _, base)| base >= start));
        }
        dropped
    }
}

/// A producer as the batches of one request so far would leave it, for
/// [`PartitionLog::check_sequences_meta`].
struct SimulatedProducer {
    epoch: i16,
    /// (first, last) sequences of its recent batches.
    recent: Vec<(i32, i32)>,
    /// How many of `recent` are the log's (the rest are this request's).
    from_log: usize,
}

/// The refusal of a batch whose first sequence is not the `expected` one.
/// `known`: the partition holds batches of this producer at this epoch.
/// Past the expected one, an earlier batch is missing and will come again
/// ([`AppendError::Ahead`]); anything else is out of order.
fn sequence_error(known: bool, producer_id: i64, expected: i32, got: i32) -> AppendError {
    if known && got > expected {
        AppendError::Ahead {
            producer_id,
            expected,
            got,
        }
    } else {
        AppendError::OutOfOrder {
            producer_id,
            expected,
            got,
        }
    }
}

/// Whether a location is in a compacted object (not a WAL object).
pub fn is_compacted(location: &Location) -> bool {
    location.seq == ferry_wal::compact::COMPACTED_SEQ
}

/// What one compaction pass of a partition takes: durable batches still in
/// WAL objects, and before them the batches of a compacted object small
/// enough to be merged into the new one.
#[derive(Debug, Clone)]
pub struct CompactionPlan {
    /// The batches to write, in offset order.
    pub batches: Vec<LogBatch>,
    /// The small compacted object whose batches lead `batches`, to delete
    /// once the new object holds them.
    pub merged: Option<Arc<str>>,
}

impl PartitionLog {
    /// The batches a compaction pass should move, if any: every durable
    /// batch still in a WAL object, up to `object_bytes_max`, led by the
    /// batches of the last compacted object if that is under `bytes_min`.
    pub fn compaction_plan(
        &self,
        bytes_min: usize,
        object_bytes_max: usize,
    ) -> Option<CompactionPlan> {
        let durable = |b: &&LogBatch| b.last_offset < self.high_watermark;
        let first_wal = self
            .batches
            .iter()
            .take_while(durable)
            .position(|b| b.location.as_ref().is_some_and(|l| !is_compacted(l)))?;
        // The compacted object just before, if small: merge it in.
        let mut start = first_wal;
        let mut merged = None;
        if let Some(key) = first_wal
            .checked_sub(1)
            .and_then(|i| self.batches.get(i))
            .and_then(|b| b.location.as_ref())
            .filter(|l| is_compacted(l))
            .map(|l| l.key.clone())
        {
            let run = self
                .batches
                .iter()
                .take(first_wal)
                .rev()
                .take_while(|b| b.location.as_ref().is_some_and(|l| l.key == key))
                .count();
            let bytes: usize = self
                .batches
                .range(first_wal - run..first_wal)
                .map(|b| b.len as usize)
                .sum();
            if bytes < bytes_min {
                start = first_wal - run;
                merged = Some(key);
            }
        }
        let mut total = 0usize;
        let batches: Vec<LogBatch> = self
            .batches
            .range(start..)
            .take_while(durable)
            .take_while(|b| b.location.is_some())
            .take_while(|b| {
                total += b.len as usize;
                total <= object_bytes_max || total == b.len as usize
            })
            .cloned()
            .collect();
        // Only the merged batches fitted: nothing would move off the WAL.
        if batches.len() <= first_wal - start {
            return None;
        }
        Some(CompactionPlan { batches, merged })
    }

    /// Points batches at their compacted copies: `moves` holds (base
    /// offset, old object key, new location). A batch whose location
    /// changed meanwhile (retention dropped it) is left alone. Answers how
    /// many moved.
    pub fn relocate(&mut self, moves: &[(i64, Arc<str>, Location)]) -> usize {
        let mut moved = 0;
        for (base, old_key, new) in moves {
            let Ok(i) = self.batches.binary_search_by_key(base, |b| b.base_offset) else {
                continue;
            };
            if let Some(b) = self.batches.get_mut(i) {
                if b.location.as_ref().is_some_and(|l| l.key == *old_key) {
                    b.location = Some(new.clone());
                    moved += 1;
                }
            }
        }
        moved
    }

    /// Whether any batch still reads from object `key`.
    pub fn references(&self, key: &str) -> bool {
        self.batches
            .iter()
            .any(|b| b.location.as_ref().is_some_and(|l| &*l.key == key))
    }

    /// The compacted objects this log reads from.
    pub fn compacted_objects(&self) -> Vec<Arc<str>> {
        let mut keys: Vec<Arc<str>> = Vec::new();
        for l in self.batches.iter().filter_map(|b| b.location.as_ref()) {
            if is_compacted(l) && keys.last() != Some(&l.key) {
                keys.push(l.key.clone());
            }
        }
        keys
    }
}

/// The records of `batches` as one fetch-response record set: head and body
/// segments, no copies. Batches without cached data must be filled first.
pub fn record_set(batches: &[LogBatch]) -> ferry_protocol::wire::RecordSet {
    let mut set = ferry_protocol::wire::RecordSet::default();
    for b in batches {
        if let Some([h, body]) = &b.data {
            set.push(h.clone());
            set.push(body.clone());
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::records::{NewRecord, RecordBatchBuilder};

    fn batch(n: usize, producer: Option<(i64, i16, i32)>) -> Bytes {
        let mut b = RecordBatchBuilder::new();
        if let Some((pid, epoch, seq)) = producer {
            b = b.producer(pid, epoch, seq);
        }
        for i in 0..n {
            b.push(NewRecord::new(1000 + i as i64, Some(b"k"), Some(b"v")));
        }
        Bytes::from(b.build().unwrap())
    }

    /// Appends a one-record batch of producer `(id, epoch, sequence)`.
    fn append_one(
        p: &mut PartitionLog,
        pid_epoch_seq: (i64, i16, i32),
    ) -> Result<Appended, AppendError> {
        let raw = batch(1, Some(pid_epoch_seq));
        p.append(&PartitionLog::check(&raw).unwrap()[0])
            .map(|(a, _)| a)
    }

    fn loc() -> Location {
        Location {
            key: "wal/0".into(),
            seq: 0,
            node: 0,
            position: 0,
            len: 1,
            crc: 0,
        }
    }

    #[test]
    fn offsets_are_dense_and_patched_outside_the_crc() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        let mut entries = Vec::new();
        for n in [3, 1, 5] {
            let raw = batch(n, None);
            let checked = PartitionLog::check(&raw).unwrap();
            let (a, e) = p.append(&checked[0]).unwrap();
            let Appended::New { entry_index, .. } = a else {
                panic!()
            };
            entries.push((entry_index, e.unwrap()));
        }
        assert_eq!(
            entries
                .iter()
                .map(|(_, e)| e.base_offset)
                .collect::<Vec<_>>(),
            [0, 3, 4]
        );
        assert_eq!(p.log_end(), 9);
        // Nothing is visible before it is durable.
        assert_eq!(p.high_watermark(), 0);
        assert!(p.read(0, 1 << 20).is_empty());
        for (i, e) in &entries {
            p.made_durable(*i, e.base_offset, loc());
        }
        assert_eq!(p.high_watermark(), 9);
        let read = p.read(3, 1 << 20);
        assert_eq!(read.len(), 2);
        // The head + body read back as a valid batch at its new offset.
        let joined = record_set(&read).to_bytes();
        let views: Vec<_> = RecordBatches::new(joined).map(|b| b.unwrap()).collect();
        assert_eq!(views[0].base_offset(), 3);
        assert_eq!(views[1].base_offset(), 4);
        views.iter().for_each(|v| v.verify_crc().unwrap());
    }

    #[test]
    fn idempotent_retries_are_written_once_and_gaps_refused() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        let first = batch(2, Some((9, 0, 0)));
        let b = &PartitionLog::check(&first).unwrap()[0];
        assert!(matches!(
            p.append(b).unwrap().0,
            Appended::New { base_offset: 0, .. }
        ));
        // The same batch again is a duplicate at the same offset.
        assert_eq!(
            p.append(b).unwrap().0,
            Appended::Duplicate {
                base_offset: 0,
                last_offset: 1
            }
        );
        assert_eq!(p.log_end(), 2);
        // A gap in the sequence is refused, as a batch to send again after
        // the missing ones (not persisted, retriable).
        let gap = batch(1, Some((9, 0, 5)));
        let err = p
            .append(&PartitionLog::check(&gap).unwrap()[0])
            .unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::LEADER_NOT_AVAILABLE);
        // The next sequence is taken.
        let next = batch(1, Some((9, 0, 2)));
        assert!(matches!(
            p.append(&PartitionLog::check(&next).unwrap()[0]).unwrap().0,
            Appended::New { base_offset: 2, .. }
        ));
        // An older epoch is fenced.
        let old = batch(1, Some((9, -1, 3)));
        let err = p
            .append(&PartitionLog::check(&old).unwrap()[0])
            .unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::INVALID_PRODUCER_EPOCH);
    }

    /// The start-up race of the three-zone kill step: librdkafka bumps its
    /// epoch (KIP-360) before any batch of the producer was appended here, so
    /// the first batch this partition takes is epoch 1's sequence 0. Its
    /// sequence 1 must follow, not be refused as if epoch 1 were new again.
    #[test]
    fn a_producer_first_seen_at_a_later_epoch_keeps_its_sequence() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        // Epoch 0's sequence 1 (overtaking its sequence 0) is refused and
        // leaves nothing behind.
        assert_eq!(
            append_one(&mut p, (7, 0, 1)).unwrap_err().error_code(),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert!(matches!(
            append_one(&mut p, (7, 1, 0)).unwrap(),
            Appended::New { base_offset: 0, .. }
        ));
        for seq in [1, 2] {
            assert!(
                matches!(
                    append_one(&mut p, (7, 1, seq)).unwrap(),
                    Appended::New { .. }
                ),
                "epoch 1 sequence {seq} refused"
            );
        }
        // Epoch 0 is fenced now.
        assert_eq!(
            append_one(&mut p, (7, 0, 0)).unwrap_err().error_code(),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
    }

    /// A batch of a new epoch that is refused (its sequence is not 0) leaves
    /// the producer where it was: a retry of its last batch is still
    /// answered as a duplicate, and its next sequence is still taken.
    #[test]
    fn a_refused_batch_of_a_new_epoch_changes_nothing() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        for seq in [0, 1] {
            append_one(&mut p, (3, 0, seq)).unwrap();
        }
        assert_eq!(
            append_one(&mut p, (3, 1, 5)).unwrap_err().error_code(),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(
            append_one(&mut p, (3, 0, 1)).unwrap(),
            Appended::Duplicate {
                base_offset: 1,
                last_offset: 1
            }
        );
        assert!(matches!(
            append_one(&mut p, (3, 0, 2)).unwrap(),
            Appended::New { base_offset: 2, .. }
        ));
        // The same holds for the check of a whole request.
        let raw = batch(1, Some((3, 1, 4)));
        assert!(p
            .check_sequences(&PartitionLog::check(&raw).unwrap())
            .is_err());
    }

    /// The three-zone kill step's duplicate: a leader wrote a batch and died
    /// before answering; after its restart the batch's retry met the
    /// partition still loading (refused), the next batch came after the
    /// load and was refused as out of order, so librdkafka bumped its epoch
    /// and wrote the first batch again under the new one. The next batch
    /// is now refused as "not persisted, retry", and the retry of the first
    /// is found a duplicate.
    #[test]
    fn a_batch_ahead_of_a_known_producer_waits_for_the_missing_one() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        for seq in [0, 1] {
            append_one(&mut p, (5, 0, seq)).unwrap();
        }
        // Sequence 2 is missing: 3 waits, and changes nothing.
        assert_eq!(
            append_one(&mut p, (5, 0, 3)).unwrap_err().error_code(),
            ErrorCode::LEADER_NOT_AVAILABLE
        );
        assert_eq!(p.log_end(), 2);
        // The retry of 1 is a duplicate; then 2 and 3 are taken in order.
        assert_eq!(
            append_one(&mut p, (5, 0, 1)).unwrap(),
            Appended::Duplicate {
                base_offset: 1,
                last_offset: 1
            }
        );
        for (seq, offset) in [(2, 2), (3, 3)] {
            assert!(matches!(
                append_one(&mut p, (5, 0, seq)).unwrap(),
                Appended::New { base_offset, .. } if base_offset == offset
            ));
        }
        // A producer this partition does not know, not starting at 0: out
        // of order, as before.
        assert_eq!(
            append_one(&mut p, (6, 0, 4)).unwrap_err().error_code(),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // The check of a whole request says the same.
        let raw = batch(1, Some((5, 0, 9)));
        assert_eq!(
            p.check_sequences(&PartitionLog::check(&raw).unwrap())
                .unwrap_err()
                .error_code(),
            ErrorCode::LEADER_NOT_AVAILABLE
        );
    }

    /// A batch whose offset delta is negative or does not match its record
    /// count is refused before anything changes: the log end stays, and the
    /// next batch gets the next offset.
    #[test]
    fn a_batch_with_an_impossible_delta_moves_nothing() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        let meta = |last_offset_delta: i32, records_count: i32| BatchMeta {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            last_offset_delta,
            max_timestamp: 1,
            records_count,
            len: 100,
        };
        let external = || Payload::External(loc(), None);
        for (delta, count) in [(-5, -4), (3, 1), (-1, 0), (i32::MAX, i32::MIN)] {
            let err = p.append_meta(&meta(delta, count), external()).unwrap_err();
            assert_eq!(
                err.error_code(),
                ErrorCode::INVALID_RECORD,
                "{delta} {count}"
            );
            assert_eq!(p.log_end(), 0, "{delta} {count}");
        }
        assert!(matches!(
            p.append_meta(&meta(2, 3), external()).unwrap().0,
            Appended::New { base_offset: 0, .. }
        ));
        assert_eq!(p.log_end(), 3);
    }

    #[test]
    fn a_failed_write_rolls_the_log_end_back() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        for seq in [0, 1, 2] {
            let raw = batch(1, Some((4, 0, seq)));
            p.append(&PartitionLog::check(&raw).unwrap()[0]).unwrap();
        }
        assert_eq!(p.log_end(), 3);
        let g = p.generation();
        p.fail_from(1, g);
        assert_eq!(p.log_end(), 1);
        // A late report about the same failed write changes nothing.
        p.fail_from(1, g);
        // The producer's retry of sequence 1 lands at offset 1 again.
        let retry = batch(1, Some((4, 0, 1)));
        assert!(matches!(
            p.append(&PartitionLog::check(&retry).unwrap()[0])
                .unwrap()
                .0,
            Appended::New { base_offset: 1, .. }
        ));
    }

    #[test]
    fn a_new_producer_or_epoch_starts_at_sequence_zero() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        let append = |p: &mut PartitionLog, seq: i32, epoch: i16| {
            let raw = batch(4, Some((9, epoch, seq)));
            p.append(&PartitionLog::check(&raw).unwrap()[0])
        };
        // The second batch overtook the first: refused, nothing taken.
        assert!(matches!(
            append(&mut p, 4, 0),
            Err(AppendError::OutOfOrder {
                expected: 0,
                got: 4,
                ..
            })
        ));
        assert_eq!(p.log_end(), 0);
        // In order, both go in.
        assert!(matches!(
            append(&mut p, 0, 0),
            Ok((Appended::New { base_offset: 0, .. }, _))
        ));
        assert!(matches!(
            append(&mut p, 4, 0),
            Ok((Appended::New { base_offset: 4, .. }, _))
        ));
        // A new epoch starts at 0 again.
        assert!(matches!(
            append(&mut p, 8, 1),
            Err(AppendError::OutOfOrder {
                expected: 0,
                got: 8,
                ..
            })
        ));
        assert!(matches!(
            append(&mut p, 0, 1),
            Ok((Appended::New { base_offset: 8, .. }, _))
        ));
    }

    #[test]
    fn retention_keeps_the_last_batch_and_stale_acks_change_nothing() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        let mut idx = Vec::new();
        // Producer 6 writes offset 0; producer 5 writes offsets 1 and 2.
        for (pid, seq) in [(6, 0), (5, 0), (5, 1)] {
            let raw = batch(1, Some((pid, 0, seq)));
            let b = &PartitionLog::check(&raw).unwrap()[0];
            let (
                Appended::New {
                    entry_index,
                    base_offset,
                },
                _,
            ) = p.append(b).unwrap()
            else {
                panic!()
            };
            idx.push((entry_index, base_offset));
        }
        // An acknowledgement naming the wrong batch is ignored.
        p.made_durable(idx[0].0, 7, loc());
        assert_eq!(p.high_watermark(), 0);
        for (i, base) in &idx {
            p.made_durable(*i, *base, loc());
        }
        assert_eq!(p.high_watermark(), 3);
        assert_eq!(
            p.apply_retention(Some(i64::MAX), None, &mut Vec::new()),
            2,
            "all but the last batch"
        );
        assert_eq!((p.log_start(), p.log_end()), (2, 3));
        let mut refs = crate::storage::refs::Refs::default();
        p.note_refs(&mut refs);
        assert_eq!(refs.wal, [(0, 0)].into(), "the kept batch's object");
        // Producer 6 has nothing left in the log and is forgotten; 5 is not.
        let mut left: Vec<_> = p.producers.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, [5]);
    }

    #[test]
    fn a_request_whose_later_batch_is_out_of_order_is_refused_whole() {
        let p = PartitionLog::new("t".into(), [0; 16], 0);
        let ok: Vec<_> = [batch(2, Some((3, 0, 0))), batch(1, Some((3, 0, 2)))]
            .iter()
            .map(|raw| PartitionLog::check(raw).unwrap().remove(0))
            .collect();
        assert!(p.check_sequences(&ok).is_ok());
        let gap: Vec<_> = [batch(2, Some((3, 0, 0))), batch(1, Some((3, 0, 7)))]
            .iter()
            .map(|raw| PartitionLog::check(raw).unwrap().remove(0))
            .collect();
        let err = p.check_sequences(&gap).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert_eq!(p.log_end(), 0, "nothing was appended");
    }

    #[test]
    fn eviction_keeps_undurable_batches_and_retention_trims_the_front() {
        let mut p = PartitionLog::new("t".into(), [0; 16], 0);
        let raw = batch(1, None);
        let b = &PartitionLog::check(&raw).unwrap()[0];
        let (a0, _) = p.append(b).unwrap();
        p.append(b).unwrap();
        let Appended::New { entry_index, .. } = a0 else {
            panic!()
        };
        assert_eq!(p.evict(0), Some(false), "not durable yet");
        p.made_durable(entry_index, 0, loc());
        assert_eq!(p.evict(0), Some(true));
        assert_eq!(p.evict(0), None, "already evicted");
        assert!(p.read(0, 100)[0].data.is_none());
        assert_eq!(
            p.apply_retention(Some(i64::MAX), None, &mut Vec::new()),
            1,
            "only the durable batch goes"
        );
        assert_eq!(p.log_start(), 1);
    }
}
