//! FindCoordinator and the group requests: which node coordinates a group,
//! and the forwarding of a group request to it.

use super::*;

/// A group's coordinator is the node that leads its slot (as a partition
/// of `__consumer_offsets`), or that node's proxy in the client's zone, the
/// same mapping Metadata shows. Transactions are not implemented, so
/// transaction coordinators are not available.
pub(super) fn find_coordinator(
    shard: &Shard,
    f: find_coordinator_request::FindCoordinatorRequest,
    zone: Option<&str>,
    listener: &str,
    may_describe_group: &dyn Fn(&str) -> bool,
) -> find_coordinator_response::FindCoordinatorResponse {
    use find_coordinator_response::*;
    let ok = f.key_type == 0;
    let keys = if f.coordinator_keys.is_empty() {
        vec![f.key.clone()]
    } else {
        f.coordinator_keys
    };
    let brokers = brokers(shard, listener);
    let answer = |key: &KStr| -> (ErrorCode, i32, KStr, i32) {
        if !ok {
            return (ErrorCode::COORDINATOR_NOT_AVAILABLE, -1, s(""), -1);
        }
        if !may_describe_group(key.as_str()) {
            return (ErrorCode::GROUP_AUTHORIZATION_FAILED, -1, s(""), -1);
        }
        let (node, _) = routed_leader(shard, GROUP_TOPIC, group_slot(key.as_str()), zone);
        match brokers.iter().find(|b| b.node_id == node) {
            Some(b) => (ErrorCode::NONE, b.node_id, s(&b.host), i32::from(b.port)),
            None => (ErrorCode::COORDINATOR_NOT_AVAILABLE, -1, s(""), -1),
        }
    };
    let (code, node, host, port) = answer(&f.key);
    FindCoordinatorResponse {
        error_code: code.code(),
        node_id: node,
        host,
        port,
        coordinators: keys
            .into_iter()
            .map(|key| {
                let (code, node_id, host, port) = answer(&key);
                Coordinator {
                    key,
                    node_id,
                    host,
                    port,
                    error_code: code.code(),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

/// The group a request is about, for the group APIs that name one.
/// (ListGroups, DescribeGroups and DeleteGroups are answered by the node
/// asked, from the groups it coordinates.)
pub fn group_of(body: &RequestBody) -> Option<&str> {
    Some(match body {
        RequestBody::JoinGroup(r) => r.group_id.as_str(),
        RequestBody::SyncGroup(r) => r.group_id.as_str(),
        RequestBody::Heartbeat(r) => r.group_id.as_str(),
        RequestBody::LeaveGroup(r) => r.group_id.as_str(),
        RequestBody::OffsetCommit(r) => r.group_id.as_str(),
        RequestBody::OffsetFetch(r) => {
            if r.groups.is_empty() {
                r.group_id.as_str()
            } else if r.groups.len() == 1 {
                r.groups[0].group_id.as_str()
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// The node a group request must be served by, if not this one: the
/// group's coordinator (the leader of its slot). Requests reach this node
/// when it is that coordinator's proxy in the client's zone.
pub fn forward_target(shard: &Shard, body: &RequestBody) -> Option<crate::cluster::Member> {
    let group = group_of(body)?;
    let view = shard.view();
    let m = view.leader(GROUP_TOPIC, group_slot(group))?;
    (m.node_id != shard.ctx.node_id).then(|| m.clone())
}

/// Serves a client request another node forwarded (a group request whose
/// coordinator is this node), answering the whole response frame.
pub async fn forwarded(
    shard: &Rc<Shard>,
    f: crate::cluster::rpc::Forward,
) -> crate::cluster::rpc::ForwardResponse {
    let refuse = |code: ErrorCode| crate::cluster::rpc::ForwardResponse {
        error_code: code.code(),
        frame: None,
    };
    let req = match frame::decode_request(&f.frame, &shard.ctx.supported) {
        Ok(r) => r,
        Err(_) => return refuse(ErrorCode::INVALID_REQUEST),
    };
    let (correlation_id, version) = (req.correlation_id(), req.api_version());
    let peer = f
        .client_host
        .trim_start_matches('/')
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| std::net::SocketAddr::new(ip, 0));
    // The group APIs' answers name no endpoint, so the listener does not
    // shape them. The client's principal and host come with the request,
    // and its ACLs are checked here as the proxy checked them.
    let Some(listener) = shard
        .ctx
        .listeners
        .iter()
        .find(|l| l.inter_broker)
        .or(shard.ctx.listeners.first())
        .cloned()
    else {
        return refuse(ErrorCode::UNKNOWN_SERVER_ERROR);
    };
    let Some(principal) = crate::security::Principal::parse(&f.principal) else {
        return refuse(ErrorCode::INVALID_REQUEST);
    };
    let session = crate::broker::conn::Session::new(listener, peer, principal);
    let Some(body) = handle(shard, req, &session).await else {
        return crate::cluster::rpc::ForwardResponse {
            error_code: 0,
            frame: None,
        };
    };
    match frame::encode_response(correlation_id, version, &body) {
        Ok(segs) => crate::cluster::rpc::ForwardResponse {
            error_code: 0,
            frame: Some(frame::concat(&segs)),
        },
        Err(_) => refuse(ErrorCode::UNKNOWN_SERVER_ERROR),
    }
}
