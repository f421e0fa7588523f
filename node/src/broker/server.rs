//! Starting and stopping a node.
//!
//! Each shard is a glommio executor pinned to a core, with its own listener on
//! the same port (SO_REUSEPORT), so the kernel spreads connections over the
//! shards with no acceptor thread in between. The port is reserved first by a
//! socket that binds but never listens, so `port 0` still gives every shard
//! the same port. With `ferry.accept=acceptor`, shard 0 alone listens and
//! deals connections round-robin (perf/accept-modes.md compares the two).

use crate::clock::now_ms;
use crate::cluster::topics::{TopicTable, Topics};
use crate::node::{ClusterJoin, ListenerCtx, NodeCtx, NodeSettings, Recovered};
use crate::shard::{Shard, ShardMsg};
use crate::storage::durable::DurableLog;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Queue depth between each pair of shards.
pub const SHARD_QUEUE_DEPTH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard {shard}: {error}")]
    Shard { shard: usize, error: String },
    #[error("cannot read the security document (SCRAM credentials) from the bucket: {0}")]
    Security(String),
    #[error("the node has no listener")]
    NoListener,
    #[error("shard {0} did not start listening within 10 s")]
    StartTimeout(usize),
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] crate::cluster::CoordinatorError),
}

pub struct RunningNode {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's name and address, in `listeners` order.
    pub listeners: Vec<(String, SocketAddr)>,
    pub ctx: Arc<NodeCtx>,
    stops: Vec<oneshot::Sender<()>>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl RunningNode {
    /// Stops accepting, ends every shard, and waits for them.
    pub fn stop(mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for e in self.executors.drain(..) {
            let _ = e.join();
        }
    }

    /// Blocks until every shard has ended (they end only when stopped).
    pub fn wait(mut self) {
        for e in self.executors.drain(..) {
            let _ = e.join();
        }
    }
}

fn reserve_port(addr: SocketAddr) -> Result<socket2::Socket, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(err)?;
    sock.set_reuse_address(true).map_err(err)?;
    sock.set_reuse_port(true).map_err(err)?;
    sock.bind(&addr.into()).map_err(err)?;
    Ok(sock)
}

/// Starts a node with `shards` executors, serving every listener of
/// `settings`.
pub fn start(
    mut settings: NodeSettings,
    durable: Arc<dyn DurableLog>,
    topics: TopicTable,
    recovered: Recovered,
) -> Result<RunningNode, ServerError> {
    let mut reserved = Vec::new();
    let mut listeners = Vec::new();
    for spec in std::mem::take(&mut settings.listeners) {
        let sock = reserve_port(spec.bind)?;
        let addr = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or(ServerError::Bind {
                addr: spec.bind,
                source: std::io::Error::other("no local address"),
            })?;
        reserved.push(sock);
        let mut spec = spec;
        if spec.advertised_port == 0 {
            spec.advertised_port = addr.port();
        }
        listeners.push(Arc::new(ListenerCtx {
            inter_broker: spec.name == settings.inter_broker_listener,
            spec,
            addr,
        }));
    }
    let first = listeners.first().ok_or(ServerError::NoListener)?;
    let addr = first.addr;
    // Other nodes call this one on its inter-broker listener; a node whose
    // configuration names none (an embedded node) is called on its first.
    let rpc_listener = listeners
        .iter()
        .find(|l| l.inter_broker)
        .unwrap_or(first)
        .clone();
    let shards = settings.shards.max(1);
    settings.shards = shards;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut me = crate::cluster::Member::new(
        settings.node_id,
        settings
            .rack
            .clone()
            .unwrap_or_else(|| crate::node::DEFAULT_ZONE.to_owned()),
        rpc_listener.spec.advertised_host.clone(),
        rpc_listener.spec.advertised_port,
    );
    me.endpoints = listeners
        .iter()
        .map(|l| crate::cluster::Endpoint {
            listener: l.spec.name.clone(),
            host: l.spec.advertised_host.clone(),
            port: l.spec.advertised_port,
        })
        .collect();
    me.principal = settings.rpc_principal.to_string();
    let alone = matches!(settings.cluster, ClusterJoin::Alone);
    let traffic = Arc::new(crate::cluster::rpc::RpcTraffic::new());
    let cluster: Arc<dyn crate::cluster::Coordinator> = match std::mem::take(&mut settings.cluster)
    {
        ClusterJoin::Alone => {
            let local = crate::cluster::LocalCoordinator::with_zone_cidrs(&settings.zone_cidrs)
                .map_err(crate::cluster::CoordinatorError::from)?;
            Arc::new(local.register(me)?)
        }
        ClusterJoin::Local(local) => Arc::new(local.register(me)?),
        ClusterJoin::Pending => {
            return Err(ServerError::Cluster(
                crate::cluster::CoordinatorError::InvalidMember(
                    "the etcd coordinator was not set up before the node started".into(),
                ),
            ))
        }
        ClusterJoin::Etcd { options, runtime } => {
            let rt = runtime.clone();
            // etcd's bytes count as coordinator traffic, by the zone the
            // configured CIDR blocks give its address.
            let counted = crate::cluster::etcd::CoordinatorTraffic {
                traffic: traffic.clone(),
                zones: crate::cluster::zone::ZoneTable::parse(&settings.zone_cidrs)
                    .unwrap_or_else(|_| crate::cluster::zone::ZoneTable::empty()),
            };
            let c = runtime.block_on(crate::cluster::etcd::EtcdCoordinator::register_counted(
                rt,
                options,
                me,
                Some(counted),
            ))?;
            use crate::cluster::Coordinator as _;
            if !settings.zone_cidrs.is_empty() && c.zone_cidrs().is_empty() {
                // A cluster without a zone table takes this node's.
                runtime.block_on(c.set_zone_cidrs(&settings.zone_cidrs))?;
            }
            Arc::new(c)
        }
    };
    let topics = Arc::new(Topics::new(topics, now_ms() as u64));
    let ctx = Arc::new(NodeCtx::new(
        settings,
        crate::node::NodeParts {
            topics,
            durable,
            recovered,
            cluster,
            alone,
            traffic,
            supported: crate::broker::api::supported_apis(),
            listeners,
        },
    ));
    // Certificates reload when their files change.
    let mut watched: Vec<std::sync::Weak<dyn crate::security::tls::Watched>> = Vec::new();
    for l in &ctx.listeners {
        if let Some(t) = &l.spec.tls {
            let w: Arc<dyn crate::security::tls::Watched> = t.clone();
            watched.push(Arc::downgrade(&w));
        }
    }
    if let Some(t) = &ctx.rpc_tls {
        let w: Arc<dyn crate::security::tls::Watched> = t.clone();
        watched.push(Arc::downgrade(&w));
    }
    crate::security::tls::watch(watched);
    seed_topics(&ctx);
    seed_security(&ctx)?;
    seed_inter_broker_user(&ctx)?;
    let mesh = MeshBuilder::<ShardMsg, _>::full(shards, SHARD_QUEUE_DEPTH);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, String>>();
    let mut stops = Vec::new();
    let mut executors = Vec::new();
    for id in 0..shards {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        let (ctx, mesh, ready) = (ctx.clone(), mesh.clone(), ready_tx.clone());
        // Nodes of one process (`ferry dev --zones`) start on different cores.
        let core = (id + ctx.node_id.unsigned_abs() as usize) % cores;
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("ferry-shard-{id}"))
            .spawn(move || async move { run_shard(id, ctx, mesh, ready, stop_rx).await })
            .map_err(|e| ServerError::Shard {
                shard: id,
                error: e.to_string(),
            })?;
        executors.push(handle);
    }
    for _ in 0..shards {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(ServerError::Shard { shard: 0, error }),
            Err(_) => return Err(ServerError::StartTimeout(0)),
        }
    }
    drop(reserved);
    let bound: Vec<(String, SocketAddr)> = ctx
        .listeners
        .iter()
        .map(|l| (l.spec.name.clone(), l.addr))
        .collect();
    for l in &ctx.listeners {
        tracing::info!(listener = %l.spec.name, addr = %l.addr, protocol = %l.spec.protocol,
            inter_broker = l.inter_broker, shards, node = ctx.node_id, "node listening");
    }
    Ok(RunningNode {
        addr,
        listeners: bound,
        ctx,
        stops,
        executors,
    })
}

/// The cluster's topic table wins over the one read from the bucket; a
/// cluster that has none yet is seeded with the bucket's.
fn seed_topics(ctx: &NodeCtx) {
    let (version, data) = ctx.cluster.topics();
    if version > 0 && data.is_some() {
        ctx.sync_topics();
        return;
    }
    let table = bytes::Bytes::from(ctx.topics.snapshot().encode());
    match futures_lite::future::block_on(ctx.cluster.put_topics(0, table)) {
        Ok(Ok(v)) => ctx.topics_stored(v),
        // Another node seeded it first: take theirs.
        Ok(Err(_)) => ctx.sync_topics(),
        Err(e) => tracing::warn!(error = %e, "could not seed the cluster's topic table"),
    }
}

/// A node whose coordinator is in this process keeps the security document
/// in the bucket: the coordinator starts from it. Only a document proven
/// absent is taken as none; a bucket that cannot answer stops the start
/// (credentials must not silently vanish).
fn seed_security(ctx: &NodeCtx) -> Result<(), ServerError> {
    use crate::cluster::Doc;
    if !ctx.in_process || ctx.cluster.doc(Doc::Security).0 > 0 {
        return Ok(());
    }
    let stored = futures_lite::future::block_on(ctx.durable.get_meta(Doc::Security.name()));
    let bytes = match stored {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(ServerError::Security(e.to_string())),
        Err(_) => return Err(ServerError::Security("the WAL is shut down".into())),
    };
    if let Err(e) = crate::security::SecurityDoc::decode(&bytes) {
        return Err(ServerError::Security(format!(
            "the stored document does not decode: {e}"
        )));
    }
    // Another node of this process may have seeded it first.
    let _ = futures_lite::future::block_on(ctx.cluster.put_doc(Doc::Security, 0, bytes));
    Ok(())
}

/// A node that authenticates to others with SASL needs a credential for
/// its user in the cluster's security document. If its user has none, the
/// node adds one made from its own password (salted; what Kafka's
/// `kafka-storage format --add-scram` does for a new cluster). If the
/// stored credential does not take the node's password, the start stops:
/// no other node would let this one in.
fn seed_inter_broker_user(ctx: &NodeCtx) -> Result<(), ServerError> {
    use crate::config::SaslMechanism;
    use crate::security::scram::{ScramCredential, ITERATIONS_MIN};
    let Some(login) = ctx.rpc_login.clone() else {
        return Ok(());
    };
    // PLAIN is checked against the user's strongest SCRAM credential, as
    // the server side does.
    let mechanisms = match login.mechanism {
        SaslMechanism::Plain => vec![SaslMechanism::ScramSha512, SaslMechanism::ScramSha256],
        m => vec![m],
    };
    let stored = |doc: &crate::security::SecurityDoc| {
        mechanisms
            .iter()
            .find_map(|&m| doc.credential(&login.username, m))
            .map(|c| c.verify_password(&login.password))
    };
    let takes = match stored(&ctx.security()) {
        Some(takes) => takes,
        None => {
            let credential = ScramCredential::from_password(
                mechanisms[0],
                &login.password,
                None,
                ITERATIONS_MIN,
            )
            .map_err(|e| ServerError::Security(e.to_string()))?;
            let change = crate::broker::api::security::change_security(ctx, |doc| {
                // Another node may have added it meanwhile.
                stored(doc).unwrap_or_else(|| {
                    doc.upsert(&login.username, credential.clone());
                    true
                })
            });
            futures_lite::future::block_on(change).map_err(|(_, e)| {
                ServerError::Security(format!(
                    "could not store the inter-broker user {}'s credential: {e}",
                    login.username
                ))
            })?
        }
    };
    if !takes {
        return Err(ServerError::Security(format!(
            "the cluster's {} credential of user {} does not take this node's password \
             (sasl.jaas.config): other nodes would refuse its calls",
            mechanisms[0].name(),
            login.username
        )));
    }
    tracing::info!(user = %login.username, mechanism = login.mechanism.name(),
        "node-to-node calls authenticate with SASL");
    Ok(())
}

async fn run_shard(
    id: usize,
    ctx: Arc<NodeCtx>,
    mesh: MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>,
    ready: std::sync::mpsc::Sender<Result<usize, String>>,
    stop: oneshot::Receiver<()>,
) {
    let (senders, receivers) = match mesh.join().await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {id} could not join the mesh: {e}")));
            return;
        }
    };
    let hooks = crate::shard::BrokerHooks {
        serve: |shard, stream, listener| {
            Box::pin(crate::broker::conn::serve(shard, stream, listener))
        },
        forwarded: |shard, req| {
            Box::pin(async move { crate::broker::api::forwarded(&shard, req).await })
        },
    };
    let shard = Rc::new(Shard::new(id, ctx, senders, hooks));
    shard.set_self(&shard);
    shard.serve_peers(receivers);
    // With an acceptor, only shard 0 listens: a listener that never
    // accepted would still be given connections by the kernel.
    let acceptor = shard.ctx.acceptor;
    let mut sockets = Vec::new();
    if !acceptor || id == 0 {
        for (index, l) in shard.ctx.listeners.iter().enumerate() {
            match glommio::net::TcpListener::bind(l.addr) {
                Ok(s) => sockets.push((index, s)),
                Err(e) => {
                    let _ = ready.send(Err(format!(
                        "shard {id} cannot listen on {} ({}): {e}",
                        l.addr,
                        l.name()
                    )));
                    return;
                }
            }
        }
    }
    let _ = ready.send(Ok(id));
    let retention = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let period = Duration::from_millis(shard.ctx.retention_check_ms.max(10));
            loop {
                glommio::timer::sleep(period).await;
                let dropped = shard.apply_retention(now_ms());
                if dropped > 0 {
                    tracing::info!(shard = id, batches = dropped, "retention dropped batches");
                }
                if id == 0 {
                    // Groups whose slot this node now leads come with their
                    // offsets before a client asks.
                    shard.adopt_groups_now().await;
                    // WAL and handoff objects nothing refers to any more go.
                    crate::shard::deletion::collect(&shard.ctx, now_ms()).await;
                }
            }
        })
    };
    // The shard's latency histograms reach scrapes about once a second.
    let latency = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                shard
                    .latency
                    .borrow_mut()
                    .publish(&shard.ctx.metrics, shard.id);
            }
        })
    };
    let compaction = (shard.ctx.compaction_interval_ms > 0).then(|| {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let period = Duration::from_millis(shard.ctx.compaction_interval_ms.max(10));
            loop {
                glommio::timer::sleep(period).await;
                let moved = shard.compact().await;
                if moved > 0 {
                    tracing::debug!(shard = id, batches = moved, "compacted");
                }
            }
        })
    });
    // One accept loop per listener (none on a shard that is dealt its
    // connections by shard 0).
    let accepts: Vec<_> = sockets
        .into_iter()
        .map(|(index, socket)| {
            let shard = shard.clone();
            glommio::spawn_local(accept_loop(shard, socket, index, acceptor))
        })
        .collect();
    let _ = stop.await;
    drop(accepts);
    drop(retention);
    drop(latency);
    drop(compaction);
}

/// Accepts on one listener: serves each connection on this shard, or, with
/// an acceptor, deals them over the shards round-robin.
async fn accept_loop(
    shard: Rc<Shard>,
    listener: glommio::net::TcpListener,
    index: usize,
    acceptor: bool,
) {
    let id = shard.id;
    let mut next = 0usize;
    loop {
        if acceptor {
            match listener.shared_accept().await {
                Ok(stream) => {
                    let to = next % shard.ctx.shards;
                    next = next.wrapping_add(1);
                    shard.deal(to, stream, index).await;
                }
                Err(e) => {
                    tracing::warn!(shard = id, error = %e, "accept failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
            continue;
        }
        match listener.accept().await {
            Ok(stream) => {
                let shard = shard.clone();
                glommio::spawn_local(crate::broker::conn::serve(shard, stream, index)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
