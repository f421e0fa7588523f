//! What every shard of a node shares: identity, the topic table, the durable
//! log, metrics, limits, and what recovery found in the bucket. It is
//! `Send + Sync` and read-mostly; nothing in it is locked on the produce or
//! fetch path.

use crate::cluster::topics::Topics;
use crate::metrics::Metrics;
use crate::storage::durable::DurableLog;
use crate::storage::durable::LogBatch;
use ferry_protocol::frame::SupportedApis;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::storage::durable::{Blocked, Recovered, RecoveredProducer};

/// A blocked partition's unread objects, and when it was found blocked.
type BlockedSince = (Vec<String>, std::time::Instant);

pub struct NodeCtx {
    pub node_id: i32,
    pub rack: Option<String>,
    /// Every listener the node serves, as bound (ports filled in).
    pub listeners: Vec<Arc<ListenerCtx>>,
    /// The node-to-node client's TLS, when the inter-broker listener is
    /// SSL; `None`: plain TCP.
    pub rpc_tls: Option<Arc<crate::security::tls::TlsClient>>,
    /// Whom the node-to-node client authenticates as, when the
    /// inter-broker listener is a SASL one.
    pub rpc_login: Option<crate::config::SaslLogin>,
    pub cluster_id: String,
    pub shards: usize,
    pub topics: Arc<Topics>,
    pub durable: Arc<dyn DurableLog>,
    pub metrics: Metrics,
    pub supported: SupportedApis,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub cache_bytes_max: usize,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub frame_bytes_max: usize,
    /// Bytes of client requests each shard may hold read and not answered
    /// (`queued.max.request.bytes` over the shards); past it, the shard's
    /// connections are not read.
    pub queued_request_bytes_max: usize,
    /// The broker's configs as DescribeConfigs shows them:
    /// `(key, value, sensitive)`, from [`crate::config::Config::describe`]
    /// (sensitive values already `None`, URI credentials redacted).
    pub config_describe: Vec<(String, Option<String>, bool)>,
    /// Serialises this node's changes to the topic table, from the read of
    /// the cluster's table to its compare-and-set and persistence.
    pub topic_changes: futures_util::lock::Mutex<()>,
    /// The cluster: membership, leadership, the cluster-wide topic table
    /// and zone CIDR blocks. In process for one node or `ferry dev`, etcd
    /// for a cluster of processes.
    pub cluster: Arc<dyn crate::cluster::Coordinator>,
    /// This node's zone (`broker.rack`, or [`DEFAULT_ZONE`]).
    pub zone: String,
    /// The node runs alone by construction (an in-process coordinator of
    /// its own): no other node ever writes its partitions, so start-up
    /// recovery of its own objects is their whole history.
    pub alone: bool,
    /// The coordinator is in this process (alone, or `ferry dev --zones`):
    /// cluster-wide values it holds are kept in the bucket too.
    pub in_process: bool,
    /// Client zones by `automq.zone.cidr.blocks`; shards keep it current
    /// from the coordinator.
    pub zones: Arc<crate::cluster::zone::ZoneResolver>,
    /// Bytes of node-to-node RPCs, by peer zone and kind.
    pub traffic: Arc<crate::cluster::rpc::RpcTraffic>,
    /// InitProducerId's ids, unique to this node.
    pub producer_ids: ProducerIds,
    /// The cluster's SCRAM credentials, as last read from the coordinator
    /// (see [`NodeCtx::security`]), and the generation it was read at.
    security: arc_swap::ArcSwap<crate::security::SecurityDoc>,
    /// The authorizer built from the document's ACLs (`None`: ACLs off).
    authorizer: arc_swap::ArcSwap<Option<crate::security::acl::Authorizer>>,
    security_seen: Mutex<u64>,
    /// The generation last looked at, read without the lock.
    security_generation_seen: std::sync::atomic::AtomicU64,
    /// ACLs are enforced (`authorizer.class.name`), with these super users
    /// and `allow.everyone.if.no.acl.found`.
    pub acls_enabled: bool,
    super_users: Vec<String>,
    allow_if_no_acl: bool,
    /// `connections.max.reauth.ms` (KIP-368): how long a SASL session
    /// lasts before the client must authenticate again; `None`: for ever.
    pub reauth_ms: Option<u64>,
    /// The coordinator's topic-table generation and version last applied.
    topics_seen: Mutex<(u64, u64)>,
    /// The generation last looked at, read without the lock.
    topics_generation_seen: std::sync::atomic::AtomicU64,
    /// What start-up recovery found, for a node alone (a node of a
    /// cluster loads what it leads from every node's objects instead).
    recovered: Mutex<Recovered>,
    /// Per shard: the objects its partitions read from, as of its last
    /// retention pass (see `crate::storage::refs`).
    pub shard_refs: Vec<Mutex<crate::storage::refs::ShardRefs>>,
    /// Object-deletion passes in a row that could not delete (see
    /// `crate::storage::refs`).
    pub refs_blocked: std::sync::atomic::AtomicU64,
    /// How often retention runs, and how old an object nothing refers to
    /// must be before it is deleted (see `crate::storage::refs`: references are
    /// trusted when younger than half of it).
    pub retention_check_ms: u64,
    pub object_delete_age_ms: u64,
    /// How often each shard compacts its partitions' durable batches into
    /// per-partition objects (0: never), and below what size a compacted
    /// object is merged into the next.
    pub compaction_interval_ms: u64,
    pub compaction_bytes_min: usize,
    /// `ferry.accept=acceptor`: shard 0 accepts every connection and deals
    /// them round-robin, instead of a SO_REUSEPORT listener per shard.
    pub acceptor: bool,
    /// The group coordinator's settings, and the offsets snapshot recovery
    /// found; shard 0 takes the snapshot when it starts the coordinator.
    pub group_config: crate::group::GroupConfig,
    groups_snapshot: Mutex<Option<bytes::Bytes>>,
    /// Partitions recovery or a takeover could not rebuild (see
    /// [`Blocked`]), with when each was last found blocked. Looked at only
    /// when a partition is not held, never on the produce or fetch path.
    blocked: Mutex<HashMap<(Arc<str>, i32), BlockedSince>>,
}

/// A listener a node serves: where it binds, what clients are told, and
/// its security.
#[derive(Clone)]
pub struct ListenerSpec {
    /// Upper-case name (`CLIENT`, `PLAINTEXT`...).
    pub name: String,
    pub bind: std::net::SocketAddr,
    pub advertised_host: String,
    /// 0: the port the listener bound.
    pub advertised_port: u16,
    pub protocol: crate::config::SecurityProtocol,
    /// For SSL and SASL_SSL listeners.
    pub tls: Option<Arc<crate::security::tls::TlsServer>>,
    /// For SASL listeners.
    pub sasl_mechanisms: Vec<crate::config::SaslMechanism>,
}

impl ListenerSpec {
    /// A PLAINTEXT listener named PLAINTEXT on 127.0.0.1, any port.
    pub fn loopback() -> ListenerSpec {
        ListenerSpec {
            name: "PLAINTEXT".into(),
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 0,
            protocol: crate::config::SecurityProtocol::Plaintext,
            tls: None,
            sasl_mechanisms: Vec::new(),
        }
    }
}

/// A listener as the node serves it.
pub struct ListenerCtx {
    pub spec: ListenerSpec,
    /// The address it bound.
    pub addr: std::net::SocketAddr,
    /// It carries node-to-node calls (`inter.broker.listener.name`): Ferry's
    /// own API keys are served here and nowhere else.
    pub inter_broker: bool,
}

impl ListenerCtx {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// The parts of [`NodeCtx`] a caller chooses.
pub struct NodeSettings {
    pub node_id: i32,
    pub rack: Option<String>,
    /// The listeners, in `listeners` order; the first is the one
    /// [`crate::broker::server::RunningNode::addr`] gives.
    pub listeners: Vec<ListenerSpec>,
    /// The name of the listener that carries node-to-node calls.
    pub inter_broker_listener: String,
    /// The node-to-node client's TLS (for an SSL inter-broker listener).
    pub rpc_tls: Option<Arc<crate::security::tls::TlsClient>>,
    /// Whom the node-to-node client authenticates as on a SASL
    /// inter-broker listener.
    pub rpc_login: Option<crate::config::SaslLogin>,
    /// The principal other nodes see this node as on the inter-broker
    /// listener (its SASL user, or its certificate's subject, mapped);
    /// anonymous on PLAINTEXT.
    pub rpc_principal: crate::security::Principal,
    pub cluster_id: String,
    pub shards: usize,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub cache_bytes_max: usize,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub frame_bytes_max: usize,
    /// `queued.max.request.bytes` for the whole node; `None`: no limit.
    pub queued_request_bytes_max: Option<u64>,
    /// `connections.max.reauth.ms`; `None`: sessions do not expire.
    pub reauth_ms: Option<u64>,
    /// ACLs enforced, `super.users`, `allow.everyone.if.no.acl.found`.
    pub acls_enabled: bool,
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
    /// [`crate::config::Config::describe`], for DescribeConfigs on the
    /// broker; empty if the caller has no `Config`.
    pub config_describe: Vec<(String, Option<String>, bool)>,
    pub group_config: crate::group::GroupConfig,
    pub groups_snapshot: Option<bytes::Bytes>,
    /// The cluster to join once the listener is bound (so the port is
    /// known).
    pub cluster: ClusterJoin,
    /// `automq.zone.cidr.blocks` as configured (canonical text), for an
    /// in-process coordinator.
    pub zone_cidrs: String,
    /// How often retention runs (Ferry's default: 10 s).
    pub retention_check_ms: u64,
    /// Minimum age of a WAL object before it may be deleted (default 60 s).
    pub object_delete_age_ms: u64,
    /// `ferry.compaction.interval.ms` (0: off) and `ferry.compaction.bytes.min`.
    pub compaction_interval_ms: u64,
    pub compaction_bytes_min: usize,
    /// `ferry.accept=acceptor` (default: SO_REUSEPORT listeners).
    pub acceptor: bool,
    /// What start-up recovery could not rebuild ([`crate::storage::wal_log::Opened`]).
    pub blocked: Blocked,
}

impl NodeSettings {
    /// One node on 127.0.0.1 with Kafka's defaults (1 partition per topic,
    /// auto-creation on, no retention limit, 100 MiB frames), two shards and
    /// a 64 MiB cache per shard: what an embedded node or a test starts from.
    pub fn local(node_id: i32) -> NodeSettings {
        NodeSettings {
            node_id,
            rack: None,
            listeners: vec![ListenerSpec::loopback()],
            inter_broker_listener: "PLAINTEXT".into(),
            rpc_tls: None,
            rpc_login: None,
            rpc_principal: crate::security::Principal::anonymous(),
            cluster_id: "ferry".into(),
            shards: 2,
            num_partitions: 1,
            auto_create_topics: true,
            cache_bytes_max: 64 << 20,
            retention_ms: -1,
            retention_bytes: -1,
            frame_bytes_max: ferry_protocol::frame::FRAME_BYTES_MAX_DEFAULT,
            queued_request_bytes_max: Some(crate::config::QUEUED_REQUEST_BYTES_MAX_DEFAULT),
            reauth_ms: None,
            acls_enabled: false,
            super_users: Vec::new(),
            allow_if_no_acl: false,
            config_describe: vec![],
            group_config: Default::default(),
            groups_snapshot: None,
            cluster: ClusterJoin::Alone,
            zone_cidrs: String::new(),
            retention_check_ms: 10_000,
            object_delete_age_ms: 60_000,
            compaction_interval_ms: crate::config::COMPACTION_INTERVAL_MS_DEFAULT,
            compaction_bytes_min: crate::config::COMPACTION_BYTES_MIN_DEFAULT as usize,
            acceptor: false,
            blocked: Blocked::new(),
        }
    }
}

/// Why a configuration cannot become a node's settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("node.id: required by a node")]
    NoNodeId,
    #[error("listeners: {listener}: cannot resolve {addr}")]
    Resolve { listener: String, addr: String },
    #[error("listener {listener}: {source}")]
    Tls {
        listener: String,
        #[source]
        source: crate::security::tls::TlsError,
    },
}

impl NodeSettings {
    /// The settings a configuration asks for (`node.id` must be set): every
    /// listener, resolved and with its TLS material loaded (so a bad file
    /// stops the start here), and the node-to-node client's TLS.
    pub fn from_config(config: &crate::config::Config) -> Result<NodeSettings, SettingsError> {
        use crate::security::tls::{TlsClient, TlsServer};
        let mut listeners = Vec::new();
        let mut rpc_tls = None;
        let mut rpc_principal = crate::security::Principal::anonymous();
        for (l, sec) in config.listeners.iter().zip(&config.listener_security) {
            let bind = std::net::ToSocketAddrs::to_socket_addrs(&l.bind_address())
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| SettingsError::Resolve {
                    listener: l.name.clone(),
                    addr: l.bind_address(),
                })?;
            let advertised = config
                .advertised_listeners
                .iter()
                .find(|a| a.name == l.name)
                .unwrap_or(l);
            let tls_err = |source| SettingsError::Tls {
                listener: l.name.clone(),
                source,
            };
            let tls = match &sec.tls {
                Some(t) => Some(TlsServer::load_server(&l.name, t).map_err(tls_err)?),
                None => None,
            };
            if l.name == config.inter_broker_listener {
                if let Some(t) = &sec.tls {
                    // Without a truststore other nodes cannot be verified, so
                    // they are not called over TLS (a node alone needs none).
                    if t.truststore.is_some() {
                        rpc_tls = Some(TlsClient::load_client(&l.name, t).map_err(tls_err)?);
                    } else {
                        tracing::warn!(listener = %l.name, "the inter-broker listener is TLS \
                            without ssl.truststore.location: this node cannot call other nodes");
                    }
                    // Other nodes see this one by its certificate only where
                    // they ask for client certificates (and SASL is not
                    // what names it).
                    if t.client_auth != crate::config::ClientAuth::None && !l.protocol.sasl() {
                        rpc_principal = crate::security::tls::own_principal(t).map_err(tls_err)?;
                    }
                }
            }
            listeners.push(ListenerSpec {
                name: l.name.clone(),
                bind,
                advertised_host: advertised.host.clone(),
                advertised_port: advertised.port,
                protocol: l.protocol,
                tls,
                sasl_mechanisms: sec.sasl_mechanisms.clone(),
            });
        }
        if let Some(login) = &config.inter_broker_login {
            rpc_principal = crate::security::Principal::user(login.username.clone());
        }
        Ok(NodeSettings {
            node_id: config.node_id.ok_or(SettingsError::NoNodeId)?,
            rpc_login: config.inter_broker_login.clone(),
            rack: config.rack.clone(),
            listeners,
            inter_broker_listener: config.inter_broker_listener.clone(),
            rpc_tls,
            rpc_principal,
            cluster_id: config.cluster_id.clone(),
            shards: config.shards,
            num_partitions: config.num_partitions,
            auto_create_topics: config.auto_create_topics,
            cache_bytes_max: config.cache_bytes_max as usize,
            retention_ms: config.log_retention_ms.map_or(-1, |v| v as i64),
            retention_bytes: config.log_retention_bytes.map_or(-1, |v| v as i64),
            frame_bytes_max: config.socket_request_bytes_max,
            queued_request_bytes_max: config.queued_request_bytes_max,
            reauth_ms: config.reauth_ms,
            acls_enabled: config.acls_enabled,
            super_users: config.super_users.clone(),
            allow_if_no_acl: config.allow_if_no_acl,
            config_describe: config.describe(),
            group_config: config.group.clone(),
            groups_snapshot: None,
            cluster: ClusterJoin::Alone,
            zone_cidrs: crate::cluster::zone::ZoneTable::from_config(config)
                .text()
                .to_owned(),
            retention_check_ms: 10_000,
            object_delete_age_ms: 60_000,
            compaction_interval_ms: config.compaction_interval_ms,
            compaction_bytes_min: config.compaction_bytes_min as usize,
            acceptor: config.acceptor,
            blocked: Blocked::new(),
        })
    }
}

/// How a starting node finds its cluster.
#[derive(Default)]
pub enum ClusterJoin {
    /// An in-process coordinator of this node alone.
    #[default]
    Alone,
    /// An in-process coordinator shared by nodes of one process (`ferry dev`
    /// with several zones, tests).
    Local(Arc<crate::cluster::LocalCoordinator>),
    /// etcd per the configuration, once the node's runtime exists (the
    /// binary's own placeholder; `server::start` refuses it).
    Pending,
    /// etcd, with the runtime its client runs on.
    Etcd {
        options: crate::cluster::etcd::EtcdOptions,
        runtime: tokio::runtime::Handle,
    },
}

/// The zone of a node without `broker.rack`.
pub const DEFAULT_ZONE: &str = "default";

/// The pieces of a node its start builds, for [`NodeCtx::new`].
pub struct NodeParts {
    pub topics: Arc<Topics>,
    pub durable: Arc<dyn DurableLog>,
    pub recovered: Recovered,
    pub cluster: Arc<dyn crate::cluster::Coordinator>,
    /// See [`NodeCtx::alone`].
    pub alone: bool,
    pub traffic: Arc<crate::cluster::rpc::RpcTraffic>,
    /// The APIs the broker layer serves (`broker::api::supported_apis`).
    pub supported: SupportedApis,
    /// The listeners, bound.
    pub listeners: Vec<Arc<ListenerCtx>>,
}

impl NodeCtx {
    pub fn new(s: NodeSettings, parts: NodeParts) -> NodeCtx {
        let NodeParts {
            topics,
            durable,
            recovered,
            cluster,
            alone,
            traffic,
            supported,
            listeners,
        } = parts;
        let zones = Arc::new(crate::cluster::zone::ZoneResolver::new(
            crate::cluster::zone::ZoneTable::parse(&cluster.zone_cidrs()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the cluster's zone CIDR blocks do not parse; none used");
                crate::cluster::zone::ZoneTable::empty()
            }),
        ));
        NodeCtx {
            zone: s.rack.clone().unwrap_or_else(|| DEFAULT_ZONE.to_owned()),
            alone,
            in_process: !cluster.is_etcd(),
            zones,
            topics_seen: Mutex::new((0, 0)),
            security: Default::default(),
            authorizer: arc_swap::ArcSwap::from_pointee(s.acls_enabled.then(|| {
                crate::security::acl::Authorizer::new(&[], &s.super_users, s.allow_if_no_acl)
            })),
            security_seen: Mutex::new(0),
            security_generation_seen: std::sync::atomic::AtomicU64::new(0),
            acls_enabled: s.acls_enabled,
            super_users: s.super_users.clone(),
            allow_if_no_acl: s.allow_if_no_acl,
            reauth_ms: s.reauth_ms,
            topics_generation_seen: std::sync::atomic::AtomicU64::new(0),
            traffic,
            producer_ids: ProducerIds::new(
                s.node_id,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            cluster,
            node_id: s.node_id,
            rack: s.rack,
            listeners,
            rpc_tls: s.rpc_tls,
            rpc_login: s.rpc_login,
            cluster_id: s.cluster_id,
            shards: s.shards,
            topics,
            durable,
            metrics: Metrics::new(s.shards),
            supported,
            num_partitions: s.num_partitions,
            auto_create_topics: s.auto_create_topics,
            cache_bytes_max: s.cache_bytes_max,
            retention_ms: s.retention_ms,
            retention_bytes: s.retention_bytes,
            frame_bytes_max: s.frame_bytes_max,
            queued_request_bytes_max: s.queued_request_bytes_max.map_or(usize::MAX, |b| {
                usize::try_from(b / s.shards.max(1) as u64)
                    .unwrap_or(usize::MAX)
                    .max(1)
            }),
            config_describe: s.config_describe,
            topic_changes: futures_util::lock::Mutex::new(()),
            // A node of a cluster never builds partitions from its own
            // recovery: what it found would only hold its objects in use.
            recovered: Mutex::new(if alone {
                recovered
            } else {
                Recovered::default()
            }),
            shard_refs: (0..s.shards).map(|_| Mutex::default()).collect(),
            refs_blocked: std::sync::atomic::AtomicU64::new(0),
            retention_check_ms: s.retention_check_ms,
            // A shard reports its references once per retention period, and
            // the node publishes them once per period: references up to
            // two periods old must count as fresh (half the age).
            object_delete_age_ms: s.object_delete_age_ms.max(4 * s.retention_check_ms),
            compaction_interval_ms: s.compaction_interval_ms,
            compaction_bytes_min: s.compaction_bytes_min,
            acceptor: s.acceptor,
            group_config: s.group_config,
            groups_snapshot: Mutex::new(s.groups_snapshot),
            blocked: Mutex::new(
                s.blocked
                    .into_iter()
                    .map(|(k, v)| (k, (v, std::time::Instant::now())))
                    .collect(),
            ),
        }
    }

    /// Marks a partition as not rebuildable: `objects` are the unread
    /// objects its history may be in.
    pub fn block_partition(&self, key: (Arc<str>, i32), objects: Vec<String>) {
        self.blocked
            .lock()
            .insert(key, (objects, std::time::Instant::now()));
    }

    /// Forgets a partition's block (it was rebuilt).
    pub fn unblock_partition(&self, key: &(Arc<str>, i32)) {
        self.blocked.lock().remove(key);
    }

    /// If the partition is blocked: how long ago it was found so.
    pub fn blocked_for(&self, key: &(Arc<str>, i32)) -> Option<std::time::Duration> {
        self.blocked.lock().get(key).map(|(_, at)| at.elapsed())
    }

    /// How many partitions are blocked (`ferry_partitions_blocked`).
    pub fn blocked_count(&self) -> usize {
        self.blocked.lock().len()
    }

    /// Adopts the cluster's topic table if the coordinator has a newer one
    /// than this node applied. Cheap when nothing changed (one atomic load).
    pub fn sync_topics(&self) {
        let generation = self.cluster.topics_generation();
        if self
            .topics_generation_seen
            .load(std::sync::atomic::Ordering::Acquire)
            == generation
        {
            return;
        }
        let mut seen = self.topics_seen.lock();
        self.topics_generation_seen
            .store(generation, std::sync::atomic::Ordering::Release);
        if seen.0 == generation {
            return;
        }
        let (version, data) = self.cluster.topics();
        seen.0 = generation;
        if version <= seen.1 {
            return;
        }
        let Some(data) = data else { return };
        match crate::cluster::topics::TopicTable::decode(&data) {
            Ok(table) => {
                self.topics.replace(table);
                seen.1 = version;
            }
            Err(e) => {
                tracing::error!(error = %e, version, "the cluster's topic table does not decode")
            }
        }
    }

    /// The cluster's security metadata (SCRAM credentials), current with
    /// the coordinator: read again only when its generation moved. A
    /// document that does not decode is logged and the last good one kept.
    pub fn security(&self) -> Arc<crate::security::SecurityDoc> {
        self.sync_security();
        self.security.load_full()
    }

    /// The ACL authorizer, current with the coordinator; `None` when ACLs
    /// are off. Lock-free unless the document changed.
    pub fn authorizer(
        &self,
    ) -> Option<arc_swap::Guard<Arc<Option<crate::security::acl::Authorizer>>>> {
        if !self.acls_enabled {
            return None;
        }
        self.sync_security();
        Some(self.authorizer.load())
    }

    fn sync_security(&self) {
        use std::sync::atomic::Ordering;
        let generation = self.cluster.doc_generation(crate::cluster::Doc::Security);
        if self.security_generation_seen.load(Ordering::Acquire) == generation {
            return;
        }
        let mut seen = self.security_seen.lock();
        if *seen == generation {
            return;
        }
        *seen = generation;
        let (version, data) = self.cluster.doc(crate::cluster::Doc::Security);
        let doc = match data.map(|d| crate::security::SecurityDoc::decode(&d)) {
            None => crate::security::SecurityDoc::default(),
            Some(Ok(doc)) => doc,
            Some(Err(e)) => {
                tracing::error!(error = %e, version, "the cluster's security document does not decode; keeping the last one");
                self.security_generation_seen
                    .store(generation, Ordering::Release);
                return;
            }
        };
        if self.acls_enabled {
            self.authorizer
                .store(Arc::new(Some(crate::security::acl::Authorizer::new(
                    &doc.acls,
                    &self.super_users,
                    self.allow_if_no_acl,
                ))));
        }
        self.security.store(Arc::new(doc));
        self.security_generation_seen
            .store(generation, Ordering::Release);
    }

    /// The version of the cluster's topic table this node holds.
    pub fn topics_version(&self) -> u64 {
        self.topics_seen.lock().1
    }

    /// Records that this node stored the cluster's table at `version`.
    pub fn topics_stored(&self, version: u64) {
        let mut seen = self.topics_seen.lock();
        seen.1 = seen.1.max(version);
    }

    /// The committed-offsets snapshot found at start-up; handed out once.
    pub fn take_groups_snapshot(&self) -> Option<bytes::Bytes> {
        self.groups_snapshot.lock().take()
    }

    /// What recovery found for a partition; handed out once, to its owner
    /// `shard`, whose references take its objects over at once (before they
    /// leave the map, so that a reader of both never misses them).
    pub fn take_recovered(
        &self,
        key: &(Arc<str>, i32),
        shard: usize,
    ) -> Vec<(LogBatch, RecoveredProducer)> {
        let mut map = self.recovered.lock();
        if let (Some(batches), Some(refs)) = (map.get(key), self.shard_refs.get(shard)) {
            let mut refs = refs.lock();
            for l in batches.iter().filter_map(|(b, _)| b.location.as_ref()) {
                refs.refs.note(l);
            }
        }
        map.remove(key).unwrap_or_default()
    }

    /// Notes the objects that recovered partitions no shard has taken yet
    /// read from.
    pub fn recovered_refs(&self, refs: &mut crate::storage::refs::Refs) {
        for (b, _) in self.recovered.lock().values().flatten() {
            if let Some(l) = &b.location {
                refs.note(l);
            }
        }
        // A blocked partition's unread objects stay, and so does every
        // object after them: deleting them would hide the loss.
        for (objects, _) in self.blocked.lock().values() {
            for key in objects {
                refs.note_key(key);
            }
        }
    }
}

/// A node's producer ids: its node id in the top 15 bits (below the sign),
/// then, in 48 bits, its start time in seconds shifted left by 17 bits plus
/// a counter. Two nodes never hand out the same id; one node's ids stay
/// unique across restarts as long as the clock does not run backwards and
/// fewer than 131,072 ids are handed out per second of uptime.
pub struct ProducerIds {
    prefix: i64,
    next: std::sync::atomic::AtomicI64,
}

const PRODUCER_ID_LOW_BITS: u32 = 48;

impl ProducerIds {
    pub fn new(node_id: i32, start_secs: u64) -> ProducerIds {
        let low = (1i64 << PRODUCER_ID_LOW_BITS) - 1;
        ProducerIds {
            prefix: (i64::from(node_id) & 0x7fff) << PRODUCER_ID_LOW_BITS,
            next: std::sync::atomic::AtomicI64::new(((start_secs as i64) << 17) & low),
        }
    }

    pub fn next(&self) -> i64 {
        let low = (1i64 << PRODUCER_ID_LOW_BITS) - 1;
        self.prefix | (self.next.fetch_add(1, std::sync::atomic::Ordering::AcqRel) & low)
    }
}
