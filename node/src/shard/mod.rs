//! A shard: one glommio executor, the partitions it owns, its log cache, and
//! its end of the lock-free queues to every other shard.
//!
//! A connection lives on whichever shard accepted it. For each partition a
//! request names, the connection's shard calls [`Shard::produce`],
//! [`Shard::fetch`] or [`Shard::list_offset`]: a direct call when it owns the
//! partition, otherwise a message through glommio's channel mesh (SPSC ring
//! buffers, no locks) to the owner, which answers through a oneshot. Batch
//! bytes travel as `Bytes` views of the request frame, never copied.

pub mod deletion;
pub mod partition;

use crate::cluster::topics::LocalTopics;
use crate::group::coordinator::{Coordinator, GroupRequest};
use crate::node::NodeCtx;
use crate::shard::partition::{record_set, Appended, BatchMeta, LogBatch, PartitionLog, Payload};
use crate::storage::durable::{AppendEntry, DurableError, Location, ProducerFields};
use bytes::Bytes;
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::messages::ResponseBody;
use ferry_protocol::wire::RecordSet;
use futures_channel::oneshot;
use futures_util::future::LocalBoxFuture;
use glommio::channels::channel_mesh::Senders;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a partition maps to its owning shard: stable for a given shard count.
pub fn owner(topic: &str, partition: i32, shards: usize) -> usize {
    let h = crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), &partition.to_be_bytes());
    (h as usize) % shards.max(1)
}

/// Work one shard asks of another.
#[derive(Debug)]
pub enum ShardMsg {
    Produce {
        topic: Arc<str>,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
        reply: oneshot::Sender<ProduceResult>,
    },
    Fetch {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        reply: oneshot::Sender<FetchResult>,
    },
    /// Answer once the partition has data at `offset` or beyond.
    Wait {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        reply: oneshot::Sender<()>,
    },
    ListOffset {
        topic: Arc<str>,
        partition: i32,
        timestamp: i64,
        reply: oneshot::Sender<ListOffsetResult>,
    },
    /// For the group coordinator, which lives on shard 0.
    Group {
        req: Box<GroupRequest>,
        reply: oneshot::Sender<Option<ResponseBody>>,
    },
    /// A connection the acceptor (shard 0, `ferry.accept=acceptor`) dealt
    /// to this shard.
    Accepted(glommio::net::AcceptedTcpStream),
    /// A read replica asks where a partition's durable batches are.
    ReplicaRead {
        req: crate::cluster::rpc::ReplicaRead,
        reply: oneshot::Sender<crate::cluster::rpc::ReplicaReadResponse>,
    },
    /// A proxy's batches for a partition this shard owns (handoff commit).
    Handoff {
        part: crate::cluster::rpc::HandoffPartition,
        reply: oneshot::Sender<ProduceResult>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResult {
    pub error: ErrorCode,
    pub base_offset: i64,
    pub log_start: i64,
    pub message: Option<String>,
}

impl ProduceResult {
    fn err(error: ErrorCode, message: impl Into<String>) -> ProduceResult {
        ProduceResult {
            error,
            base_offset: -1,
            log_start: -1,
            message: Some(message.into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchResult {
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub log_start: i64,
    pub records: RecordSet,
}

impl FetchResult {
    fn err(error: ErrorCode) -> FetchResult {
        FetchResult {
            error,
            high_watermark: -1,
            log_start: -1,
            records: RecordSet::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetResult {
    pub error: ErrorCode,
    pub offset: i64,
    pub timestamp: i64,
}

type Key = (Arc<str>, i32);

/// The shard that runs the group coordinator.
pub const COORDINATOR_SHARD: usize = 0;

/// The shard's log cache accounting, and the shard's read arena.
///
/// `ferry.cache.bytes.max` bounds what the shard is charged: every arena
/// chunk that at least one of its cached batches lies in and that no
/// lower-numbered shard's cache also holds, at its full length (so a chunk
/// held by several shards is charged once, node-wide), plus the length of
/// cached bytes that are not in the arena (batches read back from the
/// bucket). Chunks are shared with other batches and with requests in
/// flight, so this is an attribution of the memory held, not an exact share:
/// see `crate::arena`. `bytes` counts the batches' own bytes. `order` is the
/// order batches came in, so the oldest durable ones are dropped first.
#[derive(Debug, Default)]
struct Cache {
    bytes: usize,
    /// A chunk (its [`CacheEntry::chunk`] key) to (cached batches in it,
    /// chunk length, its holders: `None` where this shard charges itself in
    /// full). What the shard is charged is `NodeMetrics::cache_pinned_bytes`
    /// (other shards move charges in and out of it, see
    /// [`crate::arena::ChunkHolders`]).
    chunks: HashMap<usize, (usize, usize, Option<Arc<crate::arena::ChunkHolders>>)>,
    order: VecDeque<CacheEntry>,
    arena: Option<crate::arena::Arena>,
}

/// One cached batch, as the cache is charged for it.
#[derive(Debug)]
struct CacheEntry {
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

/// What the broker layer above gives every shard: how to serve a client
/// connection the shard accepted, and a client request another node
/// forwarded to it. The shard sits below the broker and reaches it only
/// through these.
#[derive(Clone, Copy)]
pub struct BrokerHooks {
    pub serve: fn(Rc<Shard>, glommio::net::TcpStream) -> LocalBoxFuture<'static, ()>,
    pub forwarded: fn(
        Rc<Shard>,
        crate::cluster::rpc::Forward,
    ) -> LocalBoxFuture<'static, crate::cluster::rpc::ForwardResponse>,
}

pub struct Shard {
    pub id: usize,
    hooks: BrokerHooks,
    pub ctx: Arc<NodeCtx>,
    pub topics: LocalTopics,
    partitions: RefCell<HashMap<Key, Rc<RefCell<PartitionLog>>>>,
    waiters: RefCell<HashMap<Key, Vec<oneshot::Sender<()>>>>,
    cache: RefCell<Cache>,
    senders: Senders<ShardMsg>,
    /// The group coordinator, on shard 0 only.
    coordinator: Option<Rc<Coordinator>>,
    /// This shard's copies of the cluster view and the zone table.
    view: RefCell<crate::cluster::ViewCache>,
    zone_cache: RefCell<crate::cluster::zone::ZoneCache>,
    cidrs_seen: std::cell::Cell<u64>,
    /// Calls to other nodes (handoff commits, replica reads, forwards).
    pub rpc: crate::cluster::rpc::RpcClient,
    /// Batches this shard serves as a read replica, read from the bucket.
    replica_cache: RefCell<ReplicaCache>,
    /// Where the durable batches of partitions read here as a replica are,
    /// as the leaders said.
    replica_index: RefCell<HashMap<Key, ReplicaIndex>>,
    /// Which partitions this node leads, as last acted on.
    leadership: RefCell<Leadership>,
    /// This shard itself, for tasks it spawns.
    me: RefCell<std::rc::Weak<Shard>>,
    /// Handoff commits waiting to go, by leader.
    outbox: RefCell<HashMap<i32, Vec<QueuedCommit>>>,
    /// A WAL seal is scheduled ([`Shard::flush_soon`]).
    flush_scheduled: std::cell::Cell<bool>,
    /// The view generation the group coordinator last took groups over at.
    groups_seen: std::cell::Cell<u64>,
}

type QueuedCommit = (
    crate::cluster::rpc::HandoffPartition,
    Duration,
    oneshot::Sender<Result<crate::cluster::rpc::BatchResult, crate::cluster::rpc::RpcError>>,
);

/// How long a handoff commit waits for the other batches of its handoff
/// object before it goes.
const COMMIT_GATHER: Duration = Duration::from_millis(1);

struct Leadership {
    /// The node runs alone by construction ([`NodeCtx::alone`]): start-up
    /// recovery is the partitions' whole history. Otherwise (a cluster,
    /// even one that has only this node now) every partition this node
    /// comes to lead is loaded from every node's objects.
    solo: bool,
    /// The view generation last acted on.
    generation: u64,
    /// The coordinator session (registration) last acted on.
    session: u64,
    /// Partitions queued or being loaded, with their topic ids.
    /// Partitions to load: topic id, and whether a loader has taken it.
    loading: HashMap<Key, ([u8; 16], bool)>,
    /// Loader tasks running (at most [`LOADERS_MAX`]).
    loaders: usize,
}

impl Shard {
    pub fn new(
        id: usize,
        ctx: Arc<NodeCtx>,
        senders: Senders<ShardMsg>,
        hooks: BrokerHooks,
    ) -> Shard {
        let coordinator = (id == COORDINATOR_SHARD).then(|| {
            let c = Rc::new(Coordinator::new(
                ctx.group_config.clone(),
                ctx.take_groups_snapshot(),
                ctx.durable.clone(),
                crate::group::coordinator::groups_meta_name(ctx.node_id),
            ));
            c.start_timer();
            c
        });
        Shard {
            hooks,
            view: RefCell::new(crate::cluster::ViewCache::new(ctx.cluster.clone())),
            rpc: crate::cluster::rpc::RpcClient::new(ctx.traffic.clone(), ctx.frame_bytes_max),
            replica_cache: RefCell::new(ReplicaCache::new(ctx.cache_bytes_max / 4)),
            replica_index: RefCell::new(HashMap::new()),
            leadership: RefCell::new(Leadership {
                solo: ctx.alone,
                generation: 0,
                session: ctx.cluster.session(),
                loading: HashMap::new(),
                loaders: 0,
            }),
            me: RefCell::new(std::rc::Weak::new()),
            outbox: RefCell::new(HashMap::new()),
            flush_scheduled: std::cell::Cell::new(false),
            groups_seen: std::cell::Cell::new(ctx.cluster.generation()),
            zone_cache: RefCell::new(crate::cluster::zone::ZoneCache::new(ctx.zones.clone())),
            cidrs_seen: std::cell::Cell::new(0),
            coordinator,
            id,
            topics: LocalTopics::new(ctx.topics.clone()),
            ctx,
            partitions: RefCell::new(HashMap::new()),
            waiters: RefCell::new(HashMap::new()),
            cache: RefCell::new(Cache::default()),
            senders,
        }
    }

    /// Lets the shard spawn tasks that hold it.
    pub fn set_self(self: &Rc<Self>, me: &Rc<Shard>) {
        *self.me.borrow_mut() = Rc::downgrade(me);
    }

    /// The cluster view (one atomic load unless it changed).
    pub fn view(&self) -> Arc<crate::cluster::View> {
        self.view.borrow_mut().get().clone()
    }

    /// The zone table, following the cluster's `automq.zone.cidr.blocks`.
    pub fn zone_table(&self) -> Arc<crate::cluster::zone::ZoneTable> {
        let mut seen = self.cidrs_seen.get();
        crate::cluster::follow_zone_cidrs(&*self.ctx.cluster, &self.ctx.zones, &mut seen);
        self.cidrs_seen.set(seen);
        self.zone_cache.borrow_mut().table().clone()
    }

    /// The zone of a client: its `client.id` tag, its address by the CIDR
    /// blocks, or the rack it names (fetches); `None` if unknown.
    pub fn client_zone(
        &self,
        client_id: &str,
        addr: Option<std::net::IpAddr>,
        rack: Option<&str>,
    ) -> Option<String> {
        let table = self.zone_table();
        table
            .resolve(client_id, addr, rack)
            .map(|z| z.zone.to_owned())
    }

    /// Looks at a new connection's client (once per connection): a client
    /// of unknown zone is counted and logged; one of another zone (a
    /// misrouted client: its bytes cross zones) is counted and logged too.
    /// Answers the traffic counters its bytes go to, by its zone.
    pub fn note_client(
        &self,
        client_id: &str,
        addr: Option<std::net::IpAddr>,
    ) -> Arc<crate::cluster::rpc::ZoneTraffic> {
        let several_zones = self.view().zones().nth(1).is_some();
        let zone = self.client_zone(client_id, addr, None);
        match &zone {
            None if several_zones => {
                self.ctx.zones.note_unknown(addr, client_id);
                self.ctx
                    .metrics
                    .unknown_zone_clients
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Some(z) if *z != self.ctx.zone => {
                self.ctx
                    .metrics
                    .misrouted_clients
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(client_id, peer = ?addr, client_zone = %z, zone = %self.ctx.zone,
                    "client of another zone connected here: its bytes cross zones; give it its zone's bootstrap address");
            }
            _ => {}
        }
        self.ctx.traffic.zone(zone.as_deref().unwrap_or("unknown"))
    }

    fn owner_of(&self, topic: &str, partition: i32) -> usize {
        owner(topic, partition, self.ctx.shards)
    }

    /// Serves messages from every other shard until the mesh closes.
    pub fn serve_peers(
        self: &Rc<Self>,
        mut receivers: glommio::channels::channel_mesh::Receivers<ShardMsg>,
    ) {
        for (_, rx) in receivers.streams() {
            let me = self.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    if let Some(d) = me.ctx.metrics.queue_depth.get(me.id) {
                        d.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let me = me.clone();
                    glommio::spawn_local(async move { me.handle(msg).await }).detach();
                }
            })
            .detach();
        }
    }

    async fn handle(self: Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Produce {
                topic,
                partition,
                records,
                acks,
                timeout_ms,
                reply,
            } => {
                let r = self
                    .produce_local(topic, partition, records, acks, timeout_ms)
                    .await;
                let _ = reply.send(r);
            }
            ShardMsg::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                reply,
            } => {
                let r = self.fetch_local(topic, partition, offset, max_bytes).await;
                let _ = reply.send(r);
            }
            ShardMsg::Wait {
                topic,
                partition,
                offset,
                reply,
            } => self.wait_local(topic, partition, offset, reply),
            ShardMsg::ListOffset {
                topic,
                partition,
                timestamp,
                reply,
            } => {
                let _ = reply.send(self.list_offset_local(&topic, partition, timestamp));
            }
            ShardMsg::Group { req, reply } => {
                let _ = reply.send(self.group_local(*req).await);
            }
            ShardMsg::Accepted(stream) => {
                (self.hooks.serve)(self.clone(), stream.bind_to_executor()).await;
            }
            ShardMsg::ReplicaRead { req, reply } => {
                let _ = reply.send(self.replica_entries(&req));
            }
            ShardMsg::Handoff { part, reply } => {
                let _ = reply.send(self.handoff_local(part).await);
            }
        }
    }

    /// Hands an accepted connection to shard `to` (or serves it here).
    pub async fn deal(self: &Rc<Self>, to: usize, stream: glommio::net::AcceptedTcpStream) {
        if to == self.id {
            glommio::spawn_local((self.hooks.serve)(self.clone(), stream.bind_to_executor()))
                .detach();
        } else if !self.send(to, ShardMsg::Accepted(stream)).await {
            // Only when the node is stopping: the connection is dropped.
            tracing::warn!(shard = to, "could not hand a connection over");
        }
    }

    /// Sends to shard `to`; counts the message in `to`'s queue depth until
    /// `to` takes it off the queue.
    async fn send(&self, to: usize, msg: ShardMsg) -> bool {
        let depth = &self.ctx.metrics.queue_depth;
        if let Some(d) = depth.get(to) {
            d.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let ok = self.senders.send_to(to, msg).await.is_ok();
        if !ok {
            if let Some(d) = depth.get(to) {
                d.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        ok
    }

    /// Asks shard `to` for something and waits for the answer; `fail` when
    /// the shard cannot be reached or drops the question.
    async fn ask<T>(
        &self,
        to: usize,
        msg: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
        fail: impl FnOnce() -> T,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        if !self.send(to, msg(tx)).await {
            return fail();
        }
        rx.await.unwrap_or_else(|_| fail())
    }

    /// The partition's log, or `None` (see [`Shard::log_checked`]).
    fn log(&self, topic: &Arc<str>, partition: i32) -> Option<Rc<RefCell<PartitionLog>>> {
        self.log_checked(topic, partition).ok()
    }

    /// The log of a partition this shard owns. While every view since the
    /// node started had this node alone, the log is built on first use from
    /// what start-up recovery found. Otherwise a partition this node has
    /// just come to lead is loaded from every node's objects first (and
    /// its new epoch marked in the WAL): until then the answer is
    /// LEADER_NOT_AVAILABLE, which clients retry.
    fn log_checked(
        &self,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<Rc<RefCell<PartitionLog>>, ErrorCode> {
        // Topics other nodes created: one atomic load when nothing changed.
        self.ctx.sync_topics();
        self.follow_leadership();
        let table = self.topics.get();
        let info = table
            .get(topic)
            .filter(|i| partition >= 0 && partition < i.partitions)
            .ok_or(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)?;
        let key = (topic.clone(), partition);
        let mut parts = self.partitions.borrow_mut();
        // A log of an earlier topic of the same name (deleted, then created
        // again) is dropped: the new topic starts empty.
        if parts
            .get(&key)
            .is_some_and(|l| l.borrow().topic_id != info.id.0)
        {
            parts.remove(&key);
        }
        if let Some(log) = parts.get(&key) {
            return Ok(log.clone());
        }
        let solo = self.leadership.borrow().solo;
        // A partition whose history may be in an unreadable object is not
        // served. A node alone found it so at start-up (the objects are
        // read again at the next start); a node of a cluster tries its
        // takeover again now and then.
        if let Some((_, since)) = self.ctx.blocked_partition(&key) {
            if solo || since < BLOCKED_LOAD_RETRY {
                return Err(ErrorCode::KAFKA_STORAGE_ERROR);
            }
        }
        if solo {
            let mut log = PartitionLog::new(info.name.clone(), info.id.0, partition);
            for (b, producer) in self.ctx.take_recovered(&key, self.id) {
                log.recover(b, producer);
            }
            let log = Rc::new(RefCell::new(log));
            parts.insert(key, log.clone());
            return Ok(log);
        }
        drop(parts);
        self.start_load(key, info.id.0, true);
        Err(ErrorCode::LEADER_NOT_AVAILABLE)
    }

    /// Reports the objects this shard's partitions read from, and whether
    /// it holds every partition it leads (starting to load those it does
    /// not): what the node publishes for object deletion (`crate::storage::refs`).
    fn report_refs(&self, now_ms: i64) {
        self.ctx.sync_topics();
        // The version first: the table read after it is at least as new.
        let topics = self.ctx.topics_version();
        let view = self.ctx.cluster.view();
        let loaded = self.load_what_it_leads(&view);
        let mut refs = crate::storage::refs::Refs::default();
        for p in self.partitions.borrow().values() {
            p.borrow().note_refs(&mut refs);
        }
        if let Some(slot) = self.ctx.shard_refs.get(self.id) {
            *slot.lock() = crate::storage::refs::ShardRefs {
                revision: view.revision(),
                topics,
                loaded,
                at_ms: now_ms,
                refs,
            };
        }
    }

    /// Starts loading every partition of this shard that `view` makes this
    /// node lead and that it does not hold; answers whether it held them
    /// all. A node alone builds partitions from its own recovery on demand
    /// (their objects count as in use meanwhile), so it holds them all.
    fn load_what_it_leads(&self, view: &crate::cluster::View) -> bool {
        if self.leadership.borrow().solo {
            return true;
        }
        if self.ctx.cluster.fenced() {
            return false;
        }
        let table = self.topics.get();
        let mut all = true;
        for info in table.iter() {
            for p in 0..info.partitions {
                if self.owner_of(&info.name, p) != self.id
                    || view
                        .leader(&info.name, p)
                        .is_some_and(|m| m.node_id != self.ctx.node_id)
                {
                    continue;
                }
                let key = (info.name.clone(), p);
                let held = self
                    .partitions
                    .borrow()
                    .get(&key)
                    .is_some_and(|l| l.borrow().topic_id == info.id.0);
                if !held {
                    all = false;
                    self.start_load(key, info.id.0, false);
                }
            }
        }
        all
    }

    /// Acts on a new cluster view: partitions this node no longer leads are
    /// dropped (their waiters woken, to be routed again).
    fn follow_leadership(&self) {
        let generation = self.ctx.cluster.generation();
        let session = self.ctx.cluster.session();
        let fenced = self.ctx.cluster.fenced();
        let mut drop_all = false;
        let since;
        let solo;
        {
            let mut ld = self.leadership.borrow_mut();
            // A node that lost its lease (or registered again since) may
            // have missed views in which another node led its partitions:
            // nothing it holds can be trusted; it loads again what it leads.
            if (fenced || ld.session != session) && !ld.solo {
                drop_all = true;
            }
            ld.session = session;
            if ld.generation == generation && !drop_all {
                return;
            }
            since = ld.generation;
            ld.generation = generation;
            solo = ld.solo;
        }
        // A partition is kept only if this node led it in every view since
        // the last look: another node that led it in between, however
        // briefly, may have written to it.
        let me = self.ctx.node_id;
        let lost: Vec<Key> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, p)| {
                drop_all
                    || !matches!(self.route(t, *p), Route::Local)
                    || !(solo || self.ctx.cluster.led_throughout(t, *p, me, since))
            })
            .cloned()
            .collect();
        for key in lost {
            tracing::info!(topic = &*key.0, partition = key.1, "no longer the leader");
            // Its new leader reads these batches from this node's WAL
            // objects until it has compacted them: its references keep them.
            self.partitions.borrow_mut().remove(&key);
            self.wake(&key);
        }
    }

    /// Queues a partition to be loaded; one task loads what is queued, with
    /// one scan of the bucket per round.
    fn start_load(&self, key: Key, topic_id: [u8; 16], urgent: bool) {
        let mut ld = self.leadership.borrow_mut();
        if ld.loading.contains_key(&key) {
            return;
        }
        ld.loading.insert(key, (topic_id, false));
        // A running loader takes the partition at its next round; one a
        // client waits for does not wait for a round in progress (the
        // retention pass's loads of everything led may be long): a second
        // loader takes it at once.
        if ld.loaders >= 1 && !(urgent && ld.loaders < LOADERS_MAX) {
            return;
        }
        ld.loaders += 1;
        drop(ld);
        let Some(me) = self.me.borrow().upgrade() else {
            self.leadership.borrow_mut().loaders -= 1;
            return;
        };
        glommio::spawn_local(async move {
            // Let a burst of requests queue their partitions first.
            glommio::timer::sleep(Duration::from_millis(5)).await;
            loop {
                let batch: Vec<(Key, [u8; 16])> = {
                    let mut ld = me.leadership.borrow_mut();
                    let batch: Vec<(Key, [u8; 16])> = ld
                        .loading
                        .iter()
                        .filter(|(_, (_, taken))| !taken)
                        .map(|(k, (id, _))| (k.clone(), *id))
                        .collect();
                    if batch.is_empty() {
                        ld.loaders -= 1;
                        return;
                    }
                    for (k, _) in &batch {
                        if let Some(e) = ld.loading.get_mut(k) {
                            e.1 = true;
                        }
                    }
                    batch
                };
                me.load(&batch).await;
                let mut ld = me.leadership.borrow_mut();
                for (k, _) in &batch {
                    ld.loading.remove(k);
                }
            }
        })
        .detach();
    }

    /// Loads partitions this node has come to lead: their history from
    /// every node's objects, then a durable epoch marker, then the log.
    async fn load(self: &Rc<Self>, batch: &[(Key, [u8; 16])]) {
        let started = Instant::now();
        let generation = self.ctx.cluster.generation();
        let view = self.view();
        let want = batch.iter().map(|((_, p), id)| (*id, *p)).collect();
        let loaded = match self.ctx.durable.load_partitions(want).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, partitions = batch.len(), "taking partitions over failed; clients retry");
                glommio::timer::sleep(Duration::from_millis(200)).await;
                return;
            }
            Err(_) => return,
        };
        let mut loaded = loaded;
        // Every partition's log and epoch marker; the markers go to the
        // WAL together (one object), not one round trip each.
        let mut logs = Vec::with_capacity(batch.len());
        let mut markers = Vec::with_capacity(batch.len());
        for ((topic, partition), id) in batch {
            let epoch = view.leader_epoch(topic, *partition);
            let found = loaded.remove(&(*id, *partition)).unwrap_or_default();
            if !found.blocked.is_empty() {
                tracing::error!(topic = &**topic, partition, objects = ?found.blocked,
                    "not taking the partition over: its history may be in an unreadable object; clients get KAFKA_STORAGE_ERROR");
                self.ctx
                    .block_partition((topic.clone(), *partition), found.blocked);
                continue;
            }
            let mut log = PartitionLog::new(topic.clone(), *id, *partition);
            log.leader_epoch = epoch;
            let batches = found.batches.len();
            for (b, producer) in found.batches {
                log.recover(b, producer);
            }
            log.start_at(found.log_end);
            let marker =
                AppendEntry::epoch_marker(topic.clone(), *id, *partition, epoch, log.log_end());
            markers.push(self.ctx.durable.append(marker));
            logs.push((topic.clone(), *partition, epoch, batches, log));
        }
        self.ctx.durable.flush();
        let written = futures_util::future::join_all(markers).await;
        let me = self.ctx.node_id;
        for ((topic, partition, epoch, batches, log), marker) in logs.into_iter().zip(written) {
            if let Err(e) = marker {
                tracing::warn!(topic = &*topic, partition, error = %e, "epoch marker not written; clients retry");
                continue;
            }
            // Still the leader, and in every view since the load began?
            if !matches!(self.route(&topic, partition), Route::Local)
                || !self
                    .ctx
                    .cluster
                    .led_throughout(&topic, partition, me, generation)
            {
                continue;
            }
            tracing::info!(
                topic = &*topic,
                partition,
                epoch,
                batches,
                log_end = log.log_end(),
                load_ms = started.elapsed().as_millis() as u64,
                "leading"
            );
            let key = (topic, partition);
            self.ctx.unblock_partition(&key);
            self.partitions
                .borrow_mut()
                .insert(key.clone(), Rc::new(RefCell::new(log)));
            self.wake(&key);
        }
    }

    /// Drops a deleted topic's partitions from this shard.
    pub fn forget_topic(&self, topic: &str) {
        let mut unreferenced = Vec::new();
        self.partitions.borrow_mut().retain(|(t, _), p| {
            let keep = t.as_ref() != topic;
            if !keep {
                unreferenced.extend(p.borrow().compacted_objects());
            }
            keep
        });
        self.delete_objects(unreferenced);
    }

    /// Deletes compacted objects nothing reads from any more, in the
    /// background; a failure is logged (the object is then only garbage).
    fn delete_objects(&self, keys: Vec<Arc<str>>) {
        for key in keys {
            let rx = self.ctx.durable.delete_object(key.clone());
            glommio::spawn_local(async move {
                match rx.await {
                    Ok(Ok(())) => tracing::debug!(object_key = &*key, "deleted compacted object"),
                    Ok(Err(e)) => {
                        tracing::warn!(object_key = &*key, error = %e, "deleting compacted object failed")
                    }
                    Err(_) => {}
                }
            })
            .detach();
        }
    }

    /// One compaction pass: each partition's durable batches still in WAL
    /// objects are written into a per-partition object, and the log points
    /// at the copies, so the WAL objects can go. Partitions are done one at
    /// a time, so at most one object's bytes are held. Answers how many
    /// batches moved.
    pub async fn compact(&self) -> usize {
        // Partitions led elsewhere now are not this node's to compact.
        self.follow_leadership();
        let logs: Vec<Rc<RefCell<PartitionLog>>> =
            self.partitions.borrow().values().cloned().collect();
        let mut moved = 0;
        for log in logs {
            match self.compact_partition(&log).await {
                Ok(n) => moved += n,
                Err(e) => {
                    let l = log.borrow();
                    tracing::warn!(topic = &*l.topic, partition = l.partition, error = %e,
                        "compaction failed; the batches stay in the WAL and are tried again");
                }
            }
        }
        moved
    }

    async fn compact_partition(
        &self,
        log: &Rc<RefCell<PartitionLog>>,
    ) -> Result<usize, DurableError> {
        let (plan, topic, topic_id, partition, epoch) = {
            let l = log.borrow();
            let Some(plan) =
                l.compaction_plan(self.ctx.compaction_bytes_min, COMPACTED_OBJECT_BYTES_MAX)
            else {
                return Ok(0);
            };
            (
                plan,
                l.topic.clone(),
                l.topic_id,
                l.partition,
                l.leader_epoch,
            )
        };
        let mut entries = Vec::with_capacity(plan.batches.len());
        // Batches no longer cached are read back together.
        let missing: Vec<&LogBatch> = plan.batches.iter().filter(|b| b.data.is_none()).collect();
        let mut read = self.read_back_many(&missing).await.into_iter();
        for b in &plan.batches {
            let data = match &b.data {
                Some(d) => d.clone(),
                None => read
                    .next()
                    .unwrap_or_else(|| Err(DurableError::Failed("no read for the batch".into())))?,
            };
            entries.push(AppendEntry {
                topic: topic.clone(),
                topic_id,
                partition,
                base_offset: b.base_offset,
                last_offset: b.last_offset,
                max_timestamp: b.max_timestamp,
                record_count: data[1]
                    .get(41..45)
                    .map_or((b.last_offset - b.base_offset + 1) as i32, |c| {
                        i32::from_be_bytes([c[0], c[1], c[2], c[3]])
                    }),
                producer: producer_fields(&data),
                segments: data,
                // This leader's epoch: the batches are its log now, and an
                // older label would let a newer epoch's marker fence them.
                leader_epoch: epoch,
                external: None,
            });
        }
        let locations = self
            .ctx
            .durable
            .compact(entries)
            .await
            .map_err(|_| DurableError::Closed)??;
        let new_key = locations.first().map(|l| l.key.clone());
        let moves: Vec<(i64, Arc<str>, Location)> = plan
            .batches
            .iter()
            .zip(locations)
            .filter_map(|(b, loc)| Some((b.base_offset, b.location.as_ref()?.key.clone(), loc)))
            .collect();
        let key = (topic.clone(), partition);
        let current = self.partitions.borrow().get(&key).cloned();
        let still_ours = current.is_some_and(|c| Rc::ptr_eq(&c, log));
        let mut l = log.borrow_mut();
        let moved = if still_ours { l.relocate(&moves) } else { 0 };
        let mut unreferenced = Vec::new();
        if let Some(merged) = plan.merged.filter(|k| !l.references(k)) {
            unreferenced.push(merged);
        }
        if let Some(k) = new_key.filter(|k| !still_ours || !l.references(k)) {
            // The partition went (deleted topic) or retention took every
            // batch meanwhile: the new object is not needed.
            unreferenced.push(k);
        }
        drop(l);
        self.delete_objects(unreferenced);
        Ok(moved)
    }

    /// Where a partition's requests go from this node.
    pub fn route(&self, topic: &str, partition: i32) -> Route {
        if self.ctx.cluster.fenced() {
            return Route::Fenced;
        }
        // Borrowed, not cloned: this runs for every partition of every
        // produce and fetch.
        let mut cache = self.view.borrow_mut();
        let view = cache.get();
        match view.leader(topic, partition) {
            None => Route::Local,
            Some(m) if m.node_id == self.ctx.node_id => Route::Local,
            Some(m) if m.zone != self.ctx.zone => Route::Proxy(m.clone()),
            Some(m) => Route::SameZone(m.node_id),
        }
    }

    pub async fn produce(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> ProduceResult {
        match self.route(&topic, partition) {
            Route::Local => {}
            Route::Proxy(leader) => {
                return self
                    .handoff_produce(leader, topic, partition, records, timeout_ms)
                    .await
            }
            Route::Fenced => {
                return ProduceResult::err(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    "this node lost its lease in the cluster",
                )
            }
            Route::SameZone(node) => {
                return ProduceResult::err(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    format!("node {node}, in this zone, leads this partition"),
                )
            }
        }
        let to = self.owner_of(&topic, partition);
        if to == self.id {
            return self
                .produce_local(topic, partition, records, acks, timeout_ms)
                .await;
        }
        let msg = |reply| ShardMsg::Produce {
            topic,
            partition,
            records,
            acks,
            timeout_ms,
            reply,
        };
        self.ask(to, msg, || {
            ProduceResult::err(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                "owning shard unavailable",
            )
        })
        .await
    }

    /// A read replica's fetch: the leader says where the durable batches
    /// from `offset` are (metadata only crosses zones), and their bytes come
    /// from the bucket.
    async fn replica_fetch(
        self: &Rc<Self>,
        leader: crate::cluster::Member,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult {
        let key: Key = (topic.clone(), partition);
        // What the leader already said about these offsets is reused: only
        // offsets past what this replica knows cost an RPC.
        let known = self
            .replica_index
            .borrow()
            .get(&key)
            .and_then(|idx| idx.serve(offset, max_bytes));
        let (hw, log_start, entries) = match known {
            Some(k) => k,
            None => {
                let req = crate::cluster::rpc::ReplicaRead {
                    topic: topic.clone(),
                    partition,
                    from_offset: offset,
                    max_bytes: i32::try_from(max_bytes).unwrap_or(i32::MAX),
                    max_wait_ms: 0,
                };
                let resp = match self
                    .rpc
                    .replica_read(&leader, &req, Duration::from_secs(10))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return FetchResult::err(e.error_code()),
                };
                if resp.error_code != 0 {
                    let mut r = FetchResult::err(ErrorCode(resp.error_code));
                    r.high_watermark = resp.high_watermark;
                    r.log_start = resp.log_start;
                    return r;
                }
                self.replica_index
                    .borrow_mut()
                    .entry(key.clone())
                    .or_default()
                    .learn(&resp);
                (resp.high_watermark, resp.log_start, resp.entries)
            }
        };
        let mut result = FetchResult {
            error: ErrorCode::NONE,
            high_watermark: hw,
            log_start,
            records: RecordSet::default(),
        };
        let batches: Vec<LogBatch> = entries
            .into_iter()
            .map(|e| LogBatch {
                base_offset: e.base_offset,
                last_offset: e.last_offset,
                max_timestamp: e.max_timestamp,
                len: e.len,
                data: None,
                location: Some(Location {
                    key: e.key,
                    seq: 0,
                    node: 0,
                    position: e.position,
                    len: e.len,
                    crc: e.crc,
                }),
                handoff: None,
            })
            .collect();
        // From this shard's replica cache, or from the bucket (adjacent
        // batches with one ranged GET, all at once), then cached.
        let cached: Vec<Option<[Bytes; 2]>> = {
            let cache = self.replica_cache.borrow();
            batches
                .iter()
                .map(|b| {
                    cache
                        .get(&(topic.clone(), partition, b.base_offset))
                        .cloned()
                })
                .collect()
        };
        let missing: Vec<&LogBatch> = batches
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(b, _)| b)
            .collect();
        let mut read = self.read_back_many(&missing).await.into_iter();
        let mut segments = Vec::with_capacity(batches.len() * 2);
        for (b, hit) in batches.iter().zip(cached) {
            let got = match hit {
                Some(d) => {
                    self.ctx.metrics.cache_hit();
                    Ok(d)
                }
                None => {
                    self.ctx.metrics.cache_miss();
                    let r = read.next().unwrap_or_else(|| {
                        Err(DurableError::Failed("no read for the batch".into()))
                    });
                    if let Ok(d) = &r {
                        self.replica_cache.borrow_mut().insert(
                            (topic.clone(), partition, b.base_offset),
                            d.clone(),
                            d[0].len() + d[1].len(),
                        );
                    }
                    r
                }
            };
            match got {
                Ok([h, body]) => {
                    segments.push(h);
                    segments.push(body);
                }
                // What was read so far is answered; the client asks again.
                Err(e) if !segments.is_empty() => {
                    tracing::debug!(error = %e, "replica read stopped early");
                    break;
                }
                Err(e) => {
                    // The batch may have moved (compacted, its WAL object
                    // deleted): forget what the leader said; the client's
                    // retry asks it again.
                    tracing::info!(topic = &*topic, partition, error = %e, "replica read failed");
                    self.replica_index.borrow_mut().remove(&key);
                    return FetchResult::err(ErrorCode::KAFKA_STORAGE_ERROR);
                }
            }
        }
        result.records = RecordSet::from_segments(segments);
        result
    }

    /// The leader's side of a replica read: waits (at most `max_wait_ms`)
    /// until there is data past `from_offset`, then answers where the
    /// durable batches from there are.
    pub async fn replica_read_served(
        self: &Rc<Self>,
        req: crate::cluster::rpc::ReplicaRead,
    ) -> crate::cluster::rpc::ReplicaReadResponse {
        use crate::cluster::rpc::ReplicaReadResponse;
        if !matches!(self.route(&req.topic, req.partition), Route::Local) {
            return ReplicaReadResponse::error(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        if req.max_wait_ms > 0 {
            let wait = Duration::from_millis(req.max_wait_ms.clamp(0, 30_000) as u64);
            let (me, topic) = (self.clone(), req.topic.clone());
            let _ = glommio::timer::timeout(wait, async move {
                me.wait(topic, req.partition, req.from_offset).await;
                Ok(())
            })
            .await;
        }
        let to = self.owner_of(&req.topic, req.partition);
        if to == self.id {
            return self.replica_entries(&req);
        }
        self.ask(
            to,
            |reply| ShardMsg::ReplicaRead { req, reply },
            || ReplicaReadResponse::error(ErrorCode::NOT_LEADER_OR_FOLLOWER),
        )
        .await
    }

    fn replica_entries(
        &self,
        req: &crate::cluster::rpc::ReplicaRead,
    ) -> crate::cluster::rpc::ReplicaReadResponse {
        use crate::cluster::rpc::{ReplicaEntry, ReplicaReadResponse};
        let log = match self.log_checked(&req.topic, req.partition) {
            Ok(l) => l,
            Err(code) => return ReplicaReadResponse::error(code),
        };
        let l = log.borrow();
        let (start, hw) = (l.log_start(), l.high_watermark());
        let mut resp = ReplicaReadResponse {
            error_code: 0,
            high_watermark: hw,
            log_start: start,
            leader_epoch: l.leader_epoch,
            entries: Vec::new(),
        };
        if req.from_offset < start || req.from_offset > hw {
            resp.error_code = ErrorCode::OFFSET_OUT_OF_RANGE.code();
            return resp;
        }
        if req.max_bytes > 0 {
            resp.entries = l
                .read(req.from_offset, req.max_bytes as usize)
                .into_iter()
                .map_while(|b| {
                    let loc = b.location?;
                    Some(ReplicaEntry {
                        base_offset: b.base_offset,
                        last_offset: b.last_offset,
                        max_timestamp: b.max_timestamp,
                        key: loc.key,
                        position: loc.position,
                        len: loc.len,
                        crc: loc.crc,
                    })
                })
                .collect();
        }
        resp
    }

    /// The proxy's side of a produce for a partition led in another zone:
    /// the batches go into this node's next handoff object, and once it is
    /// in the bucket the leader gets their places and header fields in one
    /// small RPC, assigns offsets and answers; its answer is the producer's.
    async fn handoff_produce(
        self: &Rc<Self>,
        leader: crate::cluster::Member,
        topic: Arc<str>,
        partition: i32,
        records: Bytes,
        timeout_ms: i32,
    ) -> ProduceResult {
        let started = Instant::now();
        let timeout = Duration::from_millis(timeout_ms.clamp(1, 300_000) as u64);
        let table = self.topics.get();
        let Some(info) = table
            .get(&topic)
            .filter(|i| partition >= 0 && partition < i.partitions)
        else {
            return ProduceResult::err(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                "unknown topic or partition",
            );
        };
        let batches = match PartitionLog::check(&records) {
            Ok(b) => b,
            Err(e) => return ProduceResult::err(e.error_code(), e.to_string()),
        };
        if let Err(e) = self.ctx.durable.reserve(records.len()) {
            return ProduceResult::err(ErrorCode::REQUEST_TIMED_OUT, e.to_string());
        }
        // One handoff entry per batch: the writer's CRC32C of each entry is
        // the batch's, which the leader checks when it reads it back.
        let acks: Vec<_> = batches
            .iter()
            .map(|b| {
                let m = BatchMeta::of(b);
                let raw = b.as_bytes().clone();
                self.ctx.durable.handoff_append(AppendEntry {
                    topic: topic.clone(),
                    topic_id: info.id.0,
                    partition,
                    base_offset: 0,
                    last_offset: i64::from(m.last_offset_delta),
                    max_timestamp: m.max_timestamp,
                    record_count: m.records_count,
                    producer: ProducerFields::default(),
                    segments: [raw, Bytes::new()],
                    leader_epoch: 0,
                    external: None,
                })
            })
            .collect();
        let locations = match glommio::timer::timeout(timeout, async {
            Ok(futures_util::future::join_all(acks).await)
        })
        .await
        {
            Ok(all) => match all.into_iter().collect::<Result<Vec<_>, _>>() {
                Ok(l) => l,
                Err(e) => return ProduceResult::err(ErrorCode::REQUEST_TIMED_OUT, e.to_string()),
            },
            Err(_) => {
                return ProduceResult::err(
                    ErrorCode::REQUEST_TIMED_OUT,
                    "the handoff object was not durable in time",
                )
            }
        };
        let handoff_batches = batches
            .iter()
            .zip(locations)
            .map(|(b, location)| {
                let m = BatchMeta::of(b);
                crate::cluster::rpc::HandoffBatch {
                    key: location.key,
                    position: location.position,
                    len: location.len,
                    crc: location.crc,
                    record_count: m.records_count,
                    last_offset_delta: m.last_offset_delta,
                    max_timestamp: m.max_timestamp,
                    producer_id: m.producer_id,
                    producer_epoch: m.producer_epoch,
                    base_sequence: m.base_sequence,
                }
            })
            .collect();
        let part = crate::cluster::rpc::HandoffPartition {
            topic,
            topic_id: info.id.0,
            partition,
            batches: handoff_batches,
        };
        let left = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let (tx, rx) = oneshot::channel();
        self.queue_commit(leader.clone(), part, left, tx);
        match rx.await {
            Ok(Ok(r)) if r.error_code == 0 => ProduceResult {
                error: ErrorCode::NONE,
                base_offset: r.base_offset,
                log_start: r.log_start,
                message: None,
            },
            Ok(Ok(r)) => ProduceResult::err(
                ErrorCode(r.error_code),
                format!("leader {} refused the batches", leader.node_id),
            ),
            Ok(Err(e)) => ProduceResult::err(e.error_code(), e.to_string()),
            Err(_) => ProduceResult::err(
                ErrorCode::REQUEST_TIMED_OUT,
                "the handoff commit was dropped",
            ),
        }
    }

    /// Seals the pending WAL object a moment from now: every batch of a
    /// handoff commit is appended by then, so one commit makes one object,
    /// not one per produce request it carries.
    fn flush_soon(&self) {
        if self.flush_scheduled.replace(true) {
            return;
        }
        let Some(me) = self.me.borrow().upgrade() else {
            self.flush_scheduled.set(false);
            self.ctx.durable.flush();
            return;
        };
        glommio::spawn_local(async move {
            glommio::timer::sleep(COMMIT_GATHER).await;
            me.flush_scheduled.set(false);
            me.ctx.durable.flush();
        })
        .detach();
    }

    /// Queues a partition's batches for their leader's next handoff commit.
    /// The batches of one handoff object become durable together, so a
    /// commit sent a moment after the first of them carries them all: one
    /// RPC per leader per handoff object, not one per produce request.
    fn queue_commit(
        &self,
        leader: crate::cluster::Member,
        part: crate::cluster::rpc::HandoffPartition,
        timeout: Duration,
        reply: oneshot::Sender<
            Result<crate::cluster::rpc::BatchResult, crate::cluster::rpc::RpcError>,
        >,
    ) {
        let id = leader.node_id;
        let first = {
            let mut out = self.outbox.borrow_mut();
            let q = out.entry(id).or_default();
            q.push((part, timeout, reply));
            q.len() == 1
        };
        if !first {
            return;
        }
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        glommio::spawn_local(async move {
            glommio::timer::sleep(COMMIT_GATHER).await;
            let queued = me.outbox.borrow_mut().remove(&id).unwrap_or_default();
            if queued.is_empty() {
                return;
            }
            let timeout = queued
                .iter()
                .map(|(_, t, _)| *t)
                .min()
                .unwrap_or(Duration::from_secs(30));
            let mut partitions = Vec::with_capacity(queued.len());
            let mut replies = Vec::with_capacity(queued.len());
            for (p, _, r) in queued {
                partitions.push(p);
                replies.push(r);
            }
            tracing::debug!(leader = id, partitions = partitions.len(), "handoff commit");
            let req = crate::cluster::rpc::HandoffCommit {
                from_node: me.ctx.node_id,
                view_revision: me.view().revision(),
                partitions,
            };
            match me.rpc.handoff_commit(&leader, &req, timeout).await {
                Ok(resp) => {
                    let mut results = resp.partitions.into_iter();
                    for r in replies {
                        let first = results.next().and_then(|p| p.into_iter().next());
                        let _ = r.send(Ok(first.unwrap_or(crate::cluster::rpc::BatchResult {
                            error_code: ErrorCode::UNKNOWN_SERVER_ERROR.code(),
                            base_offset: -1,
                            log_start: -1,
                        })));
                    }
                }
                Err(e) => {
                    for r in replies {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
        })
        .detach();
    }

    /// The leader's side of a handoff commit for one partition: routed to
    /// the owning shard, placed like a produce, and the WAL object holding
    /// the references is sealed at once.
    pub async fn handoff_partition(
        self: &Rc<Self>,
        part: crate::cluster::rpc::HandoffPartition,
    ) -> ProduceResult {
        if !matches!(self.route(&part.topic, part.partition), Route::Local) {
            return ProduceResult::err(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                "this node does not lead the partition",
            );
        }
        let to = self.owner_of(&part.topic, part.partition);
        if to == self.id {
            return self.handoff_local(part).await;
        }
        self.ask(
            to,
            |reply| ShardMsg::Handoff { part, reply },
            || {
                ProduceResult::err(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    "owning shard unavailable",
                )
            },
        )
        .await
    }

    async fn handoff_local(
        self: &Rc<Self>,
        part: crate::cluster::rpc::HandoffPartition,
    ) -> ProduceResult {
        let log = match self.log_checked(&part.topic, part.partition) {
            Ok(l) => l,
            Err(code) => return ProduceResult::err(code, "partition not available here"),
        };
        if log.borrow().topic_id != part.topic_id {
            return ProduceResult::err(
                ErrorCode::UNKNOWN_TOPIC_ID,
                "the topic was deleted and created again",
            );
        }
        let items = part
            .batches
            .iter()
            .map(|b| {
                (
                    BatchMeta {
                        producer_id: b.producer_id,
                        producer_epoch: b.producer_epoch,
                        base_sequence: b.base_sequence,
                        last_offset_delta: b.last_offset_delta,
                        max_timestamp: b.max_timestamp,
                        records_count: b.record_count,
                        len: b.len,
                    },
                    Payload::External(Location {
                        key: b.key.clone(),
                        seq: 0,
                        node: 0,
                        position: b.position,
                        len: b.len,
                        crc: b.crc,
                    }),
                )
            })
            .collect();
        self.append_batches(log, part.topic, part.partition, items, -1, 30_000, true)
            .await
    }

    async fn produce_local(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> ProduceResult {
        let log = match self.log_checked(&topic, partition) {
            Ok(l) => l,
            Err(code) => return ProduceResult::err(code, "partition not available here"),
        };
        let batches = match PartitionLog::check(&records) {
            Ok(b) => b,
            Err(e) => return ProduceResult::err(e.error_code(), e.to_string()),
        };
        if let Err(e) = self.ctx.durable.reserve(records.len()) {
            return ProduceResult::err(ErrorCode::REQUEST_TIMED_OUT, e.to_string());
        }
        let items = batches
            .iter()
            .map(|b| (BatchMeta::of(b), Payload::Local(b.as_bytes().clone())))
            .collect();
        self.append_batches(log, topic, partition, items, acks, timeout_ms, false)
            .await
    }

    /// Appends checked batches to a partition this shard owns, writes them
    /// to the WAL (their bytes, or for a proxy's batches a reference to its
    /// handoff object, sealing the WAL object at once with `flush`), and
    /// answers once they are durable (or at once for acks=0).
    #[allow(clippy::too_many_arguments)]
    async fn append_batches(
        self: &Rc<Self>,
        log: Rc<RefCell<PartitionLog>>,
        topic: Arc<str>,
        partition: i32,
        items: Vec<(BatchMeta, Payload)>,
        acks: i16,
        timeout_ms: i32,
        flush: bool,
    ) -> ProduceResult {
        if items.len() > 1 {
            let metas: Vec<BatchMeta> = items.iter().map(|(m, _)| *m).collect();
            if let Err(e) = log.borrow().check_sequences_meta(&metas) {
                return ProduceResult::err(e.error_code(), e.to_string());
            }
        }
        let mut first_offset = None;
        let mut duplicate_last: Option<i64> = None;
        let mut pending = Vec::new();
        let generation = log.borrow().generation();
        {
            let mut l = log.borrow_mut();
            for (meta, payload) in items {
                match l.append_meta(&meta, payload) {
                    Ok((
                        Appended::New {
                            base_offset,
                            entry_index,
                        },
                        Some(entry),
                    )) => {
                        first_offset.get_or_insert(base_offset);
                        let len = entry.len();
                        let chunk = crate::arena::chunk_of(&entry.segments[1]);
                        pending.push((entry_index, base_offset, self.ctx.durable.append(entry)));
                        if len > 0 {
                            self.cached(&topic, partition, base_offset, len, chunk);
                        }
                    }
                    Ok((Appended::New { base_offset, .. }, None)) => {
                        first_offset.get_or_insert(base_offset);
                    }
                    Ok((
                        Appended::Duplicate {
                            base_offset,
                            last_offset,
                        },
                        _,
                    )) => {
                        // A retry of a batch that may not be durable yet: it
                        // is answered only once it is.
                        first_offset.get_or_insert(base_offset);
                        duplicate_last = duplicate_last.max(Some(last_offset));
                    }
                    Err(e) => {
                        if first_offset.is_none() {
                            return ProduceResult::err(e.error_code(), e.to_string());
                        }
                        break;
                    }
                }
            }
        }
        if flush && !pending.is_empty() {
            self.flush_soon();
        }
        self.evict_if_needed();
        // Durability is tracked whether or not the producer still waits.
        let (done_tx, done_rx) = oneshot::channel::<Result<(), DurableError>>();
        let me = self.clone();
        let key = (topic.clone(), partition);
        let log2 = log.clone();
        glommio::spawn_local(async move {
            let mut outcome = Ok(());
            for (idx, base, ack) in pending {
                match ack.await {
                    Ok(loc) if outcome.is_ok() => log2.borrow_mut().made_durable(idx, base, loc),
                    Ok(_) => {}
                    Err(e) => {
                        if outcome.is_ok() {
                            // Nothing from here on was acknowledged: take the
                            // offsets back so they stay dense, then let the
                            // partition write again.
                            log2.borrow_mut().fail_from(base, generation);
                            me.ctx.durable.resume_partition(&key.0, key.1);
                            tracing::warn!(topic = %key.0, partition = key.1, offset = base, error = %e, "WAL write failed");
                        }
                        outcome = Err(e);
                    }
                }
            }
            me.wake(&key);
            let _ = done_tx.send(outcome);
        })
        .detach();
        let log_start = log.borrow().log_start();
        let base_offset = first_offset.unwrap_or(-1);
        if acks == 0 {
            return ProduceResult {
                error: ErrorCode::NONE,
                base_offset,
                log_start,
                message: None,
            };
        }
        let timeout = Duration::from_millis(timeout_ms.clamp(1, 300_000) as u64);
        let deadline = Instant::now() + timeout;
        let result = match glommio::timer::timeout(timeout, async { Ok(done_rx.await) }).await {
            // A node that lost its lease acknowledges nothing: a newer
            // leader may have taken these offsets, and fences what it wrote.
            Ok(Ok(Ok(()))) if self.ctx.cluster.fenced() => ProduceResult::err(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                "this node lost its lease in the cluster",
            ),
            Ok(Ok(Ok(()))) => ProduceResult {
                error: ErrorCode::NONE,
                base_offset,
                log_start,
                message: None,
            },
            Ok(Ok(Err(e))) => ProduceResult::err(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string()),
            Ok(Err(_)) => ProduceResult::err(ErrorCode::KAFKA_STORAGE_ERROR, "WAL stopped"),
            Err(_) => ProduceResult::err(
                ErrorCode::REQUEST_TIMED_OUT,
                "the WAL object was not durable in time",
            ),
        };
        match duplicate_last {
            Some(last) if result.error.is_ok() => self
                .await_durable(&log, &topic, partition, last, deadline, generation)
                .await
                .map_or(result, |e| {
                    ProduceResult::err(e, "the original of this retry was not made durable")
                }),
            _ => result,
        }
    }

    /// Waits until offset `last` is below the high watermark. `Some(code)`
    /// if it is not by `deadline`, or if the batch holding it was rolled
    /// back (a retriable code: the producer sends it again).
    async fn await_durable(
        self: &Rc<Self>,
        log: &Rc<RefCell<PartitionLog>>,
        topic: &Arc<str>,
        partition: i32,
        last: i64,
        deadline: Instant,
        generation: u64,
    ) -> Option<ErrorCode> {
        loop {
            {
                let l = log.borrow();
                if l.high_watermark() > last {
                    return None;
                }
                if l.generation() != generation {
                    return Some(ErrorCode::REQUEST_TIMED_OUT);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Some(ErrorCode::REQUEST_TIMED_OUT);
            }
            let waited = glommio::timer::timeout(left, async {
                self.wait(topic.clone(), partition, last).await;
                Ok(())
            })
            .await;
            if waited.is_err() {
                return Some(ErrorCode::REQUEST_TIMED_OUT);
            }
        }
    }

    /// Charges the cache for a batch of `len` bytes whose body lies in
    /// `chunk` (from [`crate::arena::chunk_of`]; `None`: not arena memory).
    fn cached(
        &self,
        topic: &Arc<str>,
        partition: i32,
        base_offset: i64,
        len: usize,
        chunk: Option<crate::arena::ChunkSpan>,
    ) {
        let mut c = self.cache.borrow_mut();
        c.bytes += len;
        let id = self.id;
        let chunk_key = match chunk {
            Some(span) => {
                let chunks = &mut c.chunks;
                // The holders' address is the key; their count is touched
                // (a clone kept in the map) only for a chunk new here.
                let key = crate::arena::with_chunk_holders(span, |holders| {
                    let holders = holders.filter(|_| id < crate::arena::HOLDER_SHARDS_MAX);
                    let key = holders.map_or(span.base, |h| Arc::as_ptr(h) as usize);
                    let e = chunks
                        .entry(key)
                        .or_insert_with(|| (0, span.len, holders.cloned()));
                    e.0 += 1;
                    if e.0 == 1 {
                        match &e.2 {
                            Some(holders) => self.move_charge(holders.join(id), span.len),
                            None => self.ctx.metrics.cache_pinned_bytes_add(id, span.len as i64),
                        }
                    }
                    key
                });
                Some(key)
            }
            None => {
                self.ctx.metrics.cache_pinned_bytes_add(id, len as i64);
                None
            }
        };
        c.order.push_back(CacheEntry {
            key: (topic.clone(), partition),
            base_offset,
            len,
            chunk: chunk_key,
        });
        self.ctx.metrics.cache_bytes_add(self.id, len as i64);
    }

    /// Takes an entry that no longer holds its batch out of the accounting.
    fn release(&self, c: &mut Cache, e: &CacheEntry) {
        match e.chunk {
            Some(key) => match c.chunks.get_mut(&key) {
                Some(n) if n.0 > 1 => n.0 -= 1,
                Some(_) => match c.chunks.remove(&key) {
                    Some((_, len, Some(holders))) => self.move_charge(holders.leave(self.id), len),
                    Some((_, len, None)) => self
                        .ctx
                        .metrics
                        .cache_pinned_bytes_add(self.id, -(len as i64)),
                    None => {}
                },
                None => {}
            },
            None => self
                .ctx
                .metrics
                .cache_pinned_bytes_add(self.id, -(e.len as i64)),
        }
        c.bytes = c.bytes.saturating_sub(e.len);
        self.ctx.metrics.cache_bytes_add(self.id, -(e.len as i64));
    }

    /// Releases the entries whose batch is gone without being evicted
    /// (retention, a failed write's rollback, a partition that left the
    /// shard), so their chunks stop being held and charged here.
    fn sweep_cache(&self) {
        let mut c = self.cache.borrow_mut();
        let partitions = self.partitions.borrow();
        let entries = std::mem::take(&mut c.order);
        let mut kept = VecDeque::with_capacity(entries.len());
        for e in entries {
            let live = partitions
                .get(&e.key)
                .is_some_and(|log| log.borrow().holds_cached(e.base_offset));
            if live {
                kept.push_back(e);
            } else {
                self.release(&mut c, &e);
            }
        }
        c.order = kept;
    }

    /// Moves a chunk's charge of `len` bytes between shards' caches.
    fn move_charge(&self, m: crate::arena::ChargeMove, len: usize) {
        if m.from == m.to {
            return;
        }
        let metrics = &self.ctx.metrics;
        if let Some(from) = m.from {
            metrics.cache_pinned_bytes_add(from, -(len as i64));
        }
        if let Some(to) = m.to {
            metrics.cache_pinned_bytes_add(to, len as i64);
        }
    }

    /// Drops the oldest durable batches while the cache's pinned bytes are
    /// over the bound.
    fn evict_if_needed(&self) {
        let max = self.ctx.cache_bytes_max as i64;
        let mut c = self.cache.borrow_mut();
        let mut skipped = 0;
        while self.ctx.metrics.cache_pinned_bytes(self.id) > max && skipped < c.order.len() {
            let Some(e) = c.order.pop_front() else {
                break;
            };
            let evicted = self
                .partitions
                .borrow()
                .get(&e.key)
                .and_then(|log| log.borrow_mut().evict(e.base_offset));
            if evicted == Some(false) {
                // Not durable yet: keep it, look at the next.
                c.order.push_back(e);
                skipped += 1;
                continue;
            }
            self.release(&mut c, &e);
        }
    }

    /// This shard's read arena, which its connections read requests into.
    pub fn arena(&self) -> crate::arena::Arena {
        self.cache
            .borrow_mut()
            .arena
            .get_or_insert_with(|| crate::arena::Arena::new(self.ctx.metrics.arena(self.id)))
            .clone()
    }

    fn wake(&self, key: &Key) {
        if let Some(ws) = self.waiters.borrow_mut().remove(key) {
            for w in ws {
                let _ = w.send(());
            }
        }
    }

    fn wait_local(&self, topic: Arc<str>, partition: i32, offset: i64, reply: oneshot::Sender<()>) {
        let ready = match self.log(&topic, partition) {
            Some(log) => log.borrow().high_watermark() > offset,
            None => true,
        };
        if ready {
            let _ = reply.send(());
            return;
        }
        let mut w = self.waiters.borrow_mut();
        let list = w.entry((topic, partition)).or_default();
        list.retain(|s| !s.is_canceled());
        list.push(reply);
    }

    /// Resolves once the partition has data past `offset` (or cannot).
    pub async fn wait(self: &Rc<Self>, topic: Arc<str>, partition: i32, offset: i64) {
        if let Route::Proxy(leader) = self.route(&topic, partition) {
            // A read replica waits on the leader's commit stream: long polls
            // that carry no data, until the leader has data at `offset`.
            loop {
                // The answer also says where the new batches are, so the
                // fetch that follows is served without asking again.
                let req = crate::cluster::rpc::ReplicaRead {
                    topic: topic.clone(),
                    partition,
                    from_offset: offset,
                    max_bytes: REPLICA_WAIT_BYTES,
                    max_wait_ms: REPLICA_POLL_MS as i32,
                };
                let timeout = Duration::from_millis(REPLICA_POLL_MS + 5_000);
                match self.rpc.replica_read(&leader, &req, timeout).await {
                    Ok(r) if r.error_code == 0 && r.high_watermark > offset => {
                        self.replica_index
                            .borrow_mut()
                            .entry((topic.clone(), partition))
                            .or_default()
                            .learn(&r);
                        return;
                    }
                    Ok(r) if r.error_code != 0 => return,
                    Ok(_) => {}
                    Err(_) => glommio::timer::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        let to = self.owner_of(&topic, partition);
        let (tx, rx) = oneshot::channel();
        if to == self.id {
            self.wait_local(topic, partition, offset, tx);
        } else if !self
            .send(
                to,
                ShardMsg::Wait {
                    topic,
                    partition,
                    offset,
                    reply: tx,
                },
            )
            .await
        {
            return;
        }
        let _ = rx.await;
    }

    pub async fn fetch(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult {
        match self.route(&topic, partition) {
            Route::Local => {}
            Route::Proxy(leader) => {
                return self
                    .replica_fetch(leader, topic, partition, offset, max_bytes)
                    .await
            }
            Route::SameZone(_) | Route::Fenced => {
                return FetchResult::err(ErrorCode::NOT_LEADER_OR_FOLLOWER)
            }
        }
        let to = self.owner_of(&topic, partition);
        if to == self.id {
            return self.fetch_local(topic, partition, offset, max_bytes).await;
        }
        let msg = |reply| ShardMsg::Fetch {
            topic,
            partition,
            offset,
            max_bytes,
            reply,
        };
        self.ask(to, msg, || {
            FetchResult::err(ErrorCode::NOT_LEADER_OR_FOLLOWER)
        })
        .await
    }

    async fn fetch_local(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult {
        let log = match self.log_checked(&topic, partition) {
            Ok(l) => l,
            Err(code) => return FetchResult::err(code),
        };
        let (batches, hw, start) = {
            let l = log.borrow();
            if offset < l.log_start() || offset > l.high_watermark() {
                let mut r = FetchResult::err(ErrorCode::OFFSET_OUT_OF_RANGE);
                r.high_watermark = l.high_watermark();
                r.log_start = l.log_start();
                return r;
            }
            (l.read(offset, max_bytes), l.high_watermark(), l.log_start())
        };
        let mut batches = batches;
        // Batches not in the cache come back from the bucket, adjacent ones
        // with one ranged GET, all at once.
        let missing: Vec<&LogBatch> = batches.iter().filter(|b| b.data.is_none()).collect();
        let mut read = self.read_back_many(&missing).await.into_iter();
        let mut read_failed = false;
        for b in batches.iter_mut().filter(|b| b.data.is_none()) {
            let Some(result) = read.next() else { break };
            match result {
                Ok(data) => {
                    log.borrow_mut().fill(b.base_offset, data.clone());
                    let chunk = crate::arena::chunk_of(&data[1]);
                    self.cached(&topic, partition, b.base_offset, b.len as usize, chunk);
                    b.data = Some(data);
                    self.ctx.metrics.cache_miss();
                }
                Err(e) => {
                    read_failed = true;
                    tracing::warn!(topic = %topic, partition, offset = b.base_offset, error = %e, "read from bucket failed");
                    break;
                }
            }
        }
        self.evict_if_needed();
        let served: Vec<LogBatch> = batches
            .into_iter()
            .take_while(|b| b.data.is_some())
            .collect();
        if !served.is_empty() {
            self.ctx.metrics.cache_hit();
        }
        if served.is_empty() && read_failed {
            // Retriable: the client fetches again rather than wait on
            // data that is there but could not be read.
            let mut r = FetchResult::err(ErrorCode::KAFKA_STORAGE_ERROR);
            r.high_watermark = hw;
            r.log_start = start;
            return r;
        }
        FetchResult {
            error: ErrorCode::NONE,
            high_watermark: hw,
            log_start: start,
            records: record_set(&served),
        }
    }

    /// Reads batches back from the bucket: a run of batches adjacent in
    /// one object (a partition's batches in a compacted object, a proxy's
    /// batches of one partition in a handoff object) with one ranged GET,
    /// and every run at once. Answers each batch's bytes, in order.
    async fn read_back_many(&self, batches: &[&LogBatch]) -> Vec<Result<[Bytes; 2], DurableError>> {
        // (first, end) index ranges of `batches`.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut run_bytes = 0u64;
        for (i, b) in batches.iter().enumerate() {
            let len = u64::from(b.len);
            let joins = i > 0
                && match (&batches[i - 1].location, &b.location) {
                    (Some(p), Some(l)) => {
                        p.key == l.key
                            && p.position + u64::from(p.len) == l.position
                            && run_bytes + len <= READ_RUN_BYTES_MAX
                    }
                    _ => false,
                };
            match runs.last_mut() {
                Some(run) if joins => {
                    run.1 = i + 1;
                    run_bytes += len;
                }
                _ => {
                    runs.push((i, i + 1));
                    run_bytes = len;
                }
            }
        }
        let reads = runs.iter().map(|&(first, end)| {
            let locations: Option<Vec<Location>> = batches[first..end]
                .iter()
                .map(|b| b.location.clone())
                .collect();
            let durable = self.ctx.durable.clone();
            async move {
                match locations {
                    Some(l) => durable.read_adjacent(l).await,
                    None => Err(DurableError::Failed("batch is not durable".into())),
                }
            }
        });
        let results = futures_util::future::join_all(reads).await;
        let mut out = Vec::with_capacity(batches.len());
        for (&(first, end), result) in runs.iter().zip(results) {
            match result {
                Ok(all) if all.len() == end - first => {
                    for (b, bytes) in batches[first..end].iter().zip(all) {
                        out.push(match &b.location {
                            Some(loc) => with_head(b, loc, bytes),
                            None => Err(DurableError::Failed("batch is not durable".into())),
                        });
                    }
                }
                Ok(all) => out.extend((first..end).map(|_| {
                    Err(DurableError::Failed(format!(
                        "{} batches read back for {}",
                        all.len(),
                        end - first
                    )))
                })),
                Err(e) => out.extend((first..end).map(|_| Err(e.clone()))),
            }
        }
        out
    }

    /// Hands a group request to the coordinator on shard 0.
    pub async fn group(self: &Rc<Self>, req: GroupRequest) -> Option<ResponseBody> {
        if self.id == COORDINATOR_SHARD {
            return self.group_local(req).await;
        }
        let msg = |reply| ShardMsg::Group {
            req: Box::new(req),
            reply,
        };
        self.ask(COORDINATOR_SHARD, msg, || None).await
    }

    async fn group_local(&self, req: GroupRequest) -> Option<ResponseBody> {
        let c = self.coordinator.as_ref()?;
        self.adopt_groups(c).await;
        let table = self.topics.get();
        c.handle(req, |t| table.get(t).is_some()).await
    }

    /// After a view change, the groups whose slot this node now leads and
    /// another node led before come with their committed offsets: read from
    /// that node's snapshot in the bucket.
    async fn adopt_groups(&self, c: &Rc<Coordinator>) {
        let generation = self.ctx.cluster.generation();
        let since = self.groups_seen.replace(generation);
        if since == generation {
            return;
        }
        let view = self.view();
        let me = self.ctx.node_id;
        // Every view since the last look: a slot that another node led in
        // any of them, however briefly, may have offsets committed there.
        let between = self.ctx.cluster.views_since(since);
        let mut from: HashMap<i32, std::collections::HashSet<i32>> = HashMap::new();
        for slot in 0..crate::group::coordinator::GROUP_SLOTS as i32 {
            if view
                .leader(crate::group::coordinator::GROUP_TOPIC, slot)
                .is_none_or(|m| m.node_id != me)
            {
                continue;
            }
            match &between {
                Some(views) => {
                    for v in views {
                        if let Some(m) = v.leader(crate::group::coordinator::GROUP_TOPIC, slot) {
                            if m.node_id != me {
                                from.entry(m.node_id).or_default().insert(slot);
                            }
                        }
                    }
                }
                // Views were missed: any other member may have led it.
                None => {
                    for m in view.members().iter().filter(|m| m.node_id != me) {
                        from.entry(m.node_id).or_default().insert(slot);
                    }
                }
            }
        }
        for (node, slots) in from {
            let name = crate::group::coordinator::groups_meta_name(node);
            match self.ctx.durable.get_meta(&name).await {
                Ok(Ok(Some(snapshot))) => {
                    c.adopt(&snapshot, |g| {
                        slots.contains(&crate::group::coordinator::group_slot(g))
                    })
                    .await
                }
                Ok(Ok(None)) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node, error = %e, "could not read another node's offsets")
                }
            }
        }
    }

    /// Takes over the committed offsets of groups whose slot this node has
    /// come to lead, without waiting for a group request (shard 0, each
    /// retention pass).
    pub async fn adopt_groups_now(&self) {
        if let Some(c) = self.coordinator.as_ref() {
            self.adopt_groups(c).await;
        }
    }

    pub async fn list_offset(
        self: &Rc<Self>,
        topic: Arc<str>,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetResult {
        let fail = |error| ListOffsetResult {
            error,
            offset: -1,
            timestamp: -1,
        };
        match self.route(&topic, partition) {
            Route::Local => {}
            // A read replica answers earliest and latest from the leader's
            // commit stream; by timestamp, only the leader can.
            Route::Proxy(leader) if timestamp == -1 || timestamp == -2 => {
                let req = crate::cluster::rpc::ReplicaRead {
                    topic: topic.clone(),
                    partition,
                    from_offset: -1,
                    max_bytes: 0,
                    max_wait_ms: 0,
                };
                return match self
                    .rpc
                    .replica_read(&leader, &req, Duration::from_secs(10))
                    .await
                {
                    Ok(r)
                        if r.error_code == 0
                            || r.error_code == ErrorCode::OFFSET_OUT_OF_RANGE.code() =>
                    {
                        ListOffsetResult {
                            error: ErrorCode::NONE,
                            offset: if timestamp == -1 {
                                r.high_watermark
                            } else {
                                r.log_start
                            },
                            timestamp: -1,
                        }
                    }
                    Ok(r) => fail(ErrorCode(r.error_code)),
                    Err(e) => fail(e.error_code()),
                };
            }
            Route::Proxy(_) | Route::SameZone(_) | Route::Fenced => {
                return fail(ErrorCode::NOT_LEADER_OR_FOLLOWER)
            }
        }
        let to = self.owner_of(&topic, partition);
        if to == self.id {
            return self.list_offset_local(&topic, partition, timestamp);
        }
        let msg = |reply| ShardMsg::ListOffset {
            topic,
            partition,
            timestamp,
            reply,
        };
        let fail = || ListOffsetResult {
            error: ErrorCode::NOT_LEADER_OR_FOLLOWER,
            offset: -1,
            timestamp: -1,
        };
        self.ask(to, msg, fail).await
    }

    fn list_offset_local(
        &self,
        topic: &Arc<str>,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetResult {
        let log = match self.log_checked(topic, partition) {
            Ok(l) => l,
            Err(error) => {
                return ListOffsetResult {
                    error,
                    offset: -1,
                    timestamp: -1,
                }
            }
        };
        let l = log.borrow();
        let (offset, ts) = match timestamp {
            -1 => (l.high_watermark(), -1),
            -2 => (l.log_start(), -1),
            // Max timestamp (KIP-734): the last batch's, approximately.
            -3 if l.high_watermark() <= l.log_start() => (-1, -1),
            -3 => (l.high_watermark() - 1, -1),
            ts => l.offset_for_timestamp(ts).unwrap_or((-1, -1)),
        };
        ListOffsetResult {
            error: ErrorCode::NONE,
            offset,
            timestamp: ts,
        }
    }

    /// Applies retention to this shard's partitions: each topic's
    /// `retention.ms` / `retention.bytes` overrides, else the node's
    /// `log.retention.ms` / `log.retention.bytes`. Returns the batches
    /// dropped.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        // Partitions led elsewhere now are not this node's to trim (nor
        // their objects to delete).
        self.follow_leadership();
        let mut unreferenced = Vec::new();
        let table = self.topics.get();
        // Partitions of deleted topics (the shard that took the DeleteTopics
        // request dropped its own at once) go, with their objects.
        self.partitions.borrow_mut().retain(|(t, _), p| {
            let p = p.borrow();
            let live = table.get(t).is_some_and(|info| info.id.0 == p.topic_id);
            if !live {
                unreferenced.extend(p.compacted_objects());
            }
            live
        });
        let parts = self.partitions.borrow();
        let dropped = parts
            .iter()
            .map(|((topic, _), p)| {
                let (ms, bytes) = crate::cluster::topics::retention_of(
                    table.get(topic).map(|t| t.configs.as_ref()),
                    self.ctx.retention_ms,
                    self.ctx.retention_bytes,
                );
                let before = (ms >= 0).then(|| now_ms.saturating_sub(ms));
                let bytes = (bytes >= 0).then_some(bytes as u64);
                p.borrow_mut()
                    .apply_retention(before, bytes, &mut unreferenced)
            })
            .sum();
        self.delete_objects(unreferenced);
        drop(parts);
        // Batches dropped without being evicted (by this pass, a failed
        // write's rollback, a partition that left) leave the cache's
        // accounting; and another shard's cache may have handed this one a
        // chunk's charge (its lowest holder left): an idle shard evicts here.
        self.sweep_cache();
        self.evict_if_needed();
        self.report_refs(now_ms);
        dropped
    }
}

/// Loader tasks of one shard at once: one for the retention pass's loads,
/// one more for partitions a client waits for.
const LOADERS_MAX: usize = 2;
/// How long a node of a cluster answers KAFKA_STORAGE_ERROR for a partition
/// it could not take over (an unreadable object) before trying again.
const BLOCKED_LOAD_RETRY: Duration = Duration::from_secs(10);

/// Most bytes one ranged GET of adjacent batches reads.
const READ_RUN_BYTES_MAX: u64 = 8 << 20;

/// A batch read back from `loc`, with its 16-byte head made again from the
/// log.
fn with_head(b: &LogBatch, loc: &Location, bytes: Bytes) -> Result<[Bytes; 2], DurableError> {
    if bytes.len() < 61 {
        return Err(DurableError::Read {
            key: loc.key.to_string(),
            error: "batch shorter than its header".into(),
        });
    }
    // The head is made again from the log: a batch a proxy put in its
    // handoff object still has the producer's base offset there.
    let mut head = bytes::BytesMut::with_capacity(16);
    head.extend_from_slice(&b.base_offset.to_be_bytes());
    head.extend_from_slice(&bytes[8..16]);
    Ok([head.freeze(), bytes.slice(16..)])
}

/// How many bytes of batches a replica's long poll asks the leader to
/// describe (it gets their places, not their bytes).
const REPLICA_WAIT_BYTES: i32 = 1 << 20;

/// How long one long poll of a read replica waits at the leader.
const REPLICA_POLL_MS: u64 = 1_000;

type ReplicaKey = (Arc<str>, i32, i64);

/// A read replica's cache: batch bytes by (topic, partition, base offset),
/// bounded in bytes, the oldest inserted dropped first.
struct ReplicaCache {
    bytes_max: usize,
    bytes: usize,
    map: HashMap<ReplicaKey, [Bytes; 2]>,
    order: VecDeque<(ReplicaKey, usize)>,
}

impl ReplicaCache {
    fn new(bytes_max: usize) -> ReplicaCache {
        ReplicaCache {
            bytes_max,
            bytes: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &ReplicaKey) -> Option<&[Bytes; 2]> {
        self.map.get(key)
    }

    fn insert(&mut self, key: ReplicaKey, data: [Bytes; 2], len: usize) {
        if self.map.insert(key.clone(), data).is_none() {
            self.bytes += len;
            self.order.push_back((key, len));
        }
        while self.bytes > self.bytes_max {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
            self.bytes -= n;
        }
    }
}

/// Entries a replica remembers per partition.
const REPLICA_INDEX_ENTRIES_MAX: usize = 4096;

/// What a read replica knows of a partition from its leader: the high
/// watermark and log start it last heard, and where durable batches are.
#[derive(Default)]
struct ReplicaIndex {
    high_watermark: i64,
    log_start: i64,
    /// By base offset; contiguous runs as the leader answered them.
    entries: std::collections::BTreeMap<i64, crate::cluster::rpc::ReplicaEntry>,
}

impl ReplicaIndex {
    fn learn(&mut self, resp: &crate::cluster::rpc::ReplicaReadResponse) {
        self.high_watermark = self.high_watermark.max(resp.high_watermark);
        self.log_start = resp.log_start;
        for e in &resp.entries {
            self.entries.insert(e.base_offset, e.clone());
        }
        let start = self.log_start;
        self.entries.retain(|_, e| e.last_offset >= start);
        while self.entries.len() > REPLICA_INDEX_ENTRIES_MAX {
            self.entries.pop_first();
        }
    }

    /// The batches from `offset`, if this index holds a contiguous run
    /// starting there (`None`: ask the leader).
    #[allow(clippy::type_complexity)]
    fn serve(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Option<(i64, i64, Vec<crate::cluster::rpc::ReplicaEntry>)> {
        if offset < self.log_start || offset >= self.high_watermark {
            return None;
        }
        let (_, first) = self.entries.range(..=offset).next_back()?;
        if first.last_offset < offset {
            return None;
        }
        let mut out = vec![first.clone()];
        let mut bytes = first.len as usize;
        let mut next = first.last_offset + 1;
        for (_, e) in self.entries.range(next..) {
            if e.base_offset != next || bytes + e.len as usize > max_bytes {
                break;
            }
            bytes += e.len as usize;
            next = e.last_offset + 1;
            out.push(e.clone());
        }
        Some((self.high_watermark, self.log_start, out))
    }
}

/// Where a partition's requests go from this node.
#[derive(Debug, Clone)]
pub enum Route {
    /// This node leads it (or there is no cluster view).
    Local,
    /// The leader is in another zone: this node stands in as its proxy.
    Proxy(crate::cluster::Member),
    /// Another node of this zone leads it: the client should go there.
    SameZone(i32),
    /// This node lost its lease: it acknowledges nothing.
    Fenced,
}

impl crate::cluster::rpc::RpcHandler for Rc<Shard> {
    async fn handoff_commit(
        &self,
        req: crate::cluster::rpc::HandoffCommit,
    ) -> crate::cluster::rpc::HandoffCommitResponse {
        let tasks: Vec<_> = req
            .partitions
            .into_iter()
            .map(|p| {
                let me = self.clone();
                let n = p.batches.len();
                (
                    n,
                    glommio::spawn_local(async move { me.handoff_partition(p).await }),
                )
            })
            .collect();
        let mut partitions = Vec::with_capacity(tasks.len());
        for (n, t) in tasks {
            let r = t.await;
            partitions.push(
                (0..n)
                    .map(|_| crate::cluster::rpc::BatchResult {
                        error_code: r.error.code(),
                        base_offset: r.base_offset,
                        log_start: r.log_start,
                    })
                    .collect(),
            );
        }
        crate::cluster::rpc::HandoffCommitResponse { partitions }
    }

    async fn replica_read(
        &self,
        req: crate::cluster::rpc::ReplicaRead,
    ) -> crate::cluster::rpc::ReplicaReadResponse {
        self.replica_read_served(req).await
    }

    async fn forward(
        &self,
        req: crate::cluster::rpc::Forward,
    ) -> crate::cluster::rpc::ForwardResponse {
        (self.hooks.forwarded)(self.clone(), req).await
    }
}

/// Largest compacted object a pass writes (a partition with more durable
/// bytes in the WAL gets several, over several passes).
pub const COMPACTED_OBJECT_BYTES_MAX: usize = 64 << 20;

/// The idempotent-producer fields of a stored batch (16-byte head, then the
/// rest of the batch), read from its header without copying the batch.
fn producer_fields(data: &[Bytes; 2]) -> ProducerFields {
    // Batch header offsets: lastOffsetDelta 23, producerId 43, producerEpoch
    // 51, baseSequence 53; the body segment starts at offset 16.
    let body = &data[1];
    let at = |o: usize, n: usize| body.get(o - 16..o - 16 + n);
    let (Some(delta), Some(id), Some(epoch), Some(seq)) =
        (at(23, 4), at(43, 8), at(51, 2), at(53, 4))
    else {
        return ProducerFields::default();
    };
    let delta = i32::from_be_bytes([delta[0], delta[1], delta[2], delta[3]]);
    let id = i64::from_be_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]);
    let epoch = i16::from_be_bytes([epoch[0], epoch[1]]);
    let first = i32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
    if id < 0 {
        return ProducerFields::default();
    }
    ProducerFields {
        id,
        epoch,
        first_sequence: first,
        last_sequence: if first < 0 {
            -1
        } else {
            first.wrapping_add(delta)
        },
    }
}

/// A deadline `ms` from now.
pub fn deadline(ms: i32) -> Instant {
    Instant::now() + Duration::from_millis(ms.max(0) as u64)
}
