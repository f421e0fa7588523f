//! Topic and broker configs through the admin APIs: DescribeConfigs,
//! AlterConfigs, IncrementalAlterConfigs, and the `configs` of CreateTopics.
//!
//! **Topics.** A topic may override the keys in [`TOPIC_KEYS`]. Overrides
//! are checked here, kept in the topic table ([`crate::cluster::topics`]) and
//! persisted with it; a key without an override takes the node's value.
//! What each key does in Ferry:
//!
//! - `retention.ms`, `retention.bytes`: honoured; the shards' retention reads
//!   them through [`retention_of`].
//! - `cleanup.policy`, `compression.type`, `message.timestamp.type`: only
//!   the value Ferry implements is accepted (`delete`, `producer`,
//!   `CreateTime`). `compact` is refused: Ferry does not compact logs.
//! - `max.message.bytes`, `min.insync.replicas`, `segment.bytes`,
//!   `segment.ms`: checked and stored, so that tools that set them keep
//!   working, but they change nothing: Ferry has no segments and no
//!   replicas (the bucket is the replication), and bounds batches by
//!   `socket.request.max.bytes`.
//!
//! Any other key is refused with INVALID_CONFIG naming it.
//!
//! **Brokers.** DescribeConfigs on the node's id shows the node's
//! [`crate::config::Config::describe`] snapshot; on `""` (the cluster
//! defaults) it shows the dynamic defaults, of which there are none yet.
//! Every broker key is static for now, so AlterConfigs and
//! IncrementalAlterConfigs on a broker are refused with INVALID_REQUEST. A
//! dynamic key (the zones work adds `automq.zone.cidr.blocks`) goes into
//! [`DYNAMIC_BROKER_KEYS`], gets its value checked in [`alter_broker`], and
//! is applied where the API handler uses `alter_broker`'s result.
//!
//! Secrets: broker values are shown as the snapshot has them (sensitive
//! values `None`, URI credentials redacted), and redacted again here; error
//! messages about broker keys never contain a value.
//!
//! Numbering follows Kafka: resource types, [`source`], [`config_type`] and
//! the IncrementalAlterConfigs operations in [`op`].

pub use crate::cluster::topics::retention_of;
use crate::cluster::topics::{TopicConfigs, TopicTable};
use crate::config::{is_sensitive_key, redact_value, Config, HostEnv};
use crate::node::NodeCtx;
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::messages::create_topics_response::CreatableTopicConfigs;
use ferry_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use ferry_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use ferry_protocol::wire::KStr;
use std::sync::OnceLock;

/// Kafka's resource type of a topic.
pub const RESOURCE_TOPIC: i8 = 2;
/// Kafka's resource type of a broker.
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's `ConfigSource`: where a value comes from.
pub mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's config types (DescribeConfigs v3+).
pub mod config_type {
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const LONG: i8 = 5;
    pub const LIST: i8 = 7;
    pub const PASSWORD: i8 = 9;
}

/// IncrementalAlterConfigs operations.
pub mod op {
    pub const SET: i8 = 0;
    pub const DELETE: i8 = 1;
    pub const APPEND: i8 = 2;
    pub const SUBTRACT: i8 = 3;
}

/// Broker keys that may change at run time: `automq.zone.cidr.blocks`,
/// which is cluster-wide (kept by the coordinator), whether altered at the
/// cluster default (resource name `""`) or at one broker.
const DYNAMIC_BROKER_KEYS: &[&str] = &[crate::cluster::zone::ZONE_CIDR_KEY];

/// Why a config request failed: the error code and a message that names
/// the key and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub code: ErrorCode,
    pub message: String,
}

impl ConfigProblem {
    fn invalid_config(message: String) -> ConfigProblem {
        ConfigProblem {
            code: ErrorCode::INVALID_CONFIG,
            message,
        }
    }

    fn invalid_request(message: String) -> ConfigProblem {
        ConfigProblem {
            code: ErrorCode::INVALID_REQUEST,
            message,
        }
    }

    /// For handlers that answer `(code, message)`.
    pub fn into_pair(self) -> (ErrorCode, String) {
        (self.code, self.message)
    }
}

/// The refusal for a resource type other than topic and broker.
pub fn unsupported_resource(resource_type: i8) -> ConfigProblem {
    ConfigProblem::invalid_request(format!(
        "resource type {resource_type} is not supported: expected {RESOURCE_TOPIC} (topic) \
         or {RESOURCE_BROKER} (broker)"
    ))
}

// ---------------------------------------------------------------------------
// Topic keys
// ---------------------------------------------------------------------------

/// Where a topic key's value comes from when the topic does not override it.
#[derive(Debug, Clone, Copy)]
enum TopicDefault {
    /// A fixed value: what Ferry implements.
    Fixed(&'static str),
    /// The node's `log.retention.ms`.
    RetentionMs,
    /// The node's `log.retention.bytes`.
    RetentionBytes,
    /// The node's `socket.request.max.bytes`.
    FrameBytes,
}

struct TopicKey {
    name: &'static str,
    /// The broker key that supplies the value when the topic has none
    /// (its synonym, in Kafka's terms).
    broker_key: &'static str,
    default: TopicDefault,
    config_type: i8,
    doc: &'static str,
    /// The value as stored, or a description of what was expected.
    check: fn(&str) -> Result<String, String>,
}

/// Every topic key Ferry knows, in name order.
const TOPIC_KEYS: &[TopicKey] = &[
    TopicKey {
        name: "cleanup.policy",
        broker_key: "log.cleanup.policy",
        default: TopicDefault::Fixed("delete"),
        config_type: config_type::LIST,
        doc: "How old data is cleaned up. Ferry implements delete (by retention.ms and \
              retention.bytes); it does not compact logs.",
        check: check_cleanup_policy,
    },
    TopicKey {
        name: "compression.type",
        broker_key: "compression.type",
        default: TopicDefault::Fixed("producer"),
        config_type: config_type::STRING,
        doc: "Ferry stores and serves batches compressed as the producer sent them.",
        check: check_compression_type,
    },
    TopicKey {
        name: "max.message.bytes",
        broker_key: "socket.request.max.bytes",
        default: TopicDefault::FrameBytes,
        config_type: config_type::INT,
        doc: "Largest record batch. Stored; Ferry bounds batches by the node's \
              socket.request.max.bytes.",
        check: check_max_message_bytes,
    },
    TopicKey {
        name: "message.timestamp.type",
        broker_key: "log.message.timestamp.type",
        default: TopicDefault::Fixed("CreateTime"),
        config_type: config_type::STRING,
        doc: "Record timestamps are the producer's (CreateTime).",
        check: check_timestamp_type,
    },
    TopicKey {
        name: "min.insync.replicas",
        broker_key: "min.insync.replicas",
        default: TopicDefault::Fixed("1"),
        config_type: config_type::INT,
        doc: "Stored; an acknowledged write is durable in the bucket, which is the \
              replication.",
        check: check_min_insync_replicas,
    },
    TopicKey {
        name: "retention.bytes",
        broker_key: "log.retention.bytes",
        default: TopicDefault::RetentionBytes,
        config_type: config_type::LONG,
        doc: "Bytes kept per partition before the oldest data is deleted; -1: no limit.",
        check: check_retention_bytes,
    },
    TopicKey {
        name: "retention.ms",
        broker_key: "log.retention.ms",
        default: TopicDefault::RetentionMs,
        config_type: config_type::LONG,
        doc: "How long data is kept, by record timestamp, in milliseconds; -1: forever.",
        check: check_retention_ms,
    },
    TopicKey {
        name: "segment.bytes",
        broker_key: "log.segment.bytes",
        default: TopicDefault::Fixed("1073741824"),
        config_type: config_type::INT,
        doc: "Stored; Ferry keeps data in WAL objects, not segments.",
        check: check_segment_bytes,
    },
    TopicKey {
        name: "segment.ms",
        broker_key: "log.roll.ms",
        default: TopicDefault::Fixed("604800000"),
        config_type: config_type::LONG,
        doc: "Stored; Ferry keeps data in WAL objects, not segments.",
        check: check_segment_ms,
    },
];

fn topic_key(name: &str) -> Option<&'static TopicKey> {
    TOPIC_KEYS.iter().find(|k| k.name == name)
}

fn integer(v: &str, min: i64, max: i64) -> Option<i64> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

fn check_retention_ms(v: &str) -> Result<String, String> {
    integer(v, -1, i64::MAX)
        .map(|n| n.to_string())
        .ok_or_else(|| "an integer number of milliseconds, or -1 to keep data forever".into())
}

fn check_retention_bytes(v: &str) -> Result<String, String> {
    integer(v, -1, i64::MAX)
        .map(|n| n.to_string())
        .ok_or_else(|| "an integer number of bytes per partition, or -1 for no limit".into())
}

fn list_items(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_cleanup_policy(v: &str) -> Result<String, String> {
    let items = list_items(v);
    if items.iter().any(|i| i.eq_ignore_ascii_case("compact")) {
        return Err("delete; log compaction (compact) is not supported by Ferry".into());
    }
    if !items.is_empty() && items.iter().all(|i| i == "delete") {
        Ok("delete".into())
    } else {
        Err("delete, the only cleanup policy Ferry implements".into())
    }
}

fn check_compression_type(v: &str) -> Result<String, String> {
    if v.trim() == "producer" {
        Ok("producer".into())
    } else {
        Err(
            "producer: Ferry stores batches as the producer compressed them and does not \
             recompress"
                .into(),
        )
    }
}

fn check_max_message_bytes(v: &str) -> Result<String, String> {
    integer(v, 0, i64::from(i32::MAX))
        .map(|n| n.to_string())
        .ok_or_else(|| "an integer number of bytes, 0 to 2147483647".into())
}

fn check_timestamp_type(v: &str) -> Result<String, String> {
    match v.trim() {
        "CreateTime" => Ok("CreateTime".into()),
        "LogAppendTime" => Err("CreateTime; LogAppendTime is not supported by Ferry".into()),
        _ => Err("CreateTime".into()),
    }
}

fn check_min_insync_replicas(v: &str) -> Result<String, String> {
    integer(v, 1, i64::from(i32::MAX))
        .map(|n| n.to_string())
        .ok_or_else(|| "an integer, at least 1".into())
}

fn check_segment_bytes(v: &str) -> Result<String, String> {
    integer(v, 14, i64::from(i32::MAX))
        .map(|n| n.to_string())
        .ok_or_else(|| "an integer number of bytes, 14 to 2147483647".into())
}

fn check_segment_ms(v: &str) -> Result<String, String> {
    integer(v, 1, i64::MAX)
        .map(|n| n.to_string())
        .ok_or_else(|| "an integer number of milliseconds, at least 1".into())
}

fn unknown_topic_key(key: &str) -> ConfigProblem {
    let names: Vec<&str> = TOPIC_KEYS.iter().map(|k| k.name).collect();
    ConfigProblem::invalid_config(format!(
        "unknown topic config {key:?}: Ferry accepts {}",
        names.join(", ")
    ))
}

fn check_value(key: &TopicKey, value: &str) -> Result<String, ConfigProblem> {
    (key.check)(value).map_err(|expected| {
        ConfigProblem::invalid_config(format!(
            "invalid value {:?} for {}: expected {expected}",
            redact_value(key.name, value),
            key.name
        ))
    })
}

/// Checks one topic override; returns the value as it is stored.
pub fn check_topic_config(key: &str, value: &str) -> Result<String, ConfigProblem> {
    let k = topic_key(key).ok_or_else(|| unknown_topic_key(key))?;
    check_value(k, value)
}

/// The overrides of a CreateTopics topic, every key checked.
pub fn topic_configs_for_create<'a>(
    pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<TopicConfigs, ConfigProblem> {
    let mut out = TopicConfigs::new();
    for (key, value) in pairs {
        let value = value.ok_or_else(|| {
            ConfigProblem::invalid_config(format!(
                "{key} has a null value: give a value, or leave the key out for the default"
            ))
        })?;
        let stored = check_topic_config(key, value)?;
        if out.insert(key.to_owned(), stored).is_some() {
            return Err(ConfigProblem::invalid_request(format!(
                "{key} is given twice"
            )));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Alterations
// ---------------------------------------------------------------------------

/// A change to one resource's configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alteration {
    /// AlterConfigs: the named keys become the whole set of overrides; keys
    /// left out return to their defaults.
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: `(key, operation, value)`, applied in order
    /// to the current overrides.
    Incremental(Vec<(String, i8, Option<String>)>),
}

impl Alteration {
    /// The keys it names, for logs (never values).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Alteration::Replace(v) => v.iter().map(|(k, _)| k.as_str()).collect(),
            Alteration::Incremental(v) => v.iter().map(|(k, _, _)| k.as_str()).collect(),
        }
    }

    fn check_no_duplicates(&self) -> Result<(), ConfigProblem> {
        let keys = self.keys();
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(ConfigProblem::invalid_request(format!(
                    "{k} is named twice in one resource"
                )));
            }
        }
        Ok(())
    }
}

fn op_name(op: i8) -> &'static str {
    match op {
        op::SET => "SET",
        op::DELETE => "DELETE",
        op::APPEND => "APPEND",
        op::SUBTRACT => "SUBTRACT",
        _ => "an unknown operation",
    }
}

fn need_value<'a>(key: &str, op: i8, value: &'a Option<String>) -> Result<&'a str, ConfigProblem> {
    value.as_deref().ok_or_else(|| {
        ConfigProblem::invalid_request(format!(
            "{} of {key} needs a value, not null (DELETE resets a key to its default)",
            op_name(op)
        ))
    })
}

/// A topic's overrides after `alt`, every key and value checked. The caller
/// stores the result (unless the request only validates).
pub fn alter_topic(
    current: &TopicConfigs,
    alt: &Alteration,
) -> Result<TopicConfigs, ConfigProblem> {
    alt.check_no_duplicates()?;
    match alt {
        Alteration::Replace(pairs) => {
            let mut next = TopicConfigs::new();
            for (key, value) in pairs {
                let k = topic_key(key).ok_or_else(|| unknown_topic_key(key))?;
                let value = value.as_deref().ok_or_else(|| {
                    ConfigProblem::invalid_request(format!(
                        "{key} has a null value: AlterConfigs sets every key it names; \
                         leave {key} out to reset it"
                    ))
                })?;
                next.insert(key.clone(), check_value(k, value)?);
            }
            Ok(next)
        }
        Alteration::Incremental(ops) => {
            let mut next = current.clone();
            for (key, operation, value) in ops {
                let k = topic_key(key).ok_or_else(|| unknown_topic_key(key))?;
                match *operation {
                    op::SET => {
                        let v = need_value(key, op::SET, value)?;
                        next.insert(key.clone(), check_value(k, v)?);
                    }
                    op::DELETE => {
                        next.remove(key);
                    }
                    o @ (op::APPEND | op::SUBTRACT) => {
                        if k.config_type != config_type::LIST {
                            return Err(ConfigProblem::invalid_request(format!(
                                "{} applies to list configs, and {key} is not a list: use SET",
                                op_name(o)
                            )));
                        }
                        let v = need_value(key, o, value)?;
                        let current = match (next.get(key), k.default) {
                            (Some(v), _) => v.clone(),
                            (None, TopicDefault::Fixed(d)) => d.to_owned(),
                            (None, _) => String::new(),
                        };
                        let mut items = list_items(&current);
                        for item in list_items(v) {
                            if o == op::APPEND {
                                if !items.contains(&item) {
                                    items.push(item);
                                }
                            } else {
                                items.retain(|i| *i != item);
                            }
                        }
                        next.insert(key.clone(), check_value(k, &items.join(","))?);
                    }
                    other => {
                        return Err(ConfigProblem::invalid_request(format!(
                            "unknown operation {other} for {key}: expected 0 (SET), 1 (DELETE), \
                             2 (APPEND) or 3 (SUBTRACT)"
                        )))
                    }
                }
            }
            Ok(next)
        }
    }
}

fn check_broker_name(node_id: i32, name: &str) -> Result<(), ConfigProblem> {
    if name.is_empty() || name.trim().parse::<i32>().ok() == Some(node_id) {
        Ok(())
    } else {
        Err(ConfigProblem::invalid_request(format!(
            "unexpected broker {name:?}: this is node {node_id}; use \"{node_id}\", or \"\" for \
             the cluster defaults"
        )))
    }
}

/// Checks a change to a broker's configs (`name`: the node's id, or `""`
/// for the cluster defaults); returns the changes to apply, `(key, new
/// value)` with `None` to reset. Every broker key is static in this
/// version, so any key is refused.
pub fn alter_broker(
    node_id: i32,
    name: &str,
    alt: &Alteration,
) -> Result<Vec<(String, Option<String>)>, ConfigProblem> {
    check_broker_name(node_id, name)?;
    alt.check_no_duplicates()?;
    let entries: Vec<(&str, i8, &Option<String>)> = match alt {
        Alteration::Replace(v) => v
            .iter()
            .map(|(k, val)| (k.as_str(), op::SET, val))
            .collect(),
        Alteration::Incremental(v) => v.iter().map(|(k, o, val)| (k.as_str(), *o, val)).collect(),
    };
    let mut changes = Vec::new();
    for (key, operation, value) in entries {
        if !DYNAMIC_BROKER_KEYS.contains(&key) {
            return Err(ConfigProblem::invalid_request(format!(
                "broker configs are static in this version: {key} cannot change at run time; \
                 restart with --override {key}=VALUE"
            )));
        }
        // A dynamic key's value is checked here with the parser in
        // `crate::config` (errors name the key, never the value).
        match operation {
            op::SET => {
                let v = need_value(key, op::SET, value)?;
                if key == crate::cluster::zone::ZONE_CIDR_KEY {
                    crate::cluster::zone::ZoneTable::parse(v)
                        .map_err(|e| ConfigProblem::invalid_config(e.to_string()))?;
                }
                changes.push((key.to_owned(), Some(v.to_owned())))
            }
            op::DELETE => changes.push((key.to_owned(), None)),
            o => {
                return Err(ConfigProblem::invalid_request(format!(
                    "{} is not supported for broker config {key}: use SET or DELETE",
                    op_name(o)
                )))
            }
        }
    }
    Ok(changes)
}

// ---------------------------------------------------------------------------
// Describing
// ---------------------------------------------------------------------------

/// The node's values that topic defaults come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeValues {
    /// `log.retention.ms`; -1: forever.
    pub retention_ms: i64,
    /// `log.retention.bytes`; -1: no limit.
    pub retention_bytes: i64,
    /// `socket.request.max.bytes`.
    pub frame_bytes_max: usize,
}

impl NodeValues {
    pub fn of(ctx: &NodeCtx) -> NodeValues {
        NodeValues {
            retention_ms: ctx.retention_ms,
            retention_bytes: ctx.retention_bytes,
            frame_bytes_max: ctx.frame_bytes_max,
        }
    }
}

/// What an unconfigured node has: to tell a broker value that was set
/// (STATIC_BROKER_CONFIG) from a default (DEFAULT_CONFIG).
struct Defaults {
    node: NodeValues,
    describe: Vec<(String, Option<String>, bool)>,
}

fn defaults() -> &'static Defaults {
    static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        match Config::from_pairs(std::iter::empty::<(String, String)>(), HostEnv::detect()) {
            Ok(c) => Defaults {
                node: NodeValues {
                    retention_ms: c.log_retention_ms.map_or(-1, |v| v as i64),
                    retention_bytes: c.log_retention_bytes.map_or(-1, |v| v as i64),
                    frame_bytes_max: c.socket_request_bytes_max,
                },
                describe: c.describe(),
            },
            Err(_) => Defaults {
                node: NodeValues {
                    retention_ms: 604_800_000,
                    retention_bytes: -1,
                    frame_bytes_max: 104_857_600,
                },
                describe: Vec::new(),
            },
        }
    })
}

/// What a request asks to see.
#[derive(Debug, Clone, Copy, Default)]
pub struct Show<'a> {
    /// Only these keys; `None`: all.
    pub keys: Option<&'a [&'a str]>,
    pub synonyms: bool,
    pub documentation: bool,
}

impl Show<'_> {
    fn wants(&self, key: &str) -> bool {
        self.keys.is_none_or(|k| k.contains(&key))
    }
}

struct Entry {
    name: String,
    value: Option<String>,
    read_only: bool,
    is_default: bool,
    source: i8,
    sensitive: bool,
    synonyms: Vec<(String, Option<String>, i8)>,
    config_type: i8,
    doc: &'static str,
}

impl Entry {
    fn into_wire(self, show: &Show<'_>) -> DescribeConfigsResourceResult {
        DescribeConfigsResourceResult {
            name: self.name.into(),
            value: self.value.map(KStr::from),
            read_only: self.read_only,
            is_default: self.is_default,
            config_source: self.source,
            is_sensitive: self.sensitive,
            synonyms: if show.synonyms {
                self.synonyms
                    .into_iter()
                    .map(|(name, value, source)| DescribeConfigsSynonym {
                        name: name.into(),
                        value: value.map(KStr::from),
                        source,
                        ..Default::default()
                    })
                    .collect()
            } else {
                Vec::new()
            },
            config_type: self.config_type,
            documentation: show.documentation.then(|| KStr::from(self.doc)),
            ..Default::default()
        }
    }
}

fn source_of<T: PartialEq>(value: T, default: T) -> i8 {
    if value == default {
        source::DEFAULT_CONFIG
    } else {
        source::STATIC_BROKER_CONFIG
    }
}

/// A topic key's value and source when the topic does not override it.
fn topic_default(key: &TopicKey, node: &NodeValues) -> (String, i8) {
    let d = &defaults().node;
    match key.default {
        TopicDefault::Fixed(v) => (v.to_owned(), source::DEFAULT_CONFIG),
        TopicDefault::RetentionMs => (
            node.retention_ms.to_string(),
            source_of(node.retention_ms, d.retention_ms),
        ),
        TopicDefault::RetentionBytes => (
            node.retention_bytes.to_string(),
            source_of(node.retention_bytes, d.retention_bytes),
        ),
        TopicDefault::FrameBytes => (
            node.frame_bytes_max.min(i32::MAX as usize).to_string(),
            source_of(node.frame_bytes_max, d.frame_bytes_max),
        ),
    }
}

fn topic_entries(overrides: &TopicConfigs, node: &NodeValues, show: &Show<'_>) -> Vec<Entry> {
    TOPIC_KEYS
        .iter()
        .filter(|k| show.wants(k.name))
        .map(|k| {
            let (default, default_source) = topic_default(k, node);
            let mut synonyms = Vec::new();
            let (value, source) = match overrides.get(k.name) {
                Some(v) => {
                    synonyms.push((
                        k.name.to_owned(),
                        Some(v.clone()),
                        source::DYNAMIC_TOPIC_CONFIG,
                    ));
                    (v.clone(), source::DYNAMIC_TOPIC_CONFIG)
                }
                None => (default.clone(), default_source),
            };
            synonyms.push((k.broker_key.to_owned(), Some(default), default_source));
            Entry {
                name: k.name.to_owned(),
                value: Some(value),
                read_only: false,
                is_default: source != source::DYNAMIC_TOPIC_CONFIG,
                source,
                sensitive: false,
                synonyms,
                config_type: k.config_type,
                doc: k.doc,
            }
        })
        .collect()
}

/// A topic's configs as DescribeConfigs shows them.
pub fn describe_topic(
    overrides: &TopicConfigs,
    node: &NodeValues,
    show: &Show<'_>,
) -> Vec<DescribeConfigsResourceResult> {
    topic_entries(overrides, node, show)
        .into_iter()
        .map(|e| e.into_wire(show))
        .collect()
}

/// A new topic's configs as CreateTopics (v5+) returns them.
pub fn created_topic_configs(
    overrides: &TopicConfigs,
    node: &NodeValues,
) -> Vec<CreatableTopicConfigs> {
    topic_entries(overrides, node, &Show::default())
        .into_iter()
        .map(|e| CreatableTopicConfigs {
            name: e.name.into(),
            value: e.value.map(KStr::from),
            read_only: e.read_only,
            config_source: e.source,
            is_sensitive: e.sensitive,
            ..Default::default()
        })
        .collect()
}

fn broker_config_type(key: &str) -> i8 {
    match key {
        "auto.create.topics.enable" => config_type::BOOLEAN,
        "node.id"
        | "broker.id"
        | "num.partitions"
        | "socket.request.max.bytes"
        | "queued.max.request.bytes"
        | "log.retention.hours"
        | "log.retention.minutes"
        | "group.initial.rebalance.delay.ms"
        | "group.min.session.timeout.ms"
        | "group.max.session.timeout.ms"
        | "group.max.size"
        | "offsets.retention.minutes"
        | "offset.metadata.max.bytes"
        | "ferry.shards" => config_type::INT,
        "log.retention.ms"
        | "log.retention.bytes"
        | "ferry.cache.bytes.max"
        | "ferry.compaction.interval.ms"
        | "ferry.compaction.bytes.min" => config_type::LONG,
        "listeners"
        | "advertised.listeners"
        | "listener.security.protocol.map"
        | "controller.listener.names"
        | "s3.data.buckets"
        | "automq.zonerouter.channels" => config_type::LIST,
        _ => config_type::STRING,
    }
}

fn broker_doc(key: &str) -> &'static str {
    match key {
        "node.id" | "broker.id" => "This node's id.",
        "broker.rack" => "This node's zone.",
        "listeners" => "Where clients connect.",
        "advertised.listeners" => "What clients are told to connect to.",
        "listener.security.protocol.map" => "Listener name to security protocol.",
        "controller.listener.names" => "KRaft controller listeners; ignored by Ferry.",
        "num.partitions" => "Partitions of an auto-created topic.",
        "auto.create.topics.enable" => "Create unknown topics on Metadata and Produce.",
        "socket.request.max.bytes" => "Largest request frame.",
        "queued.max.request.bytes" => {
            "Bytes of client requests read and not yet answered, per node; past it sockets are not read. -1: no limit."
        }
        "log.retention.hours" | "log.retention.minutes" | "log.retention.ms" => {
            "How long data is kept; -1: forever. Topics may override it with retention.ms."
        }
        "log.retention.bytes" => {
            "Bytes kept per partition; -1: no limit. Topics may override it with retention.bytes."
        }
        "group.initial.rebalance.delay.ms" => {
            "Wait for more members before a new group's first rebalance."
        }
        "group.min.session.timeout.ms" | "group.max.session.timeout.ms" => {
            "Accepted consumer session timeouts."
        }
        "group.max.size" => "Members per group.",
        "offsets.retention.minutes" => "Committed offsets of an empty group are kept this long.",
        "offset.metadata.max.bytes" => "Largest metadata string of a committed offset.",
        "s3.data.buckets" => "ID@URI[,ID@URI...]: where data lives.",
        "s3.wal.path" => "ID@URI: the WAL, with batchInterval and maxBytesInBatch.",
        "automq.zonerouter.channels" => "ID@URI[,...]: the cross-zone handoff channel.",
        "automq.zone.cidr.blocks" => "zone@cidr[,cidr...]<>zone@cidr...: client zones.",
        "ferry.shards" => "Executors, one per core.",
        "ferry.cache.bytes.max" => "Log cache bound, per shard.",
        "ferry.compaction.interval.ms" => {
            "How often durable batches move from WAL objects into per-partition objects; 0: never."
        }
        "ferry.compaction.bytes.min" => {
            "A compacted object smaller than this is merged into the next one."
        }
        "ferry.coordinator" => {
            "etcd://HOST:PORT[,...]: the cluster's coordinator; empty: in process."
        }
        "ferry.cluster.id" => "The cluster's name (its keys in etcd).",
        "ferry.accept" => {
            "reuseport: a listener per shard; acceptor: shard 0 accepts and deals connections."
        }
        "ferry.metrics.listener" => "IP:port serving /metrics; empty: disabled.",
        _ => "",
    }
}

fn broker_entries(snapshot: &[(String, Option<String>, bool)], show: &Show<'_>) -> Vec<Entry> {
    let d = &defaults().describe;
    snapshot
        .iter()
        .filter(|(key, _, _)| show.wants(key))
        .map(|(key, value, sensitive)| {
            let sensitive = *sensitive || is_sensitive_key(key);
            let value = if sensitive {
                None
            } else {
                value.as_deref().map(|v| redact_value(key, v))
            };
            let default = d.iter().find(|(k, _, _)| k == key).map(|(_, v, _)| v);
            let source = if !sensitive && default == Some(&value) {
                source::DEFAULT_CONFIG
            } else {
                source::STATIC_BROKER_CONFIG
            };
            Entry {
                name: key.clone(),
                value: value.clone(),
                read_only: !DYNAMIC_BROKER_KEYS.contains(&key.as_str()),
                is_default: source == source::DEFAULT_CONFIG,
                source,
                sensitive,
                synonyms: vec![(key.clone(), value, source)],
                config_type: if sensitive {
                    config_type::PASSWORD
                } else {
                    broker_config_type(key)
                },
                doc: broker_doc(key),
            }
        })
        .collect()
}

/// A broker's configs: the node's (`name` is its id), or the dynamic
/// cluster defaults (`name` is `""`; none yet).
pub fn describe_broker(
    node_id: i32,
    name: &str,
    snapshot: &[(String, Option<String>, bool)],
    show: &Show<'_>,
) -> Result<Vec<DescribeConfigsResourceResult>, ConfigProblem> {
    check_broker_name(node_id, name)?;
    if name.is_empty() {
        // Dynamic cluster-wide defaults (source DYNAMIC_DEFAULT_BROKER_CONFIG):
        // none until a broker key is dynamic.
        return Ok(Vec::new());
    }
    Ok(broker_entries(snapshot, show)
        .into_iter()
        .map(|e| e.into_wire(show))
        .collect())
}

/// Answers DescribeConfigs from the pieces of the node it needs.
pub fn describe_with(
    node_id: i32,
    node: &NodeValues,
    snapshot: &[(String, Option<String>, bool)],
    table: &TopicTable,
    req: &DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|r| {
            // Kafka: a null or empty key list means every key.
            let keys: Option<Vec<&str>> = r
                .configuration_keys
                .as_ref()
                .filter(|k| !k.is_empty())
                .map(|k| k.iter().map(KStr::as_str).collect());
            let show = Show {
                keys: keys.as_deref(),
                synonyms: req.include_synonyms,
                documentation: req.include_documentation,
            };
            let name = r.resource_name.as_str();
            let configs = match r.resource_type {
                RESOURCE_TOPIC => match table.get(name) {
                    Some(t) => Ok(describe_topic(&t.configs, node, &show)),
                    None => Err(ConfigProblem {
                        code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        message: format!("topic {name} does not exist"),
                    }),
                },
                RESOURCE_BROKER => describe_broker(node_id, name, snapshot, &show),
                other => Err(unsupported_resource(other)),
            };
            let (error_code, error_message, configs) = match configs {
                Ok(c) => (ErrorCode::NONE, None, c),
                Err(p) => (p.code, Some(KStr::from(p.message)), Vec::new()),
            };
            DescribeConfigsResult {
                error_code: error_code.code(),
                error_message,
                resource_type: r.resource_type,
                resource_name: r.resource_name.clone(),
                configs,
                ..Default::default()
            }
        })
        .collect();
    DescribeConfigsResponse {
        results,
        ..Default::default()
    }
}

/// Answers DescribeConfigs.
pub fn describe(
    ctx: &NodeCtx,
    table: &TopicTable,
    req: &DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    // The cluster-wide values, as the coordinator holds them now.
    let mut broker = ctx.config_describe.clone();
    for (key, value, _) in broker.iter_mut() {
        if key == crate::cluster::zone::ZONE_CIDR_KEY {
            let cidrs = ctx.cluster.zone_cidrs();
            *value = (!cidrs.is_empty()).then_some(cidrs);
        }
    }
    describe_with(ctx.node_id, &NodeValues::of(ctx), &broker, table, req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topics::Topics;
    use ferry_protocol::messages::describe_configs_request::DescribeConfigsResource;

    fn node() -> NodeValues {
        NodeValues {
            retention_ms: 3_600_000,
            retention_bytes: -1,
            frame_bytes_max: 104_857_600,
        }
    }

    fn set(pairs: &[(&str, &str)]) -> TopicConfigs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn inc(ops: &[(&str, i8, Option<&str>)]) -> Alteration {
        Alteration::Incremental(
            ops.iter()
                .map(|(k, o, v)| (k.to_string(), *o, v.map(str::to_owned)))
                .collect(),
        )
    }

    #[test]
    fn values_are_checked_and_errors_name_the_key() {
        assert_eq!(
            check_topic_config("retention.ms", " 1000 ").unwrap(),
            "1000"
        );
        assert_eq!(check_topic_config("retention.bytes", "-1").unwrap(), "-1");
        let e = check_topic_config("retention.ms", "soon").unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_CONFIG);
        assert!(e.message.contains("retention.ms"), "{}", e.message);
        assert!(e.message.contains("milliseconds"), "{}", e.message);
        assert!(check_topic_config("retention.ms", "-2").is_err());
        let e = check_topic_config("cleanup.policy", "compact").unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_CONFIG);
        assert!(e.message.contains("cleanup.policy"), "{}", e.message);
        assert!(e.message.contains("compaction"), "{}", e.message);
        assert!(check_topic_config("cleanup.policy", "delete,compact").is_err());
        assert_eq!(
            check_topic_config("cleanup.policy", "delete").unwrap(),
            "delete"
        );
        assert!(check_topic_config("compression.type", "zstd").is_err());
        assert!(check_topic_config("message.timestamp.type", "LogAppendTime").is_err());
        assert!(check_topic_config("min.insync.replicas", "0").is_err());
        assert_eq!(check_topic_config("min.insync.replicas", "2").unwrap(), "2");
        let e = check_topic_config("flush.messages", "1").unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_CONFIG);
        assert!(e.message.contains("flush.messages"), "{}", e.message);
        assert!(e.message.contains("retention.ms"), "{}", e.message);
    }

    #[test]
    fn create_configs_are_checked() {
        let c = topic_configs_for_create([("retention.ms", Some("5000"))]).unwrap();
        assert_eq!(c, set(&[("retention.ms", "5000")]));
        assert!(topic_configs_for_create([("retention.ms", None)]).is_err());
        let e =
            topic_configs_for_create([("retention.ms", Some("1")), ("retention.ms", Some("2"))])
                .unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
        assert_eq!(
            topic_configs_for_create([("cleanup.policy", Some("compact"))])
                .unwrap_err()
                .code,
            ErrorCode::INVALID_CONFIG
        );
    }

    #[test]
    fn incremental_operations() {
        let cur = set(&[("retention.ms", "1000"), ("segment.ms", "5")]);
        let next = alter_topic(
            &cur,
            &inc(&[
                ("retention.bytes", op::SET, Some("4096")),
                ("segment.ms", op::DELETE, None),
            ]),
        )
        .unwrap();
        assert_eq!(
            next,
            set(&[("retention.ms", "1000"), ("retention.bytes", "4096")])
        );
        // APPEND / SUBTRACT on a non-list key.
        let e = alter_topic(&cur, &inc(&[("retention.ms", op::APPEND, Some("1"))])).unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
        assert!(e.message.contains("retention.ms"), "{}", e.message);
        // On the list key, starting from its default.
        let same = alter_topic(
            &cur,
            &inc(&[("cleanup.policy", op::APPEND, Some("delete"))]),
        )
        .unwrap();
        assert_eq!(
            same.get("cleanup.policy").map(String::as_str),
            Some("delete")
        );
        let e = alter_topic(
            &cur,
            &inc(&[("cleanup.policy", op::APPEND, Some("compact"))]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_CONFIG);
        assert!(alter_topic(
            &cur,
            &inc(&[("cleanup.policy", op::SUBTRACT, Some("delete"))])
        )
        .is_err());
        // SET without a value, unknown operations, duplicates, unknown keys.
        let e = alter_topic(&cur, &inc(&[("retention.ms", op::SET, None)])).unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
        let e = alter_topic(&cur, &inc(&[("retention.ms", 9, Some("1"))])).unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
        assert!(e.message.contains("retention.ms"), "{}", e.message);
        let e = alter_topic(
            &cur,
            &inc(&[
                ("retention.ms", op::SET, Some("1")),
                ("retention.ms", op::DELETE, None),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
        let e = alter_topic(&cur, &inc(&[("bogus.key", op::DELETE, None)])).unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_CONFIG);
        assert!(e.message.contains("bogus.key"), "{}", e.message);
    }

    #[test]
    fn replace_resets_what_it_does_not_name() {
        let cur = set(&[("retention.ms", "1000"), ("segment.ms", "5")]);
        let alt = Alteration::Replace(vec![("retention.bytes".into(), Some("10".into()))]);
        assert_eq!(
            alter_topic(&cur, &alt).unwrap(),
            set(&[("retention.bytes", "10")])
        );
        let alt = Alteration::Replace(vec![("retention.bytes".into(), None)]);
        assert_eq!(
            alter_topic(&cur, &alt).unwrap_err().code,
            ErrorCode::INVALID_REQUEST
        );
    }

    #[test]
    fn retention_prefers_the_topic_override() {
        let o = set(&[("retention.ms", "1000")]);
        assert_eq!(retention_of(Some(&o), 7, 8), (1000, 8));
        assert_eq!(retention_of(None, 7, 8), (7, 8));
        let o = set(&[("retention.ms", "-1"), ("retention.bytes", "100")]);
        assert_eq!(retention_of(Some(&o), 7, 8), (-1, 100));
        // An unreadable stored value falls back to the node's.
        let o = set(&[("retention.ms", "x")]);
        assert_eq!(retention_of(Some(&o), 7, 8), (7, 8));
    }

    fn find<'a>(
        c: &'a [DescribeConfigsResourceResult],
        k: &str,
    ) -> &'a DescribeConfigsResourceResult {
        c.iter().find(|e| e.name.as_str() == k).unwrap()
    }

    #[test]
    fn topic_describe_shows_sources_defaults_and_filters() {
        let all = Show {
            synonyms: true,
            documentation: true,
            ..Show::default()
        };
        let c = describe_topic(&set(&[("retention.bytes", "99")]), &node(), &all);
        assert_eq!(c.len(), TOPIC_KEYS.len());
        let ms = find(&c, "retention.ms");
        assert_eq!(ms.value.as_ref().unwrap().as_str(), "3600000");
        // Not the built-in 7 days: set on the node.
        assert_eq!(ms.config_source, source::STATIC_BROKER_CONFIG);
        assert!(!ms.read_only && ms.is_default);
        assert_eq!(ms.synonyms[0].name.as_str(), "log.retention.ms");
        assert!(ms.documentation.is_some());
        assert_eq!(ms.config_type, config_type::LONG);
        let b = find(&c, "retention.bytes");
        assert_eq!(b.value.as_ref().unwrap().as_str(), "99");
        assert_eq!(b.config_source, source::DYNAMIC_TOPIC_CONFIG);
        assert!(!b.is_default);
        assert_eq!(b.synonyms.len(), 2);
        assert_eq!(b.synonyms[0].source, source::DYNAMIC_TOPIC_CONFIG);
        assert_eq!(b.synonyms[1].source, source::DEFAULT_CONFIG);
        let p = find(&c, "cleanup.policy");
        assert_eq!(p.value.as_ref().unwrap().as_str(), "delete");
        assert_eq!(p.config_source, source::DEFAULT_CONFIG);
        // Filtered, without synonyms or documentation.
        let keys = ["cleanup.policy", "no.such.key"];
        let some = Show {
            keys: Some(&keys),
            ..Show::default()
        };
        let c = describe_topic(&TopicConfigs::new(), &node(), &some);
        assert_eq!(c.len(), 1);
        assert!(c[0].synonyms.is_empty() && c[0].documentation.is_none());
    }

    #[test]
    fn broker_describe_hides_secrets_and_checks_the_name() {
        let snapshot = vec![
            ("num.partitions".to_string(), Some("1".to_string()), false),
            (
                "auto.create.topics.enable".to_string(),
                Some("false".to_string()),
                false,
            ),
            (
                "sasl.password".to_string(),
                Some("hunter2".to_string()),
                false,
            ),
            (
                "other.secret.thing".to_string(),
                Some("s3cr3t".to_string()),
                true,
            ),
            (
                "s3.data.buckets".to_string(),
                Some("0@s3://b?region=r&secretKey=TOPSECRET".to_string()),
                false,
            ),
        ];
        let c = describe_broker(7, "7", &snapshot, &Show::default()).unwrap();
        assert_eq!(c.len(), snapshot.len());
        let n = find(&c, "num.partitions");
        assert_eq!(n.config_source, source::DEFAULT_CONFIG);
        assert!(n.read_only);
        let a = find(&c, "auto.create.topics.enable");
        assert_eq!(a.config_source, source::STATIC_BROKER_CONFIG);
        assert_eq!(a.config_type, config_type::BOOLEAN);
        for k in ["sasl.password", "other.secret.thing"] {
            let s = find(&c, k);
            assert!(s.value.is_none() && s.is_sensitive, "{k}");
            assert_eq!(s.config_type, config_type::PASSWORD);
        }
        let text = format!("{c:?}");
        for secret in ["hunter2", "s3cr3t", "TOPSECRET"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(describe_broker(7, "", &snapshot, &Show::default())
            .unwrap()
            .is_empty());
        let e = describe_broker(7, "8", &snapshot, &Show::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
    }

    #[test]
    fn only_the_zone_table_is_dynamic_among_broker_configs() {
        for name in ["", "3"] {
            // The zone table changes at run time, value checked.
            let ok = alter_broker(
                3,
                name,
                &inc(&[("automq.zone.cidr.blocks", op::SET, Some("a@10.0.0.0/8"))]),
            )
            .unwrap();
            assert_eq!(
                ok,
                vec![(
                    "automq.zone.cidr.blocks".to_owned(),
                    Some("a@10.0.0.0/8".to_owned())
                )]
            );
            let e = alter_broker(
                3,
                name,
                &inc(&[("automq.zone.cidr.blocks", op::SET, Some("a@10.0.0.0/99"))]),
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_CONFIG);
            assert!(
                e.message.contains("automq.zone.cidr.blocks"),
                "{}",
                e.message
            );
            // Other keys stay static.
            let e =
                alter_broker(3, name, &inc(&[("num.partitions", op::SET, Some("3"))])).unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
            assert!(e.message.contains("num.partitions"), "{}", e.message);
            assert!(e.message.contains("--override"), "{}", e.message);
        }
        let e = alter_broker(3, "4", &Alteration::Replace(vec![])).unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST);
        assert!(alter_broker(3, "3", &Alteration::Replace(vec![]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn describe_answers_each_resource() {
        let topics = Topics::new(TopicTable::default(), 1);
        let (_, table) = topics.create("t", 1).unwrap();
        let resource = |resource_type, name: &str| DescribeConfigsResource {
            resource_type,
            resource_name: name.into(),
            configuration_keys: None,
            ..Default::default()
        };
        let req = DescribeConfigsRequest {
            resources: vec![
                resource(RESOURCE_TOPIC, "t"),
                resource(RESOURCE_TOPIC, "missing"),
                resource(8, "1"),
                resource(RESOURCE_BROKER, "1"),
            ],
            ..Default::default()
        };
        let snapshot = vec![("num.partitions".to_string(), Some("3".to_string()), false)];
        let r = describe_with(1, &node(), &snapshot, &table, &req);
        let codes: Vec<i16> = r.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                0,
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                ErrorCode::INVALID_REQUEST.code(),
                0
            ]
        );
        assert_eq!(r.results[0].configs.len(), TOPIC_KEYS.len());
        assert!(r.results[2].error_message.is_some());
        assert_eq!(r.results[3].configs.len(), 1);
    }
}
