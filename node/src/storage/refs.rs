//! Which WAL and handoff objects are still in use, cluster-wide: what lets a
//! node delete its objects once nothing refers to them, rather than by age.
//!
//! Every node publishes, each retention pass, `meta/refs-<node id>`: for
//! each node, the oldest of its WAL objects that this node's partition logs
//! still read (for a batch's bytes, or for the index entry that records
//! it), and for each proxy, the oldest of its handoff objects they read.
//! It says at which view revision it was made, whether the node then held
//! every partition it leads in that view, and when it was made.
//!
//! A node deletes its own WAL and handoff objects below the oldest that
//! any member refers to, and the lowest node id of the view also deletes
//! those of nodes no longer in the view, only when the files of every
//! member of its current view:
//!
//! - were made at that same view revision, with every led partition loaded:
//!   every batch of every partition is then in some member's log, so an
//!   object none of them refers to holds nothing anyone needs (a batch
//!   compacted into a per-partition object, dropped by retention, or a
//!   fenced leader's late write);
//! - are fresh: made less than `fresh` ago, while only objects older than
//!   `min_age` (more than `fresh`) are deleted. A reference made after an
//!   object was written (a handoff commit reaching its leader) is then in
//!   every file read, provided it was made within `min_age - fresh` of the
//!   upload.
//!
//! A view change makes the files stale until every member has loaded what
//! it now leads and published again: nothing is deleted meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::storage::durable::Location;

/// Prefix of the handoff objects' keys.
const HANDOFF_PREFIX: &str = "handoff/";

/// The oldest object in use, by owning node: WAL objects and handoff objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refs {
    pub wal: BTreeMap<u32, u64>,
    pub handoff: BTreeMap<u32, u64>,
}

impl Refs {
    /// Notes a durable batch's location: the WAL object holding its index
    /// entry, and the object holding its bytes when that is a handoff
    /// object. Compacted locations refer to no WAL object.
    pub fn note(&mut self, location: &Location) {
        if ferry_wal::compact::COMPACTED_SEQ == location.seq {
            return;
        }
        min_into(&mut self.wal, location.node, location.seq);
        self.note_handoff(&location.key);
    }

    /// Notes a WAL or handoff object by key (`wal/<node>/<seq>.wal`,
    /// `handoff/<node>/<seq>.wal`); other keys are ignored.
    pub fn note_key(&mut self, key: &str) {
        if key.starts_with(HANDOFF_PREFIX) {
            return self.note_handoff(key);
        }
        if !key.starts_with("wal/") {
            return;
        }
        let path = object_store::path::Path::from(key);
        if let (Some(node), Some(seq)) = (
            ferry_wal::reader::parse_node(&path),
            ferry_wal::reader::parse_seq(&path),
        ) {
            min_into(&mut self.wal, node, seq);
        }
    }

    /// Notes a handoff object by key (`handoff/<node>/<seq>.wal`); other
    /// keys are not handoff objects and are ignored.
    pub fn note_handoff(&mut self, key: &str) {
        if !key.starts_with(HANDOFF_PREFIX) {
            return;
        }
        let path = object_store::path::Path::from(key);
        if let (Some(node), Some(seq)) = (
            ferry_wal::reader::parse_node(&path),
            ferry_wal::reader::parse_seq(&path),
        ) {
            min_into(&mut self.handoff, node, seq);
        }
    }

    /// Adds every reference of `other`.
    pub fn merge(&mut self, other: &Refs) {
        for (&n, &s) in &other.wal {
            min_into(&mut self.wal, n, s);
        }
        for (&n, &s) in &other.handoff {
            min_into(&mut self.handoff, n, s);
        }
    }
}

fn min_into(map: &mut BTreeMap<u32, u64>, node: u32, seq: u64) {
    map.entry(node)
        .and_modify(|s| *s = (*s).min(seq))
        .or_insert(seq);
}

/// What one shard reported at its last retention pass.
#[derive(Debug, Clone, Default)]
pub struct ShardRefs {
    /// The view revision it judged leadership by.
    pub revision: u64,
    /// The cluster topic table version its table was at least at.
    pub topics: u64,
    /// Whether it held every partition it leads.
    pub loaded: bool,
    pub at_ms: i64,
    pub refs: Refs,
}

/// One node's published references (`meta/refs-<node id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefsFile {
    pub node: i32,
    /// The view revision the references were made at.
    pub revision: u64,
    /// The topic table version its partitions were judged by.
    pub topics: u64,
    /// Whether the node held every partition it leads at `revision`.
    pub loaded: bool,
    /// When they were made, in ms since the epoch (the node's clock).
    pub at_ms: i64,
    pub refs: Refs,
}

/// The name of a node's references under `meta/`.
pub fn meta_name(node_id: i32) -> String {
    format!("refs-{node_id}")
}

impl RefsFile {
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(data: &[u8]) -> Result<RefsFile, String> {
        serde_json::from_slice(data).map_err(|e| format!("unreadable references: {e}"))
    }
}

/// Why the references cannot be used now (nothing is deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotYet {
    Missing(i32),
    OtherRevision { node: i32, revision: u64 },
    OtherTopics { node: i32, topics: u64 },
    Loading(i32),
    Stale { node: i32, age_ms: i64 },
}

impl std::fmt::Display for NotYet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotYet::Missing(n) => write!(f, "node {n} has published no references"),
            NotYet::OtherRevision { node, revision } => {
                write!(
                    f,
                    "node {node}'s references are of view revision {revision}"
                )
            }
            NotYet::OtherTopics { node, topics } => {
                write!(
                    f,
                    "node {node}'s references are of topic table version {topics}"
                )
            }
            NotYet::Loading(n) => write!(f, "node {n} is still loading partitions it leads"),
            NotYet::Stale { node, age_ms } => {
                write!(f, "node {node}'s references are {age_ms} ms old")
            }
        }
    }
}

/// The references of the whole view at `revision` and topic table version
/// `topics`: the union of every member's file, if each one is usable (see
/// the module doc).
pub fn combine(
    members: &[i32],
    files: &BTreeMap<i32, Arc<RefsFile>>,
    (revision, topics): (u64, u64),
    now_ms: i64,
    fresh_ms: i64,
) -> Result<Refs, NotYet> {
    let mut all = Refs::default();
    for &m in members {
        let f = files.get(&m).ok_or(NotYet::Missing(m))?;
        if f.revision != revision {
            return Err(NotYet::OtherRevision {
                node: m,
                revision: f.revision,
            });
        }
        if f.topics != topics {
            return Err(NotYet::OtherTopics {
                node: m,
                topics: f.topics,
            });
        }
        if !f.loaded {
            return Err(NotYet::Loading(m));
        }
        let age_ms = now_ms - f.at_ms;
        if age_ms > fresh_ms {
            return Err(NotYet::Stale { node: m, age_ms });
        }
        all.merge(&f.refs);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(key: &str, node: u32, seq: u64) -> Location {
        Location {
            key: key.into(),
            seq,
            node,
            position: 0,
            len: 1,
            crc: 0,
        }
    }

    #[test]
    fn a_location_refers_to_its_index_object_and_its_handoff_object() {
        let mut r = Refs::default();
        r.note(&loc("wal/2/00000000000000000009.wal", 2, 9));
        r.note(&loc("wal/2/00000000000000000004.wal", 2, 4));
        // A proxy's batch: bytes in node 5's handoff object 17, the index
        // entry in node 1's WAL object 30.
        r.note(&loc("handoff/5/00000000000000000017.wal", 1, 30));
        // Compacted: no WAL object.
        r.note(&loc(
            "data/1/abc/0/00000000000000000000-0000000000000.obj",
            1,
            ferry_wal::compact::COMPACTED_SEQ,
        ));
        r.note_handoff("handoff/5/00000000000000000012.wal");
        r.note_handoff("mem/3");
        assert_eq!(r.wal, BTreeMap::from([(1, 30), (2, 4)]));
        assert_eq!(r.handoff, BTreeMap::from([(5, 12)]));
    }

    fn file(
        node: i32,
        revision: u64,
        loaded: bool,
        at_ms: i64,
        wal: &[(u32, u64)],
    ) -> Arc<RefsFile> {
        Arc::new(RefsFile {
            node,
            revision,
            topics: 3,
            loaded,
            at_ms,
            refs: Refs {
                wal: wal.iter().copied().collect(),
                handoff: BTreeMap::new(),
            },
        })
    }

    #[test]
    fn the_view_refers_to_the_union_only_when_every_file_is_current() {
        let mut files = BTreeMap::new();
        files.insert(1, file(1, 7, true, 10_000, &[(1, 40), (3, 8)]));
        files.insert(2, file(2, 7, true, 9_000, &[(1, 25)]));
        // Node 3 has left the view: its file is not read.
        files.insert(3, file(3, 5, false, 1_000, &[(3, 0)]));
        let all = combine(&[1, 2], &files, (7, 3), 12_000, 5_000).unwrap();
        assert_eq!(all.wal, BTreeMap::from([(1, 25), (3, 8)]));
        // Every way a member's file is not good enough.
        assert_eq!(
            combine(&[1, 2, 4], &files, (7, 3), 12_000, 5_000),
            Err(NotYet::Missing(4))
        );
        assert_eq!(
            combine(&[1, 2], &files, (8, 3), 12_000, 5_000),
            Err(NotYet::OtherRevision {
                node: 1,
                revision: 7
            })
        );
        assert_eq!(
            combine(&[1, 2], &files, (7, 3), 14_500, 5_000),
            Err(NotYet::Stale {
                node: 2,
                age_ms: 5_500
            })
        );
        assert_eq!(
            combine(&[1, 2], &files, (7, 4), 12_000, 5_000),
            Err(NotYet::OtherTopics { node: 1, topics: 3 })
        );
        files.insert(2, file(2, 7, false, 11_000, &[]));
        assert_eq!(
            combine(&[1, 2], &files, (7, 3), 12_000, 5_000),
            Err(NotYet::Loading(2))
        );
    }

    #[test]
    fn a_file_round_trips_and_garbage_is_an_error() {
        let f = file(3, 12, true, 99, &[(1, 2)]);
        assert_eq!(RefsFile::decode(&f.encode()).unwrap(), *f);
        assert!(RefsFile::decode(b"{\"node\":").is_err());
    }
}
