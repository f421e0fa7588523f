//! Cluster membership, partition leadership and per-zone proxies.
//!
//! A [`View`] is an immutable snapshot of the live nodes (from the
//! coordinator) with the revision it was taken at. Everything a request
//! needs to know about the cluster is a plain function of a view:
//!
//! - [`View::leader`]: the node that leads a partition. Partitions are
//!   spread evenly over zones, then over the nodes of each zone (rule below).
//! - [`View::proxy`]: the node of a zone that stands in for a leader of
//!   another zone, by rendezvous hashing.
//! - [`View::route`]: the leader a client of a given zone is shown.
//! - [`View::leader_epoch`]: the epoch clients see and that fences the past.
//!
//! A [`Coordinator`] publishes views, keeps this node's lease, says when the
//! node is fenced, and holds the cluster-wide `automq.zone.cidr.blocks`.
//! [`LocalCoordinator`] is the in-process one (`ferry dev`, a single node);
//! [`crate::cluster::etcd::EtcdCoordinator`] is the one for a cluster of processes.
//! A coordinator publishes its view in an `ArcSwap`
//! ([`Coordinator::published`]); a shard reads it through a [`ViewCache`]
//! (an `arc_swap::Cache`: one pointer compare while the view stays, no lock
//! shared across cores). [`Coordinator::generation`] moves on every change,
//! for what must notice that a change happened (leadership, groups).
//!
//! # The leadership rule
//!
//! Let `zones` be the zones that have at least one live node, sorted by
//! name, `nz` their count, `h = crc32c(topic)` and `h2 = mix(h)` a second,
//! independent-looking hash of the topic, and `s = h + partition` (as u64).
//! Then the partition's zone is `zones[s mod nz]`, and its leader, among that
//! zone's members sorted by node id (`m` of them), is
//! `members[(s / nz + h2) mod m]`.
//!
//! Consecutive partitions of a topic walk over the zones in turn, and the
//! partitions that land in one zone walk over its nodes in turn. So `n`
//! partitions give each zone `n / nz` of them (±1) and each node of a zone
//! its share of those (±1): with 3 zones of 2 nodes, 12 partitions lead 2
//! per node, for every topic. The topic hashes only choose where each
//! topic's walk starts, so that partition 0 of every topic does not land on
//! the same node.
//!
//! When a node leaves, its zone keeps its partitions as long as the zone has
//! a node left (the zone list does not change). The partitions of that zone
//! are then spread again over its remaining nodes: with two nodes, all of
//! them go to the other one; with more, some partitions of the remaining
//! nodes move between them too (`mod m` changes), which keeps the spread even
//! at the price of moving more than the departed node's share. Losing the
//! last node of a zone changes `nz`, and so the zone of most partitions: the
//! spread over the remaining zones stays even, at the price of moving most
//! leaders. A rule with both perfect evenness and minimal movement needs a
//! stored assignment; this one needs only the live members.
//!
//! # Proxies
//!
//! The proxy of leader `L` in zone `Z` is the member `M` of `Z` with the
//! highest `weight(L.node_id, M.node_id)` (rendezvous, or highest random
//! weight, hashing; ties, which need a 64-bit collision, go to the lower
//! node id). Adding a node to `Z` moves only the leaders whose new highest
//! weight is the new node's (about `1/(m+1)` of them); removing a node moves
//! only the leaders it was proxy for. The weights are a fixed mixing
//! function of the two ids, so every node computes the same proxies.
//!
//! # Epochs
//!
//! The leader epoch of every partition is the view's revision (the
//! coordinator's revision of the latest change to the member set), bounded
//! to `i32`. It moves on every membership change for every partition, so
//! clients refresh more often than strictly needed, but it never goes back
//! on a node, and a node that lost its lease and came back is seen at a
//! higher revision, so anything it did under the old one carries a lower
//! epoch. Past `i32::MAX` (two billion coordinator writes) the epoch would
//! stop increasing: [`View::try_leader_epoch`] reports that as an error and
//! [`View::leader_epoch`] saturates.

pub mod etcd;
pub mod etcd_api;
pub mod rpc;
pub mod topics;
pub mod zone;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::cluster::zone::{is_zone_name, ZoneResolver, ZoneTable};
use crate::config::ConfigError;

/// The cluster-wide documents a coordinator keeps, each versioned and
/// changed by compare and set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Doc {
    /// The topic table (an encoded [`topics::TopicTable`]).
    Topics,
    /// SCRAM credentials and ACLs (an encoded
    /// [`crate::security::SecurityDoc`]).
    Security,
}

impl Doc {
    pub const ALL: [Doc; 2] = [Doc::Topics, Doc::Security];

    /// Its name under `meta/` (etcd) and in the bucket's metadata.
    pub fn name(self) -> &'static str {
        match self {
            Doc::Topics => "topics",
            Doc::Security => "security",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One live node, as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub node_id: i32,
    /// Its `broker.rack`.
    pub zone: String,
    /// Its advertised inter-broker listener: where other nodes call it.
    pub host: String,
    pub port: u16,
    /// Its advertised listeners by name; empty for a member that
    /// advertises only `host:port` (which then serves every listener).
    pub endpoints: Vec<Endpoint>,
    /// The principal it authenticates as on the inter-broker listener
    /// (`User:ANONYMOUS` where that listener does not authenticate).
    pub principal: String,
}

/// An advertised listener of a member.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
}

impl Member {
    pub fn new(node_id: i32, zone: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Member {
            node_id,
            zone: zone.into(),
            host: host.into(),
            port,
            endpoints: Vec::new(),
            principal: crate::security::Principal::anonymous().to_string(),
        }
    }

    /// Where a client of `listener` reaches this member: `None` if it
    /// does not serve that listener.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if self.endpoints.is_empty() {
            return Some((&self.host, self.port));
        }
        self.endpoints
            .iter()
            .find(|e| e.listener == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

/// A zone and its members (indices into `View::members`, in node id order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ZoneMembers {
    name: String,
    members: Vec<usize>,
}

/// An immutable snapshot of the live members. Build it with [`View::new`],
/// which sorts the members by node id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    revision: u64,
    members: Vec<Member>,
    /// Sorted by zone name.
    zones: Vec<ZoneMembers>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "view revision {revision} does not fit a Kafka leader epoch (at most {max}): \
         leader epochs can no longer increase",
        max = i32::MAX
    )]
    EpochOverflow { revision: u64 },
}

impl View {
    /// A view of `members` at `revision`. Members are sorted by node id; of
    /// two with the same node id, the first given is kept.
    pub fn new(revision: u64, members: impl IntoIterator<Item = Member>) -> View {
        let mut members: Vec<Member> = members.into_iter().collect();
        members.sort_by_key(|m| m.node_id); // stable: the first given stays first
        members.dedup_by_key(|m| m.node_id);
        let mut by_zone: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            by_zone.entry(m.zone.as_str()).or_default().push(i);
        }
        let zones = by_zone
            .into_iter()
            .map(|(name, members)| ZoneMembers {
                name: name.to_owned(),
                members,
            })
            .collect();
        View {
            revision,
            members,
            zones,
        }
    }

    /// No members, revision 0.
    pub fn empty() -> View {
        View::default()
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The members, sorted by node id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member(&self, node_id: i32) -> Option<&Member> {
        self.members
            .binary_search_by_key(&node_id, |m| m.node_id)
            .ok()
            .map(|i| &self.members[i])
    }

    /// The zones with at least one member, sorted.
    pub fn zones(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.name.as_str())
    }

    pub fn has_zone(&self, zone: &str) -> bool {
        self.zone_index(zone).is_some()
    }

    /// The members of `zone`, by node id.
    pub fn zone_members<'a>(&'a self, zone: &str) -> impl Iterator<Item = &'a Member> + 'a {
        let found = self.zone_index(zone).map(|z| &self.zones[z].members);
        found
            .into_iter()
            .flat_map(move |ix| ix.iter().map(move |&i| &self.members[i]))
    }

    fn zone_index(&self, zone: &str) -> Option<usize> {
        self.zones
            .binary_search_by(|z| z.name.as_str().cmp(zone))
            .ok()
    }

    /// The node that leads `topic`'s `partition` (rule in the module doc);
    /// `None` for an empty view or a negative partition.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<&Member> {
        let partition = u64::try_from(partition).ok()?;
        let nz = self.zones.len() as u64;
        if nz == 0 {
            return None;
        }
        let h = u64::from(crc32c::crc32c(topic.as_bytes()));
        let h2 = mix64(h ^ 0x5851_f42d_4c95_7f2d) >> 32;
        let s = h + partition;
        let zone = &self.zones[(s % nz) as usize];
        let m = zone.members.len() as u64;
        let i = ((s / nz) % m + h2 % m) % m;
        Some(&self.members[zone.members[i as usize]])
    }

    /// The member of `zone` that stands in for `leader` (rendezvous hashing
    /// over that zone's members). `leader` itself when it is in `zone`;
    /// `None` when `zone` has no member.
    pub fn proxy<'a>(&'a self, leader: &'a Member, zone: &str) -> Option<&'a Member> {
        if leader.zone == zone {
            return Some(leader);
        }
        self.zone_members(zone).max_by(|a, b| {
            let wa = proxy_weight(leader.node_id, a.node_id);
            let wb = proxy_weight(leader.node_id, b.node_id);
            // On a tie the lower node id wins: it compares as greater.
            wa.cmp(&wb).then(b.node_id.cmp(&a.node_id))
        })
    }

    /// The leader a client of `client_zone` is shown for `topic`'s
    /// `partition`: the true leader when the client's zone is unknown
    /// (`None`), is the leader's, or has no live member; otherwise the
    /// leader's proxy in the client's zone.
    pub fn route(&self, topic: &str, partition: i32, client_zone: Option<&str>) -> Option<&Member> {
        let leader = self.leader(topic, partition)?;
        match client_zone {
            Some(zone) if zone != leader.zone => self.proxy(leader, zone).or(Some(leader)),
            _ => Some(leader),
        }
    }

    /// The leader epoch of every partition in this view: its revision (see
    /// the module doc), or an error past `i32::MAX`.
    pub fn try_leader_epoch(&self) -> Result<i32, ClusterError> {
        i32::try_from(self.revision).map_err(|_| ClusterError::EpochOverflow {
            revision: self.revision,
        })
    }

    /// The leader epoch of `topic`'s `partition`: [`View::try_leader_epoch`],
    /// saturated at `i32::MAX`. The same for every partition today; the
    /// arguments leave room for per-partition epochs.
    pub fn leader_epoch(&self, _topic: &str, _partition: i32) -> i32 {
        self.try_leader_epoch().unwrap_or(i32::MAX)
    }
}

/// A 64-bit mixing function (splitmix64's finalizer): a bijection whose
/// output bits each depend on every input bit.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Rendezvous weight of `member` as proxy for `leader`.
fn proxy_weight(leader: i32, member: i32) -> u64 {
    mix64((u64::from(leader as u32) << 32) | u64::from(member as u32))
}

/// Errors of a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("node.id {node_id} is already registered by another live process")]
    DuplicateNode { node_id: i32 },
    #[error("invalid member: {0}")]
    InvalidMember(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("node {node_id} has left the cluster")]
    Left { node_id: i32 },
    #[error(transparent)]
    Etcd(#[from] crate::cluster::etcd::EtcdError),
}

/// A future that any executor can await (glommio or tokio): coordinator
/// calls that need the network return one.
pub type CoordinatorFuture<T> = Pin<Box<dyn Future<Output = Result<T, CoordinatorError>> + Send>>;

/// What a node needs from the coordinator. Every method but the two that
/// return a [`CoordinatorFuture`] is cheap and never blocks on the network.
pub trait Coordinator: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> i32;

    /// Where the current view is published.
    fn published(&self) -> &Arc<ArcSwap<View>>;

    /// The current view.
    fn view(&self) -> Arc<View> {
        self.published().load_full()
    }

    /// Moves on every view change (after the view is published).
    fn generation(&self) -> u64;

    /// True once this node's lease is lost (or not renewed in time, or the
    /// node left). A fenced node must stop acknowledging. It stays true
    /// until the node registers again with a new lease, which moves
    /// [`session`](Self::session) and the view's revision.
    fn fenced(&self) -> bool;

    /// Moves each time this node (re)registers with a new lease; starts at 1.
    /// Whatever a shard did under an older session was done by a node that
    /// may have been fenced since.
    fn session(&self) -> u64;

    /// The cluster-wide `automq.zone.cidr.blocks` value (canonical form;
    /// empty when unset).
    fn zone_cidrs(&self) -> String;

    /// Moves on every change of [`zone_cidrs`](Self::zone_cidrs).
    fn zone_cidrs_generation(&self) -> u64;

    /// Checks and stores a new `automq.zone.cidr.blocks` value cluster-wide.
    /// Every node's [`zone_cidrs_generation`](Self::zone_cidrs_generation)
    /// moves once it sees the value.
    fn set_zone_cidrs(&self, text: &str) -> CoordinatorFuture<()>;

    /// Leaves the cluster: the member disappears from every view and this
    /// handle is fenced for good.
    fn leave(&self) -> CoordinatorFuture<()>;

    /// Whether this is the etcd coordinator (whose values etcd keeps), not
    /// an in-process one.
    fn is_etcd(&self) -> bool {
        false
    }

    /// The cluster's topic table (an encoded `TopicTable`) and its version
    /// (0 and `None`: never written).
    fn topics(&self) -> (u64, Option<bytes::Bytes>) {
        self.doc(Doc::Topics)
    }

    /// Moves on every change of [`topics`](Self::topics).
    fn topics_generation(&self) -> u64 {
        self.doc_generation(Doc::Topics)
    }

    /// Stores a new topic table if the stored one is still at `expected`
    /// (compare and set). Answers `Ok(Ok(new version))`, or `Ok(Err(current
    /// version))` when another node changed it first: read it and try again.
    fn put_topics(&self, expected: u64, data: bytes::Bytes) -> CoordinatorFuture<Result<u64, u64>> {
        self.put_doc(Doc::Topics, expected, data)
    }

    /// A cluster-wide document and its version (0: never stored).
    fn doc(&self, doc: Doc) -> (u64, Option<bytes::Bytes>);

    /// Moves on every change of [`doc`](Self::doc)`(doc)`.
    fn doc_generation(&self, doc: Doc) -> u64;

    /// Stores a new value of `doc` if the stored one is still at
    /// `expected` (compare and set): `Ok(Ok(new version))`, or
    /// `Ok(Err(current version))` when another node changed it first.
    fn put_doc(
        &self,
        doc: Doc,
        expected: u64,
        data: bytes::Bytes,
    ) -> CoordinatorFuture<Result<u64, u64>>;

    /// Whether `node_id` led the partition in every view published after
    /// generation `since` (up to the current one). False when the views in
    /// between are not all known: a leader that held the partition at
    /// `since` keeps its log only if no other node can have led it since,
    /// however briefly.
    fn led_throughout(&self, topic: &str, partition: i32, node_id: i32, since: u64) -> bool;

    /// The views published from generation `since` on (the one current at
    /// `since` included), oldest first; `None` when they are not all known.
    fn views_since(&self, since: u64) -> Option<Vec<Arc<View>>>;
}

/// The views a coordinator published, by generation, the most recent
/// [`VIEW_HISTORY_MAX`]; with the generation from which the record is
/// complete (a resynchronisation that may have missed views starts it
/// again).
#[derive(Debug)]
pub struct ViewHistory {
    views: std::collections::VecDeque<(u64, Arc<View>)>,
    complete_from: u64,
}

/// Views a coordinator remembers for [`Coordinator::led_throughout`].
pub const VIEW_HISTORY_MAX: usize = 256;

impl ViewHistory {
    /// A history that starts at generation `generation`, with `view`.
    pub fn new(generation: u64, view: Arc<View>) -> ViewHistory {
        let mut views = std::collections::VecDeque::new();
        views.push_back((generation, view));
        ViewHistory {
            views,
            complete_from: generation,
        }
    }

    /// Records `view`, published at `generation`; `gap`: views before it
    /// may have been missed.
    pub fn push(&mut self, generation: u64, view: Arc<View>, gap: bool) {
        if gap {
            self.views.clear();
            self.complete_from = generation;
        }
        self.views.push_back((generation, view));
        while self.views.len() > VIEW_HISTORY_MAX {
            self.views.pop_front();
            self.complete_from = self.views.front().map_or(generation, |v| v.0);
        }
    }

    /// See [`Coordinator::views_since`].
    pub fn views_since(&self, since: u64) -> Option<Vec<Arc<View>>> {
        if since < self.complete_from {
            return None;
        }
        // The view current at `since`: the last one published at or before.
        let first = self.views.iter().rposition(|(g, _)| *g <= since)?;
        Some(
            self.views
                .iter()
                .skip(first)
                .map(|(_, v)| v.clone())
                .collect(),
        )
    }

    /// See [`Coordinator::led_throughout`].
    pub fn led_throughout(&self, topic: &str, partition: i32, node_id: i32, since: u64) -> bool {
        if since < self.complete_from {
            return false;
        }
        self.views.iter().filter(|(g, _)| *g > since).all(|(_, v)| {
            v.leader(topic, partition)
                .is_none_or(|m| m.node_id == node_id)
        })
    }
}

/// A shard's copy of the coordinator's view: re-read only when another was
/// published (one pointer compare otherwise).
pub struct ViewCache {
    coordinator: Arc<dyn Coordinator>,
    view: arc_swap::Cache<Arc<ArcSwap<View>>, Arc<View>>,
}

impl ViewCache {
    pub fn new(coordinator: Arc<dyn Coordinator>) -> ViewCache {
        let view = arc_swap::Cache::new(coordinator.published().clone());
        ViewCache { coordinator, view }
    }

    /// The current view.
    pub fn get(&mut self) -> &Arc<View> {
        self.view.load()
    }

    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coordinator
    }
}

/// Copies the coordinator's `automq.zone.cidr.blocks` into `resolver` when
/// its generation moved past `*seen`. Returns whether the table changed. A
/// value that does not parse (written by a newer or broken node) is logged
/// and the old table kept.
pub fn follow_zone_cidrs(
    coordinator: &dyn Coordinator,
    resolver: &ZoneResolver,
    seen: &mut u64,
) -> bool {
    let generation = coordinator.zone_cidrs_generation();
    if generation == *seen {
        return false;
    }
    *seen = generation;
    match ZoneTable::parse(&coordinator.zone_cidrs()) {
        Ok(table) => resolver.set_table(table),
        Err(e) => {
            tracing::error!(error = %e, "ignoring the coordinator's zone CIDR blocks");
            false
        }
    }
}

/// Checks a member before it registers.
pub(crate) fn check_member(member: &Member) -> Result<(), CoordinatorError> {
    if member.node_id < 0 {
        return Err(CoordinatorError::InvalidMember(format!(
            "node.id {} is negative",
            member.node_id
        )));
    }
    if !is_zone_name(&member.zone) {
        return Err(CoordinatorError::InvalidMember(format!(
            "node {}: zone {:?} is not a zone name (letters, digits, '-', '_', '.')",
            member.node_id, member.zone
        )));
    }
    if member.host.is_empty() || member.host.chars().any(char::is_whitespace) {
        return Err(CoordinatorError::InvalidMember(format!(
            "node {}: host {:?} is empty or has blanks",
            member.node_id, member.host
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The in-process coordinator
// ---------------------------------------------------------------------------

/// The in-process coordinator, for `ferry dev` and a single `ferry node`
/// without etcd. Several nodes of one process register with the same
/// `Arc<LocalCoordinator>`, each getting a [`LocalHandle`]. Nobody is ever
/// fenced, except by [`LocalCoordinator::fence`] (for tests).
#[derive(Debug)]
pub struct LocalCoordinator {
    state: Mutex<LocalState>,
    history: Mutex<ViewHistory>,
    /// The current view, changed under `state`'s lock.
    view: Arc<ArcSwap<View>>,
    generation: AtomicU64,
    cidr_generation: AtomicU64,
    doc_generations: [AtomicU64; 2],
}

#[derive(Debug)]
struct LocalState {
    revision: u64,
    members: BTreeMap<i32, LocalMember>,
    cidrs: String,
    docs: [(u64, Option<bytes::Bytes>); 2],
}

#[derive(Debug)]
struct LocalMember {
    member: Member,
    /// Shared with the member's handle.
    status: Arc<LocalStatus>,
    /// Out of the view (fenced), but its node id still taken by the handle.
    fenced: bool,
}

#[derive(Debug)]
struct LocalStatus {
    fenced: AtomicBool,
    session: AtomicU64,
}

impl LocalCoordinator {
    pub fn new() -> Arc<LocalCoordinator> {
        Arc::new(LocalCoordinator {
            state: Mutex::new(LocalState {
                revision: 0,
                members: BTreeMap::new(),
                cidrs: String::new(),
                docs: [(0, None), (0, None)],
            }),
            history: Mutex::new(ViewHistory::new(1, Arc::new(View::empty()))),
            view: Arc::new(ArcSwap::from_pointee(View::empty())),
            generation: AtomicU64::new(1),
            cidr_generation: AtomicU64::new(1),
            doc_generations: [AtomicU64::new(1), AtomicU64::new(1)],
        })
    }

    /// A coordinator whose `automq.zone.cidr.blocks` starts at `text`
    /// (e.g. the node's configured value).
    pub fn with_zone_cidrs(text: &str) -> Result<Arc<LocalCoordinator>, ConfigError> {
        let table = ZoneTable::parse(text)?;
        let coordinator = LocalCoordinator::new();
        coordinator.state.lock().cidrs = table.text().to_owned();
        Ok(coordinator)
    }

    /// Registers a node. Refused if its node id is already registered (and
    /// not left).
    pub fn register(self: &Arc<Self>, member: Member) -> Result<LocalHandle, CoordinatorError> {
        check_member(&member)?;
        let node_id = member.node_id;
        let status = Arc::new(LocalStatus {
            fenced: AtomicBool::new(false),
            session: AtomicU64::new(1),
        });
        {
            let mut state = self.state.lock();
            if state.members.contains_key(&node_id) {
                return Err(CoordinatorError::DuplicateNode { node_id });
            }
            state.members.insert(
                node_id,
                LocalMember {
                    member,
                    status: status.clone(),
                    fenced: false,
                },
            );
            self.publish(&mut state);
        }
        tracing::info!(node_id, "registered with the in-process coordinator");
        Ok(LocalHandle {
            coordinator: self.clone(),
            node_id,
            status,
            left: AtomicBool::new(false),
        })
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// For tests: fences `node_id` as if its lease had expired. It leaves
    /// the view and its handle reports fenced until [`unfence`](Self::unfence).
    /// Returns whether the node was registered and not already fenced.
    pub fn fence(&self, node_id: i32) -> bool {
        let mut state = self.state.lock();
        let Some(m) = state.members.get_mut(&node_id) else {
            return false;
        };
        if m.fenced {
            return false;
        }
        m.fenced = true;
        m.status.fenced.store(true, Ordering::Release);
        self.publish(&mut state);
        true
    }

    /// For tests: a fenced node registers again, as with a new lease: it is
    /// back in the view at a new revision, its session moves and it is no
    /// longer fenced. Returns whether the node was fenced.
    pub fn unfence(&self, node_id: i32) -> bool {
        let mut state = self.state.lock();
        let Some(m) = state.members.get_mut(&node_id) else {
            return false;
        };
        if !m.fenced {
            return false;
        }
        m.fenced = false;
        m.status.session.fetch_add(1, Ordering::AcqRel);
        m.status.fenced.store(false, Ordering::Release);
        self.publish(&mut state);
        true
    }

    /// Rebuilds the view at the next revision and moves the generation.
    fn publish(&self, state: &mut LocalState) {
        state.revision += 1;
        let members = state
            .members
            .values()
            .filter(|m| !m.fenced)
            .map(|m| m.member.clone());
        let view = Arc::new(View::new(state.revision, members));
        self.view.store(view.clone());
        // Recorded before the generation moves: a reader that sees the new
        // generation finds its view in the history.
        let generation = self.generation.load(Ordering::Acquire) + 1;
        self.history.lock().push(generation, view, false);
        self.generation.store(generation, Ordering::Release);
    }

    fn remove(&self, node_id: i32) {
        let mut state = self.state.lock();
        if let Some(m) = state.members.remove(&node_id) {
            m.status.fenced.store(true, Ordering::Release);
            if !m.fenced {
                self.publish(&mut state);
            }
            tracing::info!(node_id, "left the in-process coordinator");
        }
    }
}

/// A node's registration with a [`LocalCoordinator`]. Dropping it leaves.
#[derive(Debug)]
pub struct LocalHandle {
    coordinator: Arc<LocalCoordinator>,
    node_id: i32,
    status: Arc<LocalStatus>,
    left: AtomicBool,
}

impl LocalHandle {
    pub fn coordinator(&self) -> &Arc<LocalCoordinator> {
        &self.coordinator
    }

    /// Leaves at once (what [`Coordinator::leave`] does, without a future).
    pub fn leave_now(&self) {
        if !self.left.swap(true, Ordering::AcqRel) {
            self.coordinator.remove(self.node_id);
        }
    }
}

impl Drop for LocalHandle {
    fn drop(&mut self) {
        self.leave_now();
    }
}

impl Coordinator for LocalHandle {
    fn node_id(&self) -> i32 {
        self.node_id
    }

    fn published(&self) -> &Arc<ArcSwap<View>> {
        &self.coordinator.view
    }

    fn generation(&self) -> u64 {
        self.coordinator.generation.load(Ordering::Acquire)
    }

    fn fenced(&self) -> bool {
        self.left.load(Ordering::Acquire) || self.status.fenced.load(Ordering::Acquire)
    }

    fn session(&self) -> u64 {
        self.status.session.load(Ordering::Acquire)
    }

    fn zone_cidrs(&self) -> String {
        self.coordinator.state.lock().cidrs.clone()
    }

    fn zone_cidrs_generation(&self) -> u64 {
        self.coordinator.cidr_generation.load(Ordering::Acquire)
    }

    fn set_zone_cidrs(&self, text: &str) -> CoordinatorFuture<()> {
        let result = ZoneTable::parse(text)
            .map_err(CoordinatorError::from)
            .map(|table| {
                let mut state = self.coordinator.state.lock();
                if state.cidrs != table.text() {
                    state.cidrs = table.text().to_owned();
                    self.coordinator
                        .cidr_generation
                        .fetch_add(1, Ordering::AcqRel);
                }
            });
        Box::pin(std::future::ready(result))
    }

    fn leave(&self) -> CoordinatorFuture<()> {
        self.leave_now();
        Box::pin(std::future::ready(Ok(())))
    }

    fn doc(&self, doc: Doc) -> (u64, Option<bytes::Bytes>) {
        self.coordinator.state.lock().docs[doc.index()].clone()
    }

    fn doc_generation(&self, doc: Doc) -> u64 {
        self.coordinator.doc_generations[doc.index()].load(Ordering::Acquire)
    }

    fn put_doc(
        &self,
        doc: Doc,
        expected: u64,
        data: bytes::Bytes,
    ) -> CoordinatorFuture<Result<u64, u64>> {
        let mut state = self.coordinator.state.lock();
        let slot = &mut state.docs[doc.index()];
        let result = if slot.0 == expected {
            *slot = (expected + 1, Some(data));
            self.coordinator.doc_generations[doc.index()].fetch_add(1, Ordering::AcqRel);
            Ok(expected + 1)
        } else {
            Err(slot.0)
        };
        Box::pin(std::future::ready(Ok(result)))
    }

    fn led_throughout(&self, topic: &str, partition: i32, node_id: i32, since: u64) -> bool {
        self.coordinator
            .history
            .lock()
            .led_throughout(topic, partition, node_id, since)
    }

    fn views_since(&self, since: u64) -> Option<Vec<Arc<View>>> {
        self.coordinator.history.lock().views_since(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn m(node_id: i32, zone: &str) -> Member {
        Member::new(node_id, zone, format!("n{node_id}"), 9092)
    }

    #[test]
    fn a_history_knows_who_led_in_between_and_admits_a_gap() {
        let one = Arc::new(View::new(1, [m(1, "a")]));
        let two = Arc::new(View::new(2, [m(1, "a"), m(2, "a")]));
        // Some partition node 2 leads when it is there.
        let p = (0..64)
            .find(|&p| two.leader("t", p).is_some_and(|l| l.node_id == 2))
            .unwrap();
        let mut h = ViewHistory::new(5, one.clone());
        assert!(h.led_throughout("t", p, 1, 5), "no view since");
        assert_eq!(
            h.views_since(5).map(|v| v.len()),
            Some(1),
            "the one current"
        );
        h.push(6, two, false);
        h.push(7, one.clone(), false);
        assert!(!h.led_throughout("t", p, 1, 5), "node 2 led it at 6");
        assert!(h.led_throughout("t", p, 1, 6), "only node 1 since 6");
        let revisions = |since| {
            h.views_since(since)
                .map(|v| v.iter().map(|v| v.revision()).collect::<Vec<_>>())
        };
        assert_eq!(revisions(6), Some(vec![2, 1]));
        assert_eq!(revisions(5), Some(vec![1, 2, 1]));
        assert_eq!(revisions(4), None);
        assert!(!h.led_throughout("t", p, 1, 4), "before the record");
        // Views may have been missed: nothing before is vouched for.
        h.push(8, one.clone(), true);
        assert!(!h.led_throughout("t", p, 1, 7));
        assert!(h.led_throughout("t", p, 1, 8));
        // The oldest views go: what they covered is no longer known.
        for g in 9..9 + VIEW_HISTORY_MAX as u64 {
            h.push(g, one.clone(), false);
        }
        assert!(!h.led_throughout("t", p, 1, 8));
        assert!(h.led_throughout("t", p, 1, 9 + VIEW_HISTORY_MAX as u64 - 1));
    }

    /// 3 zones x 2 nodes: a1=1, a2=2, b1=3, b2=4, c1=5, c2=6.
    fn six() -> Vec<Member> {
        vec![
            m(1, "a"),
            m(2, "a"),
            m(3, "b"),
            m(4, "b"),
            m(5, "c"),
            m(6, "c"),
        ]
    }

    fn topics() -> Vec<String> {
        let mut t: Vec<String> = (0..40).map(|i| format!("topic-{i}")).collect();
        t.extend(["", "a", "orders", "__consumer_offsets", "ünïcode"].map(String::from));
        t
    }

    fn counts(view: &View, topic: &str, partitions: i32) -> HashMap<i32, usize> {
        let mut c = HashMap::new();
        for p in 0..partitions {
            let l = view.leader(topic, p).expect("a leader");
            *c.entry(l.node_id).or_default() += 1;
        }
        c
    }

    #[test]
    fn view_sorts_and_dedups() {
        let v = View::new(7, vec![m(3, "b"), m(1, "a"), m(2, "a"), m(1, "z")]);
        assert_eq!(v.revision(), 7);
        let ids: Vec<i32> = v.members().iter().map(|m| m.node_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(v.member(1).map(|m| m.zone.as_str()), Some("a"));
        assert_eq!(v.member(4), None);
        assert_eq!(v.zones().collect::<Vec<_>>(), ["a", "b"]);
        let a: Vec<i32> = v.zone_members("a").map(|m| m.node_id).collect();
        assert_eq!(a, [1, 2]);
        assert_eq!(v.zone_members("q").count(), 0);
        assert!(View::empty().leader("t", 0).is_none());
        assert!(v.leader("t", -1).is_none());
    }

    #[test]
    fn leadership_is_even_per_topic() {
        let view = View::new(1, six());
        for topic in topics() {
            let c = counts(&view, &topic, 12);
            for node in 1..=6 {
                assert_eq!(c.get(&node), Some(&2), "topic {topic:?}: {c:?}");
            }
            // Any count: within one of even per node.
            for n in [1, 5, 7, 13, 100] {
                let c = counts(&view, &topic, n);
                let (lo, hi) = (n as usize / 6, (n as usize).div_ceil(6));
                for node in 1..=6 {
                    let got = c.get(&node).copied().unwrap_or(0);
                    assert!(lo <= got && got <= hi, "{topic:?} {n}: {c:?}");
                }
            }
        }
        // Uneven zones: each zone gets a third, split among its nodes.
        let view = View::new(
            1,
            vec![
                m(1, "a"),
                m(2, "b"),
                m(3, "b"),
                m(4, "c"),
                m(5, "c"),
                m(6, "c"),
            ],
        );
        for topic in topics() {
            let c = counts(&view, &topic, 18);
            assert_eq!(c[&1], 6, "{topic:?} {c:?}");
            assert_eq!((c[&2], c[&3]), (3, 3), "{topic:?} {c:?}");
            assert_eq!((c[&4], c[&5], c[&6]), (2, 2, 2), "{topic:?} {c:?}");
        }
    }

    #[test]
    fn leadership_over_topics_is_spread() {
        // Partition 0 of many topics does not all land on one node.
        let view = View::new(1, six());
        let mut c: HashMap<i32, usize> = HashMap::new();
        for i in 0..600 {
            let l = view.leader(&format!("t{i}"), 0).expect("leader");
            *c.entry(l.node_id).or_default() += 1;
        }
        for node in 1..=6 {
            let got = c.get(&node).copied().unwrap_or(0);
            assert!((60..=140).contains(&got), "{c:?}");
        }
    }

    #[test]
    fn a_departed_nodes_partitions_stay_in_its_zone() {
        let before = View::new(1, six());
        for gone in 1..=6 {
            let after = View::new(2, six().into_iter().filter(|m| m.node_id != gone));
            let zone = before.member(gone).expect("member").zone.clone();
            let survivor = after.zone_members(&zone).next().expect("one left").node_id;
            for topic in topics() {
                for p in 0..12 {
                    let old = before.leader(&topic, p).expect("leader");
                    let new = after.leader(&topic, p).expect("leader");
                    if old.node_id == gone {
                        assert_eq!(new.node_id, survivor, "{topic:?}/{p}");
                    } else {
                        // Two nodes per zone: nothing else moves.
                        assert_eq!(new.node_id, old.node_id, "{topic:?}/{p}");
                    }
                }
                let c = counts(&after, &topic, 12);
                assert_eq!(c[&survivor], 4, "{topic:?} {c:?}");
            }
        }
    }

    #[test]
    fn losing_a_zone_keeps_the_spread_even() {
        let after = View::new(2, six().into_iter().filter(|m| m.zone != "c"));
        for topic in topics() {
            let c = counts(&after, &topic, 12);
            assert_eq!(c.len(), 4);
            assert!(c.values().all(|&n| n == 3), "{topic:?} {c:?}");
        }
    }

    #[test]
    fn proxy_is_in_the_zone_and_same_zone_is_the_leader() {
        let view = View::new(1, six());
        for leader in view.members() {
            for zone in ["a", "b", "c"] {
                let p = view.proxy(leader, zone).expect("zone has members");
                assert_eq!(p.zone, zone);
                if zone == leader.zone {
                    assert_eq!(p, leader);
                }
            }
            assert!(view.proxy(leader, "nowhere").is_none());
        }
    }

    /// Leaders 1000..1000+n in zone "x"; zone "z" members given.
    fn proxies(zone_members: &[i32], leaders: std::ops::Range<i32>) -> HashMap<i32, i32> {
        let mut members: Vec<Member> = leaders.clone().map(|i| m(i, "x")).collect();
        members.extend(zone_members.iter().map(|&i| m(i, "z")));
        let view = View::new(1, members);
        leaders
            .map(|l| {
                let leader = view.member(l).expect("leader");
                (l, view.proxy(leader, "z").expect("proxy").node_id)
            })
            .collect()
    }

    #[test]
    fn proxies_are_stable_when_nodes_come_and_go() {
        let leaders = 1000..1600;
        let before = proxies(&[1, 2, 3], leaders.clone());
        // Adding node 4 moves only leaders whose proxy becomes 4.
        let added = proxies(&[1, 2, 3, 4], leaders.clone());
        let mut moved = 0;
        for l in leaders.clone() {
            if added[&l] != before[&l] {
                assert_eq!(added[&l], 4, "leader {l}");
                moved += 1;
            }
        }
        // About a quarter.
        assert!((90..=210).contains(&moved), "moved {moved}");
        // Removing a node moves only the leaders it was proxy for.
        let removed = proxies(&[1, 3], leaders.clone());
        for l in leaders.clone() {
            if before[&l] != 2 {
                assert_eq!(removed[&l], before[&l], "leader {l}");
            } else {
                assert_ne!(removed[&l], 2);
            }
        }
    }

    #[test]
    fn proxies_are_roughly_even() {
        for zone in [vec![1, 2], vec![1, 2, 3], vec![10, 20, 30, 40, 50]] {
            let n = 3000;
            let got = proxies(&zone, 1000..1000 + n);
            let mut c: HashMap<i32, i32> = HashMap::new();
            for p in got.values() {
                *c.entry(*p).or_default() += 1;
            }
            let even = n / zone.len() as i32;
            for node in &zone {
                let k = c.get(node).copied().unwrap_or(0);
                assert!(
                    (even * 85 / 100..=even * 115 / 100).contains(&k),
                    "{zone:?}: {c:?}"
                );
            }
        }
    }

    #[test]
    fn route_by_client_zone() {
        let view = View::new(1, six());
        for topic in topics() {
            for p in 0..12 {
                let leader = view.leader(&topic, p).expect("leader");
                assert_eq!(view.route(&topic, p, None), Some(leader));
                assert_eq!(view.route(&topic, p, Some("elsewhere")), Some(leader));
                assert_eq!(view.route(&topic, p, Some(&leader.zone)), Some(leader));
                for zone in ["a", "b", "c"] {
                    let r = view.route(&topic, p, Some(zone)).expect("routed");
                    assert_eq!(r.zone, zone);
                    assert_eq!(Some(r), view.proxy(leader, zone));
                }
            }
        }
        assert_eq!(View::empty().route("t", 0, Some("a")), None);
    }

    #[test]
    fn epochs() {
        assert_eq!(View::new(42, six()).leader_epoch("t", 0), 42);
        let big = View::new(i32::MAX as u64 + 1, six());
        assert!(big.try_leader_epoch().is_err());
        assert_eq!(big.leader_epoch("t", 0), i32::MAX);
    }

    #[test]
    fn local_coordinator_membership() {
        let local = LocalCoordinator::new();
        let a = local.register(m(1, "a")).expect("registers");
        let g = a.generation();
        let b = local.register(m(2, "b")).expect("registers");
        assert!(a.generation() > g);
        let va = a.view();
        assert_eq!(va.members().len(), 2);
        assert_eq!(va, b.view());
        assert!(matches!(
            local.register(m(1, "c")),
            Err(CoordinatorError::DuplicateNode { node_id: 1 })
        ));
        assert!(matches!(
            local.register(m(-1, "c")),
            Err(CoordinatorError::InvalidMember(_))
        ));
        assert!(matches!(
            local.register(m(9, "bad zone")),
            Err(CoordinatorError::InvalidMember(_))
        ));
        let mut cache = ViewCache::new(Arc::new(local.register(m(3, "c")).expect("registers")));
        assert_eq!(cache.get().members().len(), 3);
        let rev = cache.get().revision();
        drop(b);
        let v = cache.get().clone();
        assert!(v.revision() > rev);
        assert_eq!(
            v.members().iter().map(|m| m.node_id).collect::<Vec<_>>(),
            [1, 3]
        );
        futures_lite::future::block_on(a.leave()).expect("leaves");
        assert!(a.fenced());
        assert_eq!(cache.get().members().len(), 1);
        // The id is free again.
        let again = local.register(m(1, "a")).expect("registers again");
        assert!(!again.fenced());
    }

    #[test]
    fn local_coordinator_fencing() {
        let local = LocalCoordinator::new();
        let a = local.register(m(1, "a")).expect("registers");
        let _b = local.register(m(2, "b")).expect("registers");
        assert!(!a.fenced());
        assert_eq!(a.session(), 1);
        let rev = a.view().revision();
        assert!(local.fence(1));
        assert!(!local.fence(1));
        assert!(a.fenced());
        assert!(a.view().member(1).is_none());
        assert!(a.view().revision() > rev);
        // Still taken while fenced.
        assert!(local.register(m(1, "a")).is_err());
        assert!(local.unfence(1));
        assert!(!a.fenced());
        assert_eq!(a.session(), 2);
        assert!(a.view().member(1).is_some());
    }

    #[test]
    fn local_zone_cidrs_reach_every_handle() {
        let local = LocalCoordinator::with_zone_cidrs("a@10.0.0.0/8").expect("valid");
        let a = local.register(m(1, "a")).expect("registers");
        let b = local.register(m(2, "b")).expect("registers");
        let resolver = ZoneResolver::default();
        let mut seen = 0;
        assert!(follow_zone_cidrs(&b, &resolver, &mut seen));
        assert!(!follow_zone_cidrs(&b, &resolver, &mut seen));
        assert_eq!(resolver.table().text(), "a@10.0.0.0/8");
        futures_lite::future::block_on(a.set_zone_cidrs("b@10.0.0.0/8")).expect("valid");
        assert_eq!(b.zone_cidrs(), "b@10.0.0.0/8");
        assert!(follow_zone_cidrs(&b, &resolver, &mut seen));
        let ip = "10.1.1.1".parse().expect("ip");
        assert_eq!(resolver.table().zone_of(ip), Some("b"));
        let bad = futures_lite::future::block_on(a.set_zone_cidrs("b@10.0.0.0"));
        assert!(matches!(bad, Err(CoordinatorError::Config(_))));
        assert_eq!(b.zone_cidrs(), "b@10.0.0.0/8");
    }
}
