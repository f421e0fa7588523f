//! Fetch and ListOffsets: reading a partition from the log cache or the
//! bucket, and waiting for new data (long polls).

use super::*;

/// Most bytes one ranged GET of adjacent batches reads.
pub(super) const READ_RUN_BYTES_MAX: u64 = 8 << 20;

/// A batch read back from `loc`, with its 16-byte head made again from the
/// log.
pub(super) fn with_head(
    b: &LogBatch,
    loc: &Location,
    bytes: Bytes,
) -> Result<[Bytes; 2], DurableError> {
    if bytes.len() < 61 {
        return Err(DurableError::Unreadable {
            key: loc.key.to_string(),
            reason: "batch shorter than its header",
        });
    }
    // The head is made again from the log: a batch a proxy put in its
    // handoff object still has the producer's base offset there.
    let mut head = bytes::BytesMut::with_capacity(16);
    head.extend_from_slice(&b.base_offset.to_be_bytes());
    head.extend_from_slice(&bytes[8..16]);
    Ok([head.freeze(), bytes.slice(16..)])
}

fn not_durable() -> DurableError {
    DurableError::Unreadable {
        key: String::new(),
        reason: "the batch is not durable yet",
    }
}

impl Shard {
    pub(super) fn wait_local(
        &self,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        reply: oneshot::Sender<()>,
    ) {
        let ready = match self.log(&topic, partition) {
            Some(log) => log.borrow().high_watermark() > offset,
            None => true,
        };
        if ready {
            let _ = reply.send(());
            return;
        }
        let mut w = self.waiters.borrow_mut();
        let list = w.entry((topic, partition)).or_default();
        list.retain(|s| !s.is_canceled());
        list.push(reply);
    }

    /// Resolves once the partition has data past `offset` (or cannot).
    pub async fn wait(self: &Rc<Self>, topic: Arc<str>, partition: i32, offset: i64) {
        if let Route::Proxy(leader) = self.route(&topic, partition) {
            // A read replica waits on the leader's commit stream: long polls
            // that carry no data, until the leader has data at `offset`.
            loop {
                // The answer also says where the new batches are, so the
                // fetch that follows is served without asking again.
                let req = crate::cluster::rpc::ReplicaRead {
                    topic: topic.clone(),
                    partition,
                    from_offset: offset,
                    max_bytes: REPLICA_WAIT_BYTES,
                    max_wait_ms: REPLICA_POLL_MS as i32,
                };
                let timeout = Duration::from_millis(REPLICA_POLL_MS + 5_000);
                match self.rpc.replica_read(&leader, &req, timeout).await {
                    Ok(r) if r.error_code == 0 && r.high_watermark > offset => {
                        self.replica_index
                            .borrow_mut()
                            .entry((topic.clone(), partition))
                            .or_default()
                            .learn(&r);
                        return;
                    }
                    Ok(r) if r.error_code != 0 => return,
                    Ok(_) => {}
                    Err(_) => glommio::timer::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        let to = self.owner_of(&topic, partition);
        let (tx, rx) = oneshot::channel();
        if to == self.id {
            self.wait_local(topic, partition, offset, tx);
        } else if !self
            .send(
                to,
                ShardMsg::Wait {
                    topic,
                    partition,
                    offset,
                    reply: tx,
                },
            )
            .await
        {
            return;
        }
        let _ = rx.await;
    }

    pub async fn fetch(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult {
        match self.route(&topic, partition) {
            Route::Local => {}
            Route::Proxy(leader) => {
                return self
                    .replica_fetch(leader, topic, partition, offset, max_bytes)
                    .await
            }
            Route::SameZone(_) | Route::Fenced => {
                return FetchResult::err(ErrorCode::NOT_LEADER_OR_FOLLOWER)
            }
        }
        let to = self.owner_of(&topic, partition);
        if to == self.id {
            return self.fetch_local(topic, partition, offset, max_bytes).await;
        }
        let msg = |reply| ShardMsg::Fetch {
            topic,
            partition,
            offset,
            max_bytes,
            reply,
        };
        self.ask(to, msg, || {
            FetchResult::err(ErrorCode::NOT_LEADER_OR_FOLLOWER)
        })
        .await
    }

    pub(super) async fn fetch_local(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult {
        let log = match self.log_checked(&topic, partition) {
            Ok(l) => l,
            Err(code) => return FetchResult::err(code),
        };
        let (batches, hw, start) = {
            let l = log.borrow();
            if offset < l.log_start() || offset > l.high_watermark() {
                let mut r = FetchResult::err(ErrorCode::OFFSET_OUT_OF_RANGE);
                r.high_watermark = l.high_watermark();
                r.log_start = l.log_start();
                return r;
            }
            (l.read(offset, max_bytes), l.high_watermark(), l.log_start())
        };
        let mut batches = batches;
        // Batches not in the cache come back from the bucket, adjacent ones
        // with one ranged GET, all at once.
        let missing: Vec<&LogBatch> = batches.iter().filter(|b| b.data.is_none()).collect();
        let mut read = self.read_back_many(&missing).await.into_iter();
        let mut read_failed = false;
        for b in batches.iter_mut().filter(|b| b.data.is_none()) {
            let Some(result) = read.next() else { break };
            match result {
                Ok(data) => {
                    log.borrow_mut().fill(b.base_offset, data.clone());
                    let chunk = crate::arena::chunk_of(&data[1]);
                    self.cached(&topic, partition, b.base_offset, b.len as usize, chunk);
                    b.data = Some(data);
                    self.ctx.metrics.cache_miss();
                }
                Err(e) => {
                    read_failed = true;
                    tracing::warn!(topic = %topic, partition, offset = b.base_offset, error = %e, "read from bucket failed");
                    break;
                }
            }
        }
        self.evict_if_needed();
        let served: Vec<LogBatch> = batches
            .into_iter()
            .take_while(|b| b.data.is_some())
            .collect();
        if !served.is_empty() {
            self.ctx.metrics.cache_hit();
        }
        if served.is_empty() && read_failed {
            // Retriable: the client fetches again rather than wait on
            // data that is there but could not be read.
            let mut r = FetchResult::err(ErrorCode::KAFKA_STORAGE_ERROR);
            r.high_watermark = hw;
            r.log_start = start;
            return r;
        }
        FetchResult {
            error: ErrorCode::NONE,
            high_watermark: hw,
            log_start: start,
            records: record_set(&served),
        }
    }

    /// Reads batches back from the bucket (see [`Shard::read_locations`]),
    /// each with its head made again from the log.
    pub(super) async fn read_back_many(
        &self,
        batches: &[&LogBatch],
    ) -> Vec<Result<[Bytes; 2], DurableError>> {
        let locations: Vec<Option<Location>> = batches.iter().map(|b| b.location.clone()).collect();
        let read = self.read_locations(&locations).await;
        batches
            .iter()
            .zip(&locations)
            .zip(read)
            .map(|((b, l), bytes)| match (l, bytes) {
                (Some(l), Ok(bytes)) => with_head(b, l, bytes),
                (_, Err(e)) => Err(e),
                (None, Ok(_)) => Err(not_durable()),
            })
            .collect()
    }

    /// Reads the bytes at `locations` from the bucket: a run of locations
    /// adjacent in one object (a partition's batches in a compacted object,
    /// a proxy's batches of one partition in a handoff object) with one
    /// ranged GET, and every run at once. Answers each one's bytes, in
    /// order; `None` (a batch not durable yet) is answered an error.
    pub(super) async fn read_locations(
        &self,
        locations: &[Option<Location>],
    ) -> Vec<Result<Bytes, DurableError>> {
        // (first, end) index ranges of `locations`.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut run_bytes = 0u64;
        for (i, l) in locations.iter().enumerate() {
            let len = l.as_ref().map_or(0, |l| u64::from(l.len));
            let joins = i > 0
                && match (&locations[i - 1], l) {
                    (Some(p), Some(l)) => {
                        p.key == l.key
                            && p.position + u64::from(p.len) == l.position
                            && run_bytes + len <= READ_RUN_BYTES_MAX
                    }
                    _ => false,
                };
            match runs.last_mut() {
                Some(run) if joins => {
                    run.1 = i + 1;
                    run_bytes += len;
                }
                _ => {
                    runs.push((i, i + 1));
                    run_bytes = len;
                }
            }
        }
        let reads = runs.iter().map(|&(first, end)| {
            let run: Option<Vec<Location>> = locations[first..end].iter().cloned().collect();
            let durable = self.ctx.durable.clone();
            async move {
                match run {
                    Some(l) => durable.read_adjacent(l).await,
                    None => Err(not_durable()),
                }
            }
        });
        let results = futures_util::future::join_all(reads).await;
        let mut out = Vec::with_capacity(locations.len());
        for (&(first, end), result) in runs.iter().zip(results) {
            match result {
                Ok(all) if all.len() == end - first => out.extend(all.into_iter().map(Ok)),
                Ok(all) => out.extend((first..end).map(|_| {
                    Err(DurableError::ShortRead {
                        got: all.len(),
                        wanted: end - first,
                    })
                })),
                Err(e) => out.extend((first..end).map(|_| Err(e.clone()))),
            }
        }
        out
    }

    pub async fn list_offset(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetResult {
        let fail = |error| ListOffsetResult {
            error,
            offset: -1,
            timestamp: -1,
        };
        match self.route(&topic, partition) {
            Route::Local => {}
            // A read replica answers earliest and latest from the leader's
            // commit stream; by timestamp, only the leader can.
            Route::Proxy(leader) if timestamp == -1 || timestamp == -2 => {
                let req = crate::cluster::rpc::ReplicaRead {
                    topic: topic.clone(),
                    partition,
                    from_offset: -1,
                    max_bytes: 0,
                    max_wait_ms: 0,
                };
                return match self
                    .rpc
                    .replica_read(&leader, &req, Duration::from_secs(10))
                    .await
                {
                    Ok(r)
                        if r.error_code == 0
                            || r.error_code == ErrorCode::OFFSET_OUT_OF_RANGE.code() =>
                    {
                        ListOffsetResult {
                            error: ErrorCode::NONE,
                            offset: if timestamp == -1 {
                                r.high_watermark
                            } else {
                                r.log_start
                            },
                            timestamp: -1,
                        }
                    }
                    Ok(r) => fail(ErrorCode(r.error_code)),
                    Err(e) => fail(e.error_code()),
                };
            }
            Route::Proxy(_) | Route::SameZone(_) | Route::Fenced => {
                return fail(ErrorCode::NOT_LEADER_OR_FOLLOWER)
            }
        }
        let to = self.owner_of(&topic, partition);
        if to == self.id {
            return self.list_offset_local(&topic, partition, timestamp);
        }
        let msg = |reply| ShardMsg::ListOffset {
            topic,
            partition,
            timestamp,
            reply,
        };
        let fail = || ListOffsetResult {
            error: ErrorCode::NOT_LEADER_OR_FOLLOWER,
            offset: -1,
            timestamp: -1,
        };
        self.ask(to, msg, fail).await
    }

    pub(super) fn list_offset_local(
        &self,
        topic: &Arc<str>,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetResult {
        let log = match self.log_checked(topic, partition) {
            Ok(l) => l,
            Err(error) => {
                return ListOffsetResult {
                    error,
                    offset: -1,
                    timestamp: -1,
                }
            }
        };
        let l = log.borrow();
        let (offset, ts) = match timestamp {
            -1 => (l.high_watermark(), -1),
            -2 => (l.log_start(), -1),
            // Max timestamp (KIP-734): the last batch's, approximately.
            -3 if l.high_watermark() <= l.log_start() => (-1, -1),
            -3 => (l.high_watermark() - 1, -1),
            ts => l.offset_for_timestamp(ts).unwrap_or((-1, -1)),
        };
        ListOffsetResult {
            error: ErrorCode::NONE,
            offset,
            timestamp: ts,
        }
    }
}
