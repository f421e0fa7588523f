//! Read replicas: serving a partition led in another zone from the bucket,
//! with an index of the leader's entries (learnt over RPC) and a cache of the
//! bytes read.

use super::*;

/// How many bytes of batches a replica's long poll asks the leader to
/// describe (it gets their places, not their bytes).
pub(super) const REPLICA_WAIT_BYTES: i32 = 1 << 20;

/// How long one long poll of a read replica waits at the leader.
pub(super) const REPLICA_POLL_MS: u64 = 1_000;

pub(super) type ReplicaKey = (Arc<str>, i32, i64);

/// A read replica's cache: batch bytes by (topic, partition, base offset),
/// bounded in bytes, the oldest inserted dropped first.
pub(super) struct ReplicaCache {
    pub(super) bytes_max: usize,
    pub(super) bytes: usize,
    pub(super) map: HashMap<ReplicaKey, [Bytes; 2]>,
    pub(super) order: VecDeque<(ReplicaKey, usize)>,
}

impl ReplicaCache {
    pub(super) fn new(bytes_max: usize) -> ReplicaCache {
        ReplicaCache {
            bytes_max,
            bytes: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn get(&self, key: &ReplicaKey) -> Option<&[Bytes; 2]> {
        self.map.get(key)
    }

    pub(super) fn insert(&mut self, key: ReplicaKey, data: [Bytes; 2], len: usize) {
        if self.map.insert(key.clone(), data).is_none() {
            self.bytes += len;
            self.order.push_back((key, len));
        }
        while self.bytes > self.bytes_max {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
            self.bytes -= n;
        }
    }
}

/// Entries a replica remembers per partition.
pub(super) const REPLICA_INDEX_ENTRIES_MAX: usize = 4096;

/// What a read replica knows of a partition from its leader: the high
/// watermark and log start it last heard, and where durable batches are.
#[derive(Default)]
pub(super) struct ReplicaIndex {
    pub(super) high_watermark: i64,
    pub(super) log_start: i64,
    /// By base offset; contiguous runs as the leader answered them.
    pub(super) entries: std::collections::BTreeMap<i64, crate::cluster::rpc::ReplicaEntry>,
}

impl ReplicaIndex {
    pub(super) fn learn(&mut self, resp: &crate::cluster::rpc::ReplicaReadResponse) {
        self.high_watermark = self.high_watermark.max(resp.high_watermark);
        self.log_start = resp.log_start;
        for e in &resp.entries {
            self.entries.insert(e.base_offset, e.clone());
        }
        let start = self.log_start;
        self.entries.retain(|_, e| e.last_offset >= start);
        while self.entries.len() > REPLICA_INDEX_ENTRIES_MAX {
            self.entries.pop_first();
        }
    }

    /// The batches from `offset`, if this index holds a contiguous run
    /// starting there (`None`: ask the leader).
    #[allow(clippy::type_complexity)]
    pub(super) fn serve(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Option<(i64, i64, Vec<crate::cluster::rpc::ReplicaEntry>)> {
        if offset < self.log_start || offset >= self.high_watermark {
            return None;
        }
        let (_, first) = self.entries.range(..=offset).next_back()?;
        if first.last_offset < offset {
            return None;
        }
        let mut out = vec![first.clone()];
        let mut bytes = first.len as usize;
        let mut next = first.last_offset + 1;
        for (_, e) in self.entries.range(next..) {
            if e.base_offset != next || bytes + e.len as usize > max_bytes {
                break;
            }
            bytes += e.len as usize;
            next = e.last_offset + 1;
            out.push(e.clone());
        }
        Some((self.high_watermark, self.log_start, out))
    }
}

impl Shard {
    /// A read replica's fetch: the leader says where the durable batches
    /// from `offset` are (metadata only crosses zones), and their bytes come
    /// from the bucket.
    pub(super) async fn replica_fetch(
        self: &Rc<Self>,
        leader: crate::cluster::Member,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult {
        let key: Key = (topic.clone(), partition);
        // What the leader already said about these offsets is reused: only
        // offsets past what this replica knows cost an RPC.
        let known = self
            .replica_index
            .borrow()
            .get(&key)
            .and_then(|idx| idx.serve(offset, max_bytes));
        let (hw, log_start, entries) = match known {
            Some(k) => k,
            None => {
                let req = crate::cluster::rpc::ReplicaRead {
                    topic: topic.clone(),
                    partition,
                    from_offset: offset,
                    max_bytes: i32::try_from(max_bytes).unwrap_or(i32::MAX),
                    max_wait_ms: 0,
                };
                let resp = match self
                    .rpc
                    .replica_read(&leader, &req, Duration::from_secs(10))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return FetchResult::err(e.error_code()),
                };
                if resp.error_code != 0 {
                    let mut r = FetchResult::err(ErrorCode(resp.error_code));
                    r.high_watermark = resp.high_watermark;
                    r.log_start = resp.log_start;
                    return r;
                }
                self.replica_index
                    .borrow_mut()
                    .entry(key.clone())
                    .or_default()
                    .learn(&resp);
                (resp.high_watermark, resp.log_start, resp.entries)
            }
        };
        let mut result = FetchResult {
            error: ErrorCode::NONE,
            high_watermark: hw,
            log_start,
            records: RecordSet::default(),
        };
        let batches: Vec<LogBatch> = entries
            .into_iter()
            .map(|e| LogBatch {
                base_offset: e.base_offset,
                last_offset: e.last_offset,
                max_timestamp: e.max_timestamp,
                len: e.len,
                data: None,
                location: Some(Location {
                    key: e.key,
                    seq: 0,
                    node: 0,
                    position: e.position,
                    len: e.len,
                    crc: e.crc,
                }),
                handoff: None,
            })
            .collect();
        // From this shard's replica cache, or from the bucket (adjacent
        // batches with one ranged GET, all at once), then cached.
        let cached: Vec<Option<[Bytes; 2]>> = {
            let cache = self.replica_cache.borrow();
            batches
                .iter()
                .map(|b| {
                    cache
                        .get(&(topic.clone(), partition, b.base_offset))
                        .cloned()
                })
                .collect()
        };
        let missing: Vec<&LogBatch> = batches
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(b, _)| b)
            .collect();
        let mut read = self.read_back_many(&missing).await.into_iter();
        let mut segments = Vec::with_capacity(batches.len() * 2);
        for (b, hit) in batches.iter().zip(cached) {
            let got = match hit {
                Some(d) => {
                    self.ctx.metrics.cache_hit();
                    Ok(d)
                }
                None => {
                    self.ctx.metrics.cache_miss();
                    let r = read
                        .next()
                        .unwrap_or_else(|| Err(DurableError::ShortRead { got: 0, wanted: 1 }));
                    if let Ok(d) = &r {
                        self.replica_cache.borrow_mut().insert(
                            (topic.clone(), partition, b.base_offset),
                            d.clone(),
                            d[0].len() + d[1].len(),
                        );
                    }
                    r
                }
            };
            match got {
                Ok([h, body]) => {
                    segments.push(h);
                    segments.push(body);
                }
                // What was read so far is answered; the client asks again.
                Err(e) if !segments.is_empty() => {
                    tracing::debug!(error = %e, "replica read stopped early");
                    break;
                }
                Err(e) => {
                    // The batch may have moved (compacted, its WAL object
                    // deleted): forget what the leader said; the client's
                    // retry asks it again.
                    tracing::info!(topic = &*topic, partition, error = %e, "replica read failed");
                    self.replica_index.borrow_mut().remove(&key);
                    return FetchResult::err(ErrorCode::KAFKA_STORAGE_ERROR);
                }
            }
        }
        result.records = RecordSet::from_segments(segments);
        result
    }

    /// The leader's side of a replica read: waits (at most `max_wait_ms`)
    /// until there is data past `from_offset`, then answers where the
    /// durable batches from there are.
    pub async fn replica_read_served(
        self: &Rc<Self>,
        req: crate::cluster::rpc::ReplicaRead,
    ) -> crate::cluster::rpc::ReplicaReadResponse {
        use crate::cluster::rpc::ReplicaReadResponse;
        if !matches!(self.route(&req.topic, req.partition), Route::Local) {
            return ReplicaReadResponse::error(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        if req.max_wait_ms > 0 {
            let wait = Duration::from_millis(req.max_wait_ms.clamp(0, 30_000) as u64);
            let (me, topic) = (self.clone(), req.topic.clone());
            let _ = glommio::timer::timeout(wait, async move {
                me.wait(topic, req.partition, req.from_offset).await;
                Ok(())
            })
            .await;
        }
        let to = self.owner_of(&req.topic, req.partition);
        if to == self.id {
            return self.replica_entries(&req);
        }
        self.ask(
            to,
            |reply| ShardMsg::ReplicaRead { req, reply },
            || ReplicaReadResponse::error(ErrorCode::NOT_LEADER_OR_FOLLOWER),
        )
        .await
    }

    pub(super) fn replica_entries(
        &self,
        req: &crate::cluster::rpc::ReplicaRead,
    ) -> crate::cluster::rpc::ReplicaReadResponse {
        use crate::cluster::rpc::{ReplicaEntry, ReplicaReadResponse};
        let log = match self.log_checked(&req.topic, req.partition) {
            Ok(l) => l,
            Err(code) => return ReplicaReadResponse::error(code),
        };
        let l = log.borrow();
        let (start, hw) = (l.log_start(), l.high_watermark());
        let mut resp = ReplicaReadResponse {
            error_code: 0,
            high_watermark: hw,
            log_start: start,
            leader_epoch: l.leader_epoch,
            entries: Vec::new(),
        };
        if req.from_offset < start || req.from_offset > hw {
            resp.error_code = ErrorCode::OFFSET_OUT_OF_RANGE.code();
            return resp;
        }
        if req.max_bytes > 0 {
            resp.entries = l
                .read(req.from_offset, req.max_bytes as usize)
                .into_iter()
                .map_while(|b| {
                    let loc = b.location?;
                    Some(ReplicaEntry {
                        base_offset: b.base_offset,
                        last_offset: b.last_offset,
                        max_timestamp: b.max_timestamp,
                        key: loc.key,
                        position: loc.position,
                        len: loc.len,
                        crc: loc.crc,
                    })
                })
                .collect();
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::rpc::{ReplicaEntry, ReplicaReadResponse};

    fn key(offset: i64) -> ReplicaKey {
        (Arc::from("t"), 0, offset)
    }

    fn data(n: u8) -> [Bytes; 2] {
        [Bytes::from(vec![n; 4]), Bytes::new()]
    }

    #[test]
    fn the_replica_cache_is_bounded_and_drops_the_oldest_first() {
        let mut c = ReplicaCache::new(100);
        c.insert(key(0), data(0), 40);
        c.insert(key(10), data(1), 40);
        assert_eq!(c.bytes, 80);
        // The same key again is not counted twice.
        c.insert(key(10), data(1), 40);
        assert_eq!(c.bytes, 80);
        // Past the bound: the oldest goes, the newest two stay.
        c.insert(key(20), data(2), 40);
        assert!(c.get(&key(0)).is_none());
        assert_eq!(c.get(&key(10)), Some(&data(1)));
        assert_eq!(c.get(&key(20)), Some(&data(2)));
        assert_eq!(c.bytes, 80);
        // One entry larger than the bound does not stay either.
        c.insert(key(30), data(3), 500);
        assert!(c.get(&key(30)).is_none());
        assert_eq!(c.bytes, 0);
    }

    fn entry(base: i64, last: i64, len: u32) -> ReplicaEntry {
        ReplicaEntry {
            base_offset: base,
            last_offset: last,
            max_timestamp: 0,
            key: Arc::from("wal/1/00000000000000000001.wal"),
            position: base as u64 * 100,
            len,
            crc: 0,
        }
    }

    fn response(hw: i64, start: i64, entries: Vec<ReplicaEntry>) -> ReplicaReadResponse {
        ReplicaReadResponse {
            error_code: 0,
            high_watermark: hw,
            log_start: start,
            leader_epoch: 0,
            entries,
        }
    }

    #[test]
    fn the_replica_index_serves_contiguous_runs_it_knows_and_nothing_else() {
        let mut idx = ReplicaIndex::default();
        idx.learn(&response(
            30,
            0,
            vec![entry(0, 9, 100), entry(10, 19, 100), entry(20, 29, 100)],
        ));
        // From inside a batch: that batch and the next ones, within the bytes.
        let (hw, start, run) = idx.serve(5, 250).unwrap();
        assert_eq!((hw, start), (30, 0));
        assert_eq!(
            run.iter().map(|e| e.base_offset).collect::<Vec<_>>(),
            vec![0, 10]
        );
        // At least one batch, whatever the bytes.
        assert_eq!(idx.serve(20, 1).unwrap().2.len(), 1);
        // At the high watermark, or below the log start: ask the leader.
        assert!(idx.serve(30, 1000).is_none());
        // A gap ends the run.
        idx.learn(&response(60, 0, vec![entry(40, 49, 100)]));
        let run = idx.serve(20, 1000).unwrap().2;
        assert_eq!(run.last().map(|e| e.last_offset), Some(29));
        assert!(idx.serve(35, 1000).is_none());
        // Retention moved the log start: older entries go.
        idx.learn(&response(60, 20, vec![]));
        assert!(idx.serve(5, 1000).is_none());
        assert!(!idx.entries.contains_key(&0) && idx.entries.contains_key(&20));
    }
}
