//! Produce: a partition's batches checked, placed in its log and written to
//! the durable log; the answer once they are durable.

use super::*;

/// How an append is answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct AppendAs {
    /// The producer's acks: 0 answers at once, anything else once durable.
    pub(super) acks: i16,
    /// How long the producer waits for durability.
    pub(super) timeout_ms: i32,
}

impl AppendAs {
    /// A handoff commit: answered once durable, within 30 s. Its entries
    /// join the interval's WAL object like any produce's: one object per
    /// `batchInterval` whatever the number of commits.
    pub(super) const HANDOFF: AppendAs = AppendAs {
        acks: -1,
        timeout_ms: 30_000,
    };
}

impl Shard {
    pub async fn produce(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> ProduceResult {
        match self.route(&topic, partition) {
            Route::Local => {}
            Route::Proxy(leader) => {
                return self
                    .handoff_produce(leader, topic, partition, records, timeout_ms)
                    .await
            }
            Route::Fenced => {
                return ProduceResult::err(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    "this node lost its lease in the cluster",
                )
            }
            Route::SameZone(node) => {
                return ProduceResult::err(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    format!("node {node}, in this zone, leads this partition"),
                )
            }
        }
        let to = self.owner_of(&topic, partition);
        if to == self.id {
            return self
                .produce_local(topic, partition, records, acks, timeout_ms)
                .await;
        }
        let msg = |reply| ShardMsg::Produce {
            topic,
            partition,
            records,
            acks,
            timeout_ms,
            reply,
        };
        self.ask(to, msg, || {
            ProduceResult::err(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                "owning shard unavailable",
            )
        })
        .await
    }

    pub(super) async fn produce_local(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> ProduceResult {
        let wait = Duration::from_millis(timeout_ms.clamp(0, 10_000) as u64);
        let log = match self.log_for_append(&topic, partition, wait).await {
            Ok(l) => l,
            Err(code) => return ProduceResult::err(code, "partition not available here"),
        };
        let batches = match PartitionLog::check(&records) {
            Ok(b) => b,
            Err(e) => return ProduceResult::err(e.error_code(), e.to_string()),
        };
        if let Err(e) = self.ctx.durable.reserve(records.len()) {
            return ProduceResult::err(ErrorCode::REQUEST_TIMED_OUT, e.to_string());
        }
        let items = batches
            .iter()
            .map(|b| (BatchMeta::of(b), Payload::Local(b.as_bytes().clone())))
            .collect();
        let how = AppendAs { acks, timeout_ms };
        self.append_batches(log, topic, partition, items, how).await
    }

    /// Appends checked batches to a partition this shard owns, writes them
    /// to the WAL (their bytes, or for a proxy's batches a reference to its
    /// handoff object), and
    /// answers once they are durable (or at once for acks=0).
    pub(super) async fn append_batches(
        self: &Rc<Self>,
        log: Rc<RefCell<PartitionLog>>,
        topic: Arc<str>,
        partition: i32,
        items: Vec<(BatchMeta, Payload)>,
        how: AppendAs,
    ) -> ProduceResult {
        let AppendAs { acks, timeout_ms } = how;
        if items.len() > 1 {
            let metas: Vec<BatchMeta> = items.iter().map(|(m, _)| *m).collect();
            if let Err(e) = log.borrow().check_sequences_meta(&metas) {
                return ProduceResult::err(e.error_code(), e.to_string());
            }
        }
        let mut first_offset = None;
        let mut duplicate_last: Option<i64> = None;
        let mut pending = Vec::new();
        let generation = log.borrow().generation();
        {
            let mut l = log.borrow_mut();
            for (meta, payload) in items {
                // A proxy's batch read back by the leader is cached from
                // those bytes (not in the arena); the WAL entry refers to
                // the proxy's object.
                let read_back = matches!(&payload, Payload::External(_, Some(_)));
                match l.append_meta(&meta, payload) {
                    Ok((
                        Appended::New {
                            base_offset,
                            entry_index,
                        },
                        Some(entry),
                    )) => {
                        first_offset.get_or_insert(base_offset);
                        let (len, chunk) = if read_back {
                            (meta.len as usize, None)
                        } else {
                            (entry.len(), crate::arena::chunk_of(&entry.segments[1]))
                        };
                        pending.push((entry_index, base_offset, self.ctx.durable.append(entry)));
                        if len > 0 {
                            self.cached(&topic, partition, base_offset, len, chunk);
                        }
                    }
                    Ok((Appended::New { base_offset, .. }, None)) => {
                        first_offset.get_or_insert(base_offset);
                    }
                    Ok((
                        Appended::Duplicate {
                            base_offset,
                            last_offset,
                        },
                        _,
                    )) => {
                        // A retry of a batch that may not be durable yet: it
                        // is answered only once it is.
                        first_offset.get_or_insert(base_offset);
                        duplicate_last = duplicate_last.max(Some(last_offset));
                    }
                    Err(e) => {
                        if first_offset.is_none() {
                            return ProduceResult::err(e.error_code(), e.to_string());
                        }
                        break;
                    }
                }
            }
        }
        self.evict_if_needed();
        // Durability is tracked whether or not the producer still waits.
        let (done_tx, done_rx) = oneshot::channel::<Result<(), DurableError>>();
        let me = self.clone();
        let key = (topic.clone(), partition);
        let log2 = log.clone();
        glommio::spawn_local(async move {
            let mut outcome = Ok(());
            for (idx, base, ack) in pending {
                match ack.await {
                    Ok(loc) if outcome.is_ok() => log2.borrow_mut().made_durable(idx, base, loc),
                    Ok(_) => {}
                    Err(e) => {
                        if outcome.is_ok() {
                            // Nothing from here on was acknowledged: take the
                            // offsets back so they stay dense, then let the
                            // partition write again.
                            log2.borrow_mut().fail_from(base, generation);
                            me.ctx.durable.resume_partition(&key.0, key.1);
                            tracing::warn!(topic = %key.0, partition = key.1, offset = base, error = %e, "WAL write failed");
                        }
                        outcome = Err(e);
                    }
                }
            }
            me.wake(&key);
            let _ = done_tx.send(outcome);
        })
        .detach();
        let log_start = log.borrow().log_start();
        let base_offset = first_offset.unwrap_or(-1);
        if acks == 0 {
            return ProduceResult {
                error: ErrorCode::NONE,
                base_offset,
                log_start,
                message: None,
            };
        }
        let timeout = Duration::from_millis(timeout_ms.clamp(1, 300_000) as u64);
        let deadline = Instant::now() + timeout;
        let result = match glommio::timer::timeout(timeout, async { Ok(done_rx.await) }).await {
            // A node that lost its lease acknowledges nothing: a newer
            // leader may have taken these offsets, and fences what it wrote,
            // or may have read the write first. The outcome is unknown, so
            // the answer says "possibly persisted" (librdkafka retries with
            // the same sequence, which the new leader deduplicates), not
            // "not persisted" (which lets it write the records again under
            // a new producer epoch).
            Ok(Ok(Ok(()))) if self.ctx.cluster.fenced() => ProduceResult::err(
                ErrorCode::REQUEST_TIMED_OUT,
                "this node lost its lease after the write; its outcome is unknown",
            ),
            Ok(Ok(Ok(()))) => ProduceResult {
                error: ErrorCode::NONE,
                base_offset,
                log_start,
                message: None,
            },
            Ok(Ok(Err(e))) => ProduceResult::err(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string()),
            Ok(Err(_)) => ProduceResult::err(ErrorCode::KAFKA_STORAGE_ERROR, "WAL stopped"),
            Err(_) => ProduceResult::err(
                ErrorCode::REQUEST_TIMED_OUT,
                "the WAL object was not durable in time",
            ),
        };
        match duplicate_last {
            Some(last) if result.error.is_ok() => self
                .await_durable(&log, &topic, partition, last, deadline, generation)
                .await
                .map_or(result, |e| {
                    ProduceResult::err(e, "the original of this retry was not made durable")
                }),
            _ => result,
        }
    }

    /// Waits until offset `last` is below the high watermark. `Some(code)`
    /// if it is not by `deadline`, or if the batch holding it was rolled
    /// back (a retriable code: the producer sends it again).
    pub(super) async fn await_durable(
        self: &Rc<Self>,
        log: &Rc<RefCell<PartitionLog>>,
        topic: &Arc<str>,
        partition: i32,
        last: i64,
        deadline: Instant,
        generation: u64,
    ) -> Option<ErrorCode> {
        loop {
            {
                let l = log.borrow();
                if l.high_watermark() > last {
                    return None;
                }
                if l.generation() != generation {
                    return Some(ErrorCode::REQUEST_TIMED_OUT);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Some(ErrorCode::REQUEST_TIMED_OUT);
            }
            let waited = glommio::timer::timeout(left, async {
                self.wait(topic.clone(), partition, last).await;
                Ok(())
            })
            .await;
            if waited.is_err() {
                return Some(ErrorCode::REQUEST_TIMED_OUT);
            }
        }
    }
}
