//! Leadership: which partitions this shard leads, following the cluster's
//! views, and loading (taking over) the ones it has come to lead from every
//! node's objects, behind a durable epoch marker.

use super::*;

/// Loader tasks of one shard at once: one for the retention pass's loads,
/// one more for partitions a client waits for.
pub(super) const LOADERS_MAX: usize = 2;

/// How long a node of a cluster answers KAFKA_STORAGE_ERROR for a partition
/// it could not take over (an unreadable object) before trying again.
pub(super) const BLOCKED_LOAD_RETRY: Duration = Duration::from_secs(10);

impl Shard {
    /// Reports the objects this shard's partitions read from, and whether
    /// it holds every partition it leads (starting to load those it does
    /// not): what the node publishes for object deletion (`crate::storage::refs`).
    pub(super) fn report_refs(&self, now_ms: i64) {
        self.ctx.sync_topics();
        // The version first: the table read after it is at least as new.
        let topics = self.ctx.topics_version();
        let view = self.ctx.cluster.view();
        let loaded = self.load_what_it_leads(&view);
        let mut refs = crate::storage::refs::Refs::default();
        for p in self.partitions.borrow().values() {
            p.borrow().note_refs(&mut refs);
        }
        if let Some(slot) = self.ctx.shard_refs.get(self.id) {
            *slot.lock() = crate::storage::refs::ShardRefs {
                revision: view.revision(),
                topics,
                loaded,
                at_ms: now_ms,
                refs,
            };
        }
    }

    /// Starts loading every partition of this shard that `view` makes this
    /// node lead and that it does not hold; answers whether it held them
    /// all. A node alone builds partitions from its own recovery on demand
    /// (their objects count as in use meanwhile), so it holds them all.
    pub(super) fn load_what_it_leads(&self, view: &crate::cluster::View) -> bool {
        if self.leadership.borrow().solo {
            return true;
        }
        if self.ctx.cluster.fenced() {
            return false;
        }
        let table = self.topics.get();
        let mut all = true;
        for info in table.iter() {
            for p in 0..info.partitions {
                if self.owner_of(&info.name, p) != self.id
                    || view
                        .leader(&info.name, p)
                        .is_some_and(|m| m.node_id != self.ctx.node_id)
                {
                    continue;
                }
                let key = (info.name.clone(), p);
                let held = self
                    .partitions
                    .borrow()
                    .get(&key)
                    .is_some_and(|l| l.borrow().topic_id == info.id.0);
                if !held {
                    all = false;
                    self.start_load(key, info.id.0, false);
                }
            }
        }
        all
    }

    /// Acts on a new cluster view: partitions this node no longer leads are
    /// dropped (their waiters woken, to be routed again).
    pub(super) fn follow_leadership(&self) {
        let generation = self.ctx.cluster.generation();
        let session = self.ctx.cluster.session();
        let fenced = self.ctx.cluster.fenced();
        let mut drop_all = false;
        let since;
        let solo;
        {
            let mut ld = self.leadership.borrow_mut();
            // A node that lost its lease (or registered again since) may
            // have missed views in which another node led its partitions:
            // nothing it holds can be trusted; it loads again what it leads.
            if (fenced || ld.session != session) && !ld.solo {
                drop_all = true;
            }
            ld.session = session;
            if ld.generation == generation && !drop_all {
                return;
            }
            since = ld.generation;
            ld.generation = generation;
            solo = ld.solo;
        }
        // A partition is kept only if this node led it in every view since
        // the last look: another node that led it in between, however
        // briefly, may have written to it.
        let me = self.ctx.node_id;
        let lost: Vec<Key> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, p)| {
                drop_all
                    || !matches!(self.route(t, *p), Route::Local)
                    || !(solo || self.ctx.cluster.led_throughout(t, *p, me, since))
            })
            .cloned()
            .collect();
        for key in lost {
            tracing::info!(topic = &*key.0, partition = key.1, "no longer the leader");
            // Its new leader reads these batches from this node's WAL
            // objects until it has compacted them: its references keep them.
            self.partitions.borrow_mut().remove(&key);
            self.wake(&key);
        }
    }

    /// Queues a partition to be loaded; one task loads what is queued, with
    /// one scan of the bucket per round.
    pub(super) fn start_load(&self, key: Key, topic_id: [u8; 16], urgent: bool) {
        let mut ld = self.leadership.borrow_mut();
        if ld.loading.contains_key(&key) {
            return;
        }
        ld.loading.insert(
            key,
            Loading {
                topic_id,
                taken: false,
            },
        );
        // A running loader takes the partition at its next round; one a
        // client waits for does not wait for a round in progress (the
        // retention pass's loads of everything led may be long): a second
        // loader takes it at once.
        if ld.loaders >= 1 && !(urgent && ld.loaders < LOADERS_MAX) {
            return;
        }
        ld.loaders += 1;
        drop(ld);
        let Some(me) = self.me.borrow().upgrade() else {
            self.leadership.borrow_mut().loaders -= 1;
            return;
        };
        glommio::spawn_local(async move {
            // Let a burst of requests queue their partitions first.
            glommio::timer::sleep(Duration::from_millis(5)).await;
            loop {
                let batch: Vec<(Key, [u8; 16])> = {
                    let mut ld = me.leadership.borrow_mut();
                    let batch: Vec<(Key, [u8; 16])> = ld
                        .loading
                        .iter()
                        .filter(|(_, l)| !l.taken)
                        .map(|(k, l)| (k.clone(), l.topic_id))
                        .collect();
                    if batch.is_empty() {
                        ld.loaders -= 1;
                        return;
                    }
                    for (k, _) in &batch {
                        if let Some(l) = ld.loading.get_mut(k) {
                            l.taken = true;
                        }
                    }
                    batch
                };
                me.load(&batch).await;
                let mut ld = me.leadership.borrow_mut();
                for (k, _) in &batch {
                    ld.loading.remove(k);
                    // Appends waiting for the load go on, in the order they
                    // came (loaded or not: they look again).
                    for w in ld.load_waiters.remove(k).unwrap_or_default() {
                        let _ = w.send(());
                    }
                }
            }
        })
        .detach();
    }

    /// Loads partitions this node has come to lead: their history from
    /// every node's objects, then a durable epoch marker, then the log.
    pub(super) async fn load(self: &Rc<Self>, batch: &[(Key, [u8; 16])]) {
        let started = Instant::now();
        let generation = self.ctx.cluster.generation();
        let view = self.view();
        let want = batch.iter().map(|((_, p), id)| (*id, *p)).collect();
        let loaded = match self.ctx.durable.load_partitions(want).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, partitions = batch.len(), "taking partitions over failed; clients retry");
                glommio::timer::sleep(Duration::from_millis(200)).await;
                return;
            }
            Err(_) => return,
        };
        let mut loaded = loaded;
        // Every partition's log and epoch marker; the markers go to the
        // WAL together (one object), not one round trip each.
        let mut logs = Vec::with_capacity(batch.len());
        let mut markers = Vec::with_capacity(batch.len());
        for ((topic, partition), id) in batch {
            let epoch = view.leader_epoch(topic, *partition);
            let found = loaded.remove(&(*id, *partition)).unwrap_or_default();
            if !found.blocked.is_empty() {
                tracing::error!(topic = &**topic, partition, objects = ?found.blocked,
                    "not taking the partition over: its history may be in an unreadable object; clients get KAFKA_STORAGE_ERROR");
                self.ctx
                    .block_partition((topic.clone(), *partition), found.blocked);
                continue;
            }
            let mut log = PartitionLog::new(topic.clone(), *id, *partition);
            log.leader_epoch = epoch;
            let batches = found.batches.len();
            for (b, producer) in found.batches {
                log.recover(b, producer);
            }
            log.start_at(found.log_end);
            let marker =
                AppendEntry::epoch_marker(topic.clone(), *id, *partition, epoch, log.log_end());
            markers.push(self.ctx.durable.append(marker));
            logs.push((topic.clone(), *partition, epoch, batches, log));
        }
        self.ctx.durable.flush();
        let written = futures_util::future::join_all(markers).await;
        let me = self.ctx.node_id;
        for ((topic, partition, epoch, batches, log), marker) in logs.into_iter().zip(written) {
            if let Err(e) = marker {
                tracing::warn!(topic = &*topic, partition, error = %e, "epoch marker not written; clients retry");
                continue;
            }
            // Still the leader, and in every view since the load began?
            if !matches!(self.route(&topic, partition), Route::Local)
                || !self
                    .ctx
                    .cluster
                    .led_throughout(&topic, partition, me, generation)
            {
                continue;
            }
            tracing::info!(
                topic = &*topic,
                partition,
                epoch,
                batches,
                log_end = log.log_end(),
                load_ms = started.elapsed().as_millis() as u64,
                "leading"
            );
            let key = (topic, partition);
            self.ctx.unblock_partition(&key);
            self.partitions
                .borrow_mut()
                .insert(key.clone(), Rc::new(RefCell::new(log)));
            self.wake(&key);
        }
    }
}
