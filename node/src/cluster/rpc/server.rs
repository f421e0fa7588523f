//! The server side: what a node does with each RPC ([`RpcHandler`]), decoding
//! a call and serving it.

#[allow(unused_imports)]
use super::*;

/// What a node does with each RPC. Shard-local: the futures need not be
/// `Send`, so an implementation may hold `Rc`s and `RefCell` borrows
/// across awaits (not borrows, across awaits, in practice).
///
/// Implemented for `Rc<Shard>` (not `Shard`), since the shard's own
/// methods take `self: &Rc<Shard>`.
#[allow(async_fn_in_trait)] // deliberately not Send: one glommio executor per shard
pub trait RpcHandler {
    /// Whether `caller`, the principal the connection authenticated as on
    /// the inter-broker listener (`User:ANONYMOUS` where it does not
    /// authenticate), may make `call`. A call refused here is answered
    /// CLUSTER_AUTHORIZATION_FAILED and changes nothing. Default: anyone.
    fn admits(&self, _call: &RpcBody, _caller: &str) -> bool {
        true
    }
    async fn handoff_commit(&self, req: HandoffCommit) -> HandoffCommitResponse;
    async fn replica_read(&self, req: ReplicaRead) -> ReplicaReadResponse;
    async fn forward(&self, req: Forward) -> ForwardResponse;
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcBody {
    HandoffCommit(HandoffCommit),
    ReplicaRead(ReplicaRead),
    Forward(Forward),
}

impl RpcBody {
    pub fn kind(&self) -> RpcKind {
        match self {
            RpcBody::HandoffCommit(_) => RpcKind::Handoff,
            RpcBody::ReplicaRead(_) => RpcKind::Replica,
            RpcBody::Forward(_) => RpcKind::Forward,
        }
    }
}

/// A decoded request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcCall {
    pub correlation_id: i32,
    pub body: RpcBody,
}

/// Whether a request frame (without its size prefix) carries one of
/// Ferry's private API keys.
pub fn is_rpc_frame(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) >= RPC_API_KEY_MIN
}

/// Reads a request frame (without its size prefix). The payload's `Bytes`
/// fields are views of `frame`.
pub fn decode_call(frame: &Bytes) -> Result<RpcCall, RpcError> {
    if frame.len() < REQUEST_HEADER_BYTES {
        return Err(RpcError::ShortFrame { len: frame.len() });
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if !matches!(api_key, HANDOFF_COMMIT | REPLICA_READ | FORWARD) {
        return Err(RpcError::UnknownApi { api_key });
    }
    if version != RPC_VERSION {
        return Err(RpcError::UnsupportedVersion { api_key, version });
    }
    let payload = &frame[REQUEST_HEADER_BYTES..];
    let body = match api_key {
        HANDOFF_COMMIT => RpcBody::HandoffCommit(decode_payload(frame, payload)?),
        REPLICA_READ => RpcBody::ReplicaRead(decode_payload(frame, payload)?),
        _ => RpcBody::Forward(decode_payload(frame, payload)?),
    };
    Ok(RpcCall {
        correlation_id,
        body,
    })
}

/// Runs `call` through `handler` and returns the response frame's segments
/// (size prefix included, ready to write). `None` only if the handler's
/// answer cannot be encoded (a string over [`STRING_BYTES_MAX`]): that is
/// logged, and the caller then gets no answer and times out.
pub async fn serve_call<H: RpcHandler>(
    handler: &H,
    call: RpcCall,
    caller: &str,
) -> Option<Vec<Bytes>> {
    let id = call.correlation_id;
    if !handler.admits(&call.body, caller) {
        tracing::warn!(caller, kind = ?call.body.kind(), "node-to-node call refused: the caller is not the member it must be");
        let refused = ErrorCode::CLUSTER_AUTHORIZATION_FAILED;
        let encoded = match &call.body {
            RpcBody::HandoffCommit(req) => {
                encode_response_frame(id, &HandoffCommitResponse::all(req, refused))
            }
            RpcBody::ReplicaRead(_) => {
                encode_response_frame(id, &ReplicaReadResponse::error(refused))
            }
            RpcBody::Forward(_) => encode_response_frame(
                id,
                &ForwardResponse {
                    error_code: refused.code(),
                    frame: None,
                },
            ),
        };
        return encoded.ok();
    }
    let encoded = match call.body {
        RpcBody::HandoffCommit(req) => {
            encode_response_frame(id, &handler.handoff_commit(req).await)
        }
        RpcBody::ReplicaRead(req) => encode_response_frame(id, &handler.replica_read(req).await),
        RpcBody::Forward(req) => encode_response_frame(id, &handler.forward(req).await),
    };
    match encoded {
        Ok(segs) => Some(segs),
        Err(e) => {
            tracing::error!(error = %e, correlation_id = id, "RPC response could not be encoded");
            None
        }
    }
}

/// [`decode_call`] then [`serve_call`], for an anonymous caller. `None`
/// for a frame that does not decode (logged): the connection should then
/// be closed, as Kafka closes one that sends a request it cannot parse.
pub async fn serve_frame<H: RpcHandler>(handler: &H, frame: &Bytes) -> Option<Vec<Bytes>> {
    match decode_call(frame) {
        Ok(call) => serve_call(handler, call, "User:ANONYMOUS").await,
        Err(e) => {
            tracing::info!(error = %e, "undecodable RPC frame");
            None
        }
    }
}

/// For [`crate::broker::conn`]: decodes an RPC frame at once and spawns its
/// handler on this shard. An error (logged here) means the frame does not
/// decode and the connection is to be closed.
pub fn spawn_call<H: RpcHandler + Clone + 'static>(
    handler: &H,
    frame: &Bytes,
    peer: Option<SocketAddr>,
    caller: String,
) -> Result<glommio::Task<Option<Vec<Bytes>>>, RpcError> {
    let call = decode_call(frame).inspect_err(|e| {
        tracing::info!(peer = ?peer, error = %e, "undecodable RPC frame, closing connection");
    })?;
    let h = handler.clone();
    Ok(glommio::spawn_local(async move {
        serve_call(&h, call, &caller).await
    }))
}
