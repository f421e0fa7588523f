//! The log cache's accounting: which batches a shard holds in memory, what
//! they pin in the arena, and eviction.

use super::*;

/// The shard's log cache accounting, and the shard's read arena.
///
/// `ferry.cache.bytes.max` bounds what the shard is charged: every arena
/// chunk that at least one of its cached batches lies in and that no
/// lower-numbered shard's cache also holds, at its full length (so a chunk
/// held by several shards is charged once, node-wide), plus the length of
/// cached bytes that are not in the arena (batches read back from the
/// bucket). Chunks are shared with other batches and with requests in
/// flight, so this is an attribution of the memory held, not an exact share:
/// see `crate::arena`. `bytes` counts the batches' own bytes. `order` is the
/// order batches came in, so the oldest durable ones are dropped first.
#[derive(Debug, Default)]
pub(super) struct Cache {
    pub(super) bytes: usize,
    /// A chunk (its [`CacheEntry::chunk`] key) to (cached batches in it,
    /// chunk length, its holders: `None` where this shard charges itself in
    /// full). What the shard is charged is `NodeMetrics::cache_pinned_bytes`
    /// (other shards move charges in and out of it, see
    /// [`crate::arena::ChunkHolders`]).
    pub(super) chunks: HashMap<usize, (usize, usize, Option<Arc<crate::arena::ChunkHolders>>)>,
    pub(super) order: VecDeque<CacheEntry>,
    pub(super) arena: Option<crate::arena::Arena>,
}

/// One cached batch, as the cache is charged for it.
#[derive(Debug)]
pub(super) struct CacheEntry {
    pub(super) key: Key,
    pub(super) base_offset: i64,
    pub(super) len: usize,
    /// The arena chunk its bytes lie in, if they are the arena's, as the
    /// key of [`Cache::chunks`]: the address of the chunk's holders (one per
    /// mapping, kept alive by the entry, so a mapping made later at the same
    /// address is another key), or the chunk's base address where the shard
    /// charges itself in full.
    pub(super) chunk: Option<usize>,
}

impl Shard {
    /// Charges the cache for a batch of `len` bytes whose body lies in
    /// `chunk` (from [`crate::arena::chunk_of`]; `None`: not arena memory).
    pub(super) fn cached(
        &self,
        topic: &Arc<str>,
        partition: i32,
        base_offset: i64,
        len: usize,
        chunk: Option<crate::arena::ChunkSpan>,
    ) {
        let mut c = self.cache.borrow_mut();
        c.bytes += len;
        let id = self.id;
        let chunk_key = match chunk {
            Some(span) => {
                let chunks = &mut c.chunks;
                // The holders' address is the key; their count is touched
                // (a clone kept in the map) only for a chunk new here.
                let key = crate::arena::with_chunk_holders(span, |holders| {
                    let holders = holders.filter(|_| id < crate::arena::HOLDER_SHARDS_MAX);
                    let key = holders.map_or(span.base, |h| Arc::as_ptr(h) as usize);
                    let e = chunks
                        .entry(key)
                        .or_insert_with(|| (0, span.len, holders.cloned()));
                    e.0 += 1;
                    if e.0 == 1 {
                        match &e.2 {
                            Some(holders) => self.move_charge(holders.join(id), span.len),
                            None => self.ctx.metrics.cache_pinned_bytes_add(id, span.len as i64),
                        }
                    }
                    key
                });
                Some(key)
            }
            None => {
                self.ctx.metrics.cache_pinned_bytes_add(id, len as i64);
                None
            }
        };
        c.order.push_back(CacheEntry {
            key: (topic.clone(), partition),
            base_offset,
            len,
            chunk: chunk_key,
        });
        self.ctx.metrics.cache_bytes_add(self.id, len as i64);
    }

    /// Takes an entry that no longer holds its batch out of the accounting.
    pub(super) fn release(&self, c: &mut Cache, e: &CacheEntry) {
        match e.chunk {
            Some(key) => match c.chunks.get_mut(&key) {
                Some(n) if n.0 > 1 => n.0 -= 1,
                Some(_) => match c.chunks.remove(&key) {
                    Some((_, len, Some(holders))) => self.move_charge(holders.leave(self.id), len),
                    Some((_, len, None)) => self
                        .ctx
                        .metrics
                        .cache_pinned_bytes_add(self.id, -(len as i64)),
                    None => {}
                },
                None => {}
            },
            None => self
                .ctx
                .metrics
                .cache_pinned_bytes_add(self.id, -(e.len as i64)),
        }
        c.bytes = c.bytes.saturating_sub(e.len);
        self.ctx.metrics.cache_bytes_add(self.id, -(e.len as i64));
    }

    /// Releases the entries whose batch is gone without being evicted
    /// (retention, a failed write's rollback, a partition that left the
    /// shard), so their chunks stop being held and charged here.
    pub(super) fn sweep_cache(&self) {
        let mut c = self.cache.borrow_mut();
        let partitions = self.partitions.borrow();
        let entries = std::mem::take(&mut c.order);
        let mut kept = VecDeque::with_capacity(entries.len());
        for e in entries {
            let live = partitions
                .get(&e.key)
                .is_some_and(|log| log.borrow().holds_cached(e.base_offset));
            if live {
                kept.push_back(e);
            } else {
                self.release(&mut c, &e);
            }
        }
        c.order = kept;
    }

    /// Moves a chunk's charge of `len` bytes between shards' caches.
    pub(super) fn move_charge(&self, m: crate::arena::ChargeMove, len: usize) {
        if m.from == m.to {
            return;
        }
        let metrics = &self.ctx.metrics;
        if let Some(from) = m.from {
            metrics.cache_pinned_bytes_add(from, -(len as i64));
        }
        if let Some(to) = m.to {
            metrics.cache_pinned_bytes_add(to, len as i64);
        }
    }

    /// Drops the oldest durable batches while the cache's pinned bytes are
    /// over the bound.
    pub(super) fn evict_if_needed(&self) {
        let max = self.ctx.cache_bytes_max as i64;
        let mut c = self.cache.borrow_mut();
        let mut skipped = 0;
        while self.ctx.metrics.cache_pinned_bytes(self.id) > max && skipped < c.order.len() {
            let Some(e) = c.order.pop_front() else {
                break;
            };
            let evicted = self
                .partitions
                .borrow()
                .get(&e.key)
                .and_then(|log| log.borrow_mut().evict(e.base_offset));
            if evicted == Some(false) {
                // Not durable yet: keep it, look at the next.
                c.order.push_back(e);
                skipped += 1;
                continue;
            }
            self.release(&mut c, &e);
        }
    }
}
