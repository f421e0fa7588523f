//! A shard: one glommio executor, the partitions it owns, its log cache, and
//! its end of the lock-free queues to every other shard.
//!
//! A connection lives on whichever shard accepted it. For each partition a
//! request names, the connection's shard calls [`Shard::produce`],
//! [`Shard::fetch`] or [`Shard::list_offset`]: a direct call when it owns the
//! partition, otherwise a message through glommio's channel mesh (SPSC ring
//! buffers, no locks) to the owner, which answers through a oneshot. Batch
//! bytes travel as `Bytes` views of the request frame, never copied.
//!
//! This file holds the shard itself: its state, its messages, and where a
//! partition's requests go ([`Shard::route`], [`Shard::log_checked`]). The
//! rest is split by concern, each file an `impl Shard` of its own:
//! `produce` (checks, offsets, the durable write, the answer), `handoff`
//! (the proxy side and the leader's commit), `fetch` (reads, long polls,
//! ListOffsets), `replica` (read replicas), `cache` (log-cache accounting),
//! `leadership` (following views, loading partitions on takeover),
//! `maintenance` (compaction, retention), `groups` (routing to the group
//! coordinator), [`partition`] (one partition's log) and [`deletion`] (the
//! object-deletion pass).

mod cache;
pub mod deletion;
mod fetch;
mod groups;
mod handoff;
mod leadership;
mod maintenance;
pub mod partition;
mod produce;
mod replica;

use crate::cluster::topics::LocalTopics;
use crate::group::coordinator::{Coordinator, GroupRequest};
use crate::node::NodeCtx;
use crate::shard::partition::{record_set, Appended, BatchMeta, LogBatch, PartitionLog, Payload};
use crate::storage::durable::{AppendEntry, DurableError, Location, ProducerFields};
use bytes::Bytes;
use cache::Cache;
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::messages::ResponseBody;
use ferry_protocol::wire::RecordSet;
use futures_channel::oneshot;
use futures_util::future::LocalBoxFuture;
use glommio::channels::channel_mesh::Senders;
use handoff::QueuedCommit;
use leadership::BLOCKED_LOAD_RETRY;
use replica::{ReplicaCache, ReplicaIndex, REPLICA_POLL_MS, REPLICA_WAIT_BYTES};
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
    Accepted {
        stream: glommio::net::AcceptedTcpStream,
        /// Index into `NodeCtx::listeners`.
        listener: usize,
    },
    /// A read replica asks where a partition's durable batches are.
    ReplicaRead {
        req: crate::cluster::rpc::ReplicaRead,
        reply: oneshot::Sender<crate::cluster::rpc::ReplicaReadResponse>,
    },
    /// A proxy's batches for a partition this shard owns (handoff commit).
    Handoff {
        part: crate::cluster::rpc::HandoffPartition,
        from_node: i32,
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
    pub fn err(error: ErrorCode, message: impl Into<String>) -> ProduceResult {
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
    pub fn err(error: ErrorCode) -> FetchResult {
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

/// What the broker layer above gives every shard: how to serve a client
/// connection the shard accepted, and a client request another node
/// forwarded to it. The shard sits below the broker and reaches it only
/// through these.
#[derive(Clone, Copy)]
pub struct BrokerHooks {
    /// Serves a connection accepted on listener `usize` (an index into
    /// `NodeCtx::listeners`).
    pub serve: fn(Rc<Shard>, glommio::net::TcpStream, usize) -> LocalBoxFuture<'static, ()>,
    pub forwarded: fn(
        Rc<Shard>,
        crate::cluster::rpc::Forward,
    ) -> LocalBoxFuture<'static, crate::cluster::rpc::ForwardResponse>,
}

/// A partition queued to be loaded (see `leadership`).
#[derive(Debug, Clone, Copy)]
struct Loading {
    topic_id: [u8; 16],
    /// A loader has taken it into its current round.
    taken: bool,
}

pub struct Shard {
    pub id: usize,
    hooks: BrokerHooks,
    pub ctx: Arc<NodeCtx>,
    pub topics: LocalTopics,
    partitions: RefCell<HashMap<Key, Rc<RefCell<PartitionLog>>>>,
    waiters: RefCell<HashMap<Key, Vec<oneshot::Sender<()>>>>,
    cache: RefCell<Cache>,
    /// Request latency, recorded here alone and published for scrapes.
    pub latency: RefCell<crate::metrics::ShardLatency>,
    /// Bytes of client requests this shard's connections may hold read and
    /// not answered (`queued.max.request.bytes`): a connection takes its
    /// frame's bytes before serving it, so past the bound it stops reading.
    pub request_bytes: Rc<glommio::sync::Semaphore>,
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
    /// Handoff commits being checked, per partition, in arrival order.
    handoff_order: RefCell<HashMap<Key, HandoffOrder>>,
    /// The view generation the group coordinator last took groups over at.
    groups_seen: std::cell::Cell<u64>,
}

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
    loading: HashMap<Key, Loading>,
    /// Loader tasks running (at most [`LOADERS_MAX`]).
    loaders: usize,
    /// Appends waiting for a partition's load, in arrival order
    /// ([`Shard::log_for_append`]).
    load_waiters: HashMap<Key, Vec<oneshot::Sender<()>>>,
}

/// Handoff commits of one partition, in the order they arrived: each reads
/// its batches back from the bucket (the reads may finish in any order),
/// then appends in its turn ([`Shard::handoff_turn`]).
#[derive(Default)]
struct HandoffOrder {
    /// The next ticket to give out.
    next: u64,
    /// The ticket whose turn it is.
    serving: u64,
    /// Tickets waiting for their turn.
    waiting: HashMap<u64, oneshot::Sender<()>>,
    /// Tickets dropped before their turn came.
    abandoned: std::collections::HashSet<u64>,
}

impl Shard {
    pub fn new(
        id: usize,
        ctx: Arc<NodeCtx>,
        senders: Senders<ShardMsg>,
        hooks: BrokerHooks,
    ) -> Shard {
        let request_bytes = Rc::new(glommio::sync::Semaphore::new(
            ctx.queued_request_bytes_max as u64,
        ));
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
            rpc: crate::cluster::rpc::RpcClient::new(ctx.traffic.clone(), ctx.frame_bytes_max)
                .with_tls(ctx.rpc_tls.clone())
                .with_login(ctx.rpc_login.clone()),
            replica_cache: RefCell::new(ReplicaCache::new(ctx.cache_bytes_max / 4)),
            replica_index: RefCell::new(HashMap::new()),
            leadership: RefCell::new(Leadership {
                solo: ctx.alone,
                generation: 0,
                session: ctx.cluster.session(),
                loading: HashMap::new(),
                loaders: 0,
                load_waiters: HashMap::new(),
            }),
            handoff_order: RefCell::new(HashMap::new()),
            me: RefCell::new(std::rc::Weak::new()),
            outbox: RefCell::new(HashMap::new()),
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
            request_bytes,
            latency: RefCell::default(),
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
            ShardMsg::Accepted { stream, listener } => {
                (self.hooks.serve)(self.clone(), stream.bind_to_executor(), listener).await;
            }
            ShardMsg::ReplicaRead { req, reply } => {
                let _ = reply.send(self.replica_entries(&req));
            }
            ShardMsg::Handoff {
                part,
                from_node,
                reply,
            } => {
                let _ = reply.send(self.handoff_local(part, from_node).await);
            }
        }
    }

    /// Hands an accepted connection to shard `to` (or serves it here).
    pub async fn deal(
        self: &Rc<Self>,
        to: usize,
        stream: glommio::net::AcceptedTcpStream,
        listener: usize,
    ) {
        if to == self.id {
            glommio::spawn_local((self.hooks.serve)(
                self.clone(),
                stream.bind_to_executor(),
                listener,
            ))
            .detach();
        } else if !self.send(to, ShardMsg::Accepted { stream, listener }).await {
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
    /// [`Shard::log_checked`] for an append: while the partition is being
    /// taken over, waits for the load (at most `wait`) instead of answering
    /// LEADER_NOT_AVAILABLE at once, and waiters go on in the order they
    /// came. A producer's pipelined batches then reach the new log in order:
    /// had the first been told to retry while a later one landed, an
    /// idempotent producer new to the partition would see its later batch
    /// refused as out of order, which librdkafka takes as fatal.
    pub(super) async fn log_for_append(
        &self,
        topic: &Arc<str>,
        partition: i32,
        wait: Duration,
    ) -> Result<Rc<RefCell<PartitionLog>>, ErrorCode> {
        let deadline = Instant::now() + wait;
        loop {
            let key = (topic.clone(), partition);
            match self.log_checked(topic, partition) {
                Err(ErrorCode::LEADER_NOT_AVAILABLE)
                    if Instant::now() < deadline
                        && self.leadership.borrow().loading.contains_key(&key) =>
                {
                    let (tx, rx) = oneshot::channel();
                    self.leadership
                        .borrow_mut()
                        .load_waiters
                        .entry(key)
                        .or_default()
                        .push(tx);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if glommio::timer::timeout(left, async {
                        let _ = rx.await;
                        Ok(())
                    })
                    .await
                    .is_err()
                    {
                        return Err(ErrorCode::LEADER_NOT_AVAILABLE);
                    }
                }
                r => return r,
            }
        }
    }

    /// Takes a place in the partition's line of handoff commits; the
    /// returned turn resolves when every commit that came before has gone
    /// on (appended or refused), and lets the next go when dropped.
    pub(super) fn handoff_ticket(&self, key: &Key) -> HandoffTurn {
        let mut order = self.handoff_order.borrow_mut();
        let o = order.entry(key.clone()).or_default();
        let ticket = o.next;
        o.next += 1;
        HandoffTurn {
            shard: self.me.borrow().clone(),
            key: key.clone(),
            ticket,
        }
    }

    /// Resolves when it is `turn`'s go.
    pub(super) async fn handoff_turn(&self, turn: &HandoffTurn) {
        let rx = {
            let mut order = self.handoff_order.borrow_mut();
            let Some(o) = order.get_mut(&turn.key) else {
                return;
            };
            if o.serving == turn.ticket {
                return;
            }
            let (tx, rx) = oneshot::channel();
            o.waiting.insert(turn.ticket, tx);
            rx
        };
        let _ = rx.await;
    }

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
        if let Some(since) = self.ctx.blocked_for(&key) {
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
    /// A handoff commit must come from the member it names (a member not in
    /// the view is answered "retry" by the call itself); a replica read or
    /// forward from some member of the view.
    fn admits(&self, call: &crate::cluster::rpc::RpcBody, caller: &str) -> bool {
        let view = self.view();
        match call {
            crate::cluster::rpc::RpcBody::HandoffCommit(req) => view
                .member(req.from_node)
                .is_none_or(|m| m.principal == caller),
            _ => view.members().iter().any(|m| m.principal == caller),
        }
    }

    async fn handoff_commit(
        &self,
        req: crate::cluster::rpc::HandoffCommit,
    ) -> crate::cluster::rpc::HandoffCommitResponse {
        // Only a node of the current view hands batches off (one that just
        // joined, or left, is answered "retry": nothing was written), and
        // only as of that view: a proxy that saw another revision may route
        // by leadership that has moved, and retries once the views agree.
        let view = self.view();
        if view.member(req.from_node).is_none() || req.view_revision != view.revision() {
            return crate::cluster::rpc::HandoffCommitResponse::all(
                &req,
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
            );
        }
        let from_node = req.from_node;
        let tasks: Vec<_> = req
            .partitions
            .into_iter()
            .map(|p| {
                let me = self.clone();
                let n = p.batches.len();
                (
                    n,
                    glommio::spawn_local(async move { me.handoff_partition(p, from_node).await }),
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

/// A deadline `ms` from now.
pub fn deadline(ms: i32) -> Instant {
    Instant::now() + Duration::from_millis(ms.max(0) as u64)
}

/// A handoff commit's place in its partition's line (see
/// [`Shard::handoff_ticket`]). Dropping it lets the next commit go.
pub(super) struct HandoffTurn {
    shard: std::rc::Weak<Shard>,
    key: Key,
    ticket: u64,
}

impl Drop for HandoffTurn {
    fn drop(&mut self) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        let mut order = shard.handoff_order.borrow_mut();
        let Some(o) = order.get_mut(&self.key) else {
            return;
        };
        o.waiting.remove(&self.ticket);
        if self.ticket != o.serving {
            // Gone before its turn (its call was dropped): skipped when the
            // line reaches it.
            o.abandoned.insert(self.ticket);
            return;
        }
        o.serving += 1;
        while o.abandoned.remove(&o.serving) {
            o.serving += 1;
        }
        if let Some(next) = o.waiting.remove(&o.serving) {
            let _ = next.send(());
        } else if o.serving == o.next {
            order.remove(&self.key);
        }
    }
}
