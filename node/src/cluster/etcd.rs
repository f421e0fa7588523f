//! The etcd v3 coordinator, for a cluster of processes.
//!
//! # Keys
//!
//! Under `/ferry/<cluster_id>/`:
//!
//! - `members/<node_id>`: `{"zone":"..","host":"..","port":N}` (JSON), put
//!   with this node's lease, so it disappears when the node stops renewing.
//! - `config/automq.zone.cidr.blocks`: the cluster-wide value, in canonical
//!   form, without a lease.
//! - `meta/topics`: the cluster's topic table (an encoded `TopicTable`),
//!   and `meta/security`: SCRAM credentials and ACLs; each changed only by
//!   compare-and-set on its mod revision.
//!
//! # How it runs
//!
//! Everything runs on a tokio runtime the caller gives (the node's
//! `ferry_wal::IoRuntime::handle()`); the calls that need the network return
//! futures that any executor can await. Two tasks run per coordinator:
//!
//! - the lease keeper renews the lease every TTL/3. If no renewal succeeded
//!   for TTL minus [`EtcdOptions::fence_margin`] (counted from when the last
//!   successful renewal was *sent*, so etcd's own expiry can only come later),
//!   the node is fenced ([`Coordinator::fenced`]), and stays fenced until it
//!   registers again with a new lease. The keeper then tries that every
//!   TTL/3: a fenced node rejoins once etcd is reachable, at a new revision
//!   and a new [`Coordinator::session`].
//! - the watcher rebuilds the view from a watch on the prefix. It starts with
//!   a range read, then watches from just after the newest member key's
//!   revision, so that deletions between that and the read still move the
//!   view's revision: the view's revision is the etcd revision of the latest
//!   change to the member set, which is the same on every node that has seen
//!   the same changes. A broken watch is re-established (read, then watch)
//!   with a bounded backoff.
//!
//! A registration that finds its `node_id` held by another live lease waits
//! up to [`EtcdOptions::takeover_wait`] for that lease to expire (a process
//! that just died and is restarting), then is refused: two live processes
//! with one `node.id` is a configuration error.
//!
//! Every request is bounded by [`EtcdOptions::request_timeout`], the
//! connection by [`EtcdOptions::connect_timeout`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::etcd_api::{
    create_revision_is, lease_is, mod_revision_is, op_delete, op_get, op_put, ByteCount, ByteMeter,
    Client, ConnectOptions, EtcdApiError, LeaseKeeper, Txn,
};
use arc_swap::ArcSwap;
use futures_channel::oneshot;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::cluster::zone::{ZoneTable, ZONE_CIDR_KEY};
use crate::cluster::{
    check_member, Coordinator, CoordinatorError, CoordinatorFuture, Doc, Member, View,
};

/// Default lease TTL.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(6);
/// Default safety margin: a node fences itself this long before its lease
/// could expire in etcd.
pub const FENCE_MARGIN_DEFAULT: Duration = Duration::from_secs(1);
/// Default bound on connecting to etcd.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default bound on one etcd request.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);

/// HTTP/2 ping interval on the etcd connection.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(10);

/// Longest wait between two attempts to re-establish the watch.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Errors of the etcd coordinator.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd options: {0}")]
    Options(String),
    #[error("etcd {op}: {source}")]
    Request {
        op: &'static str,
        #[source]
        source: EtcdApiError,
    },
    #[error("etcd {op}: no answer within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    #[error("etcd {op}: {what}")]
    Unexpected { op: &'static str, what: String },
    #[error("the tokio runtime the etcd coordinator runs on has stopped")]
    RuntimeGone,
}

/// How to reach etcd and how to behave there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `http://host:port` (or `host:port`) of each etcd member.
    pub endpoints: Vec<String>,
    /// Keys live under `/ferry/<cluster_id>/`: letters, digits, `-`, `_`, `.`.
    pub cluster_id: String,
    /// Lease time to live: a node that stops renewing leaves every view
    /// this long after its last renewal. At least 2 s (etcd's minimum).
    pub lease_ttl: Duration,
    /// A node fences itself when no renewal succeeded for
    /// `lease_ttl - fence_margin`. Less than `lease_ttl - lease_ttl / 3`, so
    /// that one missed renewal does not fence.
    pub fence_margin: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How long a registration waits for an older holder of its node id to
    /// expire before it is refused. Default: `lease_ttl + 1 s`, so that a
    /// process restarted right after a crash registers.
    pub takeover_wait: Duration,
}

impl EtcdOptions {
    /// The defaults, for `endpoints` and `cluster_id`.
    pub fn new(endpoints: Vec<String>, cluster_id: impl Into<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            cluster_id: cluster_id.into(),
            lease_ttl: LEASE_TTL_DEFAULT,
            fence_margin: FENCE_MARGIN_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            takeover_wait: LEASE_TTL_DEFAULT + Duration::from_secs(1),
        }
    }

    fn check(&self) -> Result<(), EtcdError> {
        let bad = |what: String| Err(EtcdError::Options(what));
        if self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return bad("at least one endpoint, none empty".to_owned());
        }
        if self.cluster_id.is_empty()
            || !self
                .cluster_id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            return bad(format!(
                "cluster id {:?}: letters, digits, '-', '_' and '.'",
                self.cluster_id
            ));
        }
        if self.lease_ttl < Duration::from_secs(2) {
            return bad(format!("lease TTL {:?}: at least 2 s", self.lease_ttl));
        }
        if self.fence_margin >= self.lease_ttl - self.lease_ttl / 3 {
            return bad(format!(
                "fence margin {:?}: less than two thirds of the lease TTL {:?}",
                self.fence_margin, self.lease_ttl
            ));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("non-zero connect and request timeouts".to_owned());
        }
        Ok(())
    }
}

/// The value of a member key.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MemberValue {
    zone: String,
    host: String,
    port: u16,
    #[serde(default)]
    endpoints: Vec<super::Endpoint>,
    #[serde(default)]
    principal: Option<String>,
}

/// Keys of one cluster.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    members: String,
    cidrs: String,
    /// `meta/<doc name>` per [`Doc`].
    docs: [String; 2],
}

impl Keys {
    fn new(cluster_id: &str) -> Keys {
        let prefix = format!("/ferry/{cluster_id}/");
        Keys {
            members: format!("{prefix}members/"),
            cidrs: format!("{prefix}config/{ZONE_CIDR_KEY}"),
            docs: Doc::ALL.map(|d| format!("{prefix}meta/{}", d.name())),
            prefix,
        }
    }

    fn doc(&self, doc: Doc) -> String {
        self.docs[doc as usize].clone()
    }

    /// The document a key holds, if it is one.
    fn doc_of(&self, key: &[u8]) -> Option<Doc> {
        Doc::ALL
            .into_iter()
            .find(|d| self.docs[*d as usize].as_bytes() == key)
    }

    fn member(&self, node_id: i32) -> String {
        format!("{}{node_id}", self.members)
    }

    /// The member in a member key and value; `None` (logged) if either is
    /// not what this code writes.
    fn parse_member(&self, key: &[u8], value: &[u8]) -> Option<Member> {
        let key = String::from_utf8_lossy(key);
        let node_id = key
            .strip_prefix(&self.members)
            .and_then(|id| id.parse::<i32>().ok());
        let parsed = serde_json::from_slice::<MemberValue>(value);
        match (node_id, parsed) {
            (Some(node_id), Ok(v)) => {
                let mut member = Member::new(node_id, v.zone, v.host, v.port);
                member.endpoints = v.endpoints;
                if let Some(p) = v.principal {
                    member.principal = p;
                }
                match check_member(&member) {
                    Ok(()) => Some(member),
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "ignoring a bad member in etcd");
                        None
                    }
                }
            }
            (_, Err(e)) => {
                tracing::warn!(key = %key, error = %e, "ignoring an unreadable member in etcd");
                None
            }
            (None, _) => {
                tracing::warn!(key = %key, "ignoring a member key without a node id");
                None
            }
        }
    }

    fn node_id(&self, key: &[u8]) -> Option<i32> {
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.members)?
            .parse()
            .ok()
    }
}

/// Whether the `n`th failure in a row (from 1) is logged: the first three,
/// then one in 30, so that an etcd that is away for hours does not flood
/// the log.
fn log_failure(n: u64) -> bool {
    n <= 3 || n % 30 == 0
}

/// Runs `fut`, bounded by `timeout`.
async fn bounded<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, EtcdApiError>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Request { op, source }),
        Err(_) => Err(EtcdError::Timeout { op, timeout }),
    }
}

/// Runs `fut` on `handle`; the returned future can be awaited anywhere.
fn on_runtime<T: Send + 'static>(
    handle: &Handle,
    fut: impl Future<Output = Result<T, CoordinatorError>> + Send + 'static,
) -> CoordinatorFuture<T> {
    let (tx, rx) = oneshot::channel();
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    Box::pin(async move {
        rx.await
            .unwrap_or(Err(CoordinatorError::Etcd(EtcdError::RuntimeGone)))
    })
}

/// State shared by the handle and its tasks.
struct Shared {
    member: Member,
    options: EtcdOptions,
    keys: Keys,
    client: Client,
    /// Time zero for the millisecond clocks below.
    base: Instant,
    view: Arc<ArcSwap<View>>,
    /// Taken by whoever changes `view`, so that changes do not race.
    view_writer: Mutex<()>,
    generation: AtomicU64,
    /// The views published, for [`Coordinator::led_throughout`].
    history: Mutex<crate::cluster::ViewHistory>,
    /// (value, etcd mod revision of the value; 0 when unset).
    cidrs: Mutex<(String, i64)>,
    cidr_generation: AtomicU64,
    /// The cluster documents by [`Doc`] (etcd mod revision of the value,
    /// 0 when unset), and their generations.
    docs: [Mutex<(u64, Option<bytes::Bytes>)>; 2],
    doc_generations: [AtomicU64; 2],
    /// The current lease.
    lease: AtomicI64,
    /// When the last successful renewal (or the grant) was sent, in ms
    /// since `base`.
    renewed_ms: AtomicU64,
    /// `effective TTL - fence_margin`, in ms.
    fence_after_ms: AtomicU64,
    /// Latched: the lease is lost or late. Cleared by a new registration.
    lost: AtomicBool,
    left: AtomicBool,
    session: AtomicU64,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fenced(&self) -> bool {
        if self.left.load(Ordering::Acquire) || self.lost.load(Ordering::Acquire) {
            return true;
        }
        let renewed = self.renewed_ms.load(Ordering::Acquire);
        let late =
            self.now_ms().saturating_sub(renewed) > self.fence_after_ms.load(Ordering::Acquire);
        if late {
            self.fence("the lease was not renewed in time");
        }
        late
    }

    /// Latches the fence (logged once per lease).
    fn fence(&self, why: &str) {
        if !self.lost.swap(true, Ordering::AcqRel) && !self.left.load(Ordering::Acquire) {
            tracing::error!(
                node_id = self.member.node_id,
                lease = self.lease.load(Ordering::Acquire),
                why,
                "fenced: this node stops acknowledging until it registers again"
            );
        }
    }

    /// Publishes `members` at `revision` if that is newer than the view
    /// shown. Returns whether the view shown now has these members: false
    /// when they differ from the shown ones but `revision` is not higher.
    /// That happens after a read that found members gone by a deletion this
    /// node has not seen yet (a deletion leaves no key behind to date it);
    /// the watch then replays that deletion and publishes at its revision.
    /// So new members are never shown at an old revision.
    /// Marks that views may have been missed (the watch broke and the
    /// members were read again): the history starts again, and the
    /// generation moves, so that every shard checks what it holds.
    fn mark_gap(&self) {
        let _writer = self.view_writer.lock();
        let view = self.view.load_full();
        let generation = self.generation.load(Ordering::Acquire) + 1;
        self.history.lock().push(generation, view, true);
        self.generation.store(generation, Ordering::Release);
    }

    fn publish(&self, revision: u64, members: &BTreeMap<i32, Member>) -> bool {
        let _writer = self.view_writer.lock();
        let view = self.view.load_full();
        if revision <= view.revision() {
            return view.members().len() == members.len()
                && view
                    .members()
                    .iter()
                    .zip(members.values())
                    .all(|(a, b)| a == b);
        }
        let view = Arc::new(View::new(revision, members.values().cloned()));
        self.view.store(view.clone());
        // Recorded before the generation moves: a reader that sees the new
        // generation finds its view in the history.
        let generation = self.generation.load(Ordering::Acquire) + 1;
        self.history.lock().push(generation, view.clone(), false);
        self.generation.store(generation, Ordering::Release);
        tracing::debug!(
            node_id = self.member.node_id,
            revision,
            members = members.len(),
            "cluster view"
        );
        true
    }

    /// Takes a cidr value seen at `revision` (0: unset), if newer.
    fn set_cidrs(&self, value: &[u8], revision: i64) {
        let mut cidrs = self.cidrs.lock();
        if revision <= cidrs.1 {
            return;
        }
        let text = String::from_utf8_lossy(value).into_owned();
        cidrs.1 = revision;
        if cidrs.0 != text {
            cidrs.0 = text;
            self.cidr_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Takes a document seen at `revision` (value `None`: deleted), if
    /// newer than the one held.
    fn set_doc(&self, doc: Doc, value: Option<&[u8]>, revision: i64) {
        let revision = u64::try_from(revision).unwrap_or(0);
        let mut held = self.docs[doc as usize].lock();
        if revision <= held.0 {
            return;
        }
        *held = (revision, value.map(bytes::Bytes::copy_from_slice));
        self.doc_generations[doc as usize].fetch_add(1, Ordering::AcqRel);
    }

    fn fence_after(&self, granted_ttl_s: i64) -> u64 {
        let granted = Duration::from_secs(u64::try_from(granted_ttl_s).unwrap_or(0));
        let ttl = self.options.lease_ttl.min(granted);
        u64::try_from(ttl.saturating_sub(self.options.fence_margin).as_millis()).unwrap_or(0)
    }
}

/// A node's registration in etcd: its lease, the view of the cluster, and
/// the cluster-wide zone CIDR blocks. Dropping it stops its tasks and
/// revokes its lease in the background (so it leaves at once); use
/// [`Coordinator::leave`] to wait for that.
pub struct EtcdCoordinator {
    shared: Arc<Shared>,
    handle: Handle,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordinator")
            .field("member", &self.shared.member)
            .field("cluster_id", &self.shared.options.cluster_id)
            .field("lease", &self.shared.lease.load(Ordering::Acquire))
            .field("session", &self.shared.session.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// A lease with the node's member key under it.
struct Registration {
    lease: i64,
    granted_ttl: i64,
    /// When the grant was sent, in ms since `base`.
    sent_ms: u64,
}

impl EtcdCoordinator {
    /// Connects, registers `member` with a new lease, reads the first view
    /// (which holds `member`) and starts the lease keeper and the watcher on
    /// `handle`. The future runs on `handle` and can be awaited from any
    /// executor (or with `block_on`).
    pub fn register(
        handle: Handle,
        options: EtcdOptions,
        member: Member,
    ) -> impl Future<Output = Result<EtcdCoordinator, CoordinatorError>> + Send {
        Self::register_counted(handle, options, member, None)
    }

    /// [`EtcdCoordinator::register`], with every byte to and from etcd
    /// counted as `coordinator` traffic of etcd's zone when `counted` is
    /// given (by the connections' own reads and writes).
    pub fn register_counted(
        handle: Handle,
        options: EtcdOptions,
        member: Member,
        counted: Option<CoordinatorTraffic>,
    ) -> impl Future<Output = Result<EtcdCoordinator, CoordinatorError>> + Send {
        let (tx, rx) = oneshot::channel();
        let h = handle.clone();
        handle.spawn(async move {
            let meter = counted.map(CoordinatorTraffic::meter);
            let _ = tx.send(register_on_runtime(h, options, member, meter).await);
        });
        async move {
            rx.await
                .unwrap_or(Err(CoordinatorError::Etcd(EtcdError::RuntimeGone)))
        }
    }

    pub fn member(&self) -> &Member {
        &self.shared.member
    }

    pub fn options(&self) -> &EtcdOptions {
        &self.shared.options
    }

    /// The current lease id (changes when the node registers again).
    pub fn lease_id(&self) -> i64 {
        self.shared.lease.load(Ordering::Acquire)
    }
}

async fn register_on_runtime(
    handle: Handle,
    options: EtcdOptions,
    member: Member,
    meter: Option<ByteMeter>,
) -> Result<EtcdCoordinator, CoordinatorError> {
    options.check()?;
    check_member(&member)?;
    // HTTP/2 pings find a dead connection under the watch. etcd answers
    // pings more frequent than its --grpc-keepalive-min-time (5 s by default)
    // with GOAWAY, so stay above that.
    let keep_alive = HTTP2_PING_INTERVAL;
    let connect = ConnectOptions {
        connect_timeout: options.connect_timeout,
        keep_alive_interval: keep_alive,
        keep_alive_timeout: options.request_timeout,
        meter,
    };
    let client = bounded(
        "connect",
        options.connect_timeout,
        Client::connect(&options.endpoints, connect),
    )
    .await?;
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        keys: Keys::new(&options.cluster_id),
        member,
        options,
        client,
        base: Instant::now(),
        view: Arc::new(ArcSwap::from_pointee(View::empty())),
        view_writer: Mutex::new(()),
        generation: AtomicU64::new(1),
        history: Mutex::new(crate::cluster::ViewHistory::new(1, Arc::new(View::empty()))),
        cidrs: Mutex::new((String::new(), 0)),
        cidr_generation: AtomicU64::new(1),
        docs: [Mutex::new((0, None)), Mutex::new((0, None))],
        doc_generations: [AtomicU64::new(1), AtomicU64::new(1)],
        lease: AtomicI64::new(0),
        renewed_ms: AtomicU64::new(0),
        fence_after_ms: AtomicU64::new(0),
        lost: AtomicBool::new(true),
        left: AtomicBool::new(false),
        session: AtomicU64::new(0),
        stop,
    });
    let registration = register_lease(&shared, None).await?;
    adopt(&shared, &registration);
    let mut watcher = Watcher::default();
    if let Err(e) = watcher.sync(&shared).await {
        let mut client = shared.client.clone();
        let _ = bounded(
            "revoke",
            shared.options.request_timeout,
            client.lease_revoke(registration.lease),
        )
        .await;
        return Err(e.into());
    }
    tracing::info!(
        node_id = shared.member.node_id,
        zone = %shared.member.zone,
        lease = registration.lease,
        revision = shared.view.load().revision(),
        "registered in etcd"
    );
    handle.spawn(keep_lease(shared.clone()));
    handle.spawn(watch_loop(shared.clone(), watcher));
    Ok(EtcdCoordinator { shared, handle })
}

/// Makes a registration current: the lease, the clock, a new session.
fn adopt(shared: &Shared, r: &Registration) {
    shared.lease.store(r.lease, Ordering::Release);
    shared
        .fence_after_ms
        .store(shared.fence_after(r.granted_ttl), Ordering::Release);
    shared.renewed_ms.store(r.sent_ms, Ordering::Release);
    shared.session.fetch_add(1, Ordering::AcqRel);
    shared.lost.store(false, Ordering::Release);
}

/// Grants a lease and puts the member key under it, if no other lease holds
/// it. `previous` is this node's own older lease, whose key may be taken
/// over at once.
async fn register_lease(
    shared: &Shared,
    previous: Option<i64>,
) -> Result<Registration, CoordinatorError> {
    let options = &shared.options;
    let timeout = options.request_timeout;
    let node_id = shared.member.node_id;
    let key = shared.keys.member(node_id);
    let value = serde_json::to_vec(&MemberValue {
        zone: shared.member.zone.clone(),
        host: shared.member.host.clone(),
        port: shared.member.port,
        endpoints: shared.member.endpoints.clone(),
        principal: Some(shared.member.principal.clone()),
    })
    .map_err(|e| EtcdError::Unexpected {
        op: "encode member",
        what: e.to_string(),
    })?;
    let mut client = shared.client.clone();
    let ttl_s = i64::try_from(options.lease_ttl.as_secs()).unwrap_or(i64::MAX);
    let sent_ms = shared.now_ms();
    let grant = bounded("lease grant", timeout, client.lease_grant(ttl_s)).await?;
    if !grant.error.is_empty() {
        return Err(EtcdError::Unexpected {
            op: "lease grant",
            what: grant.error,
        }
        .into());
    }
    let lease = grant.id;
    let registration = Registration {
        lease,
        granted_ttl: grant.ttl,
        sent_ms,
    };
    let deadline = Instant::now() + options.takeover_wait;
    let result = loop {
        let txn = Txn::new()
            .when([create_revision_is(key.clone(), 0)])
            .and_then([op_put(key.clone(), value.clone(), lease)]);
        let done = match bounded("register", timeout, client.txn(txn)).await {
            Ok(r) => r.succeeded,
            Err(e) => break Err(e.into()),
        };
        if done {
            break Ok(registration);
        }
        // Someone holds the key: who?
        let holder = match bounded("register", timeout, client.get(key.clone(), false)).await {
            Ok(r) => r.kvs.first().map(|kv| kv.lease),
            Err(e) => break Err(e.into()),
        };
        match holder {
            None => continue, // gone meanwhile
            Some(old) if Some(old) == previous && old != 0 => {
                // Our own older lease: drop the key, if it still holds it.
                let txn = Txn::new()
                    .when([lease_is(key.clone(), old)])
                    .and_then([op_delete(key.clone())]);
                if let Err(e) = bounded("register", timeout, client.txn(txn)).await {
                    break Err(e.into());
                }
            }
            Some(old) => {
                if Instant::now() >= deadline {
                    tracing::error!(
                        node_id,
                        holder_lease = old,
                        "node.id is held by another live process"
                    );
                    break Err(CoordinatorError::DuplicateNode { node_id });
                }
                tracing::info!(
                    node_id,
                    holder_lease = old,
                    "node.id still held by an older lease; waiting for it to expire"
                );
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(left.min(Duration::from_millis(500))).await;
            }
        }
    };
    if result.is_err() {
        let _ = bounded("lease revoke", timeout, client.lease_revoke(lease)).await;
    }
    result
}

/// Renews the lease every TTL/3 while the node is registered; registers
/// again after the lease was lost.
async fn keep_lease(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let interval = shared.options.lease_ttl / 3;
    let timeout = shared.options.request_timeout.min(interval);
    let mut stream: Option<LeaseKeeper> = None;
    let mut failures = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if *stop.borrow() || shared.left.load(Ordering::Acquire) {
            return;
        }
        let lease = shared.lease.load(Ordering::Acquire);
        // Checks the clock (latches the fence if late).
        if shared.fenced() {
            stream = None;
            if rejoin(&shared, lease, failures + 1).await {
                failures = 0;
            } else {
                failures += 1;
            }
            continue;
        }
        let sent = shared.now_ms();
        let renewed = renew(&shared, lease, &mut stream, timeout).await;
        match renewed {
            Ok(ttl) if ttl > 0 => {
                failures = 0;
                // A renewal sent after the deadline does not undo a fence
                // that a reader may already have acted on.
                let prior = shared.renewed_ms.load(Ordering::Acquire);
                if sent.saturating_sub(prior) > shared.fence_after_ms.load(Ordering::Acquire) {
                    shared.fence("the lease was renewed too late");
                } else {
                    shared.renewed_ms.fetch_max(sent, Ordering::AcqRel);
                }
            }
            Ok(_) => {
                stream = None;
                shared.fence("etcd says the lease has expired");
            }
            Err(e) => {
                stream = None;
                failures += 1;
                if log_failure(failures) {
                    tracing::warn!(
                        node_id = shared.member.node_id,
                        error = %e,
                        failures,
                        "lease renewal failed"
                    );
                }
            }
        }
    }
}

/// One renewal; the TTL etcd answers (0: the lease is gone).
async fn renew(
    shared: &Shared,
    lease: i64,
    stream: &mut Option<LeaseKeeper>,
    timeout: Duration,
) -> Result<i64, EtcdError> {
    if stream.as_ref().is_some_and(|k| k.id() != lease) {
        *stream = None;
    }
    let Some(keeper) = stream else {
        // Opening the stream renews once (it fails if the lease is gone).
        let mut client = shared.client.clone();
        return match bounded("lease keep-alive", timeout, client.lease_keep_alive(lease)).await {
            Ok(keeper) => {
                *stream = Some(keeper);
                Ok(1)
            }
            Err(EtcdError::Request {
                source: EtcdApiError::LeaseNotFound(_),
                ..
            }) => Ok(0),
            Err(e) => Err(e),
        };
    };
    bounded("lease keep-alive", timeout, keeper.keep_alive()).await
}

/// Registers again after the lease was lost; whether it did. `attempt`
/// counts failed attempts in a row, from 1, for the log.
async fn rejoin(shared: &Shared, old: i64, attempt: u64) -> bool {
    let mut client = shared.client.clone();
    if old != 0 {
        // Best effort: the old lease may still be alive in etcd.
        let _ = bounded(
            "lease revoke",
            shared.options.request_timeout,
            client.lease_revoke(old),
        )
        .await;
    }
    match register_lease(shared, Some(old)).await {
        Ok(r) => {
            if shared.left.load(Ordering::Acquire) {
                let _ = bounded(
                    "lease revoke",
                    shared.options.request_timeout,
                    client.lease_revoke(r.lease),
                )
                .await;
                return false;
            }
            adopt(shared, &r);
            tracing::warn!(
                node_id = shared.member.node_id,
                lease = r.lease,
                session = shared.session.load(Ordering::Acquire),
                "registered again in etcd after being fenced"
            );
            true
        }
        Err(e) => {
            if log_failure(attempt) {
                tracing::warn!(
                    node_id = shared.member.node_id,
                    error = %e,
                    attempt,
                    "registering again in etcd failed; will retry"
                );
            }
            false
        }
    }
}

/// The watcher's state.
#[derive(Debug, Default)]
struct Watcher {
    members: BTreeMap<i32, Member>,
    /// The view's revision.
    revision: u64,
    /// The revision of the last range read: events up to it are already in
    /// `members` and only move `revision`.
    synced: i64,
    /// Watch from here.
    start: i64,
    /// The last watch from `start` failed as compacted: watch from
    /// `synced + 1` next time.
    compacted: bool,
}

impl Watcher {
    /// Reads the members and the cidr value, publishes them, and sets where
    /// the watch starts.
    async fn sync(&mut self, shared: &Shared) -> Result<(), EtcdError> {
        let mut client = shared.client.clone();
        let r = bounded(
            "read",
            shared.options.request_timeout,
            client.get(shared.keys.prefix.clone(), true),
        )
        .await?;
        let synced = r.header.as_ref().map_or(0, |h| h.revision);
        let mut members = BTreeMap::new();
        let mut newest = 0;
        let mut cidrs: Option<(Vec<u8>, i64)> = None;
        for kv in &r.kvs {
            if kv.key.starts_with(shared.keys.members.as_bytes()) {
                newest = newest.max(kv.mod_revision);
                if let Some(m) = shared.keys.parse_member(&kv.key, &kv.value) {
                    members.insert(m.node_id, m);
                }
            } else if kv.key == shared.keys.cidrs.as_bytes() {
                cidrs = Some((kv.value.clone(), kv.mod_revision));
            } else if let Some(doc) = shared.keys.doc_of(&kv.key) {
                shared.set_doc(doc, Some(&kv.value), kv.mod_revision);
            }
        }
        self.members = members;
        self.revision = self.revision.max(u64::try_from(newest).unwrap_or(0));
        self.synced = synced;
        self.start = if self.compacted || newest == 0 {
            synced + 1
        } else {
            newest + 1
        };
        let replay = self.start <= synced;
        self.compacted = false;
        if !shared.publish(self.revision, &self.members) && !replay {
            // Without a replay, the read's revision is later than any
            // change this node has seen.
            self.revision = self.revision.max(u64::try_from(synced).unwrap_or(0));
            shared.publish(self.revision, &self.members);
        }
        shared.mark_gap();
        match cidrs {
            Some((value, revision)) => shared.set_cidrs(&value, revision),
            // Unset (deleted, or never set): empty, as of this read.
            None => shared.set_cidrs(b"", synced),
        }
        Ok(())
    }

    /// Watches from `start` until the stream breaks or the coordinator stops
    /// (`Ok`).
    async fn watch(
        &mut self,
        shared: &Shared,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), EtcdError> {
        let mut client = shared.client.clone();
        let mut stream = bounded(
            "watch",
            shared.options.request_timeout,
            client.watch_prefix(shared.keys.prefix.clone(), self.start, true),
        )
        .await?;
        loop {
            let message = tokio::select! {
                _ = stop.changed() => return Ok(()),
                m = stream.message() => m,
            };
            let response = match message {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return Err(EtcdError::Unexpected {
                        op: "watch",
                        what: "the stream ended".to_owned(),
                    })
                }
                Err(source) => {
                    return Err(EtcdError::Request {
                        op: "watch",
                        source,
                    })
                }
            };
            if response.canceled {
                if response.compact_revision > 0 {
                    self.compacted = true;
                }
                return Err(EtcdError::Unexpected {
                    op: "watch",
                    what: format!(
                        "canceled by etcd (compacted at {}): {}",
                        response.compact_revision, response.cancel_reason
                    ),
                });
            }
            for event in &response.events {
                let Some(kv) = &event.kv else { continue };
                let revision = kv.mod_revision;
                // etcd's API: a deletion resets a key's version to 0.
                let deleted = kv.version == 0;
                if let Some(node_id) = shared.keys.node_id(&kv.key) {
                    if revision > self.synced {
                        if deleted {
                            self.members.remove(&node_id);
                        } else if let Some(m) = shared.keys.parse_member(&kv.key, &kv.value) {
                            self.members.insert(node_id, m);
                        } else {
                            self.members.remove(&node_id);
                        }
                    }
                    self.revision = self.revision.max(u64::try_from(revision).unwrap_or(0));
                    // One view per change: a node that joined and left
                    // within one response still shows in the history.
                    shared.publish(self.revision, &self.members);
                } else if kv.key == shared.keys.cidrs.as_bytes() && revision > self.synced {
                    let value = if deleted { &[][..] } else { &kv.value[..] };
                    shared.set_cidrs(value, revision);
                } else if let Some(doc) = shared.keys.doc_of(&kv.key) {
                    shared.set_doc(doc, (!deleted).then_some(&kv.value[..]), revision);
                }
            }
            shared.publish(self.revision, &self.members);
        }
    }
}

/// Keeps the view current until the coordinator stops.
async fn watch_loop(shared: Arc<Shared>, mut watcher: Watcher) {
    let mut stop = shared.stop.subscribe();
    const BACKOFF_MIN: Duration = Duration::from_millis(100);
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u64;
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        let result = if first {
            first = false;
            watcher.watch(&shared, &mut stop).await
        } else {
            match watcher.sync(&shared).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(node_id = shared.member.node_id, "etcd watch is back");
                    }
                    backoff = BACKOFF_MIN;
                    failures = 0;
                    watcher.watch(&shared, &mut stop).await
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                if log_failure(failures) {
                    tracing::warn!(
                        node_id = shared.member.node_id,
                        error = %e,
                        failures,
                        retry_in = ?backoff,
                        "etcd watch broke; the view may be stale until it is back"
                    );
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

impl Coordinator for EtcdCoordinator {
    fn node_id(&self) -> i32 {
        self.shared.member.node_id
    }

    fn published(&self) -> &Arc<ArcSwap<View>> {
        &self.shared.view
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    fn fenced(&self) -> bool {
        self.shared.fenced()
    }

    fn session(&self) -> u64 {
        self.shared.session.load(Ordering::Acquire)
    }

    fn zone_cidrs(&self) -> String {
        self.shared.cidrs.lock().0.clone()
    }

    fn zone_cidrs_generation(&self) -> u64 {
        self.shared.cidr_generation.load(Ordering::Acquire)
    }

    fn set_zone_cidrs(&self, text: &str) -> CoordinatorFuture<()> {
        let table = match ZoneTable::parse(text) {
            Ok(t) => t,
            Err(e) => return Box::pin(std::future::ready(Err(e.into()))),
        };
        let shared = self.shared.clone();
        on_runtime(&self.handle, async move {
            let mut client = shared.client.clone();
            let value = table.text().to_owned();
            let r = bounded(
                "put zone cidr blocks",
                shared.options.request_timeout,
                client.put(shared.keys.cidrs.clone(), value.clone(), 0),
            )
            .await?;
            if let Some(h) = &r.header {
                shared.set_cidrs(value.as_bytes(), h.revision);
            }
            Ok(())
        })
    }

    fn doc(&self, doc: Doc) -> (u64, Option<bytes::Bytes>) {
        self.shared.docs[doc as usize].lock().clone()
    }

    fn is_etcd(&self) -> bool {
        true
    }

    fn doc_generation(&self, doc: Doc) -> u64 {
        self.shared.doc_generations[doc as usize].load(Ordering::Acquire)
    }

    fn led_throughout(&self, topic: &str, partition: i32, node_id: i32, since: u64) -> bool {
        self.shared
            .history
            .lock()
            .led_throughout(topic, partition, node_id, since)
    }

    fn views_since(&self, since: u64) -> Option<Vec<Arc<View>>> {
        self.shared.history.lock().views_since(since)
    }

    fn put_doc(
        &self,
        doc: Doc,
        expected: u64,
        data: bytes::Bytes,
    ) -> CoordinatorFuture<Result<u64, u64>> {
        let shared = self.shared.clone();
        on_runtime(&self.handle, async move {
            let key = shared.keys.doc(doc);
            let expected_rev = i64::try_from(expected).unwrap_or(i64::MAX);
            let txn = Txn::new()
                .when([mod_revision_is(key.clone(), expected_rev)])
                .and_then([op_put(key.clone(), data.to_vec(), 0)])
                .or_else([op_get(key.clone())]);
            let mut client = shared.client.clone();
            let r = bounded(
                "put a cluster document",
                shared.options.request_timeout,
                client.txn(txn),
            )
            .await?;
            let revision = r.header.as_ref().map_or(0, |h| h.revision);
            if r.succeeded {
                shared.set_doc(doc, Some(&data), revision);
                return Ok(Ok(u64::try_from(revision).unwrap_or(0)));
            }
            // Someone else's table is newer: take it, and say at what.
            let mut current = 0;
            for op in &r.responses {
                if let Some(
                    crate::cluster::etcd_api::generated::response_op::Response::ResponseRange(g),
                ) = &op.response
                {
                    for kv in &g.kvs {
                        shared.set_doc(doc, Some(&kv.value), kv.mod_revision);
                        current = u64::try_from(kv.mod_revision).unwrap_or(0);
                    }
                }
            }
            Ok(Err(current))
        })
    }

    fn leave(&self) -> CoordinatorFuture<()> {
        if self.shared.left.swap(true, Ordering::AcqRel) {
            return Box::pin(std::future::ready(Ok(())));
        }
        let _ = self.shared.stop.send_replace(true);
        let shared = self.shared.clone();
        on_runtime(&self.handle, async move {
            let lease = shared.lease.load(Ordering::Acquire);
            let mut client = shared.client.clone();
            bounded(
                "lease revoke",
                shared.options.request_timeout,
                client.lease_revoke(lease),
            )
            .await?;
            tracing::info!(node_id = shared.member.node_id, "left the cluster");
            Ok(())
        })
    }
}

impl Drop for EtcdCoordinator {
    fn drop(&mut self) {
        let _ = self.shared.stop.send_replace(true);
        if !self.shared.left.swap(true, Ordering::AcqRel) {
            let shared = self.shared.clone();
            self.handle.spawn(async move {
                let lease = shared.lease.load(Ordering::Acquire);
                let mut client = shared.client.clone();
                let _ = bounded(
                    "lease revoke",
                    shared.options.request_timeout,
                    client.lease_revoke(lease),
                )
                .await;
            });
        }
    }
}

/// What counts a node's etcd bytes: the node's traffic table, and the zone
/// table that names each etcd endpoint's zone by its address (`unknown`
/// when no block holds it).
pub struct CoordinatorTraffic {
    pub traffic: Arc<crate::cluster::rpc::RpcTraffic>,
    pub zones: ZoneTable,
}

impl CoordinatorTraffic {
    /// Counts each connection's bytes as `coordinator` traffic of the zone
    /// its etcd address is in (`unknown` where no CIDR block has it).
    fn meter(self) -> ByteMeter {
        let counted = Arc::new(self);
        Arc::new(move |peer: std::net::SocketAddr| -> ByteCount {
            let zone = counted.zones.zone_of(peer.ip()).unwrap_or("unknown");
            let traffic = counted.traffic.zone(zone);
            let kind = crate::cluster::rpc::RpcKind::Coordinator;
            Arc::new(move |sent, received| traffic.add(kind, sent, received))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let ok = EtcdOptions::new(vec!["http://127.0.0.1:2379".into()], "c1");
        assert!(ok.check().is_ok());
        let mut o = ok.clone();
        o.endpoints.clear();
        assert!(o.check().is_err());
        let mut o = ok.clone();
        o.cluster_id = "a/b".into();
        assert!(o.check().is_err());
        let mut o = ok.clone();
        o.lease_ttl = Duration::from_secs(1);
        assert!(o.check().is_err());
        let mut o = ok.clone();
        o.fence_margin = Duration::from_secs(4);
        assert!(o.check().is_err());
        let mut o = ok;
        o.request_timeout = Duration::ZERO;
        assert!(o.check().is_err());
    }

    #[test]
    fn member_keys_round_trip_and_bad_values_are_skipped() {
        let keys = Keys::new("c1");
        assert_eq!(keys.member(7), "/ferry/c1/members/7");
        assert_eq!(keys.cidrs, "/ferry/c1/config/automq.zone.cidr.blocks");
        let value = br#"{"zone":"a","host":"h1","port":9092}"#;
        assert_eq!(
            keys.parse_member(b"/ferry/c1/members/7", value),
            Some(Member::new(7, "a", "h1", 9092))
        );
        assert_eq!(keys.node_id(b"/ferry/c1/members/7"), Some(7));
        assert_eq!(keys.node_id(b"/ferry/c1/members/x"), None);
        assert_eq!(keys.node_id(b"/ferry/c2/members/7"), None);
        assert_eq!(keys.parse_member(b"/ferry/c1/members/x", value), None);
        assert_eq!(keys.parse_member(b"/ferry/c1/members/7", b"{"), None);
        assert_eq!(keys.parse_member(b"/ferry/c1/members/7", b"\xff"), None);
        let bad_zone = br#"{"zone":"a b","host":"h1","port":9092}"#;
        assert_eq!(keys.parse_member(b"/ferry/c1/members/7", bad_zone), None);
        let bad_port = br#"{"zone":"a","host":"h1","port":70000}"#;
        assert_eq!(keys.parse_member(b"/ferry/c1/members/7", bad_port), None);
    }
}
