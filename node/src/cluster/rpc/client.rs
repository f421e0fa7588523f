//! The client side: one connection per peer node, many calls in flight
//! matched by correlation id, a timeout on every call, and every pending call
//! failed at once when the connection breaks.

#[allow(unused_imports)]
use super::*;

/// Frames queued for one connection's writer.
pub(super) const WRITE_QUEUE_FRAMES: usize = 1024;
/// Most frames the writer gathers into one write.
pub(super) const WRITE_GATHER_FRAMES: usize = 256;
/// Most bytes one read asks for.
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// One shard's RPC client: one connection per peer node (reopened when
/// the peer's address changes or the connection breaks), shared by every
/// call to that node, with any number of calls in flight on it.
pub struct RpcClient {
    traffic: Arc<RpcTraffic>,
    frame_bytes_max: usize,
    peers: RefCell<HashMap<i32, Rc<Peer>>>,
    /// TLS to peers' inter-broker listeners; `None`: plain TCP.
    tls: Option<Arc<crate::security::tls::TlsClient>>,
    /// SASL to peers' inter-broker listener (a SASL one); `None`: none.
    login: Option<Rc<crate::config::SaslLogin>>,
}

impl RpcClient {
    /// `frame_bytes_max` bounds the responses it accepts
    /// (`socket.request.max.bytes`).
    pub fn new(traffic: Arc<RpcTraffic>, frame_bytes_max: usize) -> RpcClient {
        RpcClient {
            traffic,
            frame_bytes_max,
            peers: RefCell::new(HashMap::new()),
            tls: None,
            login: None,
        }
    }

    /// Authenticates to peers with SASL before the first call on each
    /// connection (their inter-broker listener is SASL_PLAINTEXT or
    /// SASL_SSL).
    pub fn with_login(mut self, login: Option<crate::config::SaslLogin>) -> RpcClient {
        self.login = login.map(Rc::new);
        self
    }

    /// Dials peers with TLS (their inter-broker listener is SSL).
    pub fn with_tls(mut self, tls: Option<Arc<crate::security::tls::TlsClient>>) -> RpcClient {
        self.tls = tls;
        self
    }

    /// Sends `req` to `to` and waits at most `timeout` (connecting
    /// included) for the answer. Retriable errors ([`RpcError::is_retriable`])
    /// mean the call may or may not have reached the peer.
    ///
    /// A call that times out while nothing at all arrived on its
    /// connection also breaks the connection (its other calls fail with
    /// [`RpcError::ConnectionLost`]), so a peer that went silent without
    /// closing (a dead host, a partition) is reconnected to, not waited on
    /// forever. TCP keepalive catches the same on idle connections.
    pub async fn call<R: RpcRequest>(
        &self,
        to: &Member,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, RpcError> {
        let timed_out = || RpcError::Timeout {
            node_id: to.node_id,
            after: timeout,
        };
        let start = Instant::now();
        let peer = self.peer(to);
        let conn = within(timeout, peer.connection(self.frame_bytes_max, timeout))
            .await
            .ok_or_else(timed_out)??;
        let shared = &conn.shared;
        let id = shared.next_id.get();
        shared.next_id.set(id.wrapping_add(1));
        let segs = encode_request_frame(id, req)?;
        let bytes_out: usize = segs.iter().map(Bytes::len).sum();
        let (tx, rx) = oneshot::channel();
        shared.pending.borrow_mut().insert(id, tx);
        // Forgets the call if it ends here, times out or is dropped.
        let _pending = PendingGuard { shared, id };
        if let Some(e) = shared.broken.borrow().clone() {
            return Err(e);
        }
        let frames_before = shared.frames_in.get();
        let left = timeout.saturating_sub(start.elapsed());
        let answer = within(left, async {
            if conn.tx.send(segs).await.is_err() {
                return Err(shared.lost());
            }
            peer.counters.add(R::KIND, bytes_out as u64, 0);
            match rx.await {
                Ok(r) => r,
                Err(_) => Err(shared.lost()),
            }
        })
        .await;
        let Some(answer) = answer else {
            if shared.frames_in.get() == frames_before {
                shared.fail(RpcError::ConnectionLost {
                    node_id: to.node_id,
                    reason: format!("nothing received for {timeout:?}"),
                });
            }
            return Err(timed_out());
        };
        let payload = answer?;
        let bytes_in = 4 + RESPONSE_HEADER_BYTES + payload.len();
        peer.counters.add(R::KIND, 0, bytes_in as u64);
        decode_exact(payload)
    }

    pub async fn handoff_commit(
        &self,
        to: &Member,
        req: &HandoffCommit,
        timeout: Duration,
    ) -> Result<HandoffCommitResponse, RpcError> {
        self.call(to, req, timeout).await
    }

    pub async fn replica_read(
        &self,
        to: &Member,
        req: &ReplicaRead,
        timeout: Duration,
    ) -> Result<ReplicaReadResponse, RpcError> {
        self.call(to, req, timeout).await
    }

    pub async fn forward(
        &self,
        to: &Member,
        req: &Forward,
        timeout: Duration,
    ) -> Result<ForwardResponse, RpcError> {
        self.call(to, req, timeout).await
    }

    /// Closes the connection to `node_id` (a node that left the cluster).
    /// Calls in flight on it fail with [`RpcError::ConnectionLost`].
    pub fn forget(&self, node_id: i32) {
        let peer = self.peers.borrow_mut().remove(&node_id);
        if let Some(conn) = peer.and_then(|p| p.conn.borrow_mut().take()) {
            conn.shared.fail(RpcError::ConnectionLost {
                node_id,
                reason: "node left the cluster".into(),
            });
        }
    }

    /// Whether a live connection to `node_id` is open.
    pub fn is_connected(&self, node_id: i32) -> bool {
        self.peers
            .borrow()
            .get(&node_id)
            .is_some_and(|p| p.live().is_some())
    }

    /// `(peer zone, kind, bytes out, bytes in)`, node-wide.
    pub fn traffic(&self) -> Vec<(String, &'static str, u64, u64)> {
        self.traffic.snapshot()
    }

    pub(super) fn peer(&self, to: &Member) -> Rc<Peer> {
        let mut peers = self.peers.borrow_mut();
        if let Some(p) = peers.get(&to.node_id) {
            if p.host == to.host && p.port == to.port && p.zone == to.zone {
                return p.clone();
            }
            tracing::info!(node = to.node_id, host = %to.host, port = to.port, "peer moved, reconnecting");
        }
        let p = Rc::new(Peer {
            node_id: to.node_id,
            host: to.host.clone(),
            port: to.port,
            zone: to.zone.clone(),
            counters: self.traffic.zone(&to.zone),
            tls: self.tls.clone(),
            login: self.login.clone(),
            conn: RefCell::new(None),
            connecting: glommio::sync::Semaphore::new(1),
        });
        // The old peer's connection closes once no call uses it.
        peers.insert(to.node_id, p.clone());
        p
    }
}

/// A peer node as last seen, and its connection.
pub(super) struct Peer {
    node_id: i32,
    host: String,
    port: u16,
    zone: String,
    counters: Arc<ZoneTraffic>,
    tls: Option<Arc<crate::security::tls::TlsClient>>,
    login: Option<Rc<crate::config::SaslLogin>>,
    conn: RefCell<Option<Rc<Conn>>>,
    /// One connect at a time; other callers wait for it.
    connecting: glommio::sync::Semaphore,
}

impl Peer {
    pub(super) fn live(&self) -> Option<Rc<Conn>> {
        self.conn
            .borrow()
            .as_ref()
            .filter(|c| c.shared.broken.borrow().is_none())
            .cloned()
    }

    pub(super) async fn connection(
        &self,
        frame_bytes_max: usize,
        timeout: Duration,
    ) -> Result<Rc<Conn>, RpcError> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let addr_text = format!("{}:{}", self.host, self.port);
        let connect_err = |reason: String| RpcError::Connect {
            node_id: self.node_id,
            addr: addr_text.clone(),
            reason,
        };
        let _permit = self
            .connecting
            .acquire_permit(1)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let addr = resolve(&self.host, self.port).map_err(&connect_err)?;
        let stream = futures_lite::future::or(
            async { TcpStream::connect(addr).await.map_err(|e| e.to_string()) },
            async {
                glommio::timer::sleep(timeout).await;
                Err(format!("connect timed out after {timeout:?}"))
            },
        )
        .await
        .map_err(&connect_err)?;
        let _ = stream.set_nodelay(true);
        keepalive(&stream);
        let conn = match &self.tls {
            None => {
                let mut stream = stream;
                self.log_in(&mut stream, timeout)
                    .await
                    .map_err(&connect_err)?;
                Conn::start(self.node_id, stream, frame_bytes_max)
            }
            Some(tls) => {
                let name =
                    rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
                        connect_err(format!("{} is not a TLS server name: {e}", self.host))
                    })?;
                let stream = within(timeout, tls.connector().connect(name, stream))
                    .await
                    .ok_or_else(|| {
                        connect_err(format!("TLS handshake timed out after {timeout:?}"))
                    })?
                    .map_err(|e| connect_err(format!("TLS handshake failed: {e}")))?;
                let mut stream = stream;
                self.log_in(&mut stream, timeout)
                    .await
                    .map_err(&connect_err)?;
                Conn::start(self.node_id, stream, frame_bytes_max)
            }
        };
        tracing::debug!(node = self.node_id, addr = %addr, tls = self.tls.is_some(),
            sasl = self.login.is_some(), "RPC connection open");
        *self.conn.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    /// Authenticates a new connection with SASL, if the peer's listener
    /// asks for it, within `timeout`.
    async fn log_in<S>(&self, stream: &mut S, timeout: Duration) -> Result<(), String>
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    {
        let Some(login) = &self.login else {
            return Ok(());
        };
        within(timeout, crate::security::sasl_client::login(stream, login))
            .await
            .ok_or_else(|| format!("SASL login timed out after {timeout:?}"))?
            .map_err(|e| e.to_string())
    }
}

/// `f`'s output, or `None` if it takes longer than `limit`.
pub(super) async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// TCP keepalive on RPC connections: a peer that vanished is noticed
/// within about 10 + 3 x 3 s even when no call is waiting on it.
pub(super) fn keepalive(stream: &TcpStream) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream);
    // SAFETY: `fd` is `stream`'s socket, open for this whole function, and
    // `SockRef` only borrows it: it never closes it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(3))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(&borrowed).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive on an RPC connection");
    }
}

/// `host:port` as a socket address. A host name is resolved by the system
/// resolver, which blocks the shard: members advertise IP addresses in
/// practice, which need no lookup.
pub(super) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

pub(super) type Reply = oneshot::Sender<Result<Bytes, RpcError>>;

/// What a connection's caller, reader and writer share.
pub(super) struct ConnShared {
    node_id: i32,
    pending: RefCell<HashMap<i32, Reply>>,
    /// Set once the connection is unusable; every later call fails fast.
    broken: RefCell<Option<RpcError>>,
    next_id: Cell<i32>,
    /// Response frames received so far.
    frames_in: Cell<u64>,
    tasks: RefCell<Vec<AbortHandle>>,
}

impl ConnShared {
    pub(super) fn lost(&self) -> RpcError {
        self.broken
            .borrow()
            .clone()
            .unwrap_or(RpcError::ConnectionLost {
                node_id: self.node_id,
                reason: "connection closed".into(),
            })
    }

    /// Marks the connection broken, fails every pending call with `err`,
    /// and stops its reader and writer (which closes the socket).
    pub(super) fn fail(&self, err: RpcError) {
        if self.broken.borrow().is_some() {
            return;
        }
        tracing::info!(node = self.node_id, error = %err, "RPC connection broken");
        *self.broken.borrow_mut() = Some(err.clone());
        let pending: Vec<Reply> = self.pending.borrow_mut().drain().map(|(_, r)| r).collect();
        for r in pending {
            let _ = r.send(Err(err.clone()));
        }
        for t in self.tasks.borrow_mut().drain(..) {
            t.abort();
        }
    }
}

pub(super) struct PendingGuard<'a> {
    shared: &'a ConnShared,
    id: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending.borrow_mut().remove(&self.id);
    }
}

/// One open connection: the queue to its writer task; its reader task
/// completes the pending calls.
pub(super) struct Conn {
    shared: Rc<ConnShared>,
    tx: LocalSender<Vec<Bytes>>,
}

impl Conn {
    pub(super) fn start<S>(node_id: i32, stream: S, frame_bytes_max: usize) -> Rc<Conn>
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
    {
        let shared = Rc::new(ConnShared {
            node_id,
            pending: RefCell::new(HashMap::new()),
            broken: RefCell::new(None),
            next_id: Cell::new(0),
            frames_in: Cell::new(0),
            tasks: RefCell::new(Vec::new()),
        });
        let (rd, wr) = futures_lite::io::split(stream);
        let (tx, rx) = local_channel::new_bounded(WRITE_QUEUE_FRAMES);
        let (reader, abort_reader) =
            futures_util::future::abortable(read_loop(shared.clone(), rd, frame_bytes_max));
        let (writer, abort_writer) =
            futures_util::future::abortable(write_loop(shared.clone(), rx, wr));
        shared
            .tasks
            .borrow_mut()
            .extend([abort_reader, abort_writer]);
        glommio::spawn_local(reader).detach();
        glommio::spawn_local(writer).detach();
        Rc::new(Conn { shared, tx })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Nobody can call through it any more: close the socket.
        self.shared.fail(RpcError::ConnectionLost {
            node_id: self.shared.node_id,
            reason: "connection replaced".into(),
        });
    }
}

pub(super) async fn read_loop<R: futures_lite::AsyncRead + Unpin>(
    shared: Rc<ConnShared>,
    mut rd: R,
    frame_bytes_max: usize,
) {
    let frames = FrameReader::new(frame_bytes_max);
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let reason = 'conn: loop {
        loop {
            let f = match frames.next_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'conn e.to_string(),
            };
            if f.len() < RESPONSE_HEADER_BYTES {
                break 'conn format!("response frame of {} bytes", f.len());
            }
            shared.frames_in.set(shared.frames_in.get() + 1);
            let id = i32::from_be_bytes([f[0], f[1], f[2], f[3]]);
            let reply = shared.pending.borrow_mut().remove(&id);
            match reply {
                Some(r) => {
                    let _ = r.send(Ok(f.slice(RESPONSE_HEADER_BYTES..)));
                }
                None => tracing::debug!(
                    node = shared.node_id,
                    correlation_id = id,
                    "answer to a call no longer waiting"
                ),
            }
        }
        let need = match frames.bytes_needed(&buf) {
            Ok(n) => n.max(1),
            Err(e) => break e.to_string(),
        };
        let chunk = need.clamp(4096, READ_CHUNK_BYTES);
        buf.reserve(need.max(chunk));
        let len = buf.len();
        buf.resize(len + need.max(chunk), 0);
        match rd.read(&mut buf[len..]).await {
            Ok(0) => {
                buf.truncate(len);
                break "closed by the peer".to_string();
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) => {
                buf.truncate(len);
                break e.to_string();
            }
        }
    };
    shared.fail(RpcError::ConnectionLost {
        node_id: shared.node_id,
        reason,
    });
}

pub(super) async fn write_loop<W: futures_lite::AsyncWrite + Unpin>(
    shared: Rc<ConnShared>,
    rx: LocalReceiver<Vec<Bytes>>,
    mut wr: W,
) {
    let mut frames = rx.stream();
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    while let Some(first) = frames.next().await {
        // Gather what else is queued, so many small calls go in one write.
        let mut batch = vec![first];
        while batch.len() < WRITE_GATHER_FRAMES {
            match futures_lite::future::poll_once(frames.next()).await {
                Some(Some(segs)) => batch.push(segs),
                _ => break,
            }
        }
        let r = async {
            for seg in batch.iter().flatten() {
                if seg.len() >= ferry_protocol::wire::SEGMENT_BYTES_MIN {
                    if !buf.is_empty() {
                        wr.write_all(&buf).await?;
                        buf.clear();
                    }
                    wr.write_all(seg).await?;
                } else {
                    buf.put_slice(seg);
                }
            }
            if !buf.is_empty() {
                wr.write_all(&buf).await?;
                buf.clear();
            }
            // A TLS stream holds what it encrypted until flushed.
            wr.flush().await?;
            Ok::<(), std::io::Error>(())
        }
        .await;
        if let Err(e) = r {
            shared.fail(RpcError::ConnectionLost {
                node_id: shared.node_id,
                reason: format!("write failed: {e}"),
            });
            return;
        }
    }
    let _ = wr.close().await;
}
