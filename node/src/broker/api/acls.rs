//! ACLs: CreateAcls, DescribeAcls and DeleteAcls, and the checks every
//! request makes ([`allowed`]) when `authorizer.class.name` turns them on.
//!
//! Bindings live in the cluster's security document beside the SCRAM
//! credentials (`security::change_security`), so a change reaches every
//! node as soon as its coordinator sees it. The checks are the operations
//! Kafka's authorizer checks for each request; a proxy in the client's zone
//! checks them before it forwards or hands anything off, so a proxy is no
//! way around them.

use super::*;
use crate::broker::conn::Session;
use crate::group::coordinator::commit_refused;
use crate::security::acl::{AclBinding, AclFilter, Operation, ResourceType};

/// Whether the connection's principal may do `op` on a resource: always
/// with ACLs off. (A request another node forwarded carries its client's
/// principal and host, and is checked again here.)
pub(super) fn allowed(
    shard: &Shard,
    session: &Session,
    op: Operation,
    resource_type: ResourceType,
    name: &str,
) -> bool {
    let Some(guard) = shard.ctx.authorizer() else {
        return true;
    };
    let Some(authorizer) = guard.as_ref() else {
        return true;
    };
    authorizer.authorize(
        session.principal.borrow().as_str(),
        &session.host,
        op,
        resource_type,
        name,
    )
}

/// Whether the principal may do `op` on some resource of the type (Kafka's
/// "WRITE on any topic" for an idempotent producer).
pub(super) fn allowed_any(
    shard: &Shard,
    session: &Session,
    op: Operation,
    resource_type: ResourceType,
) -> bool {
    let Some(guard) = shard.ctx.authorizer() else {
        return true;
    };
    let Some(authorizer) = guard.as_ref() else {
        return true;
    };
    authorizer.authorize_any(
        session.principal.borrow().as_str(),
        &session.host,
        op,
        resource_type,
    )
}

pub(super) fn allowed_on_cluster(shard: &Shard, session: &Session, op: Operation) -> bool {
    allowed(
        shard,
        session,
        op,
        ResourceType::Cluster,
        crate::security::acl::CLUSTER_NAME,
    )
}

/// Config resources (DescribeConfigs, AlterConfigs...): a topic's needs
/// `op` on the topic, a broker's on the cluster.
pub(super) fn config_allowed(
    shard: &Shard,
    session: &Session,
    op: Operation,
    resource_type: i8,
    name: &str,
) -> bool {
    const TOPIC: i8 = 2;
    if resource_type == TOPIC {
        allowed(shard, session, op, ResourceType::Topic, name)
    } else {
        allowed_on_cluster(shard, session, op)
    }
}

/// Splits a request's config resources into those allowed and the refused
/// ones' `(type, name, error code)`.
pub(super) fn config_access<R>(
    resources: Vec<R>,
    key: impl Fn(&R) -> (i8, KStr),
    allowed: impl Fn(i8, &str) -> bool,
) -> (Vec<R>, Vec<(i8, KStr, i16)>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for r in resources {
        let (resource_type, name) = key(&r);
        if allowed(resource_type, name.as_str()) {
            ok.push(r);
        } else {
            let code = if resource_type == 2 {
                ErrorCode::TOPIC_AUTHORIZATION_FAILED
            } else {
                ErrorCode::CLUSTER_AUTHORIZATION_FAILED
            };
            refused.push((resource_type, name, code.code()));
        }
    }
    (ok, refused)
}

/// Without an authorizer the ACL APIs answer SECURITY_DISABLED, as Kafka's.
fn disabled(shard: &Shard) -> bool {
    !shard.ctx.acls_enabled
}

pub(super) async fn create_acls(
    shard: &Shard,
    session: &Session,
    req: create_acls_request::CreateAclsRequest,
) -> create_acls_response::CreateAclsResponse {
    use create_acls_response::*;
    let refuse = |code: ErrorCode, message: &str| AclCreationResult {
        error_code: code.code(),
        error_message: Some(s(message)),
        ..Default::default()
    };
    let whole = if disabled(shard) {
        Some((ErrorCode::SECURITY_DISABLED, "no authorizer is configured"))
    } else if !allowed_on_cluster(shard, session, Operation::Alter) {
        Some((
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            "creating ACLs needs ALTER on the cluster",
        ))
    } else {
        None
    };
    if let Some((code, message)) = whole {
        return CreateAclsResponse {
            results: req
                .creations
                .iter()
                .map(|_| refuse(code, message))
                .collect(),
            ..Default::default()
        };
    }
    let parsed: Vec<Result<AclBinding, String>> = req
        .creations
        .iter()
        .map(|c| {
            AclBinding::from_wire(
                c.resource_type,
                c.resource_name.as_str(),
                c.resource_pattern_type,
                c.principal.as_str(),
                c.host.as_str(),
                c.operation,
                c.permission_type,
            )
            .map_err(|e| e.to_string())
        })
        .collect();
    let stored = change_security(&shard.ctx, |doc| {
        for b in parsed.iter().flatten() {
            if !doc.acls.contains(b) {
                doc.acls.push(b.clone());
            }
        }
        doc.acls.sort();
    })
    .await;
    let results = parsed
        .iter()
        .map(|p| match (p, &stored) {
            (Err(e), _) => refuse(ErrorCode::INVALID_REQUEST, e),
            (Ok(_), Err((code, message))) => refuse(*code, message),
            (Ok(b), Ok(())) => {
                tracing::info!(binding = ?b, principal = %session.principal.borrow(), "ACL created");
                AclCreationResult::default()
            }
        })
        .collect();
    CreateAclsResponse {
        results,
        ..Default::default()
    }
}

pub(super) fn describe_acls(
    shard: &Shard,
    session: &Session,
    req: describe_acls_request::DescribeAclsRequest,
) -> describe_acls_response::DescribeAclsResponse {
    use describe_acls_response::*;
    let error = |code: ErrorCode, message: String| DescribeAclsResponse {
        error_code: code.code(),
        error_message: Some(s(&message)),
        ..Default::default()
    };
    if disabled(shard) {
        return error(
            ErrorCode::SECURITY_DISABLED,
            "no authorizer is configured".into(),
        );
    }
    if !allowed_on_cluster(shard, session, Operation::Describe) {
        return error(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            "describing ACLs needs DESCRIBE on the cluster".into(),
        );
    }
    let filter = match AclFilter::from_wire(
        req.resource_type_filter,
        req.resource_name_filter.as_deref(),
        req.pattern_type_filter,
        req.principal_filter.as_deref(),
        req.host_filter.as_deref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => return error(ErrorCode::INVALID_REQUEST, e.to_string()),
    };
    let doc = shard.ctx.security();
    // Grouped by resource pattern, as Kafka answers.
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for b in doc.acls.iter().filter(|b| filter.matches(b)) {
        let d = AclDescription {
            principal: s(&b.principal),
            host: s(&b.host),
            operation: b.operation.code(),
            permission_type: b.permission.code(),
            ..Default::default()
        };
        match resources.iter_mut().find(|r| {
            r.resource_type == b.resource_type.code()
                && r.resource_name.as_str() == b.name
                && r.pattern_type == b.pattern.code()
        }) {
            Some(r) => r.acls.push(d),
            None => resources.push(DescribeAclsResource {
                resource_type: b.resource_type.code(),
                resource_name: s(&b.name),
                pattern_type: b.pattern.code(),
                acls: vec![d],
                ..Default::default()
            }),
        }
    }
    DescribeAclsResponse {
        resources,
        ..Default::default()
    }
}

pub(super) async fn delete_acls(
    shard: &Shard,
    session: &Session,
    req: delete_acls_request::DeleteAclsRequest,
) -> delete_acls_response::DeleteAclsResponse {
    use delete_acls_response::*;
    let refuse = |code: ErrorCode, message: String| DeleteAclsFilterResult {
        error_code: code.code(),
        error_message: Some(s(&message)),
        ..Default::default()
    };
    let whole = if disabled(shard) {
        Some((ErrorCode::SECURITY_DISABLED, "no authorizer is configured"))
    } else if !allowed_on_cluster(shard, session, Operation::Alter) {
        Some((
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            "deleting ACLs needs ALTER on the cluster",
        ))
    } else {
        None
    };
    if let Some((code, message)) = whole {
        return DeleteAclsResponse {
            filter_results: req
                .filters
                .iter()
                .map(|_| refuse(code, message.into()))
                .collect(),
            ..Default::default()
        };
    }
    let filters: Vec<Result<AclFilter, String>> = req
        .filters
        .iter()
        .map(|f| {
            AclFilter::from_wire(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
            .map_err(|e| e.to_string())
        })
        .collect();
    // Each filter's matches, taken out in the same compare and set.
    let deleted = change_security(&shard.ctx, |doc| {
        let mut out: Vec<Vec<AclBinding>> = Vec::new();
        for f in &filters {
            let Ok(f) = f else {
                out.push(Vec::new());
                continue;
            };
            out.push(doc.acls.iter().filter(|b| f.matches(b)).cloned().collect());
        }
        doc.acls
            .retain(|b| !filters.iter().flatten().any(|f| f.matches(b)));
        out
    })
    .await;
    let filter_results = match deleted {
        Err((code, message)) => filters
            .iter()
            .map(|_| refuse(code, message.clone()))
            .collect(),
        Ok(matched) => filters
            .iter()
            .zip(matched)
            .map(|(f, bindings)| match f {
                Err(e) => refuse(ErrorCode::INVALID_REQUEST, e.clone()),
                Ok(_) => DeleteAclsFilterResult {
                    matching_acls: bindings
                        .iter()
                        .map(|b| DeleteAclsMatchingAcl {
                            resource_type: b.resource_type.code(),
                            resource_name: s(&b.name),
                            pattern_type: b.pattern.code(),
                            principal: s(&b.principal),
                            host: s(&b.host),
                            operation: b.operation.code(),
                            permission_type: b.permission.code(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            })
            .collect(),
    };
    DeleteAclsResponse {
        filter_results,
        ..Default::default()
    }
}

/// A group request the principal may not make, answered with Kafka's
/// error (GROUP_AUTHORIZATION_FAILED, or TOPIC_AUTHORIZATION_FAILED for an
/// offset commit naming a topic it may not read), before it is served here
/// or forwarded to the group's coordinator. `None`: go on.
///
/// Joining, syncing, heartbeats, leaving and committing need READ on the
/// group; fetching offsets and describing, DESCRIBE; deleting, DELETE. A
/// request naming several groups or topics is refused whole here only when
/// every one of them is refused; otherwise the node that serves it answers
/// the refused ones one by one ([`take_refused_items`]), as Kafka does.
pub fn group_refusal(shard: &Shard, session: &Session, body: &RequestBody) -> Option<ResponseBody> {
    shard.ctx.authorizer()?;
    let group = |op: Operation, name: &str| allowed(shard, session, op, ResourceType::Group, name);
    const GROUP: i16 = ErrorCode::GROUP_AUTHORIZATION_FAILED.code();
    Some(match body {
        RequestBody::JoinGroup(r) if !group(Operation::Read, r.group_id.as_str()) => {
            ResponseBody::JoinGroup(join_group_response::JoinGroupResponse {
                error_code: GROUP,
                generation_id: -1,
                ..Default::default()
            })
        }
        RequestBody::SyncGroup(r) if !group(Operation::Read, r.group_id.as_str()) => {
            ResponseBody::SyncGroup(sync_group_response::SyncGroupResponse {
                error_code: GROUP,
                ..Default::default()
            })
        }
        RequestBody::Heartbeat(r) if !group(Operation::Read, r.group_id.as_str()) => {
            ResponseBody::Heartbeat(heartbeat_response::HeartbeatResponse {
                error_code: GROUP,
                ..Default::default()
            })
        }
        RequestBody::LeaveGroup(r) if !group(Operation::Read, r.group_id.as_str()) => {
            ResponseBody::LeaveGroup(leave_group_response::LeaveGroupResponse {
                error_code: GROUP,
                ..Default::default()
            })
        }
        RequestBody::OffsetCommit(r) => {
            let group_ok = group(Operation::Read, r.group_id.as_str());
            let any_topic_ok = r.topics.is_empty()
                || r.topics.iter().any(|t| {
                    allowed(
                        shard,
                        session,
                        Operation::Read,
                        ResourceType::Topic,
                        t.name.as_str(),
                    )
                });
            if group_ok && any_topic_ok {
                return None;
            }
            let code = if group_ok {
                ErrorCode::TOPIC_AUTHORIZATION_FAILED
            } else {
                ErrorCode::GROUP_AUTHORIZATION_FAILED
            };
            ResponseBody::OffsetCommit(offset_commit_response::OffsetCommitResponse {
                topics: r.topics.iter().map(|t| commit_refused(t, code)).collect(),
                ..Default::default()
            })
        }
        RequestBody::OffsetFetch(r) => {
            let names: Vec<&str> = if r.groups.is_empty() {
                vec![r.group_id.as_str()]
            } else {
                r.groups.iter().map(|g| g.group_id.as_str()).collect()
            };
            if names.iter().any(|g| group(Operation::Describe, g)) {
                return None;
            }
            use offset_fetch_response::*;
            ResponseBody::OffsetFetch(OffsetFetchResponse {
                error_code: GROUP,
                groups: r
                    .groups
                    .iter()
                    .map(|g| OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        error_code: GROUP,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::DescribeGroups(r) => {
            if r.groups.is_empty()
                || r.groups
                    .iter()
                    .any(|g| group(Operation::Describe, g.as_str()))
            {
                return None;
            }
            use describe_groups_response::*;
            ResponseBody::DescribeGroups(DescribeGroupsResponse {
                groups: r
                    .groups
                    .iter()
                    .map(|g| DescribedGroup {
                        group_id: g.clone(),
                        error_code: GROUP,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::DeleteGroups(r) => {
            if r.groups_names.is_empty()
                || r.groups_names
                    .iter()
                    .any(|g| group(Operation::Delete, g.as_str()))
            {
                return None;
            }
            use delete_groups_response::*;
            ResponseBody::DeleteGroups(DeleteGroupsResponse {
                results: r
                    .groups_names
                    .iter()
                    .map(|g| DeletableGroupResult {
                        group_id: g.clone(),
                        error_code: GROUP,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        _ => return None,
    })
}

/// The groups or topics of a group request that the principal may not use,
/// taken out of it: the rest of the request goes on, and
/// [`answer_refused_items`] answers these one by one.
pub(super) enum RefusedItems {
    None,
    /// OffsetCommit topics without READ.
    CommitTopics(Vec<offset_commit_request::OffsetCommitRequestTopic>),
    /// DescribeGroups groups without DESCRIBE.
    Described(Vec<KStr>),
    /// DeleteGroups groups without DELETE.
    Deleted(Vec<KStr>),
    /// OffsetFetch (v8+) groups without DESCRIBE.
    Fetched(Vec<KStr>),
}

/// Takes the refused groups or topics out of `body` (a request that
/// [`group_refusal`] let through, so some remain).
pub(super) fn take_refused_items(
    shard: &Shard,
    session: &Session,
    body: &mut RequestBody,
) -> RefusedItems {
    if shard.ctx.authorizer().is_none() {
        return RefusedItems::None;
    }
    let may = |op, resource_type, name: &str| allowed(shard, session, op, resource_type, name);
    match body {
        RequestBody::OffsetCommit(r) => {
            let (kept, refused) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| may(Operation::Read, ResourceType::Topic, t.name.as_str()));
            r.topics = kept;
            RefusedItems::CommitTopics(refused)
        }
        RequestBody::DescribeGroups(r) => {
            let (kept, refused) = std::mem::take(&mut r.groups)
                .into_iter()
                .partition(|g| may(Operation::Describe, ResourceType::Group, g.as_str()));
            r.groups = kept;
            RefusedItems::Described(refused)
        }
        RequestBody::DeleteGroups(r) => {
            let (kept, refused) = std::mem::take(&mut r.groups_names)
                .into_iter()
                .partition(|g| may(Operation::Delete, ResourceType::Group, g.as_str()));
            r.groups_names = kept;
            RefusedItems::Deleted(refused)
        }
        RequestBody::OffsetFetch(r) if !r.groups.is_empty() => {
            let (kept, refused): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.groups).into_iter().partition(|g| {
                    may(
                        Operation::Describe,
                        ResourceType::Group,
                        g.group_id.as_str(),
                    )
                });
            r.groups = kept;
            RefusedItems::Fetched(refused.into_iter().map(|g| g.group_id).collect())
        }
        _ => RefusedItems::None,
    }
}

/// Adds the answers for the items [`take_refused_items`] took out.
pub(super) fn answer_refused_items(refused: RefusedItems, answer: &mut ResponseBody) {
    const GROUP: i16 = ErrorCode::GROUP_AUTHORIZATION_FAILED.code();
    match (refused, answer) {
        (RefusedItems::CommitTopics(topics), ResponseBody::OffsetCommit(a)) => {
            a.topics.extend(
                topics
                    .iter()
                    .map(|t| commit_refused(t, ErrorCode::TOPIC_AUTHORIZATION_FAILED)),
            );
        }
        (RefusedItems::Described(groups), ResponseBody::DescribeGroups(a)) => {
            a.groups.extend(
                groups
                    .into_iter()
                    .map(|g| describe_groups_response::DescribedGroup {
                        group_id: g,
                        error_code: GROUP,
                        ..Default::default()
                    }),
            );
        }
        (RefusedItems::Deleted(groups), ResponseBody::DeleteGroups(a)) => {
            a.results.extend(groups.into_iter().map(|g| {
                delete_groups_response::DeletableGroupResult {
                    group_id: g,
                    error_code: GROUP,
                    ..Default::default()
                }
            }));
        }
        (RefusedItems::Fetched(groups), ResponseBody::OffsetFetch(a)) => {
            a.groups.extend(groups.into_iter().map(|g| {
                offset_fetch_response::OffsetFetchResponseGroup {
                    group_id: g,
                    error_code: GROUP,
                    ..Default::default()
                }
            }));
        }
        _ => {}
    }
}

/// Which OffsetFetch groups named their topics (the rest asked for all):
/// `(the single group of v0-7, [(group, named)] of v8+)`.
pub(super) type FetchNamed = Option<(bool, Vec<(KStr, bool)>)>;

pub(super) fn offset_fetch_named(body: &RequestBody) -> FetchNamed {
    match body {
        RequestBody::OffsetFetch(r) => Some((
            r.topics.is_some(),
            r.groups
                .iter()
                .map(|g| (g.group_id.clone(), g.topics.is_some()))
                .collect(),
        )),
        _ => None,
    }
}

/// OffsetFetch answers only for topics the principal may DESCRIBE, as
/// Kafka's: a topic the request named gets TOPIC_AUTHORIZATION_FAILED, one
/// it did not (all of a group's offsets) is left out.
pub(super) fn filter_fetched_offsets(
    shard: &Shard,
    session: &Session,
    named: FetchNamed,
    answer: &mut ResponseBody,
) {
    let (Some((single, groups)), ResponseBody::OffsetFetch(a)) = (named, answer) else {
        return;
    };
    if shard.ctx.authorizer().is_none() {
        return;
    }
    let may = |t: &str| allowed(shard, session, Operation::Describe, ResourceType::Topic, t);
    const DENIED: i16 = ErrorCode::TOPIC_AUTHORIZATION_FAILED.code();
    if single {
        for t in a.topics.iter_mut().filter(|t| !may(t.name.as_str())) {
            for p in &mut t.partitions {
                (p.committed_offset, p.metadata, p.error_code) = (-1, None, DENIED);
            }
        }
    } else {
        a.topics.retain(|t| may(t.name.as_str()));
    }
    for g in &mut a.groups {
        let named = groups
            .iter()
            .any(|(id, named)| *named && id.as_str() == g.group_id.as_str());
        if named {
            for t in g.topics.iter_mut().filter(|t| !may(t.name.as_str())) {
                for p in &mut t.partitions {
                    (p.committed_offset, p.metadata, p.error_code) = (-1, None, DENIED);
                }
            }
        } else {
            g.topics.retain(|t| may(t.name.as_str()));
        }
    }
}

/// ListGroups without DESCRIBE on the cluster lists only the groups the
/// principal may describe, as Kafka's.
pub(super) fn filter_listed_groups(shard: &Shard, session: &Session, body: &mut ResponseBody) {
    if allowed_on_cluster(shard, session, Operation::Describe) {
        return;
    }
    if let ResponseBody::ListGroups(l) = body {
        l.groups.retain(|g| {
            allowed(
                shard,
                session,
                Operation::Describe,
                ResourceType::Group,
                g.group_id.as_str(),
            )
        });
    }
}
