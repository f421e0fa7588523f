//! Who is on the other end of a connection, and what it may do.
//!
//! - `tls`: rustls server and client configurations from PEM keys and
//!   certificates ([`crate::config::TlsSettings`]), reloaded when their files
//!   change, and the principal a client certificate maps to.
//! - `acl`: Kafka's ACL model and the authorizer's decision.
//! - `pki`: a certificate authority for `ferry dev --secure` and tests.
//! - `scram`: SASL PLAIN and SCRAM-SHA-256/512 (RFC 5802, RFC 7677) as a
//!   server does them, and the salted credentials it checks against.
//!
//! This layer sits above `config` (it reads typed settings) and below
//! `cluster` and `broker`: the node-to-node client dials with its TLS
//! configuration, and the broker's connections authenticate through it.

pub mod acl;
pub mod pki;
pub mod sasl_client;
pub mod scram;
pub mod tls;

use std::fmt;

/// A Kafka principal: `User:name`. Connections that did not authenticate
/// are `User:ANONYMOUS`, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    /// `User:name`.
    full: String,
}

impl Principal {
    pub const ANONYMOUS_NAME: &'static str = "ANONYMOUS";

    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            full: format!("User:{}", name.into()),
        }
    }

    pub fn anonymous() -> Principal {
        Principal::user(Principal::ANONYMOUS_NAME)
    }

    /// The user name, without `User:`.
    pub fn name(&self) -> &str {
        &self.full["User:".len()..]
    }

    /// `User:name`, as ACLs and `super.users` write it.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn is_anonymous(&self) -> bool {
        self.name() == Principal::ANONYMOUS_NAME
    }

    /// Parses `User:name` (the form ACLs and `super.users` use).
    pub fn parse(text: &str) -> Option<Principal> {
        let name = text.trim().strip_prefix("User:")?;
        (!name.is_empty()).then(|| Principal::user(name))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// The cluster's security metadata, kept by the coordinator as one
/// document ([`crate::cluster::Doc::Security`]): SCRAM credentials (salted,
/// never a password) and ACLs. Every node reads it from the coordinator, so
/// a change applies cluster-wide without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecurityDoc {
    /// Credentials by user name, at most one per mechanism.
    #[serde(default)]
    pub scram: std::collections::BTreeMap<String, Vec<scram::ScramCredential>>,
    /// ACL bindings, sorted, without duplicates.
    #[serde(default)]
    pub acls: Vec<acl::AclBinding>,
}

impl SecurityDoc {
    pub fn encode(&self) -> Vec<u8> {
        // Maps of strings, numbers and byte strings always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<SecurityDoc, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// `user`'s credential for `mechanism`.
    pub fn credential(
        &self,
        user: &str,
        mechanism: crate::config::SaslMechanism,
    ) -> Option<&scram::ScramCredential> {
        self.scram
            .get(user)?
            .iter()
            .find(|c| c.mechanism == mechanism)
    }

    /// Sets `user`'s credential for its mechanism.
    pub fn upsert(&mut self, user: &str, credential: scram::ScramCredential) {
        let list = self.scram.entry(user.to_owned()).or_default();
        list.retain(|c| c.mechanism != credential.mechanism);
        list.push(credential);
        list.sort_by_key(|c| c.mechanism);
    }

    /// Removes `user`'s credential for `mechanism`; false if it had none.
    pub fn delete(&mut self, user: &str, mechanism: crate::config::SaslMechanism) -> bool {
        let Some(list) = self.scram.get_mut(user) else {
            return false;
        };
        let before = list.len();
        list.retain(|c| c.mechanism != mechanism);
        let removed = list.len() != before;
        if list.is_empty() {
            self.scram.remove(user);
        }
        removed
    }
}
