//! The node-wide topic table: names, ids and partition counts.
//!
//! It changes rarely (CreateTopics, DeleteTopics, CreatePartitions, auto
//! creation) and is read on every request, so shards never lock it on the hot
//! path: each shard keeps its own `Arc` of the table and refreshes it only when
//! the node-wide version number (one atomic load) has moved.
//!
//! Persisted form (object `meta/topics` in the data bucket), one topic a line:
//!
//! - `v1 <topic id hex> <partitions> <name>`: a topic without config
//!   overrides. Still written for such topics, so an older binary reads a
//!   table that uses no per-topic configs.
//! - `v2 <topic id hex> <partitions> <name> <key>=<value> ...`: a topic with
//!   config overrides (see [`crate::broker::configs`]), one `key=value` token each.
//!   Keys and values are percent-encoded: every byte that is not printable
//!   ASCII, and `%`, `=` and space, is written as `%XX`.

use ferry_protocol::wire::Uuid;
use parking_lot::RwLock;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: Arc<str>,
    pub id: Uuid,
    pub partitions: i32,
    /// Per-topic config overrides (`retention.ms`, ...), already validated by
    /// [`crate::broker::configs`]; keys without an override take the node's value.
    pub configs: Arc<TopicConfigs>,
}

/// A topic's config overrides: key to value.
pub type TopicConfigs = BTreeMap<String, String>;

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
            if t.configs.is_empty() {
                let _ = writeln!(out, "v1 {:?} {} {}", t.id, t.partitions, t.name);
                continue;
            }
            let _ = write!(out, "v2 {:?} {} {}", t.id, t.partitions, t.name);
            for (k, v) in t.configs.iter() {
                out.push(' ');
                escape(k, &mut out);
                out.push('=');
                escape(v, &mut out);
            }
            out.push('\n');
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
            let (version, rest) = line.split_once(' ').ok_or_else(|| bad("unknown version"))?;
            // v1: the name is the rest of the line. v2: the name ends at the
            // next space, and `key=value` tokens follow.
            if version != "v1" && version != "v2" {
                return Err(bad("unknown version"));
            }
            let mut parts = rest.splitn(3, ' ');
            let id = parts
                .next()
                .and_then(parse_uuid)
                .ok_or_else(|| bad("bad topic id"))?;
            let partitions = parts
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .ok_or_else(|| bad("bad partition count"))?;
            let rest = parts.next().ok_or_else(|| bad("no name"))?;
            let mut configs = TopicConfigs::new();
            let name: Arc<str> = if version == "v1" {
                rest.into()
            } else {
                let mut tokens = rest.split(' ');
                let name = tokens.next().filter(|n| !n.is_empty());
                let name = name.ok_or_else(|| bad("no name"))?;
                for token in tokens {
                    let (k, v) = token
                        .split_once('=')
                        .ok_or_else(|| bad("config override without '='"))?;
                    let k = unescape(k).ok_or_else(|| bad("bad config key encoding"))?;
                    let v = unescape(v).ok_or_else(|| bad("bad config value encoding"))?;
                    if k.is_empty() || configs.insert(k, v).is_some() {
                        return Err(bad("empty or repeated config key"));
                    }
                }
                name.into()
            };
            t.by_name.insert(
                name.clone(),
                TopicInfo {
                    name,
                    id,
                    partitions,
                    configs: Arc::new(configs),
                },
            );
        }
        Ok(t)
    }
}

/// Percent-encodes `s` for a `v2` line: everything but printable ASCII
/// other than `%` and `=` (space is not printable here).
fn escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'=' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
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
        self.create_with_configs(name, partitions, TopicConfigs::new())
    }

    /// Adds a topic with config overrides the caller has validated; returns
    /// the new table, for the caller to persist.
    pub fn create_with_configs(
        &self,
        name: &str,
        partitions: i32,
        configs: TopicConfigs,
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
            configs: Arc::new(configs),
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

    /// Replaces a topic's config overrides with ones the caller has
    /// validated; returns the new table, for the caller to persist.
    pub fn set_configs(
        &self,
        name: &str,
        configs: TopicConfigs,
    ) -> Result<Arc<TopicTable>, TopicError> {
        let mut guard = self.table.write();
        let mut next = (**guard).clone();
        let t = next
            .by_name
            .get_mut(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        t.configs = Arc::new(configs);
        let next = Arc::new(next);
        *guard = next.clone();
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(next)
    }

    /// Replaces the whole table (with the cluster's, from the coordinator).
    pub fn replace(&self, table: TopicTable) {
        *self.table.write() = Arc::new(table);
        self.version.fetch_add(1, Ordering::AcqRel);
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

/// The retention of a topic, `(ms, bytes)` with -1 for no limit: its
/// overrides, else the node's values.
pub fn retention_of(overrides: Option<&TopicConfigs>, node_ms: i64, node_bytes: i64) -> (i64, i64) {
    let get = |key: &str, node: i64| {
        overrides
            .and_then(|o| o.get(key))
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v >= -1)
            .unwrap_or(node)
    };
    (
        get("retention.ms", node_ms),
        get("retention.bytes", node_bytes),
    )
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
        assert!(TopicTable::decode(b"v3 00 1 x\n").is_err());
        assert!(TopicTable::decode(b"v1 zz 1 x\n").is_err());
    }

    #[test]
    fn v1_lines_written_before_configs_still_decode() {
        // As an older binary wrote them: no overrides.
        let old = b"v1 000000000000000800000000000000ff 1 a.b_c-d\n\
                    v1 00000000000000070000000000000007 6 orders\n";
        let t = TopicTable::decode(old).unwrap();
        assert_eq!(t.len(), 2);
        let o = t.get("orders").unwrap();
        assert_eq!(o.partitions, 6);
        assert!(o.configs.is_empty());
        assert_eq!(format!("{:?}", o.id), "00000000000000070000000000000007");
        // And a table without overrides is still written as v1 lines.
        assert_eq!(t.encode(), old.to_vec());
    }

    #[test]
    fn overrides_round_trip_as_v2_lines() {
        let topics = Topics::new(TopicTable::default(), 3);
        topics.create("plain", 2).unwrap();
        let mut c = TopicConfigs::new();
        c.insert("retention.ms".into(), "1000".into());
        // Not a value Ferry accepts, but the encoding must carry any text.
        c.insert("odd key".into(), "a=b %20 c\té".into());
        let (_, _) = topics.create_with_configs("tuned", 4, c.clone()).unwrap();
        let table = topics.snapshot();
        let text = String::from_utf8(table.encode()).unwrap();
        assert!(text
            .lines()
            .any(|l| l.starts_with("v1 ") && l.ends_with(" plain")));
        let v2 = text.lines().find(|l| l.starts_with("v2 ")).unwrap();
        assert!(
            v2.contains(" tuned ") && v2.contains(" retention.ms=1000"),
            "{v2}"
        );
        assert!(v2.contains("odd%20key=a%3Db%20%2520%20c%09%C3%A9"), "{v2}");
        let back = TopicTable::decode(text.as_bytes()).unwrap();
        assert_eq!(&back, table.as_ref());
        assert_eq!(*back.get("tuned").unwrap().configs, c);
        // Clearing the overrides goes back to a v1 line.
        let table = topics.set_configs("tuned", TopicConfigs::new()).unwrap();
        let text = String::from_utf8(table.encode()).unwrap();
        assert!(!text.contains("v2 "), "{text}");
        assert!(topics.set_configs("missing", TopicConfigs::new()).is_err());
    }

    #[test]
    fn bad_v2_lines_are_refused() {
        let id = "00000000000000070000000000000007";
        for bad in [
            format!("v2 {id} 1 t retention.ms"),
            format!("v2 {id} 1 t retention.ms=%4"),
            format!("v2 {id} 1 t retention.ms=%zz"),
            format!("v2 {id} 1 t a=1 a=2"),
            format!("v2 {id} 1 t =1"),
            format!("v2 {id} 1  a=1"),
            format!("v2 {id} 1 t %FF=1"),
        ] {
            assert!(TopicTable::decode(bad.as_bytes()).is_err(), "{bad}");
        }
        let ok = format!("v2 {id} 1 t a=1 b=");
        let t = TopicTable::decode(ok.as_bytes()).unwrap();
        assert_eq!(
            t.get("t").unwrap().configs.get("b").map(String::as_str),
            Some("")
        );
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
