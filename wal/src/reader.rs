//! Reading WAL objects back: listing, the index, and ranged reads of entries.
//!
//! The async functions run on any tokio runtime. [`WalReader`] wraps them
//! for callers that are not on tokio (glommio shards): each method runs the
//! read on the WAL's I/O runtime and returns a oneshot.
//!
//! Reading an index takes one GET of the object's last `TAIL_READ_BYTES`
//! (which, for objects up to that size, is the whole object), asked for as
//! an explicit range from the listed size, never as a suffix range, plus, for
//! larger objects, a GET of the header and, if the index did not fit in the
//! tail, one of the index. Reading a partition's entries is one ranged GET.
//! Every read is checked: the header and index against the footer's CRC, each
//! entry against its own.

use std::ops::Range;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use tracing::warn;

use crate::error::{FormatError, WalError};
use crate::object::{decode_index, Footer, IndexEntry, ObjectIndex, FOOTER_LEN, HEADER_LEN};
use crate::recovery::{self, Recovery};
use crate::runtime::IoRuntime;
use crate::stats::WalStats;
use crate::writer::WalLocation;

/// How much of an object's end the first GET of `read_index` asks for.
pub const TAIL_READ_BYTES: u64 = 64 * 1024;

/// Smallest valid object: header, an empty index, footer.
const OBJECT_LEN_MIN: u64 = (HEADER_LEN + 4 + FOOTER_LEN) as u64;

/// Stats for the free functions, which nobody reads.
static UNCOUNTED: LazyLock<WalStats> = LazyLock::new(WalStats::default);

/// The folder of one node's WAL objects: `<prefix>/<node_id>`.
pub fn node_prefix(prefix: &str, node_id: u32) -> Path {
    Path::from(format!("{prefix}/{node_id}"))
}

/// The key of one WAL object: `<prefix>/<node_id>/<seq:020>.wal`. The fixed
/// width makes the lexical order of keys their sequence order.
pub fn object_key(prefix: &str, node_id: u32, seq: u64) -> Path {
    Path::from(format!("{prefix}/{node_id}/{seq:020}.wal"))
}

/// The sequence number in a WAL object key, if the key's last part is one.
pub fn parse_seq(key: &Path) -> Option<u64> {
    let name = key.filename()?;
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The node in a WAL or handoff object key (`<prefix>/<node_id>/<seq>.wal`),
/// if the key has that shape.
pub fn parse_node(key: &Path) -> Option<u32> {
    parse_seq(key)?;
    let mut parts: Vec<_> = key.parts().collect();
    parts.pop();
    parts.pop()?.as_ref().parse().ok()
}

/// One WAL object found by [`list_objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObjectMeta {
    pub key: Path,
    pub seq: u64,
    /// Size in bytes, as listed.
    pub size: u64,
}

/// Lists one node's WAL objects, in sequence order. Keys under the node's
/// folder that are not WAL object names are logged and left out.
pub async fn list_objects(
    store: &dyn ObjectStore,
    prefix: &str,
    node_id: u32,
) -> Result<Vec<WalObjectMeta>, WalError> {
    let folder = node_prefix(prefix, node_id);
    let metas: Vec<_> = store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| WalError::store("LIST", folder.to_string(), e))?;
    let mut objects: Vec<WalObjectMeta> = metas
        .into_iter()
        .filter_map(|m| match parse_seq(&m.location) {
            Some(seq) => Some(WalObjectMeta {
                key: m.location,
                seq,
                size: m.size,
            }),
            None => {
                warn!(object_key = %m.location, "not a WAL object name; ignored");
                None
            }
        })
        .collect();
    objects.sort_by_key(|o| o.seq);
    Ok(objects)
}

/// Reads and checks an object's index (footer, then index; see the module doc).
pub async fn read_index(store: &dyn ObjectStore, key: &Path) -> Result<ObjectIndex, WalError> {
    read_index_counted(store, key, None, &UNCOUNTED).await
}

/// Reads one entry with one ranged GET and checks its length and CRC32C.
pub async fn read_entry(
    store: &dyn ObjectStore,
    location: &WalLocation,
) -> Result<Bytes, WalError> {
    read_entry_counted(store, location, &UNCOUNTED).await
}

/// Reads one entry's bytes at `range` and checks them against `expected_crc`.
pub async fn read_range(
    store: &dyn ObjectStore,
    key: &Path,
    range: Range<u64>,
    expected_crc: u32,
) -> Result<Bytes, WalError> {
    let len = u32::try_from(range.end.saturating_sub(range.start)).map_err(|_| {
        WalError::corrupt(
            key.to_string(),
            FormatError::TooLarge {
                what: "entry range",
                len: range.end.saturating_sub(range.start),
                max: u64::from(u32::MAX),
            },
        )
    })?;
    let location = WalLocation {
        key: Arc::from(key.as_ref()),
        seq: parse_seq(key).unwrap_or(0),
        node: parse_node(key).unwrap_or(0),
        position: range.start,
        len,
        crc: expected_crc,
    };
    read_entry(store, &location).await
}

/// Reads a run of adjacent entries of one object (such as
/// [`ObjectIndex::partition_entries`]) with ONE ranged GET, and checks each.
pub async fn read_entries(
    store: &dyn ObjectStore,
    key: &Path,
    entries: &[IndexEntry],
) -> Result<Vec<Bytes>, WalError> {
    read_entries_counted(store, key, entries, &UNCOUNTED).await
}

async fn get_range_counted(
    store: &dyn ObjectStore,
    key: &Path,
    range: Range<u64>,
    stats: &WalStats,
    op: &'static str,
) -> Result<Bytes, WalError> {
    WalStats::add(&stats.get_requests, 1);
    let want = range.end - range.start;
    match store.get_range(key, range).await {
        Ok(b) => {
            WalStats::add(&stats.get_bytes, b.len() as u64);
            if b.len() as u64 != want {
                WalStats::add(&stats.get_errors, 1);
                return Err(WalError::corrupt(
                    key.to_string(),
                    FormatError::Truncated {
                        what: op,
                        needed: want,
                        available: b.len() as u64,
                    },
                ));
            }
            Ok(b)
        }
        Err(e) => {
            WalStats::add(&stats.get_errors, 1);
            Err(WalError::store(op, key.to_string(), e))
        }
    }
}

pub(crate) async fn read_index_counted(
    store: &dyn ObjectStore,
    key: &Path,
    listed_len: Option<u64>,
    stats: &WalStats,
) -> Result<ObjectIndex, WalError> {
    let corrupt = |e: FormatError| {
        WalStats::add(&stats.get_errors, 1);
        WalError::corrupt(key.to_string(), e)
    };
    if let Some(len) = listed_len.filter(|&l| l < OBJECT_LEN_MIN) {
        // Too short to hold a footer: no GET needed (and an empty object
        // cannot be read with a range on every store).
        return Err(corrupt(FormatError::Truncated {
            what: "object",
            needed: OBJECT_LEN_MIN,
            available: len,
        }));
    }
    // An explicit range from the object's size: a suffix range longer than
    // the object is answered with the whole object by S3, and with an
    // error by some other servers (s3s-fs: 500). Without a listed size,
    // a HEAD gives it.
    let object_len = match listed_len {
        Some(len) => len,
        None => {
            WalStats::add(&stats.get_requests, 1);
            let meta = store.head(key).await.map_err(|e| {
                WalStats::add(&stats.get_errors, 1);
                WalError::store("HEAD", key.to_string(), e)
            })?;
            if meta.size < OBJECT_LEN_MIN {
                return Err(corrupt(FormatError::Truncated {
                    what: "object",
                    needed: OBJECT_LEN_MIN,
                    available: meta.size,
                }));
            }
            meta.size
        }
    };
    WalStats::add(&stats.get_requests, 1);
    let tail = store
        .get_opts(
            key,
            GetOptions::new().with_range(Some(GetRange::Bounded(
                object_len.saturating_sub(TAIL_READ_BYTES)..object_len,
            ))),
        )
        .await
        .map_err(|e| {
            WalStats::add(&stats.get_errors, 1);
            WalError::store("GET footer", key.to_string(), e)
        })?;
    if tail.meta.size != object_len {
        // The object is not the one listed (WAL objects are never
        // rewritten): report it rather than read a mix of two.
        return Err(corrupt(FormatError::Truncated {
            what: "object (size differs from its listing)",
            needed: object_len,
            available: tail.meta.size,
        }));
    }
    let tail_range = tail.range.clone();
    let tail_bytes = tail.bytes().await.map_err(|e| {
        WalStats::add(&stats.get_errors, 1);
        WalError::store("GET footer", key.to_string(), e)
    })?;
    WalStats::add(&stats.get_bytes, tail_bytes.len() as u64);
    if tail_bytes.len() as u64 != tail_range.end - tail_range.start || tail_range.end != object_len
    {
        return Err(corrupt(FormatError::Truncated {
            what: "object tail",
            needed: tail_range.end - tail_range.start,
            available: tail_bytes.len() as u64,
        }));
    }
    let footer = Footer::decode(&tail_bytes, object_len).map_err(corrupt)?;
    let index_range = footer.index_range();
    let in_tail = |r: &Range<u64>| {
        (r.start >= tail_range.start).then(|| {
            tail_bytes
                .slice((r.start - tail_range.start) as usize..(r.end - tail_range.start) as usize)
        })
    };
    let header_range = 0..HEADER_LEN as u64;
    let (header, index) = match (in_tail(&header_range), in_tail(&index_range)) {
        (Some(h), Some(i)) => (h, i),
        (None, Some(i)) => (
            get_range_counted(store, key, header_range, stats, "GET header").await?,
            i,
        ),
        (h, None) => {
            let index_fut = get_range_counted(store, key, index_range, stats, "GET index");
            match h {
                Some(h) => (h, index_fut.await?),
                None => {
                    let header_fut =
                        get_range_counted(store, key, header_range, stats, "GET header");
                    futures_util::future::try_join(header_fut, index_fut).await?
                }
            }
        }
    };
    decode_index(&header, &index, &footer, object_len).map_err(corrupt)
}

pub(crate) async fn read_entry_counted(
    store: &dyn ObjectStore,
    location: &WalLocation,
    stats: &WalStats,
) -> Result<Bytes, WalError> {
    // A run of one.
    let mut one = read_adjacent_counted(store, std::slice::from_ref(location), stats).await?;
    one.pop().ok_or_else(|| {
        WalError::corrupt(
            &*location.key,
            FormatError::BadIndex {
                reason: "a read of one entry returned none".into(),
            },
        )
    })
}

pub(crate) async fn read_entries_counted(
    store: &dyn ObjectStore,
    key: &Path,
    entries: &[IndexEntry],
    stats: &WalStats,
) -> Result<Vec<Bytes>, WalError> {
    for pair in entries.windows(2) {
        if pair[1].position != pair[0].range().end {
            return Err(WalError::InvalidEntry {
                topic: pair[1].topic.to_string(),
                partition: pair[1].partition,
                reason: format!(
                    "read_entries needs adjacent entries; {} does not follow {}",
                    pair[1].position,
                    pair[0].range().end
                ),
            });
        }
    }
    let spans: Vec<(u64, u64, u32)> = entries
        .iter()
        .map(|e| (e.position, u64::from(e.len), e.crc))
        .collect();
    let what = |i: usize| {
        let e = &entries[i];
        format!(
            "data of {}-{} offsets {}..={}",
            e.topic, e.partition, e.base_offset, e.last_offset
        )
    };
    get_run_checked(store, key, &spans, what, stats).await
}

/// Reads the bytes of `locations`, adjacent ranges of one object in order,
/// with one ranged GET, and checks each one's CRC32C.
pub(crate) async fn read_adjacent_counted(
    store: &dyn ObjectStore,
    locations: &[WalLocation],
    stats: &WalStats,
) -> Result<Vec<Bytes>, WalError> {
    let Some(first) = locations.first() else {
        return Ok(Vec::new());
    };
    for pair in locations.windows(2) {
        if pair[1].key != pair[0].key || pair[1].position != pair[0].range().end {
            return Err(WalError::Config {
                param: "read_adjacent locations".into(),
                expected: "adjacent ranges of one object".into(),
                found: format!(
                    "{}+{} after {} ending at {}",
                    pair[1].key,
                    pair[1].position,
                    pair[0].key,
                    pair[0].range().end
                ),
            });
        }
    }
    let spans: Vec<(u64, u64, u32)> = locations
        .iter()
        .map(|l| (l.position, u64::from(l.len), l.crc))
        .collect();
    let what = |i: usize| format!("entry at {}+{}", locations[i].position, locations[i].len);
    get_run_checked(store, &first.path(), &spans, what, stats).await
}

/// Reads adjacent ranges of `key`, in order, with one ranged GET and checks
/// each one's CRC32C: `spans` are (position, length, CRC32C); `what(i)`
/// names span `i` in an error.
async fn get_run_checked(
    store: &dyn ObjectStore,
    key: &Path,
    spans: &[(u64, u64, u32)],
    what: impl Fn(usize) -> String,
    stats: &WalStats,
) -> Result<Vec<Bytes>, WalError> {
    let (Some(&(start, _, _)), Some(&(last, last_len, _))) = (spans.first(), spans.last()) else {
        return Ok(Vec::new());
    };
    let data = get_range_counted(store, key, start..last + last_len, stats, "GET entries").await?;
    spans
        .iter()
        .enumerate()
        .map(|(i, &(position, len, stored))| {
            let at = (position - start) as usize;
            let slice = data.slice(at..at + len as usize);
            let computed = crc32c::crc32c(&slice);
            if computed != stored {
                WalStats::add(&stats.get_errors, 1);
                return Err(WalError::corrupt(
                    key.to_string(),
                    FormatError::ChecksumMismatch {
                        what: what(i),
                        stored,
                        computed,
                    },
                ));
            }
            Ok(slice)
        })
        .collect()
}

/// Reads for callers that are not on tokio: each method runs on the WAL's
/// I/O runtime and returns a oneshot that any executor can await. If the
/// runtime stops first, the oneshot yields `Canceled`.
#[derive(Debug, Clone)]
pub struct WalReader {
    io: IoRuntime,
    store: Arc<dyn ObjectStore>,
    stats: Arc<WalStats>,
}

impl WalReader {
    pub fn new(io: IoRuntime, store: Arc<dyn ObjectStore>) -> WalReader {
        WalReader::with_stats(io, store, Arc::new(WalStats::default()))
    }

    /// A reader that counts its GETs into `stats` (the writer's, usually).
    pub fn with_stats(
        io: IoRuntime,
        store: Arc<dyn ObjectStore>,
        stats: Arc<WalStats>,
    ) -> WalReader {
        WalReader { io, store, stats }
    }

    pub fn stats(&self) -> &Arc<WalStats> {
        &self.stats
    }

    pub fn list_objects(
        &self,
        prefix: &str,
        node_id: u32,
    ) -> oneshot::Receiver<Result<Vec<WalObjectMeta>, WalError>> {
        let store = self.store.clone();
        let prefix = prefix.to_string();
        self.io
            .spawn(async move { list_objects(store.as_ref(), &prefix, node_id).await })
    }

    pub fn read_index(&self, key: Path) -> oneshot::Receiver<Result<ObjectIndex, WalError>> {
        let (store, stats) = (self.store.clone(), self.stats.clone());
        self.io
            .spawn(async move { read_index_counted(store.as_ref(), &key, None, &stats).await })
    }

    pub fn read_entry(&self, location: WalLocation) -> oneshot::Receiver<Result<Bytes, WalError>> {
        let (store, stats) = (self.store.clone(), self.stats.clone());
        self.io
            .spawn(async move { read_entry_counted(store.as_ref(), &location, &stats).await })
    }

    /// See [`read_adjacent_counted`].
    pub fn read_adjacent(
        &self,
        locations: Vec<WalLocation>,
    ) -> oneshot::Receiver<Result<Vec<Bytes>, WalError>> {
        let (store, stats) = (self.store.clone(), self.stats.clone());
        self.io
            .spawn(async move { read_adjacent_counted(store.as_ref(), &locations, &stats).await })
    }

    pub fn read_entries(
        &self,
        key: Path,
        entries: Vec<IndexEntry>,
    ) -> oneshot::Receiver<Result<Vec<Bytes>, WalError>> {
        let (store, stats) = (self.store.clone(), self.stats.clone());
        self.io.spawn(
            async move { read_entries_counted(store.as_ref(), &key, &entries, &stats).await },
        )
    }

    /// Scans some partitions across every node's objects (see
    /// `recovery::scan_partitions`).
    pub fn scan_partitions(
        &self,
        wal_prefix: &str,
        want: impl Fn(&[u8; 16], i32) -> bool + Send + Sync + 'static,
    ) -> oneshot::Receiver<Result<recovery::PartitionsScan, WalError>> {
        let (store, stats) = (self.store.clone(), self.stats.clone());
        let prefix = wal_prefix.to_string();
        self.io.spawn(async move {
            recovery::scan_partitions_counted(store.as_ref(), &prefix, &want, &stats, None).await
        })
    }

    /// Scans one node's WAL (see `recovery::scan`).
    pub fn recover(
        &self,
        prefix: &str,
        node_id: u32,
    ) -> oneshot::Receiver<Result<Recovery, WalError>> {
        let (store, stats) = (self.store.clone(), self.stats.clone());
        let prefix = prefix.to_string();
        self.io.spawn(async move {
            recovery::scan_counted(store.as_ref(), &prefix, node_id, &stats).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_sequence_and_parse_back() {
        let k = object_key("wal", 3, 42);
        assert_eq!(k.as_ref(), "wal/3/00000000000000000042.wal");
        assert_eq!(parse_seq(&k), Some(42));
        assert_eq!(parse_seq(&object_key("a/b", 1, u64::MAX)), Some(u64::MAX));
        assert!(object_key("wal", 3, 9).as_ref() < object_key("wal", 3, 10).as_ref());
        assert_eq!(parse_seq(&Path::from("wal/3/42.wal")), None);
        assert_eq!(
            parse_seq(&Path::from("wal/3/0000000000000000004x.wal")),
            None
        );
        assert_eq!(
            parse_seq(&Path::from("wal/3/00000000000000000042.tmp")),
            None
        );
        assert_eq!(node_prefix("wal", 3).as_ref(), "wal/3");
        assert_eq!(parse_node(&k), Some(3));
        assert_eq!(
            parse_node(&Path::from("handoff/17/00000000000000000001.wal")),
            Some(17)
        );
        assert_eq!(
            parse_node(&Path::from("wal/x/00000000000000000001.wal")),
            None
        );
        assert_eq!(parse_node(&Path::from("wal/3/notes.txt")), None);
    }

    #[test]
    fn adjacent_ranges_are_read_with_one_get_and_checked_each() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = object_store::memory::InMemory::new();
            let key = object_key("handoff", 2, 5);
            let data = Bytes::from_static(b"aaaabbbbbbcc");
            store.put(&key, data.clone().into()).await.unwrap();
            let loc = |position: u64, len: u32, part: &[u8]| WalLocation {
                key: Arc::from(key.as_ref()),
                seq: 9,
                node: 1,
                position,
                len,
                crc: crc32c::crc32c(part),
            };
            let run = [loc(0, 4, b"aaaa"), loc(4, 6, b"bbbbbb"), loc(10, 2, b"cc")];
            let stats = WalStats::default();
            let got = read_adjacent_counted(&store, &run, &stats).await.unwrap();
            assert_eq!(got, [&b"aaaa"[..], b"bbbbbb", b"cc"]);
            assert_eq!(
                stats
                    .get_requests
                    .load(std::sync::atomic::Ordering::Relaxed),
                1
            );
            // A gap between ranges is refused before any GET.
            let gap = [loc(0, 4, b"aaaa"), loc(5, 5, b"bbbbb")];
            assert!(read_adjacent_counted(&store, &gap, &stats).await.is_err());
            assert_eq!(
                stats
                    .get_requests
                    .load(std::sync::atomic::Ordering::Relaxed),
                1
            );
            // One range whose bytes do not match its CRC fails the read.
            let mut bad = run.clone();
            bad[1].crc ^= 1;
            let err = read_adjacent_counted(&store, &bad, &stats)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("4+6"), "{err}");
            assert!(read_adjacent_counted(&store, &[], &stats)
                .await
                .unwrap()
                .is_empty());
        });
    }
}
