//! A per-shard off-heap read arena: the memory that connections read
//! request bytes into, and so the memory that the log cache holds.
//!
//! # Chunks
//!
//! Memory comes in chunks, each one anonymous mapping
//! (`memmap2::MmapMut::map_anon`), never the malloc heap. Chunk sizes are
//! powers of two from [`CHUNK_BYTES_MIN`] (64 KiB) to
//! [`CHUNK_BYTES_POOLED_MAX`] (64 MiB), one size class each; a connection
//! asks for chunks of about 16 of its frames (see `conn`), so a client of
//! small requests reads into 64 KiB chunks and a producer of 1 MB requests
//! into 4 MiB ones. A frame larger than the connection's chunk size gets a
//! chunk of its own class (the rest of that chunk then takes the frames
//! after it); a frame larger than the largest class gets a mapping of its
//! own size, which is never pooled.
//!
//! A chunk is shared, through an `Arc`, by the [`ReadBuf`] writing into it
//! and by every `Bytes` view handed out of it (`Bytes::from_owner`). When
//! the last of them drops (on any shard's thread: a produce's batches are
//! cached by the shard that owns the partition) the mapping goes back to
//! its home arena's free list for its class, a lock-free
//! `crossbeam::queue::ArrayQueue`, or is unmapped if that list or the
//! arena's pool budget ([`POOL_BYTES_MAX`]) is full. Chunks from the free
//! list are reused as they are: their pages are already touched, and a read
//! only ever exposes bytes that the same read wrote.
//!
//! # Writing and reading the same chunk
//!
//! The [`ReadBuf`] of a connection is the only writer of its current chunk,
//! and it writes only past everything it has handed out: bytes
//! `[0, start)` are in views (immutable from then on, until the chunk is
//! free again), `[start, end)` are read but not yet a whole frame, and
//! socket reads go into `[end, len)`. A frame that does not fit in what is
//! left of the chunk has its bytes so far copied to a fresh chunk (or to
//! the front of the same chunk if nothing else holds it); no view ever
//! moves or changes.
//!
//! # What the log cache is charged
//!
//! [`chunk_of`] finds the chunk (its base address and length) that a view
//! lies in, through a process-wide table of live mappings. The log cache
//! (`shard::Cache`) charges each chunk that at least one of its cached
//! batches lies in, once, at the chunk's full length, for as long as one
//! does; `ferry.cache.bytes.max` bounds that sum. This is the memory the
//! cache keeps from being reused, but it is an attribution, not an exact
//! share:
//!
//! - a chunk is shared by every frame read into it: other batches (cached
//!   or not), requests still being worked on, and the connection's own
//!   unread tail. While the cache holds one batch of a chunk the whole
//!   chunk counts against the cache, even if other holders would keep it
//!   anyway; once the cache drops its last batch of a chunk, the chunk is
//!   no longer charged, even if an in-flight request still holds it;
//! - a produce request's batches can be cached by several shards (the
//!   owners of their partitions). The chunk is charged once, to the
//!   lowest-numbered shard holding one of its batches ([`ChunkHolders`]);
//!   when that shard drops its last, the charge moves to the next holder.
//!   Shards numbered [`HOLDER_SHARDS_MAX`] and up charge every chunk they
//!   hold in full, as if alone (so a chunk can then count twice, never less
//!   than once);
//! - bytes that are not in the arena (batches read back from the bucket,
//!   the 16-byte heads the partition writes) are charged their length.
//!
//! Each arena's own counters ([`ArenaStats`]) are exact: bytes and chunks
//! mapped, and bytes and chunks in use (held by a read buffer or a view).

use arc_swap::ArcSwap;
use bytes::Bytes;
use crossbeam::queue::ArrayQueue;
use ferry_protocol::frame::{FrameError, FrameReader};
use memmap2::MmapMut;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// The smallest chunk, and the size of size class 0.
pub const CHUNK_BYTES_MIN: usize = 64 * 1024;
/// Size classes: class `k` holds chunks of `CHUNK_BYTES_MIN << k` bytes.
pub const CLASSES: usize = 11;
/// The largest chunk that is pooled (64 MiB); larger frames get a mapping
/// of their own size.
pub const CHUNK_BYTES_POOLED_MAX: usize = CHUNK_BYTES_MIN << (CLASSES - 1);
/// Most bytes of free chunks an arena keeps mapped for reuse.
pub const POOL_BYTES_MAX: usize = 32 << 20;
/// Pages are this large at least; exact-size mappings are rounded to it.
const PAGE_BYTES: usize = 4096;
/// With nothing pending, a tail smaller than this is not worth a read: the
/// next frame would likely have to move.
const TAIL_BYTES_MIN: usize = 4096;

/// One arena's counters. Updated with relaxed atomics from any thread (a
/// chunk is released where its last view drops).
#[derive(Debug, Default)]
pub struct ArenaStats {
    /// Bytes of every live mapping: in use and free.
    pub mapped_bytes: AtomicU64,
    pub chunks_mapped: AtomicU64,
    /// Bytes of chunks held by a read buffer or by a view: pinned.
    pub in_use_bytes: AtomicU64,
    pub chunks_in_use: AtomicU64,
    /// Mappings made and unmapped since start (the pool's misses).
    pub maps_total: AtomicU64,
    pub unmaps_total: AtomicU64,
}

/// A chunk, as [`chunk_of`] names it: its first byte's address and its
/// length. Unique among live chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSpan {
    pub base: usize,
    pub len: usize,
}

/// Every live mapping of every arena in the process: base address to
/// length. Written when a mapping is made or unmapped (rare: chunks are
/// pooled), read by [`chunk_of`].
/// Live mappings: base address to length and holders.
type MappingTable = BTreeMap<usize, (usize, Arc<ChunkHolders>)>;

static MAPPINGS: std::sync::LazyLock<ArcSwap<MappingTable>> =
    std::sync::LazyLock::new(|| ArcSwap::from_pointee(BTreeMap::new()));
/// Taken by whoever changes [`MAPPINGS`], so changes do not race.
static MAPPINGS_WRITER: parking_lot::Mutex<()> = parking_lot::const_mutex(());

thread_local! {
    /// This thread's handle on [`MAPPINGS`]: the lookup on the hot path
    /// compares one pointer with the published one, which moves only when a
    /// mapping is made or unmapped, and takes no lock shared between shards.
    static LOCAL_MAPPINGS: std::cell::RefCell<arc_swap::Cache<&'static ArcSwap<MappingTable>, Arc<MappingTable>>> =
        std::cell::RefCell::new(arc_swap::Cache::new(&*MAPPINGS));
}

/// Publishes a changed copy of [`MAPPINGS`].
fn change_mappings(change: impl FnOnce(&mut MappingTable)) {
    let _writer = MAPPINGS_WRITER.lock();
    let mut map = MappingTable::clone(&MAPPINGS.load());
    change(&mut map);
    MAPPINGS.store(Arc::new(map));
}

/// The arena chunk that `bytes` lie in, `None` for memory that is not an
/// arena's (the heap) or for an empty slice. A live view keeps its chunk
/// mapped, so the answer for a view's bytes is its own chunk.
pub fn chunk_of(bytes: &[u8]) -> Option<ChunkSpan> {
    if bytes.is_empty() {
        return None;
    }
    let p = bytes.as_ptr() as usize;
    with_mappings(|m| {
        let (&base, &(len, _)) = m.range(..=p).next_back()?;
        (p - base < len).then_some(ChunkSpan { base, len })
    })
}

/// The holders of the live chunk `span` names (see [`ChunkHolders`]),
/// handed to `f` without touching their reference count: a cache that
/// already tracks the chunk needs only their address.
pub fn with_chunk_holders<T>(
    span: ChunkSpan,
    f: impl FnOnce(Option<&Arc<ChunkHolders>>) -> T,
) -> T {
    with_mappings(|m| {
        f(m.get(&span.base)
            .filter(|(len, _)| *len == span.len)
            .map(|(_, h)| h))
    })
}

/// Runs `f` on the current [`MAPPINGS`]. A view's chunk was mapped (and
/// published) before the view was made, and the view reached this thread
/// after that, so the table `f` sees has that chunk.
fn with_mappings<T>(f: impl FnOnce(&MappingTable) -> T) -> T {
    LOCAL_MAPPINGS.with(|local| f(local.borrow_mut().load()))
}

/// Shards whose holders a chunk tracks; a shard numbered this or higher
/// charges every chunk it holds in full (see [`ChunkHolders`]).
pub const HOLDER_SHARDS_MAX: usize = 64;

/// Which shards' log caches hold at least one batch of a chunk, one bit a
/// shard, so that the chunk is charged to exactly one of them: the lowest
/// numbered. A shard joins when it caches its first batch of the chunk and
/// leaves when it drops its last; each change is one atomic `or` / `and`,
/// and says whose charge moves where ([`ChargeMove`]). The changes are
/// totally ordered, so applying every move (from any thread, in any order)
/// leaves each held chunk charged once, to its lowest holder.
#[derive(Debug, Default)]
pub struct ChunkHolders(std::sync::atomic::AtomicU64);

/// The charge for a chunk moving from one shard to another (`None`: no
/// shard, the chunk was or becomes unheld). `from == to` moves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeMove {
    pub from: Option<usize>,
    pub to: Option<usize>,
}

fn lowest(mask: u64) -> Option<usize> {
    (mask != 0).then(|| mask.trailing_zeros() as usize)
}

impl ChunkHolders {
    /// Shard `shard` (< [`HOLDER_SHARDS_MAX`]) holds a batch of the chunk now.
    pub fn join(&self, shard: usize) -> ChargeMove {
        let bit = 1u64 << shard;
        let old = self.0.fetch_or(bit, std::sync::atomic::Ordering::AcqRel);
        ChargeMove {
            from: lowest(old),
            to: lowest(old | bit),
        }
    }

    /// Shard `shard` holds no batch of the chunk any more.
    pub fn leave(&self, shard: usize) -> ChargeMove {
        let bit = 1u64 << shard;
        let old = self.0.fetch_and(!bit, std::sync::atomic::Ordering::AcqRel);
        ChargeMove {
            from: lowest(old),
            to: lowest(old & !bit),
        }
    }
}

/// The size class for a chunk of at least `len` bytes, `None` above the
/// largest class.
fn class_for(len: usize) -> Option<usize> {
    let size = len.max(CHUNK_BYTES_MIN).checked_next_power_of_two()?;
    let k = (size / CHUNK_BYTES_MIN).trailing_zeros() as usize;
    (k < CLASSES).then_some(k)
}

/// One anonymous mapping, with its address taken once (raw, so no
/// reference to the whole mapping is ever made after that).
struct Mapping {
    /// Held for its `Drop`, which unmaps; the bytes are reached via `ptr`.
    _map: MmapMut,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `ptr` points into `map`, which this value owns alone; moving the
// value to another thread moves that ownership with it. `MmapMut` is Send.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(len: usize) -> std::io::Result<Mapping> {
        let mut map = MmapMut::map_anon(len)?;
        let ptr = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| std::io::Error::other("mmap returned a null address"))?;
        change_mappings(|m| {
            m.insert(
                ptr.as_ptr() as usize,
                (len, Arc::new(ChunkHolders::default())),
            );
        });
        Ok(Mapping {
            _map: map,
            ptr,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Out of the table before the mapping goes (`_map` drops after
        // this), so no lookup names an address that is unmapped.
        change_mappings(|m| {
            m.remove(&(self.ptr.as_ptr() as usize));
        });
    }
}

/// A shard's free chunks, by size class, and its counters.
struct Pool {
    free: Vec<ArrayQueue<Mapping>>,
    /// Bytes in `free`, kept under `budget`.
    pooled_bytes: AtomicUsize,
    budget: usize,
    stats: Arc<ArenaStats>,
}

impl Pool {
    /// A chunk of at least `len` bytes: a free one of its class, or a new
    /// mapping.
    fn take(self: &Arc<Self>, len: usize) -> std::io::Result<Arc<Chunk>> {
        let class = class_for(len);
        let reused = class.and_then(|k| self.free[k].pop());
        let mapping = match reused {
            Some(m) => {
                self.pooled_bytes.fetch_sub(m.len, Relaxed);
                m
            }
            None => {
                let size = match class {
                    Some(k) => CHUNK_BYTES_MIN << k,
                    None => len.div_ceil(PAGE_BYTES) * PAGE_BYTES,
                };
                let m = Mapping::new(size)?;
                self.stats.mapped_bytes.fetch_add(size as u64, Relaxed);
                self.stats.chunks_mapped.fetch_add(1, Relaxed);
                self.stats.maps_total.fetch_add(1, Relaxed);
                m
            }
        };
        self.stats
            .in_use_bytes
            .fetch_add(mapping.len as u64, Relaxed);
        self.stats.chunks_in_use.fetch_add(1, Relaxed);
        Ok(Arc::new(Chunk {
            ptr: mapping.ptr,
            len: mapping.len,
            class,
            mapping: Some(mapping),
            pool: self.clone(),
        }))
    }

    /// A chunk nothing holds any more: back to the free list, or unmapped.
    fn give_back(&self, mapping: Mapping, class: Option<usize>) {
        let len = mapping.len;
        self.stats.in_use_bytes.fetch_sub(len as u64, Relaxed);
        self.stats.chunks_in_use.fetch_sub(1, Relaxed);
        let mut mapping = mapping;
        if let Some(k) = class {
            if self.pooled_bytes.fetch_add(len, Relaxed) + len <= self.budget {
                match self.free[k].push(mapping) {
                    Ok(()) => return,
                    Err(m) => mapping = m,
                }
            }
            self.pooled_bytes.fetch_sub(len, Relaxed);
        }
        drop(mapping);
        self.stats.mapped_bytes.fetch_sub(len as u64, Relaxed);
        self.stats.chunks_mapped.fetch_sub(1, Relaxed);
        self.stats.unmaps_total.fetch_add(1, Relaxed);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for q in &self.free {
            while let Some(m) = q.pop() {
                self.stats.mapped_bytes.fetch_sub(m.len as u64, Relaxed);
                self.stats.chunks_mapped.fetch_sub(1, Relaxed);
                self.stats.unmaps_total.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A chunk in use. Its memory is written only by the one [`ReadBuf`] that
/// took it, and only in ranges no view covers (see the module docs).
struct Chunk {
    ptr: NonNull<u8>,
    len: usize,
    class: Option<usize>,
    mapping: Option<Mapping>,
    pool: Arc<Pool>,
}

// SAFETY: the chunk's bytes are shared between threads only as views
// (`View`), which read ranges that are never written again while the chunk
// lives; the one writer (a `ReadBuf`, on its connection's thread) writes
// only ranges that no view covers. Dropping the chunk on any thread hands
// its mapping (Send) back to its pool, whose queues are lock-free and whose
// counters are atomics.
unsafe impl Send for Chunk {}
// SAFETY: as for Send: `&Chunk` gives no access to bytes that anyone writes.
unsafe impl Sync for Chunk {}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(m) = self.mapping.take() {
            self.pool.give_back(m, self.class);
        }
    }
}

/// The owner behind a `Bytes` view: a range of a chunk, which it keeps
/// alive.
struct View {
    chunk: Arc<Chunk>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `off + len <= chunk.len` (checked when the view was made)
        // and the chunk stays mapped while `self.chunk` lives. The range was
        // written before the view was made and is never written again while
        // the chunk lives (the writer only writes past every view, and a
        // chunk is reused only once every view of it has dropped).
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.off), self.len) }
    }
}

/// A shard's arena: where its connections' read buffers take chunks from.
#[derive(Clone)]
pub struct Arena {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("stats", &self.pool.stats)
            .finish()
    }
}

impl Arena {
    /// An arena counting into `stats`, keeping up to [`POOL_BYTES_MAX`] of
    /// free chunks.
    pub fn new(stats: Arc<ArenaStats>) -> Arena {
        Arena::with_pool_budget(stats, POOL_BYTES_MAX)
    }

    /// An arena keeping up to `budget` bytes of free chunks for reuse.
    pub fn with_pool_budget(stats: Arc<ArenaStats>, budget: usize) -> Arena {
        let free = (0..CLASSES)
            .map(|k| ArrayQueue::new((budget / (CHUNK_BYTES_MIN << k)).max(1)))
            .collect();
        Arena {
            pool: Arc::new(Pool {
                free,
                pooled_bytes: AtomicUsize::new(0),
                budget,
                stats,
            }),
        }
    }

    pub fn stats(&self) -> &ArenaStats {
        &self.pool.stats
    }

    /// An empty read buffer taking chunks of about `chunk_bytes`.
    pub fn read_buf(&self, chunk_bytes: usize) -> ReadBuf {
        ReadBuf {
            pool: self.pool.clone(),
            chunk: None,
            start: 0,
            end: 0,
            chunk_bytes,
        }
    }
}

/// A connection's read buffer: socket bytes go into the unused tail of its
/// current chunk, and whole frames come out as `Bytes` views of it.
pub struct ReadBuf {
    pool: Arc<Pool>,
    chunk: Option<Arc<Chunk>>,
    /// Bytes before `start` are handed out; `[start, end)` are pending.
    start: usize,
    end: usize,
    chunk_bytes: usize,
}

impl ReadBuf {
    /// Bytes read and not yet handed out (the start of the next frame).
    pub fn pending(&self) -> &[u8] {
        match &self.chunk {
            // SAFETY: `start <= end <= chunk.len`; `[start, end)` was written
            // by this buffer and no view covers it; `&self` keeps `space`
            // (the only writer) from running while this borrow lives.
            Some(c) => unsafe {
                std::slice::from_raw_parts(c.ptr.as_ptr().add(self.start), self.end - self.start)
            },
            None => &[],
        }
    }

    /// The size of chunks to take from now on (rounded up to a class).
    pub fn set_chunk_bytes(&mut self, chunk_bytes: usize) {
        self.chunk_bytes = chunk_bytes;
    }

    /// Where to read next: at least `need` bytes (what the pending frame
    /// still lacks, at least 1), after the pending bytes. If the current
    /// chunk's tail is too small, the pending bytes move first, to the
    /// front of the same chunk if nothing else holds it, or else to a
    /// fresh chunk. Call [`ReadBuf::filled`] with what was read.
    pub fn space(&mut self, need: usize) -> std::io::Result<&mut [u8]> {
        let need = need.max(1);
        let pending = self.end - self.start;
        let mut fits = false;
        if let Some(c) = self.chunk.as_mut() {
            let unique = Arc::get_mut(c).is_some();
            if unique && self.start > 0 && (pending == 0 || c.len - self.end < need) {
                // No view of this chunk is left: start over at its front.
                if pending + need <= c.len {
                    // SAFETY: both ranges lie within the chunk; nothing else
                    // holds it (`get_mut` succeeded, and only this buffer can
                    // make new views), so no view sees these bytes; `copy`
                    // allows the ranges to overlap.
                    unsafe {
                        std::ptr::copy(c.ptr.as_ptr().add(self.start), c.ptr.as_ptr(), pending);
                    }
                    self.start = 0;
                    self.end = pending;
                }
            }
            let tail = c.len - self.end;
            fits = tail >= need && (pending > 0 || tail >= TAIL_BYTES_MIN.min(c.len));
        }
        if !fits {
            let fresh = self.pool.take(self.chunk_bytes.max(pending + need))?;
            if let Some(old) = &self.chunk {
                // SAFETY: `[start, end)` of the old chunk was written by this
                // buffer; the fresh chunk is this buffer's alone and at least
                // `pending + need` long; two distinct mappings never overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        old.ptr.as_ptr().add(self.start),
                        fresh.ptr.as_ptr(),
                        pending,
                    );
                }
            }
            self.chunk = Some(fresh);
            self.start = 0;
            self.end = pending;
        }
        let c = self.chunk.as_ref().unwrap_or_else(|| unreachable!());
        // SAFETY: `end <= chunk.len`; no view covers `[end, len)` (views lie
        // below `start <= end`), and the returned borrow of `self` keeps any
        // other access through this buffer out while it lives.
        Ok(unsafe {
            std::slice::from_raw_parts_mut(c.ptr.as_ptr().add(self.end), c.len - self.end)
        })
    }

    /// `n` bytes were read into the start of the last [`ReadBuf::space`].
    pub fn filled(&mut self, n: usize) {
        let len = self.chunk.as_ref().map_or(0, |c| c.len);
        assert!(self.end + n <= len, "filled past the chunk");
        self.end += n;
    }

    /// Hands out the next `n` pending bytes as a view.
    fn take(&mut self, n: usize) -> Bytes {
        assert!(n <= self.end - self.start, "taking more than is pending");
        let Some(c) = &self.chunk else {
            return Bytes::new();
        };
        if n == 0 {
            return Bytes::new();
        }
        let view = View {
            chunk: c.clone(),
            off: self.start,
            len: n,
        };
        self.start += n;
        Bytes::from_owner(view)
    }

    /// The next whole frame (without its size prefix) as a view, if every
    /// byte of it is here; an error for a size prefix `reader` refuses.
    pub fn next_frame(&mut self, reader: &FrameReader) -> Result<Option<Bytes>, FrameError> {
        let p = self.pending();
        if reader.bytes_needed(p)? > 0 {
            return Ok(None);
        }
        let size = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        self.start += 4;
        Ok(Some(self.take(size)))
    }

    /// With nothing pending and no view of it left, gives the current chunk
    /// back, so an idle connection holds no memory.
    pub fn release_if_idle(&mut self) {
        if self.start == self.end {
            if let Some(c) = self.chunk.as_mut() {
                if Arc::get_mut(c).is_some() {
                    self.chunk = None;
                    self.start = 0;
                    self.end = 0;
                }
            }
        }
    }

    /// The chunk being read into, if any.
    pub fn chunk(&self) -> Option<ChunkSpan> {
        self.chunk.as_ref().map(|c| ChunkSpan {
            base: c.ptr.as_ptr() as usize,
            len: c.len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    const MAX: usize = 100 << 20;

    fn apply(charges: &[AtomicI64], m: ChargeMove, len: i64) {
        if m.from != m.to {
            if let Some(f) = m.from {
                charges[f].fetch_add(-len, Relaxed);
            }
            if let Some(t) = m.to {
                charges[t].fetch_add(len, Relaxed);
            }
        }
    }

    #[test]
    fn a_chunk_is_charged_once_to_its_lowest_holder() {
        let h = ChunkHolders::default();
        let charges: Vec<AtomicI64> = (0..4).map(|_| AtomicI64::new(0)).collect();
        let now = || charges.iter().map(|c| c.load(Relaxed)).collect::<Vec<_>>();
        apply(&charges, h.join(2), 10);
        assert_eq!(now(), [0, 0, 10, 0]);
        apply(&charges, h.join(3), 10);
        assert_eq!(now(), [0, 0, 10, 0], "a higher holder pays nothing");
        apply(&charges, h.join(1), 10);
        assert_eq!(now(), [0, 10, 0, 0], "a lower holder takes the charge over");
        apply(&charges, h.leave(1), 10);
        assert_eq!(now(), [0, 0, 10, 0], "and hands it on when it leaves");
        apply(&charges, h.leave(3), 10);
        assert_eq!(now(), [0, 0, 10, 0]);
        apply(&charges, h.leave(2), 10);
        assert_eq!(now(), [0, 0, 0, 0], "unheld: charged to nobody");
        // The highest shard a mask holds.
        assert_eq!(
            h.join(63),
            ChargeMove {
                from: None,
                to: Some(63)
            }
        );
        assert_eq!(
            h.leave(63),
            ChargeMove {
                from: Some(63),
                to: None
            }
        );
    }

    #[test]
    fn concurrent_joins_and_leaves_leave_every_chunk_charged_once() {
        // 4 shards keep joining and leaving 3 chunks; every move is applied
        // by the thread that made it, in whatever order. At every point all
        // shards are in, each chunk is charged exactly once, to shard 0.
        const SHARDS: usize = 4;
        let chunks: Vec<ChunkHolders> = (0..3).map(|_| ChunkHolders::default()).collect();
        let charges: Vec<AtomicI64> = (0..SHARDS).map(|_| AtomicI64::new(0)).collect();
        let all_in = std::sync::Barrier::new(SHARDS + 1);
        let checked = std::sync::Barrier::new(SHARDS + 1);
        std::thread::scope(|scope| {
            for shard in 0..SHARDS {
                let (chunks, charges, all_in, checked) = (&chunks, &charges, &all_in, &checked);
                scope.spawn(move || {
                    for _ in 0..200 {
                        for _ in 0..50 {
                            for (i, c) in chunks.iter().enumerate() {
                                apply(charges, c.join(shard), 1 << i);
                                apply(charges, c.leave(shard), 1 << i);
                            }
                        }
                        for (i, c) in chunks.iter().enumerate() {
                            apply(charges, c.join(shard), 1 << i);
                        }
                        all_in.wait();
                        checked.wait();
                        for (i, c) in chunks.iter().enumerate().rev() {
                            apply(charges, c.leave(shard), 1 << i);
                        }
                    }
                });
            }
            for _ in 0..200 {
                all_in.wait();
                let now: Vec<i64> = charges.iter().map(|c| c.load(Relaxed)).collect();
                assert_eq!(now, [0b111, 0, 0, 0]);
                checked.wait();
            }
        });
        assert!(charges.iter().all(|c| c.load(Relaxed) == 0));
    }

    fn arena() -> (Arena, Arc<ArenaStats>) {
        let stats = Arc::new(ArenaStats::default());
        (Arena::new(stats.clone()), stats)
    }

    /// A frame of `len` bytes whose content depends on `seed`.
    fn frame(seed: u32, len: usize) -> Vec<u8> {
        let mut f = (len as u32).to_be_bytes().to_vec();
        f.extend((0..len).map(|i| (seed as usize * 31 + i * 7 + i / 251) as u8));
        f
    }

    /// Feeds `input` to `buf` in reads of at most `step(i)` bytes each,
    /// returning every frame cut.
    fn feed(buf: &mut ReadBuf, input: &[u8], mut step: impl FnMut(usize) -> usize) -> Vec<Bytes> {
        let reader = FrameReader::new(MAX);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < input.len() {
            let need = reader.bytes_needed(buf.pending()).expect("size");
            let space = buf.space(need).expect("space");
            let n = space.len().min(step(i).max(1)).min(input.len() - pos);
            space[..n].copy_from_slice(&input[pos..pos + n]);
            buf.filled(n);
            pos += n;
            i += 1;
            while let Some(f) = buf.next_frame(&reader).expect("frame") {
                out.push(f);
            }
        }
        assert!(buf.pending().is_empty());
        out
    }

    fn check(frames: &[Bytes], want: &[Vec<u8>]) {
        assert_eq!(frames.len(), want.len());
        for (i, (f, w)) in frames.iter().zip(want).enumerate() {
            assert!(f[..] == w[4..], "frame {i} differs");
        }
    }

    #[test]
    fn size_classes() {
        assert_eq!(class_for(1), Some(0));
        assert_eq!(class_for(CHUNK_BYTES_MIN), Some(0));
        assert_eq!(class_for(CHUNK_BYTES_MIN + 1), Some(1));
        assert_eq!(class_for(CHUNK_BYTES_POOLED_MAX), Some(CLASSES - 1));
        assert_eq!(class_for(CHUNK_BYTES_POOLED_MAX + 1), None);
    }

    #[test]
    fn frames_split_at_every_boundary_come_out_exact() {
        let (a, _) = arena();
        let frames: Vec<Vec<u8>> = [0usize, 1, 3, 17, 200, 5000]
            .iter()
            .enumerate()
            .map(|(i, &n)| frame(i as u32, n))
            .collect();
        let input: Vec<u8> = frames.concat();
        let cuts: Vec<usize> = if cfg!(miri) {
            vec![1, 4, 5, 30, input.len() - 1]
        } else {
            (1..input.len()).collect()
        };
        for cut in cuts {
            let mut buf = a.read_buf(CHUNK_BYTES_MIN);
            let mut first = true;
            let got = feed(&mut buf, &input, |_| {
                if std::mem::take(&mut first) {
                    cut
                } else {
                    usize::MAX
                }
            });
            check(&got, &frames);
        }
        // One byte at a time.
        let mut buf = a.read_buf(CHUNK_BYTES_MIN);
        check(&feed(&mut buf, &input, |_| 1), &frames);
    }

    #[test]
    fn views_survive_the_buffer_moving_on_and_never_change() {
        let (a, stats) = arena();
        let rounds = if cfg!(miri) { 60 } else { 3000 };
        let mut buf = a.read_buf(CHUNK_BYTES_MIN);
        let mut kept: Vec<(Bytes, Vec<u8>)> = Vec::new();
        let mut seed = 1u32;
        for r in 0..rounds {
            // Sizes from tiny to more than a chunk, in uneven reads.
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = match seed % 10 {
                0 => 100_000 + (seed as usize % 50_000),
                1..=3 => seed as usize % 20_000,
                _ => seed as usize % 700,
            };
            let len = if cfg!(miri) { len % 3000 } else { len };
            let want = frame(seed, len);
            let got = feed(&mut buf, &want, |i| 1 + (seed as usize >> (i % 7)) % 9000);
            assert_eq!(got.len(), 1);
            assert!(got[0][..] == want[4..]);
            // Keep every fifth view; let the others go, so their chunks
            // come back and are read into again.
            if r % 5 == 0 {
                kept.push((got[0].clone(), want[4..].to_vec()));
            }
        }
        drop(buf);
        for (i, (v, w)) in kept.iter().enumerate() {
            assert!(v[..] == w[..], "view {i} changed");
        }
        assert!(stats.chunks_in_use.load(Relaxed) > 0);
        drop(kept);
        assert_eq!(stats.chunks_in_use.load(Relaxed), 0);
        assert_eq!(stats.in_use_bytes.load(Relaxed), 0);
        assert!(stats.maps_total.load(Relaxed) < rounds as u64);
    }

    #[test]
    fn a_chunk_returns_only_when_every_view_dropped_even_on_another_thread() {
        let (a, stats) = arena();
        let mut buf = a.read_buf(CHUNK_BYTES_MIN);
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(i, 100)).collect();
        let got = feed(&mut buf, &frames.concat(), |_| usize::MAX);
        let span = buf.chunk().expect("a chunk");
        for f in &got {
            assert_eq!(chunk_of(f), Some(span));
        }
        assert_eq!(chunk_of(&[1u8, 2, 3]), None);
        drop(buf);
        assert_eq!(stats.chunks_in_use.load(Relaxed), 1);
        let mut got = got.into_iter();
        let (v0, v1, v2) = (got.next(), got.next(), got.next());
        drop(v0);
        // A slice of a view holds the chunk too.
        let s = v1.as_ref().map(|b| b.slice(10..20));
        drop(v1);
        assert_eq!(stats.chunks_in_use.load(Relaxed), 1);
        // Another thread finds it too.
        let (v2, seen) = std::thread::spawn(move || {
            let seen = v2.as_deref().and_then(chunk_of);
            (v2, seen)
        })
        .join()
        .expect("thread");
        assert_eq!(seen, Some(span));
        std::thread::spawn(move || drop(v2)).join().expect("thread");
        assert_eq!(stats.chunks_in_use.load(Relaxed), 1);
        let t = std::thread::spawn(move || {
            assert_eq!(s.as_deref(), Some(&frames[1][14..24]));
            drop(s);
        });
        t.join().expect("thread");
        assert_eq!(stats.chunks_in_use.load(Relaxed), 0);
        assert_eq!(stats.chunks_mapped.load(Relaxed), 1);
        assert_eq!(a.pool.free[0].len(), 1);
        // And it is reused.
        let mut buf = a.read_buf(CHUNK_BYTES_MIN);
        let _ = feed(&mut buf, &frame(9, 10), |_| usize::MAX);
        assert_eq!(buf.chunk(), Some(span));
        assert_eq!(stats.maps_total.load(Relaxed), 1);
    }

    #[test]
    fn a_frame_larger_than_a_chunk_gets_a_chunk_of_its_own_class_or_size() {
        let (a, stats) = arena();
        let mut buf = a.read_buf(CHUNK_BYTES_MIN);
        let big = if cfg!(miri) { 100_000 } else { 3 << 20 };
        let frames = vec![frame(1, 10), frame(2, big), frame(3, 10)];
        let got = feed(&mut buf, &frames.concat(), |_| 16 * 1024);
        check(&got, &frames);
        let span = chunk_of(&got[1]).expect("in the arena");
        assert_eq!(span.len, (big + 4).next_power_of_two());
        // The frame after it shares the big chunk.
        assert_eq!(chunk_of(&got[2]), Some(span));
        drop((got, buf));
        assert_eq!(stats.in_use_bytes.load(Relaxed), 0);
        if !cfg!(miri) {
            // Beyond the largest class: a mapping of the frame's own size,
            // unmapped when done.
            let mut buf = a.read_buf(CHUNK_BYTES_MIN);
            let huge = frame(4, CHUNK_BYTES_POOLED_MAX + 10);
            let got = feed(&mut buf, &huge, |_| 1 << 20);
            check(&got, std::slice::from_ref(&huge));
            let span = chunk_of(&got[0]).expect("in the arena");
            assert_eq!(span.len, (huge.len()).div_ceil(PAGE_BYTES) * PAGE_BYTES);
            let before = stats.unmaps_total.load(Relaxed);
            drop((got, buf));
            assert_eq!(stats.unmaps_total.load(Relaxed), before + 1);
        }
    }

    #[test]
    fn an_idle_buffer_gives_its_chunk_back_and_the_pool_is_bounded() {
        let stats = Arc::new(ArenaStats::default());
        let a = Arena::with_pool_budget(stats.clone(), 2 * CHUNK_BYTES_MIN);
        let mut buf = a.read_buf(CHUNK_BYTES_MIN);
        let got = feed(&mut buf, &frame(1, 10), |_| usize::MAX);
        buf.release_if_idle();
        assert!(buf.chunk().is_some(), "a view still holds it");
        drop(got);
        buf.release_if_idle();
        assert!(buf.chunk().is_none());
        assert_eq!(stats.chunks_in_use.load(Relaxed), 0);
        // Four chunks in use at once; two fit the pool, two are unmapped.
        let views: Vec<Bytes> = (0..4)
            .map(|i| {
                let mut b = a.read_buf(CHUNK_BYTES_MIN);
                feed(&mut b, &frame(i, 50_000), |_| usize::MAX).remove(0)
            })
            .collect();
        assert_eq!(stats.chunks_in_use.load(Relaxed), 4);
        drop(views);
        assert_eq!(stats.chunks_mapped.load(Relaxed), 2);
        assert_eq!(stats.mapped_bytes.load(Relaxed), 2 * CHUNK_BYTES_MIN as u64);
        drop(buf);
        drop(a);
        assert_eq!(stats.chunks_mapped.load(Relaxed), 0);
    }

    #[test]
    fn an_unshared_chunk_is_read_into_from_its_front_again() {
        let (a, stats) = arena();
        let mut buf = a.read_buf(CHUNK_BYTES_MIN);
        let rounds = if cfg!(miri) { 50 } else { 2000 };
        for i in 0..rounds {
            let f = frame(i, 1000);
            let got = feed(&mut buf, &f, |_| 300);
            assert!(got[0][..] == f[4..]);
        }
        assert_eq!(stats.maps_total.load(Relaxed), 1);
    }

    #[test]
    fn a_bad_size_prefix_is_an_error() {
        let (a, _) = arena();
        let mut buf = a.read_buf(CHUNK_BYTES_MIN);
        let space = buf.space(4).expect("space");
        space[..4].copy_from_slice(&(-1i32).to_be_bytes());
        buf.filled(4);
        assert!(buf.next_frame(&FrameReader::new(MAX)).is_err());
    }
}
