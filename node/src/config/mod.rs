//! Ferry's configuration: the `server.properties` reader and the typed
//! [`Config`] every other part of the node is started from.
//!
//! The folder holds:
//!
//! - `properties`: [`parse_properties`], the `java.util.Properties` text
//!   format as Kafka operators write it (`key=value`, `key: value`,
//!   `key value`, `#` and `!` comments, trailing-backslash continuation,
//!   `\t \n \r \f \uXXXX` and `\=`-style escapes; syntax errors carry the
//!   line number), and `--override key=value`.
//! - this module: [`Config`], one typed field per key Ferry uses, with
//!   Kafka's defaults, built from the key/value pairs. Overrides
//!   ([`Config::set`], used by `--override key=value` and later by
//!   AlterConfigs) re-check every key, so the typed view and the keys never
//!   disagree.
//! - `buckets`: the AutoMQ `ID@URI` keys ([`BucketUri`]), parsed by
//!   `ferry-wal`'s `BucketUri` and checked against the keys' limits;
//!   `zones`: zone names and `automq.zone.cidr.blocks` ([`ZoneCidr`]);
//!   `listeners`: `listeners`, `advertised.listeners` and the security
//!   protocol map.
//! - `redact`: secrets (credentials in URIs, any key naming a password,
//!   secret, token or credential) never appear in `Debug`, `Display`, error
//!   messages or [`Config::describe`].
//!
//! Unknown keys are collected in [`Config::unknown_keys`] for the binary to
//! log, as Kafka does, except under the `ferry.` prefix, where a typo is an
//! error. Every bad value gets an error that names the key and says what was
//! expected; when several keys are bad, all of them are reported at once.
//!
//! # Keys
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `node.id` (alias `broker.id`) | none; required by `ferry node` | this node's id |
//! | `broker.rack` | none | this node's zone |
//! | `listeners` | `PLAINTEXT://:9092` | where clients and nodes connect; every one is bound |
//! | `advertised.listeners` | `listeners`, wildcard hosts replaced by the host name | what clients are told |
//! | `listener.security.protocol.map` | Kafka's | listener name to security protocol |
//! | `controller.listener.names` | none | KRaft controller listeners: ignored, Ferry has no KRaft controller |
//! | `inter.broker.listener.name` (or `security.inter.broker.protocol`) | the only listener, else `PLAINTEXT` | the listener that carries node-to-node calls; Ferry's own API keys are refused on every other |
//! | `ssl.keystore.location` / `ssl.keystore.key` + `ssl.keystore.certificate.chain` | none | a TLS listener's key and chain, PEM (`ssl.keystore.type=PEM`); an encrypted PKCS#8 key takes `ssl.key.password` |
//! | `ssl.truststore.location` / `ssl.truststore.certificates` | none | CAs client certificates (and, on the inter-broker listener, other nodes) must chain to |
//! | `ssl.client.auth` | none | `required`, `requested` or `none` |
//! | `ssl.principal.mapping.rules` | DEFAULT | a client certificate's subject to a principal (`RULE:pattern/replacement/[LU]`) |
//! | `ssl.endpoint.identification.algorithm` | https | node-to-node calls check the peer's certificate names its host; empty: the chain only |
//! | `sasl.enabled.mechanisms` | SCRAM-SHA-256,SCRAM-SHA-512 | PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (Kafka's default GSSAPI is not served) |
//! | `connections.max.reauth.ms` | 0 | SASL sessions last this long, then the client authenticates again (KIP-368); 0: for ever |
//!
//! Every `ssl.*` and `sasl.enabled.mechanisms` key may be given for one
//! listener as `listener.name.<listener in lower case>.<key>`.
//! | `num.partitions` | 1 | partitions of an auto-created topic |
//! | `auto.create.topics.enable` | true | create unknown topics on Metadata/Produce |
//! | `socket.request.max.bytes` | 104857600 | largest request frame |
//! | `queued.max.request.bytes` | 536870912 | bytes of client requests read and not yet answered, per node (split over shards); past it sockets are not read; -1: no limit |
//! | `log.retention.ms` / `.minutes` / `.hours` | 168 hours | -1: forever |
//! | `log.retention.bytes` | -1 | per partition; -1: no limit |
//! | `group.initial.rebalance.delay.ms` | 3000 | wait for more members before a new group's first rebalance |
//! | `group.min.session.timeout.ms` / `group.max.session.timeout.ms` | 6000 / 1800000 | accepted consumer session timeouts |
//! | `group.max.size` | 1000 | members per group (Kafka: unbounded) |
//! | `offsets.retention.minutes` | 10080 | committed offsets of an empty group are kept this long |
//! | `offset.metadata.max.bytes` | 4096 | metadata string of a committed offset |
//! | `s3.data.buckets` | none; required by `ferry node` | `ID@URI[,ID@URI...]`, where data lives |
//! | `s3.wal.path` | the first data bucket | `ID@URI`, the WAL, with `batchInterval` / `maxBytesInBatch` |
//! | `automq.zonerouter.channels` | none | `ID@URI[,...]`, the cross-zone handoff channel |
//! | `s3.hedge.max.extra.percent` | 10 | extra PUTs and GETs hedging may send, in percent of requests; 0: no hedging (`hedge=false` on a bucket URI turns it off for that bucket) |
//! | `automq.zone.cidr.blocks` | none | `zone@cidr[,cidr...]<>zone@cidr...` |
//! | `ferry.shards` | available cores | executors (one per core) |
//! | `ferry.cache.bytes.max` | 268435456 | log cache bound, per shard |
//! | `ferry.compaction.interval.ms` | 30000 | how often durable batches move from WAL objects into per-partition objects; 0: never |
//! | `ferry.compaction.bytes.min` | 8388608 | a compacted object smaller than this is merged into the next one |
//! | `ferry.coordinator` | empty: in process | `etcd://HOST:PORT[,HOST:PORT...]`: the cluster's coordinator |
//! | `ferry.cluster.id` | ferry | the cluster's name (its keys in etcd) |
//! | `ferry.accept` | reuseport | how connections reach shards: `reuseport` (a listener per shard, the kernel spreads connections) or `acceptor` (shard 0 accepts and deals connections round-robin) |
//! | `ferry.metrics.listener` | empty: disabled | `IP:port` serving `/metrics`; port 0 picks a free one |
//! | `ferry.recovery.accept.lost.objects` | empty | object keys (`wal/3/00000000000000000042.wal`, comma-separated) whose loss the operator accepts: partitions they block are rebuilt without them, and their records are gone (see ARCHITECTURE.md, "What recovery trusts") |

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

/// What a secret is replaced with wherever a value is shown.
pub const REDACTED: &str = "[redacted]";

/// Default `batchInterval` of a WAL or handoff URI, in milliseconds.
pub const BATCH_INTERVAL_MS_DEFAULT: u64 = 250;
/// Bounds of `batchInterval`: longer than a minute would time out producers.
pub const BATCH_INTERVAL_MS_MAX: u64 = 60_000;
/// Default `maxBytesInBatch` of a WAL or handoff URI.
pub const BATCH_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024;
/// Upper bound of `maxBytesInBatch`: the WAL holds a batch in memory.
pub const BATCH_BYTES_MAX_LIMIT: u64 = 1024 * 1024 * 1024;
/// Default `ferry.cache.bytes.max`, per shard.
pub const CACHE_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;
/// Default `ferry.compaction.interval.ms`.
pub const COMPACTION_INTERVAL_MS_DEFAULT: u64 = 30_000;
/// Default `ferry.compaction.bytes.min`.
pub const COMPACTION_BYTES_MIN_DEFAULT: u64 = 8 * 1024 * 1024;
/// Smallest accepted `ferry.cache.bytes.max`.
pub const CACHE_BYTES_MAX_MIN: u64 = 1024 * 1024;
/// Upper bound of `ferry.shards`.
pub const SHARDS_MAX: usize = 1024;
/// Default of `queued.max.request.bytes` (Kafka's is -1, no limit; Ferry
/// bounds what clients can make a node hold).
pub const QUEUED_REQUEST_BYTES_MAX_DEFAULT: u64 = 512 * 1024 * 1024;

/// Kafka's default `listener.security.protocol.map`.
const SECURITY_PROTOCOL_MAP_DEFAULT: &str =
    "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// Kafka's key for the ACL authorizer.
const AUTHORIZER_KEY: &str = "authorizer.class.name";

/// The authorizer classes whose behaviour Ferry's ACLs follow: either turns
/// them on.
pub const AUTHORIZER_CLASSES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// Every key Ferry reads besides the per-listener ones ([`LISTENER_KEYS`],
/// which [`Config::describe`] lists after these).
pub const KNOWN_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "broker.rack",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "controller.listener.names",
    "inter.broker.listener.name",
    "security.inter.broker.protocol",
    "sasl.mechanism.inter.broker.protocol",
    "connections.max.reauth.ms",
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
    "num.partitions",
    "auto.create.topics.enable",
    "socket.request.max.bytes",
    "queued.max.request.bytes",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.retention.bytes",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "offsets.retention.minutes",
    "offset.metadata.max.bytes",
    "s3.data.buckets",
    "s3.wal.path",
    "automq.zonerouter.channels",
    "automq.zone.cidr.blocks",
    "s3.hedge.max.extra.percent",
    "ferry.shards",
    "ferry.cache.bytes.max",
    "ferry.compaction.interval.ms",
    "ferry.compaction.bytes.min",
    "ferry.accept",
    "ferry.coordinator",
    "ferry.cluster.id",
    "ferry.metrics.listener",
    "ferry.recovery.accept.lost.objects",
];

mod buckets;
pub mod jaas;
mod listeners;
mod properties;
mod redact;
mod security;
mod zones;

pub use buckets::*;
pub use listeners::*;
pub use properties::*;
pub use redact::*;
pub use security::*;
pub use zones::*;

/// A configuration error. Value errors name the key and say what was
/// expected; values of secret keys and URI credentials are redacted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The properties text itself is malformed.
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// A value does not parse or is out of range.
    #[error("{key}: expected {expected}, got {got:?}")]
    Invalid {
        key: String,
        expected: String,
        got: String,
    },
    /// A value is well-formed but asks for something Ferry does not do yet.
    #[error("{key}: {message}")]
    Unsupported { key: String, message: String },
    /// A required key is not set.
    #[error("{key}: required {why}")]
    Missing {
        key: &'static str,
        why: &'static str,
    },
    /// Two keys contradict each other.
    #[error("{key}: {message}")]
    Conflict { key: String, message: String },
    /// A key under `ferry.` that Ferry does not know (a typo, most likely).
    #[error("{key}: unknown key; the keys under `ferry.` are {known}")]
    UnknownFerryKey { key: String, known: String },
    /// A value error, with the line of the properties file it came from.
    #[error("line {line}: {source}")]
    AtLine {
        line: usize,
        #[source]
        source: Box<ConfigError>,
    },
    /// More than one key is bad; all of them, one per line.
    #[error("{}", list_errors(.0))]
    Several(Vec<ConfigError>),
    /// A `--override` argument without `=`.
    #[error("--override expects key=value, got {got:?}")]
    Override { got: String },
    /// The properties file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list_errors(errors: &[ConfigError]) -> String {
    let mut out = format!("{} configuration errors:", errors.len());
    for e in errors {
        out.push_str("\n  ");
        out.push_str(&e.to_string());
    }
    out
}

impl ConfigError {
    /// A value error. `got` is redacted if `key` is secret or `got` holds
    /// URI credentials.
    fn invalid(key: &str, expected: impl Into<String>, got: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            expected: expected.into(),
            got: redact_value(key, got),
        }
    }
}

// ---------------------------------------------------------------------------
// The properties format
// ---------------------------------------------------------------------------

/// Facts about the host that defaults depend on. [`HostEnv::detect`] reads
/// them; tests pass fixed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnv {
    /// Replaces wildcard listener hosts in the default advertised listeners;
    /// `None` falls back to 127.0.0.1.
    pub host_name: Option<String>,
    /// Default for `ferry.shards`.
    pub cores: usize,
}

impl HostEnv {
    /// The host name (Linux `/proc/sys/kernel/hostname`, else `$HOSTNAME`)
    /// and the cores this process may use.
    pub fn detect() -> HostEnv {
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        HostEnv { host_name, cores }
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// A value as given, with the properties line it came from (`None` for
/// overrides and built-in settings).
#[derive(Clone, PartialEq, Eq)]
struct RawValue {
    value: String,
    line: Option<usize>,
}

/// The keys as given. Its `Debug` redacts.
#[derive(Clone, Default, PartialEq, Eq)]
struct RawKeys(BTreeMap<String, RawValue>);

impl fmt::Debug for RawKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, redact_value(k, &v.value))))
            .finish()
    }
}

/// Ferry's configuration: one typed field per key, with Kafka's defaults.
///
/// The fields are the parsed view of the keys. To change a key, use
/// [`Config::set`] or [`Config::reset`], which re-check every key; a field
/// changed by hand is overwritten by the next `set`.
///
/// `Debug` and `Display` redact secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `node.id` (or `broker.id`). `None` is allowed until
    /// [`Config::validate_for_node`].
    pub node_id: Option<i32>,
    /// `broker.rack`: this node's zone.
    pub rack: Option<String>,
    /// `listeners`, without KRaft controller listeners, each with its
    /// security protocol.
    pub listeners: Vec<Listener>,
    /// Per listener (same order): TLS material and SASL mechanisms.
    pub listener_security: Vec<ListenerSecurity>,
    /// The listener that carries node-to-node calls
    /// (`inter.broker.listener.name`).
    pub inter_broker_listener: String,
    /// Whom this node authenticates as to other nodes when the inter-broker
    /// listener is a SASL one.
    pub inter_broker_login: Option<SaslLogin>,
    /// `advertised.listeners`, or the listeners with wildcard hosts replaced.
    /// A port 0 here is still 0: the binary fills in the bound port.
    pub advertised_listeners: Vec<Listener>,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`: the largest request frame.
    pub socket_request_bytes_max: usize,
    /// `queued.max.request.bytes`: bytes of client requests read and not
    /// yet answered, per node; `None`: no limit.
    pub queued_request_bytes_max: Option<u64>,
    /// `connections.max.reauth.ms` (KIP-368); `None` (0): SASL sessions do
    /// not expire.
    pub reauth_ms: Option<u64>,
    /// `authorizer.class.name` names Kafka's StandardAuthorizer or
    /// AclAuthorizer: ACLs are enforced.
    pub acls_enabled: bool,
    /// `super.users`: principals (`User:name`) allowed everything.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_if_no_acl: bool,
    /// `log.retention.ms` (or `.minutes`, `.hours`); `None`: forever.
    pub log_retention_ms: Option<u64>,
    /// `log.retention.bytes`, per partition; `None`: no limit.
    pub log_retention_bytes: Option<u64>,
    /// The group coordinator's settings (`group.*`, `offsets.retention.minutes`,
    /// `offset.metadata.max.bytes`).
    pub group: GroupConfig,
    /// `s3.data.buckets`.
    pub data_buckets: Vec<BucketUri>,
    /// `s3.wal.path`, or else the first data bucket with default batching.
    pub wal: Option<BucketUri>,
    /// `automq.zonerouter.channels`.
    pub zonerouter_channels: Vec<BucketUri>,
    /// `automq.zone.cidr.blocks`.
    pub zone_cidr_blocks: Vec<ZoneCidr>,
    /// `ferry.shards`: executors, one per core.
    pub shards: usize,
    /// `ferry.cache.bytes.max`: log cache bound per shard.
    pub cache_bytes_max: u64,
    /// `ferry.compaction.interval.ms`; 0: compaction off.
    pub compaction_interval_ms: u64,
    /// `ferry.compaction.bytes.min`.
    pub compaction_bytes_min: u64,
    /// `s3.hedge.max.extra.percent`: the hedging budget (0: none).
    pub hedge_max_extra_percent: u32,
    /// `ferry.accept`: true for `acceptor`, false for `reuseport`.
    pub acceptor: bool,
    /// `ferry.recovery.accept.lost.objects`: keys of objects whose loss
    /// the operator accepts.
    pub accept_lost_objects: Vec<String>,
    /// `ferry.coordinator`: etcd endpoints (`http://HOST:PORT`); empty for
    /// the in-process coordinator.
    pub etcd_endpoints: Vec<String>,
    /// `ferry.cluster.id`.
    pub cluster_id: String,
    /// `ferry.metrics.listener`: where `/metrics` is served; `None`: off.
    pub metrics_listener: Option<SocketAddr>,
    /// Keys Ferry does not use, sorted. Kafka warns about these; so should
    /// the binary.
    pub unknown_keys: Vec<String>,
    raw: RawKeys,
    env: HostEnv,
}

impl Config {
    /// Reads and parses a properties file, with [`HostEnv::detect`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_properties(&text)
    }

    /// Parses properties text, with [`HostEnv::detect`].
    pub fn from_properties(text: &str) -> Result<Config, ConfigError> {
        Config::from_properties_with(text, HostEnv::detect())
    }

    /// Parses properties text against a given host.
    pub fn from_properties_with(text: &str, env: HostEnv) -> Result<Config, ConfigError> {
        let mut raw = RawKeys::default();
        for p in parse_properties(text)? {
            raw.0.insert(
                p.key,
                RawValue {
                    value: p.value,
                    line: Some(p.line),
                },
            );
        }
        Config::build(raw, env)
    }

    /// Builds from key/value pairs (no file), against a given host.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
        env: HostEnv,
    ) -> Result<Config, ConfigError> {
        let raw = RawKeys(
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let value = RawValue {
                        value: v.into(),
                        line: None,
                    };
                    (k.into().trim().to_owned(), value)
                })
                .collect(),
        );
        Config::build(raw, env)
    }

    /// The embedded default of `ferry dev`: node 0 on `127.0.0.1:port`, the
    /// directory `<dir>/bucket` as the bucket for data and WAL (batchInterval
    /// 250 ms), no initial rebalance delay, metrics off.
    pub fn dev(dir: &Path, port: u16) -> Result<Config, ConfigError> {
        let bucket_dir = std::path::absolute(dir)
            .map_err(|source| ConfigError::Read {
                path: dir.to_owned(),
                source,
            })?
            .join("bucket");
        let url = url::Url::from_file_path(&bucket_dir).map_err(|()| {
            ConfigError::invalid(
                "s3.data.buckets",
                "a directory that can be written as a file:// URI",
                &bucket_dir.to_string_lossy(),
            )
        })?;
        Config::from_pairs(
            [
                ("node.id", "0".to_owned()),
                ("listeners", format!("PLAINTEXT://127.0.0.1:{port}")),
                ("s3.data.buckets", format!("0@{url}")),
                (
                    "s3.wal.path",
                    format!("0@{url}?batchInterval={BATCH_INTERVAL_MS_DEFAULT}"),
                ),
                ("group.initial.rebalance.delay.ms", "0".to_owned()),
            ],
            HostEnv::detect(),
        )
    }

    /// Sets `key` to `value`, as a `--override key=value` flag or an
    /// AlterConfigs request does, and re-checks every key. On error nothing
    /// changes. An unknown key outside `ferry.` is accepted and listed in
    /// [`Config::unknown_keys`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let mut raw = self.raw.clone();
        raw.0.insert(
            key.trim().to_owned(),
            RawValue {
                value: value.to_owned(),
                line: None,
            },
        );
        *self = Config::build(raw, self.env.clone())?;
        Ok(())
    }

    /// Sets several keys at once and re-checks every key: for keys that
    /// must change together (listeners and their security protocols). On
    /// error nothing changes.
    pub fn set_all<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), ConfigError> {
        let mut raw = self.raw.clone();
        for (key, value) in pairs {
            raw.0.insert(
                key.trim().to_owned(),
                RawValue {
                    value: value.to_owned(),
                    line: None,
                },
            );
        }
        *self = Config::build(raw, self.env.clone())?;
        Ok(())
    }

    /// Applies a `--override key=value` argument.
    pub fn apply_override(&mut self, arg: &str) -> Result<(), ConfigError> {
        let (key, value) = parse_override(arg)?;
        self.set(&key, &value)
    }

    /// Removes `key`, so its default applies again (IncrementalAlterConfigs
    /// DELETE). On error nothing changes.
    pub fn reset(&mut self, key: &str) -> Result<(), ConfigError> {
        let mut raw = self.raw.clone();
        raw.0.remove(key.trim());
        *self = Config::build(raw, self.env.clone())?;
        Ok(())
    }

    /// Whether `key` was given (in the file, an override or `dev`), as
    /// opposed to taking its default.
    pub fn is_set(&self, key: &str) -> bool {
        self.raw.0.contains_key(key)
    }

    /// Checks what `ferry node` needs beyond what parsing checks: a node id
    /// and a data bucket.
    pub fn validate_for_node(&self) -> Result<(), ConfigError> {
        if self.node_id.is_none() {
            return Err(ConfigError::Missing {
                key: "node.id",
                why: "by `ferry node` (a non-negative integer, unique in the cluster)",
            });
        }
        if self.data_buckets.is_empty() {
            return Err(ConfigError::Missing {
                key: "s3.data.buckets",
                why: "by `ferry node` (ID@URI, e.g. 0@s3://bucket?region=us-east-1)",
            });
        }
        Ok(())
    }

    /// The zone of a client address by `automq.zone.cidr.blocks`: the
    /// longest matching prefix wins. IPv4-mapped IPv6 addresses (from a
    /// dual-stack socket) match IPv4 blocks.
    pub fn zone_of(&self, addr: IpAddr) -> Option<&str> {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.zone_cidr_blocks
            .iter()
            .filter(|b| b.net.contains(&addr))
            .max_by_key(|b| b.net.prefix_len())
            .map(|b| b.zone.as_str())
    }

    /// Every known key with its effective value, for DescribeConfigs:
    /// `(key, value, sensitive)`. Sensitive values are `None`; an unset key
    /// without a default is `(key, None, false)`. URI values are shown with
    /// their credentials replaced by [`REDACTED`].
    pub fn describe(&self) -> Vec<(String, Option<String>, bool)> {
        KNOWN_KEYS
            .iter()
            .chain(LISTENER_KEYS)
            .map(|&key| {
                if is_sensitive_key(key) {
                    (key.to_owned(), None, true)
                } else {
                    (key.to_owned(), self.effective(key), false)
                }
            })
            .collect()
    }

    /// The effective value of a known key, as text (redacted).
    fn effective(&self, key: &str) -> Option<String> {
        let raw = |k: &str| self.raw.0.get(k).map(|v| redact_value(k, v.value.trim()));
        let listeners = |ls: &[Listener]| {
            ls.iter()
                .map(Listener::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let buckets = |bs: &[BucketUri]| {
            bs.iter()
                .map(BucketUri::redacted)
                .collect::<Vec<_>>()
                .join(",")
        };
        let g = &self.group;
        Some(match key {
            "node.id" | "broker.id" => self.node_id?.to_string(),
            "broker.rack" => self.rack.clone()?,
            "listeners" => listeners(&self.listeners),
            "advertised.listeners" => listeners(&self.advertised_listeners),
            "listener.security.protocol.map" => {
                raw(key).unwrap_or_else(|| SECURITY_PROTOCOL_MAP_DEFAULT.to_owned())
            }
            "controller.listener.names" => raw(key)?,
            "num.partitions" => self.num_partitions.to_string(),
            "auto.create.topics.enable" => self.auto_create_topics.to_string(),
            "socket.request.max.bytes" => self.socket_request_bytes_max.to_string(),
            "queued.max.request.bytes" => self
                .queued_request_bytes_max
                .map_or_else(|| "-1".to_owned(), |b| b.to_string()),
            "log.retention.hours" => raw(key).unwrap_or_else(|| "168".to_owned()),
            "log.retention.minutes" => raw(key)?,
            "log.retention.ms" => self
                .log_retention_ms
                .map_or_else(|| "-1".to_owned(), |ms| ms.to_string()),
            "log.retention.bytes" => self
                .log_retention_bytes
                .map_or_else(|| "-1".to_owned(), |b| b.to_string()),
            "group.initial.rebalance.delay.ms" => g.initial_rebalance_delay_ms.to_string(),
            "group.min.session.timeout.ms" => g.session_timeout_ms_min.to_string(),
            "group.max.session.timeout.ms" => g.session_timeout_ms_max.to_string(),
            "group.max.size" => g.group_size_max.to_string(),
            "offsets.retention.minutes" => (g.offsets_retention_ms / 60_000).to_string(),
            "offset.metadata.max.bytes" => g.offset_metadata_bytes_max.to_string(),
            "s3.data.buckets" => buckets(&self.data_buckets),
            "s3.wal.path" => self.wal.as_ref()?.redacted(),
            "automq.zonerouter.channels" => buckets(&self.zonerouter_channels),
            "automq.zone.cidr.blocks" => format_zone_cidrs(&self.zone_cidr_blocks),
            "ferry.shards" => self.shards.to_string(),
            "ferry.cache.bytes.max" => self.cache_bytes_max.to_string(),
            "ferry.compaction.interval.ms" => self.compaction_interval_ms.to_string(),
            "ferry.compaction.bytes.min" => self.compaction_bytes_min.to_string(),
            "s3.hedge.max.extra.percent" => self.hedge_max_extra_percent.to_string(),
            "ferry.recovery.accept.lost.objects" => self.accept_lost_objects.join(","),
            "ferry.accept" => if self.acceptor {
                "acceptor"
            } else {
                "reuseport"
            }
            .to_string(),
            "ferry.coordinator" => {
                if self.etcd_endpoints.is_empty() {
                    String::new()
                } else {
                    let hosts: Vec<&str> = self
                        .etcd_endpoints
                        .iter()
                        .map(|e| e.trim_start_matches("http://"))
                        .collect();
                    format!("etcd://{}", hosts.join(","))
                }
            }
            "ferry.cluster.id" => self.cluster_id.clone(),
            "ferry.metrics.listener" => self
                .metrics_listener
                .map_or_else(String::new, |a| a.to_string()),
            _ => raw(key)?,
        })
    }

    /// Checks every key and builds the typed view. All bad values are
    /// reported, not only the first.
    fn build(raw: RawKeys, env: HostEnv) -> Result<Config, ConfigError> {
        let mut r = Reader {
            raw: &raw,
            errors: Vec::new(),
        };

        let mut unknown_keys = Vec::new();
        let listener_names: Vec<String> = raw
            .0
            .get("listeners")
            .and_then(|v| parse_listeners("listeners", &v.value).ok())
            .map(|ls| ls.into_iter().map(|l| l.name).collect())
            .unwrap_or_default();
        let listener_names: Vec<&str> = listener_names.iter().map(String::as_str).collect();
        for key in raw.0.keys() {
            if KNOWN_KEYS.contains(&key.as_str())
                || LISTENER_KEYS.contains(&key.as_str())
                || is_listener_key(key, &listener_names)
            {
                continue;
            }
            if key.starts_with("ferry.") {
                let known: Vec<&str> = KNOWN_KEYS
                    .iter()
                    .copied()
                    .filter(|k| k.starts_with("ferry."))
                    .collect();
                r.fail(
                    key,
                    ConfigError::UnknownFerryKey {
                        key: key.clone(),
                        known: known.join(", "),
                    },
                );
            } else {
                unknown_keys.push(key.clone());
            }
        }

        // An authorizer Ferry cannot honour stops the start: run on, and an
        // operator who copied the key would believe their plugin runs.
        let acls_enabled = match raw
            .0
            .get(AUTHORIZER_KEY)
            .map(|v| v.value.trim())
            .filter(|v| !v.is_empty())
        {
            None => false,
            Some(class) if AUTHORIZER_CLASSES.contains(&class) => true,
            Some(class) => {
                r.errors.push(ConfigError::Unsupported {
                    key: AUTHORIZER_KEY.to_owned(),
                    message: format!(
                        "{class}: Ferry's ACLs behave as Kafka's {}; set one of those, or \
                         remove the key to run without ACLs",
                        AUTHORIZER_CLASSES.join(" or ")
                    ),
                });
                false
            }
        };
        let super_users = r
            .parse("super.users", |key, v| {
                let mut out = Vec::new();
                for p in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    match p.strip_prefix("User:") {
                        Some(name) if !name.is_empty() => out.push(p.to_owned()),
                        _ => {
                            return Err(ConfigError::invalid(
                                key,
                                "principals of the form User:name separated by semicolons",
                                v,
                            ))
                        }
                    }
                }
                Ok(out)
            })
            .unwrap_or_default();
        let allow_if_no_acl = r.boolean("allow.everyone.if.no.acl.found").unwrap_or(false);

        let node_id = r.int("node.id", 0, i32::MAX.into(), "a non-negative integer");
        let broker_id = r.int("broker.id", 0, i32::MAX.into(), "a non-negative integer");
        let node_id = match (node_id, broker_id) {
            (Some(n), Some(b)) if n != b => {
                r.errors.push(ConfigError::Conflict {
                    key: "broker.id".to_owned(),
                    message: format!("is {b} but node.id is {n}; set one, or both the same"),
                });
                i32::try_from(n).ok()
            }
            (n, b) => n.or(b).and_then(|id| i32::try_from(id).ok()),
        };

        let rack = r.parse("broker.rack", |key, v| {
            if v.is_empty() {
                Err(ConfigError::invalid(key, "a non-empty zone name", v))
            } else {
                Ok(v.to_owned())
            }
        });

        let (listeners, advertised_listeners) = r.listeners(&env);
        let listener_security = r.listener_security(&listeners);
        let reauth_ms = r
            .int(
                "connections.max.reauth.ms",
                0,
                i64::MAX,
                "a non-negative number of milliseconds (0: sessions do not expire)",
            )
            .filter(|&ms| ms > 0)
            .map(|ms| ms as u64);
        let inter_broker_listener = r.inter_broker_listener(&listeners);
        let inter_broker_login = r.inter_broker_login(&inter_broker_listener, &listener_security);

        let num_partitions = r
            .int("num.partitions", 1, i32::MAX.into(), "a positive integer")
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(1);
        let auto_create_topics = r.boolean("auto.create.topics.enable").unwrap_or(true);
        let socket_request_bytes_max = r
            .int(
                "socket.request.max.bytes",
                1,
                i32::MAX.into(),
                "a positive integer (bytes)",
            )
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(104_857_600);
        let queued_request_bytes_max = match r.int(
            "queued.max.request.bytes",
            -1,
            i64::MAX,
            "a positive number of bytes, or -1 for no limit",
        ) {
            Some(-1) => None,
            Some(0) => {
                r.errors.push(ConfigError::invalid(
                    "queued.max.request.bytes",
                    "a positive number of bytes, or -1 for no limit",
                    "0",
                ));
                None
            }
            Some(n) => Some(n as u64),
            None => Some(QUEUED_REQUEST_BYTES_MAX_DEFAULT),
        };

        let retention_expected =
            |unit: &str| format!("a non-negative number of {unit}, or -1 for no limit");
        let hours = r.int(
            "log.retention.hours",
            -1,
            i64::MAX / 3_600_000,
            &retention_expected("hours"),
        );
        let minutes = r.int(
            "log.retention.minutes",
            -1,
            i64::MAX / 60_000,
            &retention_expected("minutes"),
        );
        let ms = r.int(
            "log.retention.ms",
            -1,
            i64::MAX,
            &retention_expected("milliseconds"),
        );
        let retention = ms
            .or(minutes.map(|m| if m < 0 { -1 } else { m * 60_000 }))
            .or(hours.map(|h| if h < 0 { -1 } else { h * 3_600_000 }))
            .unwrap_or(168 * 3_600_000);
        let log_retention_ms = u64::try_from(retention).ok();
        let log_retention_bytes = r
            .int(
                "log.retention.bytes",
                -1,
                i64::MAX,
                &retention_expected("bytes"),
            )
            .and_then(|b| u64::try_from(b).ok());

        let group = r.group_config();

        let data_buckets = r
            .parse("s3.data.buckets", BucketUri::parse_list)
            .unwrap_or_default();
        let wal = r
            .parse("s3.wal.path", |key, v| {
                let mut list = BucketUri::parse_list(key, v)?;
                if list.len() > 1 {
                    return Err(ConfigError::invalid(key, "a single ID@URI", v));
                }
                Ok(list.pop())
            })
            .flatten()
            .or_else(|| {
                // The data bucket's batch settings are not the WAL's.
                data_buckets.first().map(|b| {
                    let mut wal = b.clone();
                    wal.parsed.batch_interval =
                        std::time::Duration::from_millis(BATCH_INTERVAL_MS_DEFAULT);
                    wal.parsed.max_bytes_in_batch = BATCH_BYTES_MAX_DEFAULT as usize;
                    wal
                })
            });
        let zonerouter_channels = r
            .parse("automq.zonerouter.channels", BucketUri::parse_list)
            .unwrap_or_default();
        let zone_cidr_blocks = r
            .parse("automq.zone.cidr.blocks", parse_zone_cidrs)
            .unwrap_or_default();

        let shards = r
            .int(
                "ferry.shards",
                1,
                SHARDS_MAX as i64,
                &format!("an integer from 1 to {SHARDS_MAX}"),
            )
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(env.cores.clamp(1, SHARDS_MAX));
        let cache_bytes_max = r
            .int(
                "ferry.cache.bytes.max",
                CACHE_BYTES_MAX_MIN as i64,
                i64::MAX,
                &format!("an integer of at least {CACHE_BYTES_MAX_MIN} (bytes)"),
            )
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(CACHE_BYTES_MAX_DEFAULT);
        let compaction_interval_ms = r
            .int(
                "ferry.compaction.interval.ms",
                0,
                86_400_000,
                "an integer from 0 (off) to 86400000 (milliseconds)",
            )
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(COMPACTION_INTERVAL_MS_DEFAULT);
        let compaction_bytes_min = r
            .int(
                "ferry.compaction.bytes.min",
                0,
                1 << 30,
                "an integer from 0 to 1073741824 (bytes)",
            )
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(COMPACTION_BYTES_MIN_DEFAULT);
        let hedge_max_extra_percent = r
            .int(
                "s3.hedge.max.extra.percent",
                0,
                100,
                "an integer from 0 to 100 (percent)",
            )
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(10);
        let acceptor = r
            .parse("ferry.accept", |key, v| match v {
                "reuseport" => Ok(false),
                "acceptor" => Ok(true),
                _ => Err(ConfigError::invalid(key, "reuseport or acceptor", v)),
            })
            .unwrap_or(false);
        let accept_lost_objects = r
            .parse("ferry.recovery.accept.lost.objects", |key, v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| {
                        let path = object_store::path::Path::from(k);
                        let wal = ferry_wal::reader::parse_seq(&path).is_some();
                        let compacted = ferry_wal::compact::parse_compacted_key(k).is_some();
                        if wal || compacted {
                            Ok(k.to_owned())
                        } else {
                            Err(ConfigError::invalid(
                                key,
                                "comma-separated object keys as the node logs them, like wal/3/00000000000000000042.wal or data/3/<topic id>/<partition>/<name>.obj",
                                v,
                            ))
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let etcd_endpoints = r
            .parse("ferry.coordinator", |key, v| {
                if v.is_empty() {
                    return Ok(vec![]);
                }
                let expected = "empty (in process) or etcd://HOST:PORT[,HOST:PORT...]";
                let hosts = v
                    .strip_prefix("etcd://")
                    .ok_or_else(|| ConfigError::invalid(key, expected, v))?;
                hosts
                    .split(',')
                    .map(|h| {
                        let h = h.trim();
                        let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                        });
                        if ok {
                            Ok(format!("http://{h}"))
                        } else {
                            Err(ConfigError::invalid(key, expected, v))
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cluster_id = r
            .parse("ferry.cluster.id", |key, v| {
                if is_zone_name(v) {
                    Ok(v.to_owned())
                } else {
                    Err(ConfigError::invalid(
                        key,
                        "a name of letters, digits, '-', '_' and '.'",
                        v,
                    ))
                }
            })
            .unwrap_or_else(|| "ferry".to_owned());
        let metrics_listener = r
            .parse("ferry.metrics.listener", |key, v| {
                if v.is_empty() {
                    return Ok(None);
                }
                v.parse::<SocketAddr>().map(Some).map_err(|_| {
                    ConfigError::invalid(
                        key,
                        "an IP:port like 127.0.0.1:9644 or [::1]:9644 (port 0: any free port), or empty to disable",
                        v,
                    )
                })
            })
            .flatten();

        match r.errors.len() {
            0 => {}
            1 => return Err(r.errors.remove(0)),
            _ => return Err(ConfigError::Several(r.errors)),
        }
        Ok(Config {
            node_id,
            rack,
            listeners,
            listener_security,
            reauth_ms,
            acls_enabled,
            super_users,
            allow_if_no_acl,
            inter_broker_listener,
            inter_broker_login,
            advertised_listeners,
            num_partitions,
            auto_create_topics,
            socket_request_bytes_max,
            queued_request_bytes_max,
            log_retention_ms,
            log_retention_bytes,
            group,
            data_buckets,
            wal,
            zonerouter_channels,
            zone_cidr_blocks,
            shards,
            cache_bytes_max,
            compaction_interval_ms,
            compaction_bytes_min,
            hedge_max_extra_percent,
            acceptor,
            accept_lost_objects,
            etcd_endpoints,
            cluster_id,
            metrics_listener,
            unknown_keys,
            raw,
            env,
        })
    }
}

/// `key=value` lines of [`Config::describe`], secrets as [`REDACTED`], unset
/// keys left out.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value, sensitive) in self.describe() {
            match (value, sensitive) {
                (_, true) => writeln!(f, "{key}={REDACTED}")?,
                (Some(v), false) => writeln!(f, "{key}={v}")?,
                (None, false) => {}
            }
        }
        Ok(())
    }
}

/// Reads keys out of [`RawKeys`], collecting errors (with line numbers)
/// instead of stopping at the first.
struct Reader<'a> {
    raw: &'a RawKeys,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn fail(&mut self, key: &str, err: ConfigError) {
        let err = match self.raw.0.get(key).and_then(|v| v.line) {
            Some(line) => ConfigError::AtLine {
                line,
                source: Box::new(err),
            },
            None => err,
        };
        self.errors.push(err);
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.raw.0.get(key).map(|v| v.value.trim())
    }

    /// Parses `key` if it is set; on error records it and returns `None`.
    fn parse<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str, &str) -> Result<T, ConfigError>,
    ) -> Option<T> {
        let value = self.value(key)?;
        match f(key, value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(key, e);
                None
            }
        }
    }

    fn int(&mut self, key: &str, min: i64, max: i64, expected: &str) -> Option<i64> {
        self.parse(key, |key, v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| ConfigError::invalid(key, expected, v))
        })
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        self.parse(key, |key, v| {
            if v.eq_ignore_ascii_case("true") {
                Ok(true)
            } else if v.eq_ignore_ascii_case("false") {
                Ok(false)
            } else {
                Err(ConfigError::invalid(key, "true or false", v))
            }
        })
    }

    fn group_config(&mut self) -> GroupConfig {
        let d = GroupConfig::default();
        let delay = self
            .int(
                "group.initial.rebalance.delay.ms",
                0,
                i32::MAX.into(),
                "a non-negative number of milliseconds",
            )
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(d.initial_rebalance_delay_ms);
        let ms = "a positive number of milliseconds";
        let min = self
            .int("group.min.session.timeout.ms", 1, i32::MAX.into(), ms)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(d.session_timeout_ms_min);
        let max = self
            .int("group.max.session.timeout.ms", 1, i32::MAX.into(), ms)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(d.session_timeout_ms_max);
        if min > max {
            self.errors.push(ConfigError::Conflict {
                key: "group.min.session.timeout.ms".to_owned(),
                message: format!("is {min}, above group.max.session.timeout.ms {max}"),
            });
        }
        let size = self
            .int("group.max.size", 1, i32::MAX.into(), "a positive integer")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(d.group_size_max);
        let retention = self
            .int(
                "offsets.retention.minutes",
                1,
                i64::from(i32::MAX),
                "a positive number of minutes",
            )
            .and_then(|n| u64::try_from(n).ok())
            .map_or(d.offsets_retention_ms, |m| m * 60_000);
        let metadata = self
            .int(
                "offset.metadata.max.bytes",
                0,
                i32::MAX.into(),
                "a non-negative integer (bytes)",
            )
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(d.offset_metadata_bytes_max);
        GroupConfig {
            initial_rebalance_delay_ms: delay,
            session_timeout_ms_min: min,
            session_timeout_ms_max: max,
            group_size_max: size,
            offsets_retention_ms: retention,
            offset_metadata_bytes_max: metadata,
        }
    }

    /// `listeners` and `advertised.listeners`, with the security protocol
    /// map and controller listeners applied.
    fn listeners(&mut self, env: &HostEnv) -> (Vec<Listener>, Vec<Listener>) {
        let protocols = self
            .parse("listener.security.protocol.map", parse_protocol_map)
            .unwrap_or_else(|| {
                parse_protocol_map("", SECURITY_PROTOCOL_MAP_DEFAULT).unwrap_or_default()
            });
        let controllers: Vec<String> = self
            .value("controller.listener.names")
            .map(|v| {
                v.split(',')
                    .map(|n| n.trim().to_ascii_uppercase())
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default();

        let listeners = self
            .parse("listeners", |key, v| {
                let all = parse_listeners(key, v)?;
                let mut out = Vec::new();
                for mut l in all {
                    if controllers.contains(&l.name) {
                        continue;
                    }
                    l.protocol = listener_protocol(key, &l, &protocols)?;
                    out.push(l);
                }
                if out.is_empty() {
                    return Err(ConfigError::invalid(
                        key,
                        "at least one broker listener besides controller.listener.names",
                        v,
                    ));
                }
                Ok(out)
            })
            .unwrap_or_else(|| {
                if self.value("listeners").is_none() {
                    vec![Listener {
                        name: "PLAINTEXT".to_owned(),
                        host: String::new(),
                        port: 9092,
                        protocol: SecurityProtocol::Plaintext,
                    }]
                } else {
                    Vec::new()
                }
            });

        let default_host = env
            .host_name
            .clone()
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let advertised = self.parse("advertised.listeners", |key, v| {
            let mut out = Vec::new();
            for mut l in parse_listeners(key, v)? {
                if controllers.contains(&l.name) {
                    continue;
                }
                if l.host == "0.0.0.0" || l.host == "::" {
                    return Err(ConfigError::invalid(
                        key,
                        "routable addresses (0.0.0.0 and :: cannot be advertised)",
                        v,
                    ));
                }
                if !listeners.iter().any(|b| b.name == l.name) {
                    return Err(ConfigError::invalid(
                        key,
                        format!(
                            "listener names that are in listeners, and {} is not",
                            l.name
                        ),
                        v,
                    ));
                }
                if l.host.is_empty() {
                    l.host.clone_from(&default_host);
                }
                if let Some(bound) = listeners.iter().find(|b| b.name == l.name) {
                    l.protocol = bound.protocol;
                }
                out.push(l);
            }
            Ok(out)
        });
        // A listener that advertised.listeners leaves out is advertised as
        // it is bound (wildcard hosts replaced), as in Kafka.
        let given = advertised.unwrap_or_default();
        let advertised = listeners
            .iter()
            .map(|l| {
                given
                    .iter()
                    .find(|a| a.name == l.name)
                    .cloned()
                    .unwrap_or_else(|| Listener {
                        host: if l.is_wildcard() {
                            default_host.clone()
                        } else {
                            l.host.clone()
                        },
                        ..l.clone()
                    })
            })
            .collect();
        (listeners, advertised)
    }
}

/// The coordinator's settings; [`crate::config`] fills them from Kafka's
/// keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long a new group's first join
    /// phase waits for more members (each new member extends it, up to the
    /// rebalance timeout).
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub session_timeout_ms_min: u64,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_ms_max: u64,
    /// `group.max.size`: members (and members-to-be) per group.
    pub group_size_max: usize,
    /// `offsets.retention.minutes`, in ms: how long an empty group keeps its
    /// committed offsets.
    pub offsets_retention_ms: u64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
}

impl Default for GroupConfig {
    /// Kafka's defaults, except `group.max.size`, which Kafka leaves
    /// unbounded.
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            group_size_max: 1_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offset_metadata_bytes_max: 4096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HostEnv {
        HostEnv {
            host_name: Some("broker-a".to_owned()),
            cores: 4,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_properties_with(text, env())
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.node_id, None);
        assert_eq!(c.rack, None);
        assert_eq!(
            c.listeners,
            vec![Listener {
                name: "PLAINTEXT".into(),
                host: String::new(),
                port: 9092,
                protocol: SecurityProtocol::Plaintext,
            }]
        );
        assert_eq!(
            c.advertised_listeners[0].to_string(),
            "PLAINTEXT://broker-a:9092"
        );
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics);
        assert_eq!(c.socket_request_bytes_max, 104_857_600);
        assert_eq!(c.log_retention_ms, Some(604_800_000));
        assert_eq!(c.log_retention_bytes, None);
        assert_eq!(c.group, GroupConfig::default());
        assert_eq!(c.group.initial_rebalance_delay_ms, 3000);
        assert!(c.data_buckets.is_empty());
        assert_eq!(c.wal, None);
        assert!(c.zonerouter_channels.is_empty());
        assert!(c.zone_cidr_blocks.is_empty());
        assert_eq!(c.shards, 4);
        assert_eq!(c.cache_bytes_max, CACHE_BYTES_MAX_DEFAULT);
        assert_eq!(c.metrics_listener, None);
        assert!(c.unknown_keys.is_empty());
        let err = c.validate_for_node().unwrap_err().to_string();
        assert!(err.starts_with("node.id: required"), "{err}");
    }

    #[test]
    fn advertised_default_falls_back_to_loopback_without_host_name() {
        let c = Config::from_properties_with(
            "listeners=PLAINTEXT://0.0.0.0:9092",
            HostEnv {
                host_name: None,
                cores: 1,
            },
        )
        .unwrap();
        assert_eq!(
            c.advertised_listeners[0].to_string(),
            "PLAINTEXT://127.0.0.1:9092"
        );
        assert_eq!(c.listeners[0].bind_address(), "0.0.0.0:9092");
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            "node.id=3\n\
             broker.rack=us-east-1a\n\
             listeners=PLAINTEXT://[::]:19092\n\
             advertised.listeners=PLAINTEXT://b3.example.com:19092\n\
             num.partitions=6\n\
             auto.create.topics.enable=FALSE\n\
             socket.request.max.bytes=1048576\n\
             log.retention.ms=-1\n\
             log.retention.bytes=1073741824\n\
             s3.data.buckets=0@s3://data?region=us-east-1,1@s3://more?region=us-east-1&endpoint=http://minio:9000\n\
             s3.wal.path=0@s3://wal?region=us-east-1&batchInterval=100&maxBytesInBatch=4194304\n\
             automq.zonerouter.channels=0@s3://handoff?region=us-east-1&batchInterval=50\n\
             ferry.shards=2\n\
             ferry.cache.bytes.max=67108864\n\
             ferry.metrics.listener=0.0.0.0:9644\n",
        )
        .unwrap();
        c.validate_for_node().unwrap();
        assert_eq!(c.node_id, Some(3));
        assert_eq!(c.rack.as_deref(), Some("us-east-1a"));
        assert_eq!(c.listeners[0].host, "::");
        assert_eq!(c.listeners[0].bind_address(), "[::]:19092");
        assert_eq!(c.advertised_listeners[0].host, "b3.example.com");
        assert_eq!(c.num_partitions, 6);
        assert!(!c.auto_create_topics);
        assert_eq!(c.socket_request_bytes_max, 1_048_576);
        assert_eq!(c.log_retention_ms, None);
        assert_eq!(c.log_retention_bytes, Some(1 << 30));
        assert_eq!(c.data_buckets.len(), 2);
        assert_eq!(c.data_buckets[1].id, 1);
        assert_eq!(
            c.data_buckets[1].uri(),
            "s3://more?region=us-east-1&endpoint=http://minio:9000"
        );
        let wal = c.wal.as_ref().unwrap();
        assert_eq!(
            (wal.batch_interval_ms(), wal.batch_bytes_max()),
            (100, 4_194_304)
        );
        assert_eq!(wal.scheme(), BucketScheme::S3);
        assert_eq!(c.zonerouter_channels[0].batch_interval_ms(), 50);
        assert_eq!(
            c.zonerouter_channels[0].batch_bytes_max(),
            BATCH_BYTES_MAX_DEFAULT
        );
        assert_eq!(c.shards, 2);
        assert_eq!(c.cache_bytes_max, 64 << 20);
        assert_eq!(c.metrics_listener, Some("0.0.0.0:9644".parse().unwrap()));
    }

    #[test]
    fn stock_kafka_kraft_properties_are_accepted() {
        // The shape of Kafka's config/kraft/server.properties.
        let text = "\
############################# Server Basics #############################
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093

############################# Socket Server Settings #############################
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
inter.broker.listener.name=PLAINTEXT
advertised.listeners=PLAINTEXT://localhost:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/tmp/kraft-combined-logs
num.partitions=1
offsets.topic.replication.factor=1
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
group.initial.rebalance.delay.ms=0
";
        let c = parse(text).unwrap();
        assert_eq!(c.node_id, Some(1));
        assert_eq!(c.listeners.len(), 1, "the CONTROLLER listener is dropped");
        assert_eq!(c.listeners[0].port, 9092);
        assert_eq!(
            c.advertised_listeners[0].to_string(),
            "PLAINTEXT://localhost:9092"
        );
        assert_eq!(c.log_retention_ms, Some(604_800_000));
        assert_eq!(c.group.initial_rebalance_delay_ms, 0);
        assert_eq!(
            c.unknown_keys,
            vec![
                "controller.quorum.voters",
                "log.dirs",
                "log.retention.check.interval.ms",
                "log.segment.bytes",
                "num.io.threads",
                "num.network.threads",
                "offsets.topic.replication.factor",
                "process.roles",
                "socket.receive.buffer.bytes",
                "socket.send.buffer.bytes",
            ]
        );
    }

    #[test]
    fn properties_syntax() {
        let text = "# a comment\n\
                    ! another comment\n\
                    \n   \t\n\
                    a=1\n\
                    b: 2\n\
                    c 3\n\
                    d = spaced value   \n\
                    e=continued \\\n      over \\\n   lines\n\
                    f=x\\=y\\:z\\\\\n\
                    g\\=key=v\n\
                    h=\\u00e9t\\u00E9 \\uD83D\\uDE00\n\
                    i=\n\
                    j=tab\\there\n\
                    k = trailing escaped space\\ \n\
                    # comment with trailing backslash \\\n\
                    l=not continued\n\
                    m=#not a comment\n";
        let props = parse_properties(text).unwrap();
        let get = |k: &str| {
            props
                .iter()
                .find(|p| p.key == k)
                .map(|p| (p.value.as_str(), p.line))
                .unwrap()
        };
        assert_eq!(get("a"), ("1", 5));
        assert_eq!(get("b"), ("2", 6));
        assert_eq!(get("c"), ("3", 7));
        assert_eq!(get("d"), ("spaced value", 8));
        assert_eq!(get("e"), ("continued over lines", 9));
        assert_eq!(get("f").0, "x=y:z\\");
        assert_eq!(get("g=key").0, "v");
        assert_eq!(get("h").0, "été 😀");
        assert_eq!(get("i").0, "");
        assert_eq!(get("j").0, "tab\there");
        assert_eq!(get("k").0, "trailing escaped space ");
        assert_eq!(get("l"), ("not continued", 19));
        assert_eq!(get("m").0, "#not a comment");
        assert_eq!(props.len(), 13);
    }

    #[test]
    fn continuation_at_end_of_file_and_crlf() {
        let props = parse_properties("a=1\r\nb=two \\\r\n   parts\r\nc=end\\").unwrap();
        assert_eq!(props[0].value, "1");
        assert_eq!(props[1].value, "two parts");
        assert_eq!(props[2].value, "end");
    }

    #[test]
    fn syntax_errors_carry_line_numbers() {
        let e = parse_properties("a=1\n\n  lonely\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(e.contains("\"lonely\" has no value"), "{e}");
        let e = parse_properties("# c\n=value\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2:") && e.contains("no key"), "{e}");
        let e = parse_properties("a=1\nb=\\u12G4\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:") && e.contains("\\uXXXX"), "{e}");
        let e = parse_properties("a=\\uD83D alone\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 1:"), "{e}");
        // The line of a continued entry is the line it starts on.
        let e = parse("x=1\nnum.partitions=a\\\nbc\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "line 2: num.partitions: expected a positive integer, got \"abc\""
        );
    }

    #[test]
    fn later_duplicate_wins() {
        let c = parse("num.partitions=2\nnum.partitions=5\n").unwrap();
        assert_eq!(c.num_partitions, 5);
    }

    /// Every key's bad value is reported with the key's name and what was
    /// expected.
    #[test]
    fn every_bad_value_names_its_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("node.id", "-1", "a non-negative integer"),
            ("node.id", "one", "a non-negative integer"),
            ("broker.id", "x", "a non-negative integer"),
            ("broker.rack", "", "a non-empty zone name"),
            ("listeners", "localhost:9092", "NAME://host:port"),
            ("listeners", "PLAINTEXT://:99999", "port from 0 to 65535"),
            (
                "listeners",
                "PLAINTEXT://::1:9092",
                "IPv6 hosts in brackets",
            ),
            ("listeners", "PLAINTEXT://:1,PLAINTEXT://:2", "used twice"),
            ("listeners", "FOO://:9092", "listener.security.protocol.map"),
            (
                "advertised.listeners",
                "PLAINTEXT://0.0.0.0:9092",
                "routable",
            ),
            ("advertised.listeners", "OTHER://h:1", "in listeners"),
            ("listener.security.protocol.map", "A:B", "PLAINTEXT, SSL"),
            ("listener.security.protocol.map", "A", "NAME:PROTOCOL"),
            ("num.partitions", "0", "a positive integer"),
            ("num.partitions", "abc", "a positive integer"),
            ("auto.create.topics.enable", "yes", "true or false"),
            (
                "socket.request.max.bytes",
                "-5",
                "a positive integer (bytes)",
            ),
            ("log.retention.ms", "-2", "or -1 for no limit"),
            ("log.retention.minutes", "x", "or -1 for no limit"),
            ("log.retention.hours", "1.5", "or -1 for no limit"),
            ("log.retention.bytes", "lots", "or -1 for no limit"),
            (
                "group.initial.rebalance.delay.ms",
                "-1",
                "non-negative number of milliseconds",
            ),
            (
                "group.min.session.timeout.ms",
                "0",
                "a positive number of milliseconds",
            ),
            (
                "group.max.session.timeout.ms",
                "x",
                "a positive number of milliseconds",
            ),
            ("group.max.size", "0", "a positive integer"),
            (
                "offsets.retention.minutes",
                "0",
                "a positive number of minutes",
            ),
            (
                "offset.metadata.max.bytes",
                "-1",
                "a non-negative integer (bytes)",
            ),
            ("s3.data.buckets", "s3://bucket", "ID@URI"),
            ("s3.data.buckets", "x@s3://bucket", "ID an integer"),
            ("s3.data.buckets", "0@http://bucket", "scheme: s3 or file"),
            ("s3.data.buckets", "0@s3://", "with a bucket name"),
            (
                "s3.data.buckets",
                "0@file://relative/dir",
                "file:///ABSOLUTE/DIR",
            ),
            ("s3.data.buckets", "0@not a uri", "s3://BUCKET?region=R"),
            (
                "s3.data.buckets",
                "0@s3://a?region=r,0@s3://b?region=r",
                "a different ID",
            ),
            (
                "s3.wal.path",
                "0@s3://a?region=r,1@s3://b?region=r",
                "a single ID@URI",
            ),
            (
                "s3.wal.path",
                "0@s3://w?region=r&batchInterval=abc",
                "batchInterval: milliseconds in 1..=60000",
            ),
            (
                "s3.wal.path",
                "0@s3://w?region=r&batchInterval=0",
                "batchInterval",
            ),
            (
                "s3.wal.path",
                "0@s3://w?region=r&maxBytesInBatch=-1",
                "maxBytesInBatch: bytes in 1..=1073741824",
            ),
            (
                "s3.wal.path",
                "0@s3://w?region=r&maxBytesInBatch=9999999999",
                "maxBytesInBatch",
            ),
            (
                "s3.wal.path",
                "0@s3://w?region=r&batchInterval=1&batchInterval=2",
                "to be given once",
            ),
            ("automq.zonerouter.channels", "0@ftp://x", "s3 or file"),
            ("automq.zone.cidr.blocks", "10.0.0.0/8", "zone@cidr"),
            ("ferry.shards", "0", "an integer from 1 to 1024"),
            ("ferry.shards", "many", "an integer from 1 to 1024"),
            ("ferry.cache.bytes.max", "1000", "at least 1048576"),
            ("ferry.metrics.listener", "localhost:9644", "IP:port"),
        ];
        for (key, value, expected) in cases {
            let err = match Config::from_pairs([(*key, *value)], env()) {
                Ok(_) => panic!("{key}={value} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.starts_with(&format!("{key}: ")),
                "{key}={value}: error does not start with the key: {err}"
            );
            assert!(
                err.contains(expected),
                "{key}={value}: error does not say {expected:?}: {err}"
            );
        }
        // The example message from the design, word for word.
        assert_eq!(
            error("num.partitions=abc"),
            "line 1: num.partitions: expected a positive integer, got \"abc\""
        );
    }

    #[test]
    fn several_bad_values_are_all_reported() {
        let e = error("num.partitions=x\nferry.shards=0\nauto.create.topics.enable=maybe\n");
        assert!(e.starts_with("3 configuration errors:"), "{e}");
        assert!(e.contains("line 1: num.partitions: expected"), "{e}");
        assert!(e.contains("line 2: ferry.shards: expected"), "{e}");
        assert!(
            e.contains("line 3: auto.create.topics.enable: expected"),
            "{e}"
        );
    }

    #[test]
    fn conflicts_between_keys() {
        let e = error("node.id=1\nbroker.id=2\n");
        assert!(e.starts_with("broker.id: is 2 but node.id is 1"), "{e}");
        assert_eq!(parse("broker.id=7").unwrap().node_id, Some(7));
        let e = error("group.min.session.timeout.ms=10000\ngroup.max.session.timeout.ms=5000\n");
        assert!(e.starts_with("group.min.session.timeout.ms:"), "{e}");
        let e = error("listeners=CONTROLLER://:9093\ncontroller.listener.names=CONTROLLER\n");
        assert!(e.contains("at least one broker listener"), "{e}");
    }

    #[test]
    fn every_listener_gets_its_protocol_and_security_keys() {
        let c = parse(
            "listeners=CLIENT://:9092,INTERNAL://10.0.0.5:9093,PLAIN://:9094\n\
             advertised.listeners=CLIENT://b1.example.com:9092\n\
             listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:SSL,PLAIN:PLAINTEXT\n\
             inter.broker.listener.name=INTERNAL\n\
             ssl.keystore.location=/etc/ferry/node.pem\n\
             ssl.truststore.location=/etc/ferry/ca.pem\n\
             listener.name.internal.ssl.client.auth=required\n\
             listener.name.client.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512\n\
             ssl.principal.mapping.rules=RULE:^CN=([^,]*).*$/$1/\n",
        )
        .unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let protocols: Vec<_> = c.listeners.iter().map(|l| l.protocol).collect();
        assert_eq!(
            protocols,
            [
                SecurityProtocol::SaslSsl,
                SecurityProtocol::Ssl,
                SecurityProtocol::Plaintext
            ]
        );
        assert_eq!(c.inter_broker_listener, "INTERNAL");
        // Every listener is advertised; those advertised.listeners leaves
        // out as bound.
        let advertised: Vec<String> = c
            .advertised_listeners
            .iter()
            .map(Listener::to_string)
            .collect();
        assert_eq!(
            advertised,
            [
                "CLIENT://b1.example.com:9092",
                "INTERNAL://10.0.0.5:9093",
                "PLAIN://broker-a:9094"
            ]
        );
        let [client, internal, plain] = c.listener_security.as_slice() else {
            panic!("three listeners")
        };
        assert_eq!(
            client.sasl_mechanisms,
            [SaslMechanism::Plain, SaslMechanism::ScramSha512]
        );
        let tls = client.tls.as_ref().unwrap();
        assert_eq!(tls.client_auth, ClientAuth::None);
        assert_eq!(tls.key, Pem::File("/etc/ferry/node.pem".into()));
        assert_eq!(
            internal.tls.as_ref().unwrap().client_auth,
            ClientAuth::Required
        );
        assert!(internal.sasl_mechanisms.is_empty());
        assert_eq!(
            internal
                .tls
                .as_ref()
                .unwrap()
                .principal_rules
                .apply("CN=node-1,O=x")
                .as_deref(),
            Some("node-1")
        );
        assert!(plain.tls.is_none());
        // One listener: it carries node-to-node calls whatever its name.
        let c =
            parse("listeners=INTERNAL://:9093\nlistener.security.protocol.map=INTERNAL:PLAINTEXT")
                .unwrap();
        assert_eq!(c.inter_broker_listener, "INTERNAL");
    }

    /// The worked `server.properties` in the README's "Security" section
    /// parses, with every key known and the security it describes.
    #[test]
    fn the_readme_security_example_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("    node.id=2\n")
            .expect("the README's worked example");
        let text: String = readme[start..]
            .lines()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| l.trim_start().to_owned() + "\n")
            .collect();
        let c = parse(&text).unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert_eq!(c.inter_broker_listener, "INTERNAL");
        assert_eq!(c.listeners[0].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(c.listeners[1].protocol, SecurityProtocol::Ssl);
        let internal = c.listener_security[1].tls.as_ref().unwrap();
        assert_eq!(internal.client_auth, ClientAuth::Required);
        assert_eq!(
            internal
                .principal_rules
                .apply("CN=node-2,OU=ferry-nodes,O=Example")
                .as_deref(),
            Some("node-2")
        );
        assert!(c.acls_enabled);
        assert_eq!(c.super_users.len(), 4);
        assert_eq!(c.reauth_ms, Some(3_600_000));
    }

    #[test]
    fn listener_security_that_cannot_work_stops_the_start() {
        for (text, want) in [
            // TLS without a key.
            ("listeners=SSL://:9093", "needs a key and certificate chain"),
            // A mechanism Ferry does not serve.
            (
                "listeners=SASL_PLAINTEXT://:9094\nsasl.enabled.mechanisms=GSSAPI",
                "GSSAPI is not a mechanism Ferry serves",
            ),
            // Client certificates with nothing to verify them against.
            (
                "listeners=SSL://:9093\nssl.keystore.location=/k.pem\nssl.client.auth=required",
                "no ssl.truststore.location",
            ),
            ("listeners=SSL://:9093\nssl.keystore.type=JKS\nssl.keystore.location=/k.jks", "JKS stores are not supported"),
            ("listeners=SSL://:9093\nssl.keystore.location=/k.pem\nssl.keystore.password=x", "a PEM keystore has no password"),
            (
                "listeners=A://:1,B://:2\nlistener.security.protocol.map=A:PLAINTEXT,B:PLAINTEXT",
                "inter.broker.listener.name: expected the name of one of the listeners (A, B)",
            ),
            (
                "listeners=PLAINTEXT://:1\ninter.broker.listener.name=NOPE",
                "got \"NOPE\"",
            ),
            (
                "listeners=SSL://:9093\nssl.keystore.location=/k.pem\nssl.principal.mapping.rules=RULE:x",
                "ssl.principal.mapping.rules: expected DEFAULT or RULE",
            ),
            // A SASL inter-broker listener needs the node's mechanism...
            (
                "listeners=SASL_PLAINTEXT://:9094",
                "sasl.mechanism.inter.broker.protocol: expected the mechanism nodes authenticate with",
            ),
            // ...one the listener serves...
            (
                "listeners=SASL_PLAINTEXT://:9094\nsasl.enabled.mechanisms=PLAIN\nsasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                "a mechanism the SASL_PLAINTEXT listener serves (PLAIN)",
            ),
            // ...and its user.
            (
                "listeners=SASL_PLAINTEXT://:9094\nsasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                "sasl.jaas.config: expected a login module entry",
            ),
            (
                "listeners=SASL_PLAINTEXT://:9094\nsasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\nsasl.jaas.config=M required username=\"n\";",
                "non-empty username and password",
            ),
        ] {
            let e = error(text);
            assert!(e.contains(want), "{text}: {e}");
        }
        // The password never shows in the error.
        let e = error(
            "listeners=SSL://:9093\nssl.keystore.location=/k.pem\nssl.keystore.password=hunter2",
        );
        assert!(!e.contains("hunter2"), "{e}");
        // ssl.key.password is taken, and never shown.
        let c =
            parse("listeners=SSL://:9093\nssl.keystore.location=/k.pem\nssl.key.password=hunter2")
                .unwrap();
        let tls = c.listener_security[0].tls.as_ref().unwrap();
        assert_eq!(tls.key_password, Some(KeyPassword("hunter2".into())));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A SASL inter-broker listener takes the node's user from the JAAS
    /// entry for its mechanism (listener-prefixed first); the password
    /// shows neither in `Debug` nor in a parse error.
    #[test]
    fn a_sasl_inter_broker_listener_takes_the_nodes_user_from_jaas() {
        let base = "listeners=CLIENT://:9092,INTERNAL://:9093\n\
            listener.security.protocol.map=CLIENT:PLAINTEXT,INTERNAL:SASL_SSL\n\
            inter.broker.listener.name=INTERNAL\n\
            ssl.keystore.location=/k.pem\n\
            sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256\n\
            sasl.jaas.config=Other required username=\"wrong\" password=\"wrong\";\n";
        let c = parse(&format!(
            "{base}listener.name.internal.scram-sha-256.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"node-7\" password=\"hunter2\";"
        ))
        .unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let login = c.inter_broker_login.clone().unwrap();
        assert_eq!(login.mechanism, SaslMechanism::ScramSha256);
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("node-7", "hunter2")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        // Without the prefixed entry, the plain key is taken.
        let c = parse(base).unwrap();
        assert_eq!(c.inter_broker_login.unwrap().username, "wrong");
        // A broken entry is refused without showing it.
        let e = error(&format!(
            "{base}listener.name.internal.scram-sha-256.sasl.jaas.config=M required password=\"hunter2"
        ));
        assert!(e.contains("unterminated") && !e.contains("hunter2"), "{e}");
        // A PLAINTEXT or SSL inter-broker listener has no login.
        assert_eq!(
            parse("listeners=PLAINTEXT://:9092")
                .unwrap()
                .inter_broker_login,
            None
        );
    }

    #[test]
    fn kafkas_authorizers_turn_acls_on_and_others_stop_the_start() {
        for class in AUTHORIZER_CLASSES {
            let c = parse(&format!(
                "authorizer.class.name={class}\nsuper.users=User:admin;User:CN=node,O=x\n"
            ))
            .unwrap();
            assert!(c.acls_enabled && !c.allow_if_no_acl);
            assert_eq!(c.super_users, ["User:admin", "User:CN=node,O=x"]);
        }
        let e = error("authorizer.class.name=com.example.MyAuthorizer\n");
        assert!(
            e.contains("authorizer.class.name: com.example.MyAuthorizer"),
            "{e}"
        );
        let e = error("super.users=admin\n");
        assert!(
            e.contains("super.users: expected principals of the form User:name"),
            "{e}"
        );
        // Unset or empty, as Kafka's default: no ACLs.
        assert!(!parse("authorizer.class.name=\n").unwrap().acls_enabled);
        assert!(
            parse("allow.everyone.if.no.acl.found=true\n")
                .unwrap()
                .allow_if_no_acl
        );
    }

    #[test]
    fn unknown_keys_warn_but_ferry_keys_must_be_known() {
        let c = parse("log.dirs=/tmp/x\nsome.plugin.setting=1\n").unwrap();
        assert_eq!(c.unknown_keys, vec!["log.dirs", "some.plugin.setting"]);
        let e = error("ferry.shard=2\n");
        assert!(e.starts_with("line 1: ferry.shard: unknown key"), "{e}");
        assert!(e.contains("ferry.shards"), "{e}");
    }

    #[test]
    fn retention_units_and_precedence() {
        assert_eq!(
            parse("log.retention.hours=1").unwrap().log_retention_ms,
            Some(3_600_000)
        );
        assert_eq!(
            parse("log.retention.minutes=2").unwrap().log_retention_ms,
            Some(120_000)
        );
        assert_eq!(
            parse("log.retention.hours=-1").unwrap().log_retention_ms,
            None
        );
        let c =
            parse("log.retention.hours=1\nlog.retention.minutes=2\nlog.retention.ms=5").unwrap();
        assert_eq!(c.log_retention_ms, Some(5));
        let c = parse("log.retention.hours=1\nlog.retention.minutes=2").unwrap();
        assert_eq!(c.log_retention_ms, Some(120_000));
        assert_eq!(
            parse("log.retention.bytes=0").unwrap().log_retention_bytes,
            Some(0)
        );
    }

    #[test]
    fn uri_params_and_lists() {
        let c = parse(
            "s3.data.buckets=0@s3://b?region=r&endpoint=http://h:9000&pathStyle=true\n\
             s3.wal.path=5@file:///var/lib/ferry/wal?batchInterval=1000&maxBytesInBatch=1048576\n",
        )
        .unwrap();
        assert_eq!(
            c.data_buckets[0].batch_interval_ms(),
            BATCH_INTERVAL_MS_DEFAULT
        );
        assert_eq!(c.data_buckets[0].batch_bytes_max(), BATCH_BYTES_MAX_DEFAULT);
        let wal = c.wal.unwrap();
        assert_eq!(wal.id, 5);
        assert_eq!(wal.scheme(), BucketScheme::File);
        assert_eq!(
            wal.uri(),
            "file:///var/lib/ferry/wal?batchInterval=1000&maxBytesInBatch=1048576"
        );
        assert_eq!(
            (wal.batch_interval_ms(), wal.batch_bytes_max()),
            (1000, 1 << 20)
        );

        // Without s3.wal.path the WAL is the first data bucket, default batching.
        let c = parse("s3.data.buckets=3@s3://d?region=r&batchInterval=9").unwrap();
        let wal = c.wal.unwrap();
        assert_eq!(
            (wal.id, wal.batch_interval_ms()),
            (3, BATCH_INTERVAL_MS_DEFAULT)
        );

        // A comma inside a URI does not split the list; `,ID@` does.
        let list = BucketUri::parse_list(
            "k",
            "0@s3://a?accessKey=x,2y&region=r, 1@s3://b?region=r,2@s3://c?region=r",
        )
        .unwrap();
        let ids: Vec<u16> = list.iter().map(|b| b.id).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert_eq!(list[0].uri(), "s3://a?accessKey=x,2y&region=r");
        // An id that is not one, named.
        let err = BucketUri::parse_list("k", "-2@s3://c?region=r").unwrap_err();
        assert!(err.to_string().contains("from 0 to 65535"), "{err}");
    }

    #[test]
    fn cidr_blocks() {
        let c = parse(
            "automq.zone.cidr.blocks=us-east-1a@10.0.0.0/19,10.0.32.0/19<>us-east-1b@10.0.64.0/19, 2001:db8::/32 <> us-east-1c@10.0.64.0/24",
        )
        .unwrap();
        let zones: Vec<(&str, String)> = c
            .zone_cidr_blocks
            .iter()
            .map(|z| (z.zone.as_str(), z.net.to_string()))
            .collect();
        assert_eq!(
            zones,
            vec![
                ("us-east-1a", "10.0.0.0/19".to_owned()),
                ("us-east-1a", "10.0.32.0/19".to_owned()),
                ("us-east-1b", "10.0.64.0/19".to_owned()),
                ("us-east-1b", "2001:db8::/32".to_owned()),
                ("us-east-1c", "10.0.64.0/24".to_owned()),
            ]
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.zone_of(ip("10.0.33.4")), Some("us-east-1a"));
        assert_eq!(c.zone_of(ip("10.0.65.1")), Some("us-east-1b"));
        assert_eq!(
            c.zone_of(ip("10.0.64.9")),
            Some("us-east-1c"),
            "longest prefix wins"
        );
        assert_eq!(
            c.zone_of(ip("::ffff:10.0.0.1")),
            Some("us-east-1a"),
            "v4-mapped"
        );
        assert_eq!(c.zone_of(ip("2001:db8::1")), Some("us-east-1b"));
        assert_eq!(c.zone_of(ip("192.168.1.1")), None);
        assert_eq!(
            c.effective("automq.zone.cidr.blocks").unwrap(),
            "us-east-1a@10.0.0.0/19,10.0.32.0/19<>us-east-1b@10.0.64.0/19,2001:db8::/32<>us-east-1c@10.0.64.0/24"
        );
        // Host bits are allowed and ignored.
        assert_eq!(
            parse_cidr("10.0.0.7/8").unwrap().network().to_string(),
            "10.0.0.0"
        );
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().prefix_len(), 0);
        assert_eq!(parse_cidr("::/128").unwrap().prefix_len(), 128);
    }

    #[test]
    fn bad_cidr_blocks() {
        let cases = [
            ("a@10.0.0.0/33", "prefix length from 0 to 32"),
            ("a@2001:db8::/129", "prefix length from 0 to 128"),
            ("a@10.0.0.0/x", "prefix length"),
            ("a@10.0.0.0", "the /prefix is missing"),
            ("a@10.0.0.300/8", "IPv4 or IPv6 address"),
            ("a@", "the /prefix is missing"),
            ("a@10.0.0.0/8,", "the /prefix is missing"),
            ("@10.0.0.0/8", "a zone name is"),
            ("bad zone@10.0.0.0/8", "a zone name is"),
            ("a@10.0.0.0/8<>", "zone@cidr"),
            ("a@10.0.0.0/8<>b10.1.0.0/16", "zone@cidr"),
            ("a@10.0.0.0/8<>b@10.0.0.0/8", "in one zone only"),
        ];
        for (value, expected) in cases {
            let e = match Config::from_pairs([("automq.zone.cidr.blocks", value)], env()) {
                Ok(_) => panic!("{value} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.starts_with("automq.zone.cidr.blocks: expected"),
                "{value}: {e}"
            );
            assert!(e.contains(expected), "{value}: {e} lacks {expected:?}");
        }
        // Empty means no blocks.
        assert!(parse("automq.zone.cidr.blocks=")
            .unwrap()
            .zone_cidr_blocks
            .is_empty());
    }

    #[test]
    fn overrides() {
        let mut c =
            parse("node.id=1\nnum.partitions=3\nlisteners=PLAINTEXT://0.0.0.0:9092\n").unwrap();
        c.apply_override("num.partitions=12").unwrap();
        assert_eq!(c.num_partitions, 12);
        c.set("listeners", "PLAINTEXT://0.0.0.0:19092").unwrap();
        assert_eq!(
            c.advertised_listeners[0].to_string(),
            "PLAINTEXT://broker-a:19092"
        );
        assert!(c.is_set("listeners") && !c.is_set("broker.rack"));

        // A bad override changes nothing and names the key, without a line.
        let before = c.clone();
        let e = c
            .apply_override("num.partitions=zero")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "num.partitions: expected a positive integer, got \"zero\""
        );
        assert_eq!(c, before);
        let e = c.apply_override("no-equals-sign").unwrap_err().to_string();
        assert!(e.starts_with("--override expects key=value"), "{e}");
        assert!(c.apply_override("=5").is_err());

        c.apply_override("unknown.kafka.key=1").unwrap();
        assert_eq!(c.unknown_keys, vec!["unknown.kafka.key"]);
        assert!(c.set("ferry.nope", "1").is_err());

        c.reset("num.partitions").unwrap();
        assert_eq!(c.num_partitions, 1);
        assert!(!c.is_set("num.partitions"));

        c.set("automq.zone.cidr.blocks", "z@192.168.0.0/16")
            .unwrap();
        assert_eq!(c.zone_of("192.168.3.4".parse().unwrap()), Some("z"));
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let secret = "wJalrXUtnFEMI-K7MDENG";
        let access = "AKIAIOSFODNN7EXAMPLE";
        let text = format!(
            "node.id=1\n\
             s3.data.buckets=0@s3://data?region=r&accessKey={access}&secretKey={secret}\n\
             s3.wal.path=0@s3://wal?region=r&secretKey={secret}&batchInterval=100\n\
             automq.zonerouter.channels=0@s3://user:{secret}@handoff?region=r\n\
             sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule password=\"{secret}\";\n\
             ssl.keystore.password={secret}\n\
             my.plugin.secret={secret}\n"
        );
        let c = parse(&text).unwrap();
        // The object store still gets the real URI.
        assert!(c.data_buckets[0].uri().contains(secret));
        assert_eq!(c.wal.as_ref().unwrap().batch_interval_ms(), 100);

        let debug = format!("{c:?}");
        let pretty = format!("{c:#?}");
        let display = c.to_string();
        let described = format!("{:?}", c.describe());
        for (what, shown) in [
            ("Debug", &debug),
            ("pretty Debug", &pretty),
            ("Display", &display),
            ("describe", &described),
        ] {
            assert!(!shown.contains(secret), "{what} leaks the secret: {shown}");
            assert!(
                !shown.contains(access),
                "{what} leaks the access key: {shown}"
            );
        }
        assert!(
            display.contains(&format!(
                "s3.wal.path=0@s3://wal?region=r&secretKey={REDACTED}&batchInterval=100"
            )),
            "{display}"
        );
        assert!(
            display.contains(&format!("s3://user:{REDACTED}@handoff")),
            "{display}"
        );
        assert!(format!("{:?}", c.data_buckets[0]).contains(REDACTED));
        assert_eq!(
            c.data_buckets[0].to_string(),
            format!("0@s3://data?region=r&accessKey={REDACTED}&secretKey={REDACTED}")
        );

        // Errors about a bad URI do not echo its credentials either.
        let e = error(&format!(
            "s3.wal.path=0@s3://w?secretKey={secret}&batchInterval=abc"
        ));
        assert!(!e.contains(secret), "{e}");
        let e = error(&format!("s3.data.buckets=0@http://h?secretKey={secret}"));
        assert!(!e.contains(secret) && e.contains("s3 or file"), "{e}");
        let e = parse_override(&format!("s3.wal.path 0@s3://w?secretKey={secret}")).unwrap_err();
        assert!(!e.to_string().contains(secret), "{e}");
    }

    #[test]
    fn describe_lists_every_known_key_with_defaults() {
        let c =
            parse("node.id=2\nsasl.login.class=hidden\nsasl.jaas.config=hidden\nssl.truststore.password=hidden\n").unwrap();
        let d = c.describe();
        assert_eq!(d.len(), KNOWN_KEYS.len() + LISTENER_KEYS.len());
        let get = |k: &str| d.iter().find(|(key, _, _)| key == k).unwrap().clone();
        assert_eq!(get("node.id"), ("node.id".into(), Some("2".into()), false));
        assert_eq!(get("num.partitions").1.as_deref(), Some("1"));
        assert_eq!(get("log.retention.ms").1.as_deref(), Some("604800000"));
        assert_eq!(get("log.retention.bytes").1.as_deref(), Some("-1"));
        assert_eq!(get("broker.rack").1, None);
        assert_eq!(get("ferry.metrics.listener").1.as_deref(), Some(""));
        assert_eq!(get("offsets.retention.minutes").1.as_deref(), Some("10080"));
        // Unknown keys are not described, so their values never show.
        assert!(d.iter().all(|(k, _, _)| k != "sasl.login.class"));
        // A JAAS entry holds a password: listed as sensitive, no value.
        assert_eq!(
            get("sasl.jaas.config"),
            ("sasl.jaas.config".into(), None, true)
        );
        // A known secret is listed as sensitive, without its value.
        assert_eq!(
            get("ssl.truststore.password"),
            ("ssl.truststore.password".into(), None, true)
        );
        assert!(is_sensitive_key("listener.name.client.ssl.keystore.key"));
        for (key, value, sensitive) in &d {
            assert!(!sensitive || value.is_none(), "{key}");
        }
        assert!(is_sensitive_key("ssl.key.password"));
        assert!(is_sensitive_key("Some.SECRET.thing"));
        assert!(!is_sensitive_key("num.partitions"));
    }

    #[test]
    fn dev_config() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::dev(dir.path(), 19092).unwrap();
        c.validate_for_node().unwrap();
        assert_eq!(c.node_id, Some(0));
        assert_eq!(c.listeners[0].to_string(), "PLAINTEXT://127.0.0.1:19092");
        assert_eq!(c.advertised_listeners, c.listeners);
        let bucket = url::Url::from_file_path(dir.path().join("bucket")).unwrap();
        assert_eq!(c.data_buckets[0].uri(), bucket.as_str());
        assert_eq!(c.data_buckets[0].scheme(), BucketScheme::File);
        let wal = c.wal.as_ref().unwrap();
        assert_eq!(wal.uri(), format!("{bucket}?batchInterval=250"));
        assert_eq!(wal.batch_interval_ms(), 250);
        assert_eq!(c.group.initial_rebalance_delay_ms, 0);
        assert!(c.unknown_keys.is_empty());

        // Paths with spaces survive as percent-encoded file URIs.
        let spaced = dir.path().join("with space");
        let c = Config::dev(&spaced, 0).unwrap();
        let uri = c.data_buckets[0].uri();
        assert!(uri.contains("with%20space"), "{uri}");
        let back = url::Url::parse(uri).unwrap().to_file_path().unwrap();
        assert_eq!(back, std::path::absolute(&spaced).unwrap().join("bucket"));
    }

    #[test]
    fn load_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(&path, "node.id=9\ns3.data.buckets=0@file:///tmp/x\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.node_id, Some(9));
        let e = Config::load(&dir.path().join("nope.properties"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("reading ") && e.contains("nope.properties"),
            "{e}"
        );
    }

    #[test]
    fn redact_text_cases() {
        assert_eq!(redact_text("plain"), "plain");
        assert_eq!(
            redact_text("0@s3://b?secretKey=abc&region=r,1@s3://c?accessKey=x"),
            format!("0@s3://b?secretKey={REDACTED}&region=r,1@s3://c?accessKey={REDACTED}")
        );
        assert_eq!(
            redact_text("https://u:p@host/path?sessionToken=t"),
            format!("https://u:{REDACTED}@host/path?sessionToken={REDACTED}")
        );
        assert_eq!(redact_text("s3://u@host?keyless"), "s3://u@host?keyless");
        assert_eq!(redact_text("?secretKey"), "?secretKey");
    }
}
