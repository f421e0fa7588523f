//! The log cache's accounting: which batches a shard holds in memory, what
//! they pin in the arena, and eviction.
//!
//! [`Cache`] is a plain type: it is told what a shard caches and releases,
//! charges the node's metrics for it, and asks its caller (through a
//! closure) whether a batch is still held or could be evicted. The shard
//! wraps it at the bottom of this file.

use super::{Key, Shard};
use crate::arena::{ChargeMove, ChunkHolders, ChunkSpan};
use crate::metrics::Metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A shard's log cache accounting, and the shard's read arena.
///
/// `ferry.cache.bytes.max` bounds what the shard is charged: every arena
/// chunk that at least one of its cached batches lies in and that no
/// lower-numbered shard's cache also holds, at its full length (so a chunk
/// held by several shards is charged once, node-wide), plus the length of
/// cached bytes that are not in the arena (batches read back from the
/// bucket). Chunks are shared with other batches and with requests in
/// flight, so this is an attribution of the memory held, not an exact share:
/// see `crate::arena`. [`Metrics::cache_bytes`] counts the batches' own
/// bytes. `order` is the
/// order batches came in, so the oldest durable ones are dropped first.
///
/// What a shard is charged lives in [`Metrics::cache_pinned_bytes`], since
/// other shards move charges in and out of it ([`ChunkHolders`]).
#[derive(Debug, Default)]
pub(super) struct Cache {
    /// A chunk (its [`CacheEntry::chunk`] key) to what this cache knows of it.
    chunks: HashMap<usize, HeldChunk>,
    order: VecDeque<CacheEntry>,
    pub(super) arena: Option<crate::arena::Arena>,
}

/// An arena chunk some of this cache's batches lie in.
#[derive(Debug)]
struct HeldChunk {
    /// Cached batches in it.
    batches: usize,
    len: usize,
    /// Its holders; `None` where this shard charges itself in full (a shard
    /// numbered past [`crate::arena::HOLDER_SHARDS_MAX`]).
    holders: Option<Arc<ChunkHolders>>,
}

/// One cached batch, as the cache is charged for it.
#[derive(Debug)]
pub(super) struct CacheEntry {
    key: Key,
    base_offset: i64,
    len: usize,
    /// The arena chunk its bytes lie in, if they are the arena's, as the
    /// key of [`Cache::chunks`]: the address of the chunk's holders (one per
    /// mapping, kept alive by the entry, so a mapping made later at the same
    /// address is another key), or the chunk's base address where the shard
    /// charges itself in full.
    chunk: Option<usize>,
}

/// Moves a chunk's charge of `len` bytes between shards' caches.
fn move_charge(metrics: &Metrics, m: ChargeMove, len: usize) {
    if m.from == m.to {
        return;
    }
    if let Some(from) = m.from {
        metrics.cache_pinned_bytes_add(from, -(len as i64));
    }
    if let Some(to) = m.to {
        metrics.cache_pinned_bytes_add(to, len as i64);
    }
}

impl Cache {
    /// Charges shard `shard` for a batch of `len` bytes of partition `key` at
    /// `base_offset`, whose body lies in `chunk` (from
    /// [`crate::arena::chunk_of`]; `None`: not arena memory).
    pub(super) fn charge(
        &mut self,
        shard: usize,
        metrics: &Metrics,
        key: Key,
        base_offset: i64,
        len: usize,
        chunk: Option<ChunkSpan>,
    ) {
        let chunk_key = match chunk {
            Some(span) => {
                let chunks = &mut self.chunks;
                // The holders' address is the key; their count is touched
                // (a clone kept in the map) only for a chunk new here.
                let key = crate::arena::with_chunk_holders(span, |holders| {
                    let holders = holders.filter(|_| shard < crate::arena::HOLDER_SHARDS_MAX);
                    let key = holders.map_or(span.base, |h| Arc::as_ptr(h) as usize);
                    let held = chunks.entry(key).or_insert_with(|| HeldChunk {
                        batches: 0,
                        len: span.len,
                        holders: holders.cloned(),
                    });
                    held.batches += 1;
                    if held.batches == 1 {
                        match &held.holders {
                            Some(holders) => move_charge(metrics, holders.join(shard), span.len),
                            None => metrics.cache_pinned_bytes_add(shard, span.len as i64),
                        }
                    }
                    key
                });
                Some(key)
            }
            None => {
                metrics.cache_pinned_bytes_add(shard, len as i64);
                None
            }
        };
        self.order.push_back(CacheEntry {
            key,
            base_offset,
            len,
            chunk: chunk_key,
        });
        metrics.cache_bytes_add(shard, len as i64);
    }

    /// Takes an entry that no longer holds its batch out of the accounting.
    fn release(&mut self, shard: usize, metrics: &Metrics, e: &CacheEntry) {
        match e.chunk {
            Some(key) => match self.chunks.get_mut(&key) {
                Some(held) if held.batches > 1 => held.batches -= 1,
                Some(_) => match self.chunks.remove(&key) {
                    Some(HeldChunk {
                        len,
                        holders: Some(holders),
                        ..
                    }) => move_charge(metrics, holders.leave(shard), len),
                    Some(HeldChunk {
                        len, holders: None, ..
                    }) => metrics.cache_pinned_bytes_add(shard, -(len as i64)),
                    None => {}
                },
                None => {}
            },
            None => metrics.cache_pinned_bytes_add(shard, -(e.len as i64)),
        }
        metrics.cache_bytes_add(shard, -(e.len as i64));
    }

    /// Releases the entries whose batch is gone without being evicted
    /// (retention, a failed write's rollback, a partition that left the
    /// shard): `held` says whether partition `key` still holds the batch at
    /// `base_offset` in memory.
    pub(super) fn sweep(
        &mut self,
        shard: usize,
        metrics: &Metrics,
        mut held: impl FnMut(&Key, i64) -> bool,
    ) {
        let entries = std::mem::take(&mut self.order);
        let mut kept = VecDeque::with_capacity(entries.len());
        for e in entries {
            if held(&e.key, e.base_offset) {
                kept.push_back(e);
            } else {
                self.release(shard, metrics, &e);
            }
        }
        self.order = kept;
    }

    /// Drops the oldest durable batches while what `shard` is charged is
    /// over `max`. `evict` drops the batch of partition `key` at
    /// `base_offset` from memory: `Some(true)` dropped, `Some(false)` not
    /// durable yet (kept, and the next one is tried), `None` gone already.
    pub(super) fn evict_over(
        &mut self,
        shard: usize,
        metrics: &Metrics,
        max: i64,
        mut evict: impl FnMut(&Key, i64) -> Option<bool>,
    ) {
        let mut skipped = 0;
        while metrics.cache_pinned_bytes(shard) > max && skipped < self.order.len() {
            let Some(e) = self.order.pop_front() else {
                break;
            };
            if evict(&e.key, e.base_offset) == Some(false) {
                self.order.push_back(e);
                skipped += 1;
                continue;
            }
            self.release(shard, metrics, &e);
        }
    }
}

impl Shard {
    /// Charges the cache for a batch of `len` bytes whose body lies in
    /// `chunk` (see [`Cache::charge`]).
    pub(super) fn cached(
        &self,
        topic: &Arc<str>,
        partition: i32,
        base_offset: i64,
        len: usize,
        chunk: Option<ChunkSpan>,
    ) {
        self.cache.borrow_mut().charge(
            self.id,
            &self.ctx.metrics,
            (topic.clone(), partition),
            base_offset,
            len,
            chunk,
        );
    }

    /// Releases the entries whose batch the shard's partitions no longer
    /// hold in memory (see [`Cache::sweep`]).
    pub(super) fn sweep_cache(&self) {
        let partitions = self.partitions.borrow();
        self.cache
            .borrow_mut()
            .sweep(self.id, &self.ctx.metrics, |key, base_offset| {
                partitions
                    .get(key)
                    .is_some_and(|log| log.borrow().holds_cached(base_offset))
            });
    }

    /// Drops the oldest durable batches while the cache's pinned bytes are
    /// over `ferry.cache.bytes.max`.
    pub(super) fn evict_if_needed(&self) {
        let partitions = self.partitions.borrow();
        self.cache.borrow_mut().evict_over(
            self.id,
            &self.ctx.metrics,
            self.ctx.cache_bytes_max as i64,
            |key, base_offset| {
                partitions
                    .get(key)
                    .and_then(|log| log.borrow_mut().evict(base_offset))
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{Arena, ArenaStats};

    fn key(p: i32) -> Key {
        (Arc::from("t"), p)
    }

    /// Frames of `sizes` bytes cut from one read buffer of `arena`, so
    /// they lie in one chunk, and that chunk.
    fn arena_frames(arena: &Arena, sizes: &[usize]) -> (Vec<bytes::Bytes>, ChunkSpan) {
        let mut buf = arena.read_buf(64 * 1024);
        let reader = ferry_protocol::frame::FrameReader::new(1 << 20);
        let mut input = Vec::new();
        for &n in sizes {
            input.extend((n as i32).to_be_bytes());
            input.resize(input.len() + n, 7);
        }
        buf.space(input.len()).unwrap()[..input.len()].copy_from_slice(&input);
        buf.filled(input.len());
        let mut frames = Vec::new();
        while let Some(f) = buf.next_frame(&reader).unwrap() {
            frames.push(f);
        }
        let span = crate::arena::chunk_of(&frames[0]).expect("arena memory");
        for f in &frames {
            assert_eq!(crate::arena::chunk_of(f), Some(span), "one chunk");
        }
        (frames, span)
    }

    #[test]
    fn heap_batches_are_charged_their_length_and_released() {
        let m = Metrics::new(2);
        let mut c = Cache::default();
        c.charge(1, &m, key(0), 0, 100, None);
        c.charge(1, &m, key(0), 1, 50, None);
        assert_eq!((m.cache_pinned_bytes(1), m.cache_bytes(1)), (150, 150));
        assert_eq!(m.cache_pinned_bytes(0), 0, "another shard pays nothing");
        // The partition no longer holds offset 0.
        c.sweep(1, &m, |_, base| base != 0);
        assert_eq!((m.cache_pinned_bytes(1), m.cache_bytes(1)), (50, 50));
        c.sweep(1, &m, |_, _| false);
        assert_eq!((m.cache_pinned_bytes(1), m.cache_bytes(1)), (0, 0));
    }

    #[test]
    fn batches_in_one_chunk_charge_it_once_until_the_last_goes() {
        let m = Metrics::new(1);
        let arena = Arena::new(Arc::new(ArenaStats::default()));
        let (frames, span) = arena_frames(&arena, &[100, 100]);
        let mut c = Cache::default();
        c.charge(0, &m, key(0), 0, frames[0].len(), Some(span));
        c.charge(0, &m, key(0), 1, frames[1].len(), Some(span));
        assert_eq!(m.cache_pinned_bytes(0), span.len as i64);
        assert_eq!(m.cache_bytes(0), 200);
        c.sweep(0, &m, |_, base| base == 1);
        assert_eq!(
            m.cache_pinned_bytes(0),
            span.len as i64,
            "one batch still in it"
        );
        c.sweep(0, &m, |_, _| false);
        assert_eq!(m.cache_pinned_bytes(0), 0);
    }

    #[test]
    fn a_chunk_two_shards_hold_is_charged_to_the_lower_one() {
        let m = Metrics::new(2);
        let arena = Arena::new(Arc::new(ArenaStats::default()));
        let (_frames, span) = arena_frames(&arena, &[100]);
        let (mut c0, mut c1) = (Cache::default(), Cache::default());
        c1.charge(1, &m, key(1), 0, 100, Some(span));
        assert_eq!(
            (m.cache_pinned_bytes(0), m.cache_pinned_bytes(1)),
            (0, span.len as i64)
        );
        c0.charge(0, &m, key(0), 0, 100, Some(span));
        assert_eq!(
            (m.cache_pinned_bytes(0), m.cache_pinned_bytes(1)),
            (span.len as i64, 0)
        );
        c0.sweep(0, &m, |_, _| false);
        assert_eq!(
            (m.cache_pinned_bytes(0), m.cache_pinned_bytes(1)),
            (0, span.len as i64),
            "the charge goes back to shard 1"
        );
    }

    #[test]
    fn eviction_drops_the_oldest_durable_batches_until_under_the_bound() {
        let m = Metrics::new(1);
        let mut c = Cache::default();
        for base in 0..5 {
            c.charge(0, &m, key(0), base, 100, None);
        }
        // Offset 0 is not durable yet; offset 3 is gone already.
        let mut asked = Vec::new();
        c.evict_over(0, &m, 250, |_, base| {
            asked.push(base);
            match base {
                0 => Some(false),
                3 => None,
                _ => Some(true),
            }
        });
        assert_eq!(asked, [0, 1, 2, 3]);
        assert_eq!(
            m.cache_pinned_bytes(0),
            200,
            "at the bound, not under it by more"
        );
        // What is left: offset 4, then offset 0 (kept, now at the back).
        let mut left = Vec::new();
        c.sweep(0, &m, |_, base| {
            left.push(base);
            true
        });
        assert_eq!(left, [4, 0]);
    }

    #[test]
    fn eviction_stops_when_nothing_left_is_durable() {
        let m = Metrics::new(1);
        let mut c = Cache::default();
        for base in 0..3 {
            c.charge(0, &m, key(0), base, 100, None);
        }
        let mut asked = 0;
        c.evict_over(0, &m, 0, |_, _| {
            asked += 1;
            Some(false)
        });
        assert_eq!(asked, 3, "each batch asked once, then it stops");
        assert_eq!(m.cache_pinned_bytes(0), 300);
    }
}
