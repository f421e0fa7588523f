//! One client connection, on the shard that accepted it.
//!
//! The reader reads into the shard's off-heap arena (`crate::arena`) and
//! cuts frames as views of it (refusing any larger than
//! `socket.request.max.bytes` from the size prefix alone), decodes each and
//! spawns its handler at once, so a client's pipelined requests are worked on
//! together. The writer awaits the handlers in the order the requests came
//! and writes each response as segments, so responses leave in request
//! order, as Kafka clients require. The segments (a fetch response's are
//! views of cached batches) go out with vectored `sendmsg` calls, not
//! joined and not one send each; only when the socket's buffer is full does
//! the writer wait, through glommio, for one segment to go. At most
//! `INFLIGHT_REQUESTS_MAX` requests per connection are in flight; beyond
//! that the reader waits.

use crate::node::ListenerCtx;
use crate::security::Principal;
use crate::shard::Shard;
use bytes::Bytes;
use ferry_protocol::frame::{self, FrameReader};
use ferry_protocol::messages::{RequestBody, ResponseBody};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Requests one connection may have in flight.
pub const INFLIGHT_REQUESTS_MAX: usize = 1024;
/// The largest arena chunk a connection asks for by its frame sizes (a
/// larger frame still gets a chunk it fits in).
const CHUNK_BYTES_MAX: usize = 4 << 20;

/// The arena chunk size for a connection, from the frames seen so far:
/// about sixteen frames' worth. Frames are cut from the chunk without a
/// copy, and cached batches keep their chunk alive (the log cache is
/// charged for whole chunks), so chunks follow the frames a client sends.
fn chunk_bytes(frame_bytes_avg: usize) -> usize {
    (frame_bytes_avg * 16).clamp(crate::arena::CHUNK_BYTES_MIN, CHUNK_BYTES_MAX)
}

/// What the writer is given per request: the response segments, or `None`
/// for no response (acks=0), or an instruction to close.
enum Out {
    Respond(glommio::Task<Option<Vec<Bytes>>>),
    Close,
}

/// Who is on a connection: the listener it came in on, its address, and
/// the principal it authenticated as (`User:ANONYMOUS` until it does, and
/// for good on a listener that does not authenticate).
pub struct Session {
    pub listener: Arc<ListenerCtx>,
    pub peer: Option<SocketAddr>,
    /// The peer's IP address as text, for ACLs' hosts.
    pub host: String,
    pub principal: RefCell<Principal>,
}

impl Session {
    pub fn new(
        listener: Arc<ListenerCtx>,
        peer: Option<SocketAddr>,
        principal: Principal,
    ) -> Session {
        Session {
            listener,
            host: peer.map_or_else(String::new, |p| p.ip().to_canonical().to_string()),
            peer,
            principal: RefCell::new(principal),
        }
    }
}

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves a connection accepted on listener `listener` (an index into
/// `NodeCtx::listeners`): the TLS handshake first on a TLS listener, then
/// its requests.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, listener: usize) {
    let Some(l) = shard.ctx.listeners.get(listener).cloned() else {
        return;
    };
    let peer = stream.peer_addr().ok();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let _ = stream.set_nodelay(true);
    shard.ctx.metrics.connection(shard.id, 1);
    let session = |principal| Rc::new(Session::new(l.clone(), peer, principal));
    match l.spec.tls.clone() {
        None => serve_stream(&shard, stream, Some(fd), session(Principal::anonymous())).await,
        Some(tls) => {
            let handshake = futures_lite::future::or(
                async { Some(tls.acceptor().accept(stream).await) },
                async {
                    glommio::timer::sleep(TLS_HANDSHAKE_TIMEOUT).await;
                    None
                },
            )
            .await;
            match handshake {
                Some(Ok(stream)) => {
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec());
                    // A verified client certificate names the principal;
                    // without one (ssl.client.auth=none or requested) the
                    // client is anonymous until SASL says otherwise.
                    let principal = match cert {
                        None => Some(Principal::anonymous()),
                        Some(cert) => crate::security::tls::principal_of(&cert, tls.settings()),
                    };
                    match principal {
                        Some(p) => serve_stream(&shard, stream, None, session(p)).await,
                        None => {
                            shard.ctx.metrics.auth_failed(l.name(), "SSL");
                            tracing::info!(peer = ?peer, listener = l.name(),
                                "client certificate maps to no principal (ssl.principal.mapping.rules); closing");
                        }
                    }
                }
                Some(Err(e)) => {
                    shard.ctx.metrics.auth_failed(l.name(), "SSL");
                    tracing::info!(peer = ?peer, listener = l.name(), error = %e, "TLS handshake failed");
                }
                None => {
                    shard.ctx.metrics.auth_failed(l.name(), "SSL");
                    tracing::info!(peer = ?peer, listener = l.name(), "TLS handshake timed out");
                }
            }
        }
    }
    shard.ctx.metrics.connection(shard.id, -1);
}

/// Serves a connection's requests. `fd` is the socket when the stream is
/// plain TCP, so responses go out with vectored sends of the views
/// themselves; a TLS stream encrypts them through rustls instead.
async fn serve_stream<S>(shard: &Rc<Shard>, stream: S, fd: Option<RawFd>, session: Rc<Session>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let shard = shard.clone();
    let peer = session.peer;
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<Out>(INFLIGHT_REQUESTS_MAX);
    // Answers to node-to-node RPCs, which callers match by correlation id:
    // they leave as soon as they are ready, so a long poll never holds up
    // a handoff commit behind it.
    let (rpc_tx, rpc_rx) =
        glommio::channels::local_channel::new_bounded::<Vec<Bytes>>(INFLIGHT_REQUESTS_MAX);
    let rpc_tx = Rc::new(rpc_tx);
    let metrics_shard = shard.clone();
    // A Kafka client's bytes, by its zone, once its first request says who
    // it is (node-to-node RPC connections are counted by their callers).
    let traffic: Rc<std::cell::RefCell<Option<std::sync::Arc<crate::cluster::rpc::ZoneTraffic>>>> =
        Rc::default();
    let writer_traffic = traffic.clone();
    let writer = glommio::spawn_local(async move {
        enum Next {
            Ordered(Option<Out>),
            Rpc(Option<Vec<Bytes>>),
        }
        loop {
            let next = futures_lite::future::or(async { Next::Ordered(rx.recv().await) }, async {
                Next::Rpc(rpc_rx.recv().await)
            })
            .await;
            let segs = match next {
                Next::Ordered(Some(Out::Respond(handle))) => match handle.await {
                    Some(segs) => segs,
                    None => continue,
                },
                Next::Ordered(Some(Out::Close)) | Next::Ordered(None) => break,
                Next::Rpc(Some(segs)) => segs,
                Next::Rpc(None) => break,
            };
            if segs.is_empty() {
                // A request that could not be served where it had to be
                // (a forwarded group request): closing makes the client
                // look its coordinator up again.
                break;
            }
            let n: usize = segs.iter().map(Bytes::len).sum();
            let written = match fd {
                Some(fd) => write_segments(&mut wr, fd, &segs).await,
                None => write_through(&mut wr, &segs).await,
            };
            if written.is_err() {
                return;
            }
            metrics_shard
                .ctx
                .metrics
                .bytes_out
                .fetch_add(n as u64, Relaxed);
            if let Some(t) = writer_traffic.borrow().as_ref() {
                t.add(crate::cluster::rpc::RpcKind::Client, n as u64, 0);
            }
        }
        let _ = wr.close().await;
    });
    let reader = FrameReader::new(shard.ctx.frame_bytes_max);
    // A running average of frame sizes on this connection.
    let mut frame_bytes_avg = 1024;
    // Reads go into the shard's off-heap arena (see crate::arena); frames
    // come out as views of it.
    let mut buf = shard.arena().read_buf(chunk_bytes(frame_bytes_avg));
    // Clients of unknown zone are counted once per connection.
    let mut zone_noted = false;
    let mut sasl =
        crate::broker::sasl::SaslConn::new(session.listener.spec.sasl_mechanisms.clone());
    'conn: loop {
        // Room for what the next frame needs, once its size is known and
        // checked (the reader refuses an oversized one from its prefix).
        let need = match reader.bytes_needed(buf.pending()) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(peer = ?peer, error = %e, "closing connection");
                break;
            }
        };
        if need > 0 {
            buf.set_chunk_bytes(chunk_bytes(frame_bytes_avg));
            // The room is asked for at each poll: while the socket has
            // nothing, a connection with nothing pending gives its chunk
            // back, so idle connections hold no arena memory.
            let read = futures_lite::future::poll_fn(|cx| {
                let space = match buf.space(need) {
                    Ok(s) => s,
                    Err(e) => return std::task::Poll::Ready(Err(e)),
                };
                let r = std::pin::Pin::new(&mut rd).poll_read(cx, space);
                if r.is_pending() {
                    buf.release_if_idle();
                }
                r
            })
            .await;
            let n = match read {
                Ok(0) => break,
                Err(e) => {
                    tracing::debug!(peer = ?peer, error = %e, "read failed, closing connection");
                    break;
                }
                Ok(n) => n,
            };
            buf.filled(n);
            shard.ctx.metrics.bytes_in.fetch_add(n as u64, Relaxed);
            if let Some(t) = traffic.borrow().as_ref() {
                t.add(crate::cluster::rpc::RpcKind::Client, 0, n as u64);
            }
        }
        loop {
            let f = match buf.next_frame(&reader) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(peer = ?peer, error = %e, "closing connection");
                    break 'conn;
                }
            };
            frame_bytes_avg = (frame_bytes_avg * 7 + f.len()) / 8;
            // Ferry's node-to-node RPCs (API keys >= 32000), see crate::cluster::rpc:
            // served by the shard on the inter-broker listener only; anywhere
            // else they are an unknown API key, which closes the connection
            // (as an undecodable one does).
            if crate::cluster::rpc::is_rpc_frame(&f) {
                if !session.listener.inter_broker || !sasl.allows(i16::MAX) {
                    tracing::info!(peer = ?peer, listener = session.listener.name(),
                        "node-to-node API key on a client listener; closing connection");
                    break 'conn;
                }
                let caller = session.principal.borrow().to_string();
                let Ok(h) = crate::cluster::rpc::spawn_call(&shard, &f, peer, caller) else {
                    break 'conn;
                };
                let rpc_tx = rpc_tx.clone();
                glommio::spawn_local(async move {
                    if let Some(segs) = h.await.filter(|s| !s.is_empty()) {
                        let _ = rpc_tx.send(segs).await;
                    }
                })
                .detach();
                continue;
            }
            // Client requests hold their bytes against the shard's bound until
            // answered; past it this connection reads nothing more. (A frame
            // larger than the whole bound takes all of it. Node-to-node calls,
            // above, are not held: a handoff commit must get through to free
            // the requests that wait for it.)
            let permit = match shard
                .request_bytes
                .acquire_static_permit(
                    (f.len() as u64).clamp(1, shard.ctx.queued_request_bytes_max as u64),
                )
                .await
            {
                Ok(p) => p,
                Err(_) => break 'conn,
            };
            let req = match frame::decode_request(&f, &shard.ctx.supported) {
                Ok(r) => r,
                Err(e) => {
                    if let Some(answer) = e.answer(&shard.ctx.supported) {
                        let h = glommio::spawn_local(async move { Some(answer) });
                        if tx.send(Out::Respond(h)).await.is_err() {
                            break 'conn;
                        }
                        continue;
                    }
                    tracing::info!(peer = ?peer, error = %e, "undecodable request, closing connection");
                    break 'conn;
                }
            };
            // SASL runs here, in request order, before anything it guards.
            let api_key = req.api_key();
            if matches!(
                req.body,
                RequestBody::SaslHandshake(_) | RequestBody::SaslAuthenticate(_)
            ) {
                let (correlation_id, version) = (req.correlation_id(), req.api_version());
                let (body, principal, close) = match &req.body {
                    RequestBody::SaslHandshake(h) => {
                        let a = sasl.handshake(h, version);
                        (
                            ResponseBody::SaslHandshake(a.response),
                            a.principal,
                            a.close,
                        )
                    }
                    RequestBody::SaslAuthenticate(r) => {
                        let a = sasl.authenticate(&shard.ctx, session.listener.name(), r, version);
                        (
                            ResponseBody::SaslAuthenticate(a.response),
                            a.principal,
                            a.close,
                        )
                    }
                    _ => break 'conn,
                };
                if let Some(p) = principal {
                    *session.principal.borrow_mut() = p;
                }
                let segs = frame::encode_response(correlation_id, version, &body).ok();
                let h = glommio::spawn_local(async move { segs });
                if tx.send(Out::Respond(h)).await.is_err() || close {
                    break 'conn;
                }
                continue;
            }
            if !sasl.allows(api_key) {
                tracing::info!(peer = ?peer, listener = session.listener.name(), api_key,
                    "request before SASL authentication, or after the session expired; closing connection");
                break 'conn;
            }
            if !zone_noted {
                zone_noted = true;
                let client_id = req.header.client_id.as_deref().unwrap_or("");
                let t = shard.note_client(client_id, peer.map(|p| p.ip()));
                // The first request's bytes, read before the zone was known.
                t.add(crate::cluster::rpc::RpcKind::Client, 0, f.len() as u64 + 4);
                *traffic.borrow_mut() = Some(t);
            }
            shard.ctx.metrics.request(req.api_key());
            // A group request whose coordinator is another node (this one
            // being its proxy in the client's zone) is served there.
            // Its ACLs are checked here, before it leaves (a request all
            // of whose groups or topics are refused goes no further), and
            // again at the coordinator, which gets the client's principal
            // and answers refused items one by one.
            if crate::group::coordinator::is_group_api(req.api_key()) {
                if let Some(refused) =
                    crate::broker::api::group_refusal(&shard, &session, &req.body)
                {
                    let (correlation_id, version) = (req.correlation_id(), req.api_version());
                    let segs = frame::encode_response(correlation_id, version, &refused).ok();
                    let h = glommio::spawn_local(async move { segs });
                    if tx.send(Out::Respond(h)).await.is_err() {
                        break 'conn;
                    }
                    continue;
                }
                if let Some(target) = crate::broker::api::forward_target(&shard, &req.body) {
                    let sh = shard.clone();
                    let fwd = crate::cluster::rpc::Forward {
                        client_host: peer
                            .map_or_else(String::new, |p| format!("/{}", p.ip()))
                            .into(),
                        principal: session.principal.borrow().as_str().into(),
                        frame: f.clone(),
                    };
                    let h = glommio::spawn_local(async move {
                        let _permit = permit;
                        match sh.rpc.forward(&target, &fwd, FORWARD_TIMEOUT).await {
                            Ok(r) if r.error_code == 0 => r.frame.map(|f| vec![f]),
                            Ok(r) => {
                                tracing::info!(
                                    node = target.node_id,
                                    error = r.error_code,
                                    "forwarded group request refused; closing"
                                );
                                Some(vec![])
                            }
                            Err(e) => {
                                tracing::info!(node = target.node_id, error = %e, "group request could not be forwarded; closing");
                                Some(vec![])
                            }
                        }
                    });
                    if tx.send(Out::Respond(h)).await.is_err() {
                        break 'conn;
                    }
                    continue;
                }
            }
            let sh = shard.clone();
            let sess = session.clone();
            let h = glommio::spawn_local(async move {
                let _permit = permit;
                let correlation_id = req.correlation_id();
                let version = req.api_version();
                let body = crate::broker::api::handle(&sh, req, &sess).await?;
                match frame::encode_response(correlation_id, version, &body) {
                    Ok(segs) => Some(segs),
                    Err(e) => {
                        tracing::error!(error = %e, "response could not be encoded");
                        None
                    }
                }
            });
            if tx.send(Out::Respond(h)).await.is_err() {
                break 'conn;
            }
        }
    }
    let _ = tx.send(Out::Close).await;
    drop(tx);
    writer.await;
}

/// Writes `segs` in order through a stream that transforms them (TLS):
/// each goes to the stream's buffer, and one flush sends them.
async fn write_through<W: AsyncWrite + Unpin>(wr: &mut W, segs: &[Bytes]) -> std::io::Result<()> {
    // Each write to a TLS stream goes out as records at once, so small
    // segments (headers, a produce answer) are joined first: one write,
    // not one per segment. Large ones (record sets) go as they are.
    let mut joined = Vec::new();
    for s in segs {
        if s.len() < TLS_JOIN_BYTES {
            joined.extend_from_slice(s);
            if joined.len() < TLS_JOIN_BYTES {
                continue;
            }
        } else if !joined.is_empty() {
            wr.write_all(&joined).await?;
            joined.clear();
        }
        let rest: &[u8] = if joined.is_empty() { s } else { &joined };
        wr.write_all(rest).await?;
        joined.clear();
    }
    if !joined.is_empty() {
        wr.write_all(&joined).await?;
    }
    wr.flush().await
}

/// Segments shorter than this are joined before a TLS write (see
/// [`write_through`]); one TLS record holds 16 KiB.
const TLS_JOIN_BYTES: usize = 16 * 1024;

/// How long a forwarded group request may take (a JoinGroup waits for the
/// rebalance).
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(310);

/// Most segments one `sendmsg` takes (Linux's IOV_MAX is 1024).
const IOVECS_MAX: usize = 64;

/// Writes `segs` in order. While the socket takes bytes, each call is one
/// vectored `sendmsg` of up to [`IOVECS_MAX`] segments from the views
/// themselves; when it would block, the rest of the current segment goes
/// through glommio's own write, which waits for room.
async fn write_segments<W: futures_lite::AsyncWrite + Unpin>(
    wr: &mut W,
    fd: std::os::fd::RawFd,
    segs: &[Bytes],
) -> std::io::Result<()> {
    // SAFETY: `fd` is the connection's socket, which stays open while the
    // writer holds its write half (the caller's `wr`), and `SockRef` only
    // borrows it: it never closes it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    let (mut i, mut off) = (0usize, 0usize);
    while i < segs.len() {
        let mut iov = [std::io::IoSlice::new(&[]); IOVECS_MAX];
        let mut n = 0;
        for (k, s) in segs[i..].iter().take(IOVECS_MAX).enumerate() {
            iov[k] = std::io::IoSlice::new(if k == 0 { &s[off..] } else { s });
            n = k + 1;
        }
        match sock.send_vectored(&iov[..n]) {
            Ok(mut written) => {
                while written > 0 && i < segs.len() {
                    let left = segs[i].len() - off;
                    if written >= left {
                        written -= left;
                        i += 1;
                        off = 0;
                    } else {
                        off += written;
                        written = 0;
                    }
                }
                while i < segs.len() && segs[i].len() == off {
                    i += 1;
                    off = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wr.write_all(&segs[i][off..]).await?;
                i += 1;
                off = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many segments, more than the socket buffer holds, to a reader that
    /// is slow at first: every byte arrives, in order, whichever path
    /// (vectored send, or waiting on a full buffer) each part took.
    #[test]
    fn segments_arrive_whole_and_in_order_through_a_full_socket() {
        use std::io::Read;
        let segs: Vec<Bytes> = (0..3000u32)
            .map(|i| {
                let len = 1 + (i as usize * 7919) % 5000;
                Bytes::from(
                    (0..len)
                        .map(|j| (i as usize + j) as u8)
                        .collect::<Vec<u8>>(),
                )
            })
            .collect();
        let want: Vec<u8> = segs.iter().flat_map(|s| s.iter().copied()).collect();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let to_send = segs.clone();
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send");
                let stream = listener.accept().await.expect("accept");
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                // A small send buffer, so the full-buffer path surely runs.
                // SAFETY: the stream is open for this whole block.
                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                socket2::SockRef::from(&borrowed)
                    .set_send_buffer_size(8192)
                    .expect("SO_SNDBUF");
                let (_rd, mut wr) = futures_lite::io::split(stream);
                write_segments(&mut wr, fd, &to_send).await.expect("write");
                wr.close().await.expect("close");
            })
            .expect("executor");
        let addr = addr_rx.recv().expect("addr");
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        // Let the sender fill the socket buffers before reading.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("read");
        ex.join().expect("join");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ");
    }

    #[test]
    fn chunks_follow_the_frames_a_client_sends() {
        assert_eq!(chunk_bytes(100), crate::arena::CHUNK_BYTES_MIN);
        assert_eq!(chunk_bytes(16 * 1024), 256 * 1024);
        assert_eq!(chunk_bytes(1 << 20), CHUNK_BYTES_MAX);
    }
}
