//! Maintenance: compaction of durable batches into per-partition objects,
//! retention, and deleting compacted objects nothing reads any more.

use super::*;

/// Largest compacted object a pass writes (a partition with more durable
/// bytes in the WAL gets several, over several passes).
pub const COMPACTED_OBJECT_BYTES_MAX: usize = 64 << 20;

/// The idempotent-producer fields of a stored batch (16-byte head, then the
/// rest of the batch), read from its header without copying the batch.
pub(super) fn producer_fields(data: &[Bytes; 2]) -> ProducerFields {
    // Batch header offsets: lastOffsetDelta 23, producerId 43, producerEpoch
    // 51, baseSequence 53; the body segment starts at offset 16.
    let body = &data[1];
    let at = |o: usize, n: usize| body.get(o - 16..o - 16 + n);
    let (Some(delta), Some(id), Some(epoch), Some(seq)) =
        (at(23, 4), at(43, 8), at(51, 2), at(53, 4))
    else {
        return ProducerFields::default();
    };
    let delta = i32::from_be_bytes([delta[0], delta[1], delta[2], delta[3]]);
    let id = i64::from_be_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]);
    let epoch = i16::from_be_bytes([epoch[0], epoch[1]]);
    let first = i32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
    if id < 0 {
        return ProducerFields::default();
    }
    ProducerFields {
        id,
        epoch,
        first_sequence: first,
        last_sequence: if first < 0 {
            -1
        } else {
            first.wrapping_add(delta)
        },
    }
}

impl Shard {
    /// Drops a deleted topic's partitions from this shard.
    pub fn forget_topic(&self, topic: &str) {
        let mut unreferenced = Vec::new();
        self.partitions.borrow_mut().retain(|(t, _), p| {
            let keep = t.as_ref() != topic;
            if !keep {
                unreferenced.extend(p.borrow().compacted_objects());
            }
            keep
        });
        self.delete_objects(unreferenced);
    }

    /// Deletes compacted objects nothing reads from any more, in the
    /// background; a failure is logged (the object is then only garbage).
    pub(super) fn delete_objects(&self, keys: Vec<Arc<str>>) {
        for key in keys {
            let rx = self.ctx.durable.delete_object(key.clone());
            glommio::spawn_local(async move {
                match rx.await {
                    Ok(Ok(())) => tracing::debug!(object_key = &*key, "deleted compacted object"),
                    Ok(Err(e)) => {
                        tracing::warn!(object_key = &*key, error = %e, "deleting compacted object failed")
                    }
                    Err(_) => {}
                }
            })
            .detach();
        }
    }

    /// One compaction pass: each partition's durable batches still in WAL
    /// objects are written into a per-partition object, and the log points
    /// at the copies, so the WAL objects can go. Partitions are done one at
    /// a time, so at most one object's bytes are held. Answers how many
    /// batches moved.
    pub async fn compact(&self) -> usize {
        // Partitions led elsewhere now are not this node's to compact.
        self.follow_leadership();
        let logs: Vec<Rc<RefCell<PartitionLog>>> =
            self.partitions.borrow().values().cloned().collect();
        let mut moved = 0;
        for log in logs {
            match self.compact_partition(&log).await {
                Ok(n) => moved += n,
                Err(e) => {
                    let l = log.borrow();
                    tracing::warn!(topic = &*l.topic, partition = l.partition, error = %e,
                        "compaction failed; the batches stay in the WAL and are tried again");
                }
            }
        }
        moved
    }

    pub(super) async fn compact_partition(
        &self,
        log: &Rc<RefCell<PartitionLog>>,
    ) -> Result<usize, DurableError> {
        let (plan, topic, topic_id, partition, epoch) = {
            let l = log.borrow();
            let Some(plan) =
                l.compaction_plan(self.ctx.compaction_bytes_min, COMPACTED_OBJECT_BYTES_MAX)
            else {
                return Ok(0);
            };
            (
                plan,
                l.topic.clone(),
                l.topic_id,
                l.partition,
                l.leader_epoch,
            )
        };
        let mut entries = Vec::with_capacity(plan.batches.len());
        // Batches no longer cached are read back together.
        let missing: Vec<&LogBatch> = plan.batches.iter().filter(|b| b.data.is_none()).collect();
        let mut read = self.read_back_many(&missing).await.into_iter();
        for b in &plan.batches {
            let data = match &b.data {
                Some(d) => d.clone(),
                None => read
                    .next()
                    .unwrap_or_else(|| Err(DurableError::ShortRead { got: 0, wanted: 1 }))?,
            };
            entries.push(AppendEntry {
                topic: topic.clone(),
                topic_id,
                partition,
                base_offset: b.base_offset,
                last_offset: b.last_offset,
                max_timestamp: b.max_timestamp,
                record_count: data[1]
                    .get(41..45)
                    .map_or((b.last_offset - b.base_offset + 1) as i32, |c| {
                        i32::from_be_bytes([c[0], c[1], c[2], c[3]])
                    }),
                producer: producer_fields(&data),
                segments: data,
                // This leader's epoch: the batches are its log now, and an
                // older label would let a newer epoch's marker fence them.
                leader_epoch: epoch,
                external: None,
            });
        }
        let locations = self
            .ctx
            .durable
            .compact(entries)
            .await
            .map_err(|_| DurableError::Closed)??;
        let new_key = locations.first().map(|l| l.key.clone());
        let moves: Vec<(i64, Arc<str>, Location)> = plan
            .batches
            .iter()
            .zip(locations)
            .filter_map(|(b, loc)| Some((b.base_offset, b.location.as_ref()?.key.clone(), loc)))
            .collect();
        let key = (topic.clone(), partition);
        let current = self.partitions.borrow().get(&key).cloned();
        let still_ours = current.is_some_and(|c| Rc::ptr_eq(&c, log));
        let mut l = log.borrow_mut();
        let moved = if still_ours { l.relocate(&moves) } else { 0 };
        let mut unreferenced = Vec::new();
        if let Some(merged) = plan.merged.filter(|k| !l.references(k)) {
            unreferenced.push(merged);
        }
        if let Some(k) = new_key.filter(|k| !still_ours || !l.references(k)) {
            // The partition went (deleted topic) or retention took every
            // batch meanwhile: the new object is not needed.
            unreferenced.push(k);
        }
        drop(l);
        self.delete_objects(unreferenced);
        Ok(moved)
    }

    /// Applies retention to this shard's partitions: each topic's
    /// `retention.ms` / `retention.bytes` overrides, else the node's
    /// `log.retention.ms` / `log.retention.bytes`. Returns the batches
    /// dropped.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        // Partitions led elsewhere now are not this node's to trim (nor
        // their objects to delete).
        self.follow_leadership();
        let mut unreferenced = Vec::new();
        let table = self.topics.get();
        // Partitions of deleted topics (the shard that took the DeleteTopics
        // request dropped its own at once) go, with their objects.
        self.partitions.borrow_mut().retain(|(t, _), p| {
            let p = p.borrow();
            let live = table.get(t).is_some_and(|info| info.id.0 == p.topic_id);
            if !live {
                unreferenced.extend(p.compacted_objects());
            }
            live
        });
        let parts = self.partitions.borrow();
        let dropped = parts
            .iter()
            .map(|((topic, _), p)| {
                let (ms, bytes) = crate::cluster::topics::retention_of(
                    table.get(topic).map(|t| t.configs.as_ref()),
                    self.ctx.retention_ms,
                    self.ctx.retention_bytes,
                );
                let before = (ms >= 0).then(|| now_ms.saturating_sub(ms));
                let bytes = (bytes >= 0).then_some(bytes as u64);
                p.borrow_mut()
                    .apply_retention(before, bytes, &mut unreferenced)
            })
            .sum();
        self.delete_objects(unreferenced);
        drop(parts);
        // Batches dropped without being evicted (by this pass, a failed
        // write's rollback, a partition that left) leave the cache's
        // accounting; and another shard's cache may have handed this one a
        // chunk's charge (its lowest holder left): an idle shard evicts here.
        self.sweep_cache();
        self.evict_if_needed();
        self.report_refs(now_ms);
        dropped
    }
}
