//! A small etcd v3 client: what the coordinator ([`crate::cluster::etcd`]) asks of
//! etcd, over gRPC (tonic).
//!
//! The messages and service stubs are generated from `node/proto/etcd.proto`
//! (Ferry's subset of etcd's API) and checked in as [`generated`], so that
//! building the `ferry` binary needs no `protoc`. The test
//! `node/tests/etcd_api_generated.rs` generates them again with
//! `tonic-prost-build` and fails if they differ
//! (`FERRY_REGENERATE_ETCD_API=1` rewrites the file).
//!
//! [`Client`] is cheap to clone (one HTTP/2 channel, shared). Calls are not
//! bounded here: the coordinator bounds each one with its request timeout.
//!
//! The channel connects through [`Connector`]: a TCP connection to one of
//! the endpoints (the next one in turn after a failure), whose bytes a
//! [`ByteMeter`] may count as they pass (the node counts them as
//! `coordinator` traffic of the zone etcd is in).

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    unused_qualifications
)]
#[rustfmt::skip]
pub mod generated;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_channel::mpsc;
use generated::compare::{CompareResult, CompareTarget, TargetUnion};
use generated::kv_client::KvClient;
use generated::lease_client::LeaseClient;
use generated::request_op::Request;
use generated::watch_client::WatchClient;
use generated::watch_request::RequestUnion;
pub use generated::{
    Compare, Event, KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse, WatchResponse,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

/// Errors of an etcd call.
#[derive(Debug, thiserror::Error)]
pub enum EtcdApiError {
    /// An endpoint that is not a URI tonic can connect to.
    #[error("etcd endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// No endpoint given.
    #[error("no etcd endpoint")]
    NoEndpoint,
    /// An endpoint this client cannot reach (only `http://` is supported).
    #[error("etcd endpoint {endpoint:?}: only http://host:port is supported")]
    Unsupported { endpoint: String },
    /// The connection could not be made.
    #[error("connect to etcd: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// etcd (or the channel) answered a call with an error.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// A stream ended, or its request side closed, where an answer was due.
    #[error("the {0} stream ended")]
    StreamEnded(&'static str),
    /// A keep-alive was answered with TTL 0: the lease does not exist.
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
}

type Result<T> = std::result::Result<T, EtcdApiError>;

/// Counts the bytes of connections to etcd: told a new connection's peer,
/// it answers what to call with each (sent, received) byte count of it.
pub type ByteMeter = Arc<dyn Fn(SocketAddr) -> ByteCount + Send + Sync>;

/// Called with (bytes sent, bytes received) as they pass.
pub type ByteCount = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// HTTP/2 pings on the connection, and how long one may go unanswered.
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    /// Counts every byte to and from etcd, if given.
    pub meter: Option<ByteMeter>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("metered", &self.meter.is_some())
            .finish()
    }
}

/// Connects the channel: TCP to the endpoints in turn, starting after the
/// one used last, so a reconnection after a failure tries the next one.
#[derive(Clone)]
struct Connector {
    /// `host:port` of each endpoint.
    targets: Arc<[String]>,
    next: Arc<AtomicUsize>,
    meter: Option<ByteMeter>,
}

impl tonic::codegen::Service<Uri> for Connector {
    type Response = TokioIo<Metered>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Metered>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let n = this.targets.len();
            let first = this.next.fetch_add(1, Relaxed);
            let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no etcd endpoint");
            for i in 0..n {
                let target = &this.targets[(first + i) % n];
                match tokio::net::TcpStream::connect(target.as_str()).await {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        let count = match (&this.meter, stream.peer_addr()) {
                            (Some(meter), Ok(peer)) => Some(meter(peer)),
                            _ => None,
                        };
                        return Ok(TokioIo::new(Metered { stream, count }));
                    }
                    Err(e) => last_error = e,
                }
            }
            Err(last_error)
        })
    }
}

/// A TCP connection to etcd whose bytes are counted as they pass.
struct Metered {
    stream: tokio::net::TcpStream,
    count: Option<ByteCount>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(count)) = (&polled, &self.count) {
            let n = buf.filled().len() - before;
            if n > 0 {
                count(0, n as u64);
            }
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(count)) = (&polled, &self.count) {
            count(*n as u64, 0);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(count)) = (&polled, &self.count) {
            count(*n as u64, 0);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A connection to an etcd cluster (see the module doc).
#[derive(Clone)]
pub struct Client {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    lease: LeaseClient<Channel>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("etcd_api::Client")
    }
}

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's convention: the prefix with its last byte below 0xff raised by
/// one; `[0]`, every key, when there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|b| *b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

impl Client {
    /// Connects to `endpoints` (`http://host:port` or `host:port`) at once,
    /// so that an etcd none of them reaches is an error here. One HTTP/2
    /// connection carries every call; when it breaks, the next connection
    /// goes to the next endpoint that answers.
    pub async fn connect(endpoints: &[String], options: ConnectOptions) -> Result<Client> {
        let mut uris = Vec::with_capacity(endpoints.len());
        let mut targets = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let e = e.trim();
            let uri = if e.contains("://") {
                e.to_owned()
            } else {
                format!("http://{e}")
            };
            let endpoint =
                Endpoint::from_shared(uri.clone()).map_err(|source| EtcdApiError::Endpoint {
                    endpoint: e.to_owned(),
                    source,
                })?;
            let authority = endpoint
                .uri()
                .authority()
                .filter(|_| endpoint.uri().scheme_str() == Some("http"))
                .ok_or_else(|| EtcdApiError::Unsupported {
                    endpoint: e.to_owned(),
                })?;
            targets.push(authority.as_str().to_owned());
            uris.push(endpoint);
        }
        let Some(endpoint) = uris.into_iter().next() else {
            return Err(EtcdApiError::NoEndpoint);
        };
        let connector = Connector {
            targets: targets.into(),
            next: Arc::new(AtomicUsize::new(0)),
            meter: options.meter,
        };
        let channel = endpoint
            .connect_timeout(options.connect_timeout)
            .http2_keep_alive_interval(options.keep_alive_interval)
            .keep_alive_timeout(options.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .connect_with_connector(connector)
            .await
            .map_err(EtcdApiError::Connect)?;
        Ok(Client {
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
        })
    }

    /// The key, or with `prefix` every key under it.
    pub async fn get(&mut self, key: impl Into<Vec<u8>>, prefix: bool) -> Result<RangeResponse> {
        let key = key.into();
        let range_end = if prefix { prefix_end(&key) } else { Vec::new() };
        let request = generated::RangeRequest {
            key,
            range_end,
            ..Default::default()
        };
        Ok(self.kv.range(request).await?.into_inner())
    }

    /// Puts `value` at `key`, under `lease` (0: none).
    pub async fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<generated::PutResponse> {
        let request = generated::PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
        };
        Ok(self.kv.put(request).await?.into_inner())
    }

    /// One transaction (see [`Txn`]).
    pub async fn txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        Ok(self.kv.txn(txn.0).await?.into_inner())
    }

    /// Grants a lease of `ttl_s` seconds; etcd picks its id.
    pub async fn lease_grant(&mut self, ttl_s: i64) -> Result<LeaseGrantResponse> {
        let request = generated::LeaseGrantRequest { ttl: ttl_s, id: 0 };
        Ok(self.lease.lease_grant(request).await?.into_inner())
    }

    /// Revokes a lease: every key under it goes.
    pub async fn lease_revoke(&mut self, id: i64) -> Result<()> {
        let request = generated::LeaseRevokeRequest { id };
        self.lease.lease_revoke(request).await?;
        Ok(())
    }

    /// Opens a keep-alive stream for lease `id` and renews it once;
    /// [`EtcdApiError::LeaseNotFound`] if etcd no longer has it.
    pub async fn lease_keep_alive(&mut self, id: i64) -> Result<LeaseKeeper> {
        let (mut sender, requests) = mpsc::channel(4);
        sender
            .try_send(generated::LeaseKeepAliveRequest { id })
            .map_err(|_| EtcdApiError::StreamEnded("lease keep-alive"))?;
        let mut responses = self.lease.lease_keep_alive(requests).await?.into_inner();
        match responses.message().await? {
            Some(r) if r.ttl > 0 => Ok(LeaseKeeper {
                id,
                sender,
                responses,
            }),
            Some(_) => Err(EtcdApiError::LeaseNotFound(id)),
            None => Err(EtcdApiError::StreamEnded("lease keep-alive")),
        }
    }

    /// Watches every key under `prefix` from `start_revision`, with
    /// progress notifications when asked.
    pub async fn watch_prefix(
        &mut self,
        prefix: impl Into<Vec<u8>>,
        start_revision: i64,
        progress_notify: bool,
    ) -> Result<WatchStream> {
        let key = prefix.into();
        let create = generated::WatchCreateRequest {
            range_end: prefix_end(&key),
            key,
            start_revision,
            progress_notify,
        };
        let (mut sender, requests) = mpsc::channel(1);
        sender
            .try_send(generated::WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })
            .map_err(|_| EtcdApiError::StreamEnded("watch"))?;
        let responses = self.watch.watch(requests).await?.into_inner();
        Ok(WatchStream {
            _sender: sender,
            responses,
        })
    }
}

/// A lease's keep-alive stream: each [`LeaseKeeper::keep_alive`] renews it
/// once.
pub struct LeaseKeeper {
    id: i64,
    sender: mpsc::Sender<generated::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl LeaseKeeper {
    /// The lease this stream renews.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Renews the lease; the TTL etcd answers (0: the lease is gone).
    pub async fn keep_alive(&mut self) -> Result<i64> {
        // One renewal in flight at a time: the channel always has room.
        self.sender
            .try_send(generated::LeaseKeepAliveRequest { id: self.id })
            .map_err(|_| EtcdApiError::StreamEnded("lease keep-alive"))?;
        match self.responses.message().await? {
            Some(r) => Ok(r.ttl),
            None => Err(EtcdApiError::StreamEnded("lease keep-alive")),
        }
    }
}

/// A watch's responses. The request side stays open while this lives (etcd
/// ends a watch whose client closed its side).
pub struct WatchStream {
    _sender: mpsc::Sender<generated::WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl WatchStream {
    /// The next response; `None` when etcd ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>> {
        Ok(self.responses.message().await?)
    }
}

/// A transaction: if every comparison holds, the `success` operations run,
/// else the `failure` ones.
#[derive(Debug, Clone, Default)]
pub struct Txn(TxnRequest);

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        self.0.compare.extend(compares);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = RequestOp>) -> Txn {
        self.0.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = RequestOp>) -> Txn {
        self.0.failure.extend(ops);
        self
    }
}

fn compare(key: impl Into<Vec<u8>>, target: CompareTarget, union: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(union),
    }
}

/// The key's create revision equals `revision` (0: the key does not exist).
pub fn create_revision_is(key: impl Into<Vec<u8>>, revision: i64) -> Compare {
    compare(
        key,
        CompareTarget::Create,
        TargetUnion::CreateRevision(revision),
    )
}

/// The key's last modification was at `revision` (0: it does not exist).
pub fn mod_revision_is(key: impl Into<Vec<u8>>, revision: i64) -> Compare {
    compare(key, CompareTarget::Mod, TargetUnion::ModRevision(revision))
}

/// The key is held by `lease`.
pub fn lease_is(key: impl Into<Vec<u8>>, lease: i64) -> Compare {
    compare(key, CompareTarget::Lease, TargetUnion::Lease(lease))
}

/// A put in a transaction.
pub fn op_put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(generated::PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
        })),
    }
}

/// A read of one key in a transaction.
pub fn op_get(key: impl Into<Vec<u8>>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(generated::RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

/// A deletion of one key in a transaction.
pub fn op_delete(key: impl Into<Vec<u8>>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(generated::DeleteRangeRequest {
            key: key.into(),
            range_end: Vec::new(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_its_last_byte_below_0xff_goes_up() {
        assert_eq!(prefix_end(b"/ferry/a/"), b"/ferry/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn transactions_carry_their_comparisons_and_both_branches() {
        let t = Txn::new()
            .when([create_revision_is("k", 0), lease_is("k", 7)])
            .and_then([op_put("k", "v", 7)])
            .or_else([op_get("k"), op_delete("k")]);
        assert_eq!(t.0.compare.len(), 2);
        assert_eq!(t.0.compare[1].target, CompareTarget::Lease as i32);
        assert_eq!(t.0.compare[1].target_union, Some(TargetUnion::Lease(7)));
        assert_eq!(t.0.success.len(), 1);
        assert_eq!(t.0.failure.len(), 2);
    }
}
