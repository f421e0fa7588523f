//! The proxy side of the handoff: batches for a partition led in another zone
//! go into this node's handoff object, and their commit (a small RPC) to the
//! leader; and the leader side, which appends a proxy's committed batches by
//! reference.

use super::*;
use ferry_protocol::records::BATCH_HEADER_LEN;

pub(super) struct QueuedCommit {
    /// The partition's batches, as the leader will append them.
    part: crate::cluster::rpc::HandoffPartition,
    /// How long the producer waits.
    timeout: Duration,
    /// Where the leader's answer for this partition goes.
    reply: oneshot::Sender<Result<crate::cluster::rpc::BatchResult, crate::cluster::rpc::RpcError>>,
}

/// How long a handoff commit waits for the other batches of its handoff
/// object before it goes.
pub(super) const COMMIT_GATHER: Duration = Duration::from_millis(1);

/// How long a handoff commit waits for its partition's load at the leader
/// (see [`Shard::log_for_append`]).
const HANDOFF_LOAD_WAIT: Duration = Duration::from_secs(10);

impl Shard {
    /// The proxy's side of a produce for a partition led in another zone:
    /// the batches go into this node's next handoff object, and once it is
    /// in the bucket the leader gets their places and header fields in one
    /// small RPC, assigns offsets and answers; its answer is the producer's.
    pub(super) async fn handoff_produce(
        self: &Rc<Self>,
        leader: crate::cluster::Member,
        topic: Arc<str>,
        partition: i32,
        records: Bytes,
        timeout_ms: i32,
    ) -> ProduceResult {
        let started = Instant::now();
        let timeout = Duration::from_millis(timeout_ms.clamp(1, 300_000) as u64);
        let table = self.topics.get();
        let Some(info) = table
            .get(&topic)
            .filter(|i| partition >= 0 && partition < i.partitions)
        else {
            return ProduceResult::err(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                "unknown topic or partition",
            );
        };
        let batches = match PartitionLog::check(&records) {
            Ok(b) => b,
            Err(e) => return ProduceResult::err(e.error_code(), e.to_string()),
        };
        if let Err(e) = self.ctx.durable.reserve(records.len()) {
            return ProduceResult::err(ErrorCode::REQUEST_TIMED_OUT, e.to_string());
        }
        // One handoff entry per batch: the writer's CRC32C of each entry is
        // the batch's, which the leader checks when it reads it back.
        let acks: Vec<_> = batches
            .iter()
            .map(|b| {
                let m = BatchMeta::of(b);
                let raw = b.as_bytes().clone();
                self.ctx.durable.handoff_append(AppendEntry {
                    topic: topic.clone(),
                    topic_id: info.id.0,
                    partition,
                    base_offset: 0,
                    last_offset: i64::from(m.last_offset_delta),
                    max_timestamp: m.max_timestamp,
                    record_count: m.records_count,
                    producer: ProducerFields::default(),
                    segments: [raw, Bytes::new()],
                    leader_epoch: 0,
                    external: None,
                })
            })
            .collect();
        let locations = match glommio::timer::timeout(timeout, async {
            Ok(futures_util::future::join_all(acks).await)
        })
        .await
        {
            Ok(all) => match all.into_iter().collect::<Result<Vec<_>, _>>() {
                Ok(l) => l,
                Err(e) => return ProduceResult::err(ErrorCode::REQUEST_TIMED_OUT, e.to_string()),
            },
            Err(_) => {
                return ProduceResult::err(
                    ErrorCode::REQUEST_TIMED_OUT,
                    "the handoff object was not durable in time",
                )
            }
        };
        let handoff_batches = batches
            .iter()
            .zip(locations)
            .map(|(b, location)| {
                let m = BatchMeta::of(b);
                crate::cluster::rpc::HandoffBatch {
                    key: location.key,
                    position: location.position,
                    len: location.len,
                    crc: location.crc,
                    record_count: m.records_count,
                    last_offset_delta: m.last_offset_delta,
                    max_timestamp: m.max_timestamp,
                    producer_id: m.producer_id,
                    producer_epoch: m.producer_epoch,
                    base_sequence: m.base_sequence,
                }
            })
            .collect();
        let part = crate::cluster::rpc::HandoffPartition {
            topic,
            topic_id: info.id.0,
            partition,
            batches: handoff_batches,
        };
        let left = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let (tx, rx) = oneshot::channel();
        self.queue_commit(leader.clone(), part, left, tx);
        match rx.await {
            Ok(Ok(r)) if r.error_code == 0 => ProduceResult {
                error: ErrorCode::NONE,
                base_offset: r.base_offset,
                log_start: r.log_start,
                message: None,
            },
            Ok(Ok(r)) => ProduceResult::err(
                ErrorCode(r.error_code),
                format!("leader {} refused the batches", leader.node_id),
            ),
            Ok(Err(e)) => ProduceResult::err(e.error_code(), e.to_string()),
            Err(_) => ProduceResult::err(
                ErrorCode::REQUEST_TIMED_OUT,
                "the handoff commit was dropped",
            ),
        }
    }

    /// Queues a partition's batches for their leader's next handoff commit.
    /// The batches of one handoff object become durable together, so a
    /// commit sent a moment after the first of them carries them all: one
    /// RPC per leader per handoff object, not one per produce request.
    pub(super) fn queue_commit(
        &self,
        leader: crate::cluster::Member,
        part: crate::cluster::rpc::HandoffPartition,
        timeout: Duration,
        reply: oneshot::Sender<
            Result<crate::cluster::rpc::BatchResult, crate::cluster::rpc::RpcError>,
        >,
    ) {
        let id = leader.node_id;
        let first = {
            let mut out = self.outbox.borrow_mut();
            let q = out.entry(id).or_default();
            q.push(QueuedCommit {
                part,
                timeout,
                reply,
            });
            q.len() == 1
        };
        if !first {
            return;
        }
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        glommio::spawn_local(async move {
            glommio::timer::sleep(COMMIT_GATHER).await;
            let queued = me.outbox.borrow_mut().remove(&id).unwrap_or_default();
            if queued.is_empty() {
                return;
            }
            let timeout = queued
                .iter()
                .map(|q| q.timeout)
                .min()
                .unwrap_or(Duration::from_secs(30));
            let mut partitions = Vec::with_capacity(queued.len());
            let mut replies = Vec::with_capacity(queued.len());
            for q in queued {
                partitions.push(q.part);
                replies.push(q.reply);
            }
            tracing::debug!(leader = id, partitions = partitions.len(), "handoff commit");
            let req = crate::cluster::rpc::HandoffCommit {
                from_node: me.ctx.node_id,
                view_revision: me.view().revision(),
                partitions,
            };
            match me.rpc.handoff_commit(&leader, &req, timeout).await {
                Ok(resp) => {
                    let mut results = resp.partitions.into_iter();
                    for r in replies {
                        let first = results.next().and_then(|p| p.into_iter().next());
                        let _ = r.send(Ok(first.unwrap_or(crate::cluster::rpc::BatchResult {
                            error_code: ErrorCode::UNKNOWN_SERVER_ERROR.code(),
                            base_offset: -1,
                            log_start: -1,
                        })));
                    }
                }
                Err(e) => {
                    for r in replies {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
        })
        .detach();
    }

    /// The leader's side of a handoff commit for one partition from node
    /// `from_node`: routed to the owning shard, checked against the proxy's
    /// object, and placed like a produce: the references join the
    /// interval's WAL object.
    pub async fn handoff_partition(
        self: &Rc<Self>,
        part: crate::cluster::rpc::HandoffPartition,
        from_node: i32,
    ) -> ProduceResult {
        if !matches!(self.route(&part.topic, part.partition), Route::Local) {
            return ProduceResult::err(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                "this node does not lead the partition",
            );
        }
        let to = self.owner_of(&part.topic, part.partition);
        if to == self.id {
            return self.handoff_local(part, from_node).await;
        }
        self.ask(
            to,
            |reply| ShardMsg::Handoff {
                part,
                from_node,
                reply,
            },
            || {
                ProduceResult::err(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    "owning shard unavailable",
                )
            },
        )
        .await
    }

    pub(super) async fn handoff_local(
        self: &Rc<Self>,
        part: crate::cluster::rpc::HandoffPartition,
        from_node: i32,
    ) -> ProduceResult {
        let items: Vec<(BatchMeta, Payload)> = part
            .batches
            .iter()
            .map(|b| {
                (
                    BatchMeta {
                        producer_id: b.producer_id,
                        producer_epoch: b.producer_epoch,
                        base_sequence: b.base_sequence,
                        last_offset_delta: b.last_offset_delta,
                        max_timestamp: b.max_timestamp,
                        records_count: b.record_count,
                        len: b.len,
                    },
                    Payload::External(
                        Location {
                            key: b.key.clone(),
                            seq: 0,
                            node: 0,
                            position: b.position,
                            len: b.len,
                            crc: b.crc,
                        },
                        None,
                    ),
                )
            })
            .collect();
        // A proxy's batch is not read here (its header fields come in the
        // call): the fields are checked as a client's header is, and its
        // range as one an object can hold, before anything changes.
        let max = self.ctx.frame_bytes_max;
        for (meta, b) in items.iter().map(|(m, _)| m).zip(&part.batches) {
            let range_ok = (BATCH_HEADER_LEN..=max).contains(&(b.len as usize))
                && b.position.checked_add(u64::from(b.len)).is_some();
            if !range_ok {
                return ProduceResult::err(
                    ErrorCode::INVALID_RECORD,
                    format!(
                        "a batch of {} bytes at {} (from {BATCH_HEADER_LEN} to {max} bytes)",
                        b.len, b.position
                    ),
                );
            }
            if let Err(e) = meta.check_for_produce() {
                return ProduceResult::err(e.produce_error_code(), e.to_string());
            }
        }
        // The batches are read back out of turn; they are appended in
        // turn, in the order the commits came, as a produce's would be.
        let turn = self.handoff_ticket(&(part.topic.clone(), part.partition));
        let checked = self.check_handed_off(&items, from_node).await;
        self.handoff_turn(&turn).await;
        let read_back = match checked {
            Ok(read_back) => read_back,
            Err((code, why)) => {
                tracing::warn!(topic = %part.topic, partition = part.partition, from_node,
                    error = %why, "handoff commit refused");
                return ProduceResult::err(code, why);
            }
        };
        // The bytes just read go into the log cache with the batches, so
        // consumers at this node do not read them from the bucket again.
        let items = items
            .into_iter()
            .zip(read_back)
            .map(|((meta, payload), raw)| match payload {
                Payload::External(l, _) => (meta, Payload::External(l, Some(raw))),
                local => (meta, local),
            })
            .collect();
        let log = match self
            .log_for_append(&part.topic, part.partition, HANDOFF_LOAD_WAIT)
            .await
        {
            Ok(l) => l,
            Err(code) => return ProduceResult::err(code, "partition not available here"),
        };
        if log.borrow().topic_id != part.topic_id {
            return ProduceResult::err(
                ErrorCode::UNKNOWN_TOPIC_ID,
                "the topic was deleted and created again",
            );
        }
        // The next commit goes once this one's batches are in the log:
        // `append_batches` puts them there before it first waits.
        drop(turn);
        self.append_batches(
            log,
            part.topic,
            part.partition,
            items,
            super::produce::AppendAs::HANDOFF,
        )
        .await
    }

    /// Reads a proxy's batches back from its handoff object before they are
    /// appended, one ranged GET per run of adjacent batches: each must lie
    /// in an object of the calling node, with the CRC32C the call states,
    /// and be one Kafka batch (its own CRC right) whose header is the one
    /// the call carries. A refusal changes nothing: the log is not touched
    /// until every batch checks out. A store error other than a proven
    /// absence is answered as retriable. Answers the bytes read, one per
    /// batch, for the log cache.
    async fn check_handed_off(
        &self,
        items: &[(BatchMeta, Payload)],
        from_node: i32,
    ) -> Result<Vec<Bytes>, (ErrorCode, String)> {
        let mut checked = Vec::with_capacity(items.len());
        let mut locations = Vec::with_capacity(items.len());
        for (_, payload) in items {
            let Payload::External(l, _) = payload else {
                continue;
            };
            if !self.ctx.durable.is_handoff_object_of(&l.key, from_node) {
                return Err((
                    ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
                    format!("{} is not a handoff object of node {from_node}", l.key),
                ));
            }
            locations.push(Some(l.clone()));
        }
        let read = self.read_locations(&locations).await;
        for (((meta, _), location), bytes) in items.iter().zip(&locations).zip(read) {
            let Some(l) = location else { continue };
            let at = || format!("the batch at {}:{}", l.key, l.position);
            let bytes = bytes.map_err(|e| {
                // A proxy commits only what is durable in its object, so a
                // proven absence is a refusal; other errors say nothing.
                let code = if e.is_retriable() && !e.is_not_found() {
                    ErrorCode::KAFKA_STORAGE_ERROR
                } else {
                    ErrorCode::CORRUPT_MESSAGE
                };
                (code, format!("{} cannot be read: {e}", at()))
            })?;
            if bytes.len() != l.len as usize || crc32c::crc32c(&bytes) != l.crc {
                return Err((
                    ErrorCode::CORRUPT_MESSAGE,
                    format!("{} does not have the stated length and CRC", at()),
                ));
            }
            let mut found = ferry_protocol::records::RecordBatches::new(bytes.clone());
            let batch = match (found.next(), found.next()) {
                (Some(Ok(b)), None) if b.verify_crc().is_ok() => b,
                _ => {
                    return Err((
                        ErrorCode::CORRUPT_MESSAGE,
                        format!("{} is not one record batch with a valid CRC", at()),
                    ))
                }
            };
            if BatchMeta::of(&batch) != *meta {
                return Err((
                    ErrorCode::INVALID_RECORD,
                    format!("{}: its header is not the one the commit states", at()),
                ));
            }
            checked.push(bytes);
        }
        Ok(checked)
    }
}
