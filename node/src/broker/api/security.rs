//! SCRAM credentials (KIP-554): AlterUserScramCredentials and
//! DescribeUserScramCredentials. Credentials live in the cluster's security
//! document ([`crate::cluster::Doc::Security`]), changed by compare and set
//! and, for a coordinator in this process, kept in the bucket too; every
//! node reads them from the coordinator.

use super::*;
use crate::cluster::Doc;
use crate::config::SaslMechanism;
use crate::security::scram::{SaslError, ScramCredential};
use crate::security::SecurityDoc;
use std::collections::{BTreeMap, HashSet};

/// Kafka's `ScramMechanism` numbers.
fn mechanism_of(n: i8) -> Option<SaslMechanism> {
    match n {
        1 => Some(SaslMechanism::ScramSha256),
        2 => Some(SaslMechanism::ScramSha512),
        _ => None,
    }
}

fn number_of(m: SaslMechanism) -> i8 {
    match m {
        SaslMechanism::ScramSha256 => 1,
        SaslMechanism::ScramSha512 => 2,
        SaslMechanism::Plain => 0,
    }
}

/// Applies `change` to the cluster's security document by compare and
/// set, retrying when another node changed it first, and keeps it in the
/// bucket when the coordinator is in this process.
pub async fn change_security<R>(
    ctx: &crate::node::NodeCtx,
    mut change: impl FnMut(&mut SecurityDoc) -> R,
) -> Result<R, (ErrorCode, String)> {
    const ATTEMPTS: usize = 10;
    for _ in 0..ATTEMPTS {
        let (version, data) = ctx.cluster.doc(Doc::Security);
        let mut doc = match data {
            None => SecurityDoc::default(),
            Some(d) => SecurityDoc::decode(&d).map_err(|e| {
                (
                    ErrorCode::UNKNOWN_SERVER_ERROR,
                    format!("the cluster's security document does not decode: {e}"),
                )
            })?,
        };
        let result = change(&mut doc);
        let bytes = Bytes::from(doc.encode());
        match ctx
            .cluster
            .put_doc(Doc::Security, version, bytes.clone())
            .await
        {
            Ok(Ok(new_version)) => {
                if ctx.in_process {
                    let stored = ctx
                        .durable
                        .put_meta(Doc::Security.name(), new_version, bytes)
                        .await;
                    match stored {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err((ErrorCode::KAFKA_STORAGE_ERROR, e.to_string())),
                        Err(_) => {
                            return Err((
                                ErrorCode::KAFKA_STORAGE_ERROR,
                                "the WAL is shut down".into(),
                            ))
                        }
                    }
                }
                return Ok(result);
            }
            Ok(Err(_)) => continue,
            Err(e) => return Err((ErrorCode::REQUEST_TIMED_OUT, e.to_string())),
        }
    }
    Err((
        ErrorCode::REQUEST_TIMED_OUT,
        format!("the security document changed under {ATTEMPTS} attempts in a row; try again"),
    ))
}

/// What one user's part of an AlterUserScramCredentials does.
enum Op {
    Delete(SaslMechanism),
    Upsert(ScramCredential),
}

pub(super) async fn alter_user_scram_credentials(
    shard: &Shard,
    req: alter_user_scram_credentials_request::AlterUserScramCredentialsRequest,
) -> alter_user_scram_credentials_response::AlterUserScramCredentialsResponse {
    use alter_user_scram_credentials_response::*;
    // Each user's operations, checked first; a user with any bad one
    // changes nothing (as in Kafka).
    let mut errors: BTreeMap<String, (ErrorCode, String)> = BTreeMap::new();
    let mut ops: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    let mut seen: HashSet<(String, i8)> = HashSet::new();
    let mut order: Vec<String> = Vec::new();
    let note = |user: &str, errors: &mut BTreeMap<String, (ErrorCode, String)>, e| {
        errors.entry(user.to_owned()).or_insert(e);
    };
    let deletions = req
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism, None));
    let upsertions = req
        .upsertions
        .iter()
        .map(|u| (u.name.as_str(), u.mechanism, Some(u)));
    for (user, mechanism, upsert) in deletions.chain(upsertions) {
        if !order.iter().any(|u| u == user) {
            order.push(user.to_owned());
        }
        if user.is_empty() {
            note(
                user,
                &mut errors,
                (
                    ErrorCode::UNACCEPTABLE_CREDENTIAL,
                    "the user name is empty".into(),
                ),
            );
            continue;
        }
        let Some(m) = mechanism_of(mechanism) else {
            note(
                user,
                &mut errors,
                (
                    ErrorCode::UNSUPPORTED_SASL_MECHANISM,
                    format!("unknown SCRAM mechanism {mechanism}"),
                ),
            );
            continue;
        };
        if !seen.insert((user.to_owned(), mechanism)) {
            note(
                user,
                &mut errors,
                (
                    ErrorCode::DUPLICATE_RESOURCE,
                    "a user's credential may be altered only once per request".into(),
                ),
            );
            continue;
        }
        let op = match upsert {
            None => Op::Delete(m),
            Some(u) => {
                match ScramCredential::from_salted_password(
                    m,
                    &u.salt,
                    u32::try_from(u.iterations).unwrap_or(0),
                    &u.salted_password,
                ) {
                    Ok(c) => Op::Upsert(c),
                    Err(e) => {
                        let code = match e {
                            SaslError::WrongMechanism => ErrorCode::UNSUPPORTED_SASL_MECHANISM,
                            _ => ErrorCode::UNACCEPTABLE_CREDENTIAL,
                        };
                        note(user, &mut errors, (code, e.to_string()));
                        continue;
                    }
                }
            }
        };
        ops.entry(user.to_owned()).or_default().push(op);
    }
    for user in errors.keys() {
        ops.remove(user);
    }
    let applied = change_security(&shard.ctx, |doc| {
        let mut missing: BTreeMap<String, (ErrorCode, String)> = BTreeMap::new();
        for (user, user_ops) in &ops {
            // Deletions of credentials the user does not have refuse the
            // user's whole part.
            let absent = user_ops.iter().find_map(|op| match op {
                Op::Delete(m) if doc.credential(user, *m).is_none() => Some(*m),
                _ => None,
            });
            if let Some(m) = absent {
                missing.insert(
                    user.clone(),
                    (
                        ErrorCode::RESOURCE_NOT_FOUND,
                        format!("{user} has no {} credential to delete", m.name()),
                    ),
                );
                continue;
            }
            for op in user_ops {
                match op {
                    Op::Delete(m) => {
                        doc.delete(user, *m);
                    }
                    Op::Upsert(c) => doc.upsert(user, c.clone()),
                }
            }
        }
        missing
    })
    .await;
    let failure = match applied {
        Ok(missing) => {
            errors.extend(missing);
            None
        }
        Err(e) => Some(e),
    };
    let results = order
        .into_iter()
        .map(|user| {
            let (code, message) = match (errors.get(&user), &failure) {
                (Some((c, m)), _) => (*c, Some(m.clone())),
                (None, Some((c, m))) => (*c, Some(m.clone())),
                (None, None) => (ErrorCode::NONE, None),
            };
            if code == ErrorCode::NONE {
                tracing::info!(user = %user, "SCRAM credentials altered");
            }
            AlterUserScramCredentialsResult {
                user: s(&user),
                error_code: code.code(),
                error_message: message.map(|m| s(&m)),
                ..Default::default()
            }
        })
        .collect();
    AlterUserScramCredentialsResponse {
        results,
        ..Default::default()
    }
}

pub(super) fn describe_user_scram_credentials(
    shard: &Shard,
    req: describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest,
) -> describe_user_scram_credentials_response::DescribeUserScramCredentialsResponse {
    use describe_user_scram_credentials_response::*;
    let doc = shard.ctx.security();
    let describe = |user: &str| DescribeUserScramCredentialsResult {
        user: s(user),
        credential_infos: doc
            .scram
            .get(user)
            .into_iter()
            .flatten()
            .map(|c| CredentialInfo {
                mechanism: number_of(c.mechanism),
                iterations: i32::try_from(c.iterations).unwrap_or(i32::MAX),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let results = match req.users.filter(|u| !u.is_empty()) {
        None => doc.scram.keys().map(|u| describe(u)).collect(),
        Some(users) => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for u in &users {
                *counts.entry(u.name.as_str()).or_default() += 1;
            }
            let mut out = Vec::new();
            let mut done = HashSet::new();
            for u in &users {
                let name = u.name.as_str();
                if !done.insert(name) {
                    continue;
                }
                let error = if counts[name] > 1 {
                    Some((
                        ErrorCode::DUPLICATE_RESOURCE,
                        "the user is named more than once",
                    ))
                } else if !doc.scram.contains_key(name) {
                    Some((
                        ErrorCode::RESOURCE_NOT_FOUND,
                        "no SCRAM credential for the user",
                    ))
                } else {
                    None
                };
                out.push(match error {
                    Some((code, message)) => DescribeUserScramCredentialsResult {
                        user: s(name),
                        error_code: code.code(),
                        error_message: Some(s(message)),
                        ..Default::default()
                    },
                    None => describe(name),
                });
            }
            out
        }
    };
    DescribeUserScramCredentialsResponse {
        results,
        ..Default::default()
    }
}
