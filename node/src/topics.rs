//! The node-wide topic table: names, ids and partition counts.
//!
//! It changes rarely (CreateTopics, DeleteTopics, CreatePartitions, auto
//! creation) and is read on every request, so shards never lock it on the hot
//! path: each shard keeps its own `Arc` of the table and refreshes it only when
//! the node-wide version number (one atomic load) has moved.
//!
//! Persisted form (object `meta/topics` in the data bucket), one topic a line:
//! `v1 <topic id hex> <partitions> <name>`.

use ferry_protocol::wire::Uuid;
use parking_lot::RwLock;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: Arc<str>,
    pub id: Uuid,
    pub partitions: i32,
}

/// An immutable snapshot of every topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicTable {
    by_name: BTreeMap<Arc<str>, TopicInfo>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    #[error("topic {0} already exists")]
    Exists(String),
    #[error("topic {0} does not exist")]
    Unknown(String),
    #[error(
        "invalid topic name {0:?}: use 1 to 249 characters of [a-zA-Z0-9._-], not \".\" or \"..\""
    )]
    InvalidName(String),
    #[error("invalid partition count {0}: expected 1 to {max}", max = PARTITIONS_MAX)]
    InvalidPartitions(i32),
    #[error("topic table line {line}: {what}")]
    Corrupt { line: usize, what: &'static str },
}

/// The most partitions one topic may have.
pub const PARTITIONS_MAX: i32 = 10_000;

impl TopicTable {
    pub fn get(&self, name: &str) -> Option<&TopicInfo> {
        self.by_name.get(name)
    }

    pub fn by_id(&self, id: &Uuid) -> Option<&TopicInfo> {
        self.by_name.values().find(|t| &t.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TopicInfo> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for t in self.by_name.values() {
            out.push_str(&format!("v1 {:?} {} {}\n", t.id, t.partitions, t.name));
        }
        out.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<TopicTable, TopicError> {
        let text = std::str::from_utf8(b).map_err(|_| TopicError::Corrupt {
            line: 0,
            what: "not UTF-8",
        })?;
        let mut t = TopicTable::default();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let bad = |what| TopicError::Corrupt {
                line: line_no,
                what,
            };
            let mut parts = line.splitn(4, ' ');
            if parts.next() != Some("v1") {
                return Err(bad("unknown version"));
            }
            let id = parts
                .next()
                .and_then(parse_uuid)
                .ok_or_else(|| bad("bad topic id"))?;
            let partitions = parts
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .ok_or_else(|| bad("bad partition count"))?;
            let name: Arc<str> = parts.next().ok_or_else(|| bad("no name"))?.into();
            t.by_name.insert(
                name.clone(),
                TopicInfo {
                    name,
                    id,
                    partitions,
                },
            );
        }
        Ok(t)
    }
}

fn parse_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Uuid(b))
}

pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TopicError::InvalidName(name.to_string()))
    }
}

/// The node-wide, versioned holder of the table.
#[derive(Debug, Default)]
pub struct Topics {
    table: RwLock<Arc<TopicTable>>,
    version: AtomicU64,
    next_id: AtomicU64,
}

impl Topics {
    pub fn new(table: TopicTable, id_seed: u64) -> Topics {
        Topics {
            table: RwLock::new(Arc::new(table)),
            version: AtomicU64::new(1),
            next_id: AtomicU64::new(id_seed),
        }
    }

    pub fn snapshot(&self) -> Arc<TopicTable> {
        self.table.read().clone()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn new_id(&self) -> Uuid {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_be_bytes());
        b[8..].copy_from_slice(&(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
        Uuid(b)
    }

    /// Adds a topic; returns the new table, for the caller to persist.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
    ) -> Result<(TopicInfo, Arc<TopicTable>), TopicError> {
        validate_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        let mut guard = self.table.write();
        if guard.get(name).is_some() {
            return Err(TopicError::Exists(name.to_string()));
        }
        let info = TopicInfo {
            name: name.into(),
            id: self.new_id(),
            partitions,
        };
        let mut next = (**guard).clone();
        next.by_name.insert(info.name.clone(), info.clone());
        let next = Arc::new(next);
        *guard = next.clone();
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok((info, next))
    }

    pub fn delete(&self, name: &str) -> Result<(TopicInfo, Arc<TopicTable>), TopicError> {
        let mut guard = self.table.write();
        let mut next = (**guard).clone();
        let info = next
            .by_name
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let next = Arc::new(next);
        *guard = next.clone();
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok((info, next))
    }

    pub fn add_partitions(&self, name: &str, count: i32) -> Result<Arc<TopicTable>, TopicError> {
        if !(1..=PARTITIONS_MAX).contains(&count) {
            return Err(TopicError::InvalidPartitions(count));
        }
        let mut guard = self.table.write();
        let mut next = (**guard).clone();
        let t = next
            .by_name
            .get_mut(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        if count <= t.partitions {
            return Err(TopicError::InvalidPartitions(count));
        }
        t.partitions = count;
        let next = Arc::new(next);
        *guard = next.clone();
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(next)
    }
}

/// A shard's cached view of [`Topics`]: one atomic load per use.
#[derive(Debug)]
pub struct LocalTopics {
    shared: Arc<Topics>,
    cached: RefCell<(u64, Arc<TopicTable>)>,
}

impl LocalTopics {
    pub fn new(shared: Arc<Topics>) -> LocalTopics {
        let v = shared.version();
        let t = shared.snapshot();
        LocalTopics {
            shared,
            cached: RefCell::new((v, t)),
        }
    }

    pub fn get(&self) -> Arc<TopicTable> {
        let v = self.shared.version();
        let mut c = self.cached.borrow_mut();
        if c.0 != v {
            *c = (v, self.shared.snapshot());
        }
        c.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_through_its_persisted_form() {
        let topics = Topics::new(TopicTable::default(), 7);
        topics.create("orders", 6).unwrap();
        let (_, table) = topics.create("a.b_c-d", 1).unwrap();
        let back = TopicTable::decode(&table.encode()).unwrap();
        assert_eq!(&back, table.as_ref());
        assert_eq!(back.get("orders").unwrap().partitions, 6);
        assert!(TopicTable::decode(b"v2 00 1 x\n").is_err());
        assert!(TopicTable::decode(b"v1 zz 1 x\n").is_err());
    }

    #[test]
    fn names_and_counts_are_validated() {
        let topics = Topics::new(TopicTable::default(), 1);
        assert!(matches!(
            topics.create("bad name", 1),
            Err(TopicError::InvalidName(_))
        ));
        assert!(matches!(
            topics.create("..", 1),
            Err(TopicError::InvalidName(_))
        ));
        assert!(matches!(
            topics.create("ok", 0),
            Err(TopicError::InvalidPartitions(0))
        ));
        topics.create("ok", 1).unwrap();
        assert!(matches!(topics.create("ok", 1), Err(TopicError::Exists(_))));
        assert!(topics.add_partitions("ok", 1).is_err());
        assert_eq!(
            topics
                .add_partitions("ok", 3)
                .unwrap()
                .get("ok")
                .unwrap()
                .partitions,
            3
        );
    }

    #[test]
    fn shards_see_changes_through_the_version() {
        let shared = Arc::new(Topics::new(TopicTable::default(), 1));
        let local = LocalTopics::new(shared.clone());
        assert!(local.get().is_empty());
        shared.create("t", 2).unwrap();
        assert_eq!(local.get().get("t").unwrap().partitions, 2);
        let id = local.get().get("t").unwrap().id;
        assert_eq!(local.get().by_id(&id).unwrap().name.as_ref(), "t");
    }
}
