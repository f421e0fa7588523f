//! Kafka's ACLs: the bindings CreateAcls stores, the filters DescribeAcls
//! and DeleteAcls match them with, and the authorizer's decision, as
//! Kafka's `StandardAuthorizer` makes it. Pure code: no I/O.
//!
//! Wire codes are Kafka's (`ResourceType`, `PatternType`, `AclOperation`,
//! `AclPermissionType`); the ANY, MATCH and UNKNOWN codes exist only in
//! filters, so the enums here hold concrete values and filters use `None`
//! (or [`PatternFilter`]) for "any".

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The literal resource name that stands for every resource of its type.
pub const WILDCARD_RESOURCE: &str = "*";

/// The principal that stands for every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// The host that stands for every client address.
pub const WILDCARD_HOST: &str = "*";

const ANY_CODE: i8 = 1;
const MATCH_CODE: i8 = 2;

/// The kind of resource a binding protects.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }

    /// The type with wire code `c`; `None` for ANY, UNKNOWN and codes Kafka
    /// does not define.
    pub fn from_code(c: i8) -> Option<ResourceType> {
        Some(match c {
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            6 => ResourceType::DelegationToken,
            7 => ResourceType::User,
            _ => return None,
        })
    }

    /// Kafka's name for it (`TOPIC`, `TRANSACTIONAL_ID`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "TOPIC",
            ResourceType::Group => "GROUP",
            ResourceType::Cluster => "CLUSTER",
            ResourceType::TransactionalId => "TRANSACTIONAL_ID",
            ResourceType::DelegationToken => "DELEGATION_TOKEN",
            ResourceType::User => "USER",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a binding's resource name is matched.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum PatternType {
    /// The name is the resource's name, or `*` for every resource.
    Literal,
    /// The name is a prefix of the resource's name.
    Prefixed,
}

impl PatternType {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    /// The pattern type with wire code `c`; `None` for ANY, MATCH, UNKNOWN
    /// and codes Kafka does not define.
    pub fn from_code(c: i8) -> Option<PatternType> {
        match c {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }

    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            PatternType::Literal => "LITERAL",
            PatternType::Prefixed => "PREFIXED",
        }
    }
}

/// What a binding allows or denies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl Operation {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
            Operation::CreateTokens => 13,
            Operation::DescribeTokens => 14,
        }
    }

    /// The operation with wire code `c`; `None` for ANY, UNKNOWN and codes
    /// Kafka does not define.
    pub fn from_code(c: i8) -> Option<Operation> {
        Some(match c {
            2 => Operation::All,
            3 => Operation::Read,
            4 => Operation::Write,
            5 => Operation::Create,
            6 => Operation::Delete,
            7 => Operation::Alter,
            8 => Operation::Describe,
            9 => Operation::ClusterAction,
            10 => Operation::DescribeConfigs,
            11 => Operation::AlterConfigs,
            12 => Operation::IdempotentWrite,
            13 => Operation::CreateTokens,
            14 => Operation::DescribeTokens,
            _ => return None,
        })
    }

    /// Kafka's name for it (`READ`, `DESCRIBE_CONFIGS`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "ALL",
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Create => "CREATE",
            Operation::Delete => "DELETE",
            Operation::Alter => "ALTER",
            Operation::Describe => "DESCRIBE",
            Operation::ClusterAction => "CLUSTER_ACTION",
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
            Operation::AlterConfigs => "ALTER_CONFIGS",
            Operation::IdempotentWrite => "IDEMPOTENT_WRITE",
            Operation::CreateTokens => "CREATE_TOKENS",
            Operation::DescribeTokens => "DESCRIBE_TOKENS",
        }
    }

    /// Whether an ALLOW binding for `self` allows `asked`: the same
    /// operation, ALL, or one that implies it (READ, WRITE, DELETE and ALTER
    /// imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS).
    fn allows(self, asked: Operation) -> bool {
        self == asked
            || self == Operation::All
            || match asked {
                Operation::Describe => matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ),
                Operation::DescribeConfigs => self == Operation::AlterConfigs,
                _ => false,
            }
    }

    /// Whether a DENY binding for `self` denies `asked`: the same operation
    /// or ALL (Kafka does not apply implication to DENY).
    fn denies(self, asked: Operation) -> bool {
        self == asked || self == Operation::All
    }
}

/// Whether a binding allows or denies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    /// The permission with wire code `c`; `None` for ANY, UNKNOWN and codes
    /// Kafka does not define.
    pub fn from_code(c: i8) -> Option<Permission> {
        match c {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }

    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Deny => "DENY",
            Permission::Allow => "ALLOW",
        }
    }
}

fn resource_type_label(code: &i8) -> &'static str {
    match *code {
        ANY_CODE => "ANY",
        c => ResourceType::from_code(c).map_or("UNKNOWN", ResourceType::name),
    }
}

fn pattern_label(code: &i8) -> &'static str {
    match *code {
        ANY_CODE => "ANY",
        MATCH_CODE => "MATCH",
        c => PatternType::from_code(c).map_or("UNKNOWN", PatternType::name),
    }
}

fn operation_label(code: &i8) -> &'static str {
    match *code {
        ANY_CODE => "ANY",
        c => Operation::from_code(c).map_or("UNKNOWN", Operation::name),
    }
}

fn permission_label(code: &i8) -> &'static str {
    match *code {
        ANY_CODE => "ANY",
        c => Permission::from_code(c).map_or("UNKNOWN", Permission::name),
    }
}

/// Why a binding or filter from the wire was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    /// A binding's resource type is ANY, UNKNOWN or undefined.
    #[error("resource type {code} ({}) cannot be stored in a binding", resource_type_label(.code))]
    BindingResourceType { code: i8 },
    /// A binding's pattern type is not LITERAL or PREFIXED.
    #[error(
        "pattern type {code} ({}) cannot be stored in a binding; only LITERAL (3) and PREFIXED (4) can",
        pattern_label(.code)
    )]
    BindingPatternType { code: i8 },
    /// A binding's operation is ANY, UNKNOWN or undefined.
    #[error("operation {code} ({}) cannot be stored in a binding", operation_label(.code))]
    BindingOperation { code: i8 },
    /// A binding's permission is not DENY or ALLOW.
    #[error(
        "permission {code} ({}) cannot be stored in a binding; only DENY (2) and ALLOW (3) can",
        permission_label(.code)
    )]
    BindingPermission { code: i8 },
    /// A binding's resource name is empty.
    #[error("a binding's resource name cannot be empty")]
    EmptyResourceName,
    /// A CLUSTER binding names something other than `kafka-cluster`.
    #[error("a CLUSTER binding must name kafka-cluster, not {name:?}")]
    ClusterName { name: String },
    /// A binding's principal is not `User:name`.
    #[error("principal {principal:?} is not of the form User:name")]
    Principal { principal: String },
    /// A binding's host is neither `*` nor an IP address.
    #[error("host {host:?} is neither * nor an IP address")]
    Host { host: String },
    /// A filter's resource type is UNKNOWN or undefined.
    #[error("resource type {code} (UNKNOWN) is not valid in a filter")]
    FilterResourceType { code: i8 },
    /// A filter's pattern type is UNKNOWN or undefined.
    #[error("pattern type {code} (UNKNOWN) is not valid in a filter")]
    FilterPatternType { code: i8 },
    /// A filter's operation is UNKNOWN or undefined.
    #[error("operation {code} (UNKNOWN) is not valid in a filter")]
    FilterOperation { code: i8 },
    /// A filter's permission is UNKNOWN or undefined.
    #[error("permission {code} (UNKNOWN) is not valid in a filter")]
    FilterPermission { code: i8 },
}

/// An IP address from its text, with IPv4-mapped IPv6 addresses as IPv4 (as
/// Java's `InetAddress` gives them to Kafka).
fn canonical_ip(text: &str) -> Option<IpAddr> {
    let ip: IpAddr = text.parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    })
}

/// Whether two host texts name the same host: equal text, or the same IP
/// address written differently (`::1` and `0:0:0:0:0:0:0:1`).
fn same_host(a: &str, b: &str) -> bool {
    a == b || canonical_ip(a).is_some_and(|ip| canonical_ip(b) == Some(ip))
}

/// One ACL as CreateAcls stores it: who (principal, host) may or may not do
/// what (operation) on which resources (type, name, pattern).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `User:name`, or `User:*` for everyone.
    pub principal: String,
    /// A client IP address, or `*` for every host.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// From CreateAcls' wire fields; refuses what Kafka refuses (above).
    pub fn from_wire(
        resource_type: i8,
        name: &str,
        pattern: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<AclBinding, AclError> {
        let resource_type =
            ResourceType::from_code(resource_type).ok_or(AclError::BindingResourceType {
                code: resource_type,
            })?;
        let pattern = PatternType::from_code(pattern)
            .ok_or(AclError::BindingPatternType { code: pattern })?;
        let operation = Operation::from_code(operation)
            .ok_or(AclError::BindingOperation { code: operation })?;
        let permission = Permission::from_code(permission)
            .ok_or(AclError::BindingPermission { code: permission })?;
        if name.is_empty() {
            return Err(AclError::EmptyResourceName);
        }
        if resource_type == ResourceType::Cluster && name != CLUSTER_NAME {
            return Err(AclError::ClusterName {
                name: name.to_owned(),
            });
        }
        if principal.strip_prefix("User:").is_none_or(str::is_empty) {
            return Err(AclError::Principal {
                principal: principal.to_owned(),
            });
        }
        if host != WILDCARD_HOST && host.parse::<IpAddr>().is_err() {
            return Err(AclError::Host {
                host: host.to_owned(),
            });
        }
        Ok(AclBinding {
            resource_type,
            name: name.to_owned(),
            pattern,
            principal: principal.to_owned(),
            host: host.to_owned(),
            operation,
            permission,
        })
    }
}

/// How a filter matches a binding's pattern type and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatternFilter {
    /// Any pattern type; a given name must equal the binding's.
    Any,
    /// Bindings that apply to the named resource (LITERAL with that name,
    /// LITERAL `*`, PREFIXED with a prefix of it); without a name, any.
    Match,
    /// LITERAL bindings; a given name must equal the binding's.
    Literal,
    /// PREFIXED bindings; a given name must equal the binding's.
    Prefixed,
}

impl PatternFilter {
    /// From the wire code; `None` for UNKNOWN and undefined codes.
    pub fn from_code(c: i8) -> Option<PatternFilter> {
        match c {
            ANY_CODE => Some(PatternFilter::Any),
            MATCH_CODE => Some(PatternFilter::Match),
            c => PatternType::from_code(c).map(|p| match p {
                PatternType::Literal => PatternFilter::Literal,
                PatternType::Prefixed => PatternFilter::Prefixed,
            }),
        }
    }
}

/// Which bindings DescribeAcls returns or DeleteAcls removes; `None` fields
/// match anything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// The filter that matches every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: None,
            name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// From DescribeAcls' / DeleteAcls' wire fields (ANY = None); refuses UNKNOWN codes.
    pub fn from_wire(
        resource_type: i8,
        name: Option<&str>,
        pattern: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, AclError> {
        let resource_type = match resource_type {
            ANY_CODE => None,
            code => {
                Some(ResourceType::from_code(code).ok_or(AclError::FilterResourceType { code })?)
            }
        };
        let pattern = PatternFilter::from_code(pattern)
            .ok_or(AclError::FilterPatternType { code: pattern })?;
        let operation = match operation {
            ANY_CODE => None,
            code => Some(Operation::from_code(code).ok_or(AclError::FilterOperation { code })?),
        };
        let permission = match permission {
            ANY_CODE => None,
            code => Some(Permission::from_code(code).ok_or(AclError::FilterPermission { code })?),
        };
        Ok(AclFilter {
            resource_type,
            name: name.map(str::to_owned),
            pattern,
            principal: principal.map(str::to_owned),
            host: host.map(str::to_owned),
            operation,
            permission,
        })
    }

    /// Whether `b` is one of the bindings this filter selects.
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.pattern_matches(b)
            && self.principal.as_deref().is_none_or(|p| p == b.principal)
            && self.host.as_deref().is_none_or(|h| same_host(h, &b.host))
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }

    fn pattern_matches(&self, b: &AclBinding) -> bool {
        let exact = match self.pattern {
            PatternFilter::Any | PatternFilter::Match => None,
            PatternFilter::Literal => Some(PatternType::Literal),
            PatternFilter::Prefixed => Some(PatternType::Prefixed),
        };
        if exact.is_some_and(|p| p != b.pattern) {
            return false;
        }
        let Some(name) = self.name.as_deref() else {
            return true;
        };
        match (self.pattern, b.pattern) {
            (PatternFilter::Match, PatternType::Literal) => {
                name == b.name || b.name == WILDCARD_RESOURCE
            }
            (PatternFilter::Match, PatternType::Prefixed) => name.starts_with(b.name.as_str()),
            _ => name == b.name,
        }
    }
}

/// A binding's who-and-what, kept under its resource pattern.
#[derive(Debug, Clone)]
struct Entry {
    principal: String,
    any_principal: bool,
    host: String,
    host_ip: Option<IpAddr>,
    any_host: bool,
    operation: Operation,
    permission: Permission,
}

impl Entry {
    fn new(b: &AclBinding) -> Entry {
        Entry {
            principal: b.principal.clone(),
            any_principal: b.principal == WILDCARD_PRINCIPAL,
            host: b.host.clone(),
            host_ip: canonical_ip(&b.host),
            any_host: b.host == WILDCARD_HOST,
            operation: b.operation,
            permission: b.permission,
        }
    }

    /// Whether this entry is for `principal` connecting from `host`
    /// (`host_ip` is `host` parsed by [`canonical_ip`]).
    fn applies_to(&self, principal: &str, host: &str, host_ip: Option<IpAddr>) -> bool {
        (self.any_principal || self.principal == principal)
            && (self.any_host
                || self.host == host
                || (self.host_ip.is_some() && self.host_ip == host_ip))
    }
}

/// One resource type's bindings, by pattern.
#[derive(Debug, Clone, Default)]
struct TypeIndex {
    /// LITERAL bindings by name (`*` included).
    literal: HashMap<String, Vec<Entry>>,
    /// PREFIXED bindings by prefix.
    prefixed: HashMap<String, Vec<Entry>>,
    /// The distinct byte lengths of the prefixes, ascending: a name's
    /// prefixed bindings are found by looking up its prefixes of these
    /// lengths only.
    prefix_lens: Vec<usize>,
}

impl TypeIndex {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.prefixed.is_empty()
    }

    /// The entries of every binding that applies to the resource `name`.
    fn applying<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let literal = self.literal.get(name);
        let wildcard = if name == WILDCARD_RESOURCE {
            None
        } else {
            self.literal.get(WILDCARD_RESOURCE)
        };
        let prefixed = self
            .prefix_lens
            .iter()
            .take_while(move |&&len| len <= name.len())
            .filter_map(move |&len| name.get(..len))
            .filter_map(move |prefix| self.prefixed.get(prefix));
        literal
            .into_iter()
            .chain(wildcard)
            .chain(prefixed)
            .flatten()
    }
}

/// The authorizer's decision, built from the bindings, `super.users` and
/// `allow.everyone.if.no.acl.found`, indexed by resource type and name.
#[derive(Debug, Clone)]
pub struct Authorizer {
    /// By [`ResourceType::index`].
    types: [TypeIndex; 6],
    super_users: HashSet<String>,
    allow_if_no_acl: bool,
}

impl Authorizer {
    /// Indexes `bindings`; `super_users` are `User:name` strings.
    pub fn new(
        bindings: &[AclBinding],
        super_users: &[String],
        allow_if_no_acl: bool,
    ) -> Authorizer {
        let mut types: [TypeIndex; 6] = Default::default();
        for b in bindings {
            let index = &mut types[b.resource_type.index()];
            let map = match b.pattern {
                PatternType::Literal => &mut index.literal,
                PatternType::Prefixed => &mut index.prefixed,
            };
            map.entry(b.name.clone()).or_default().push(Entry::new(b));
        }
        for index in &mut types {
            let mut lens: Vec<usize> = index.prefixed.keys().map(String::len).collect();
            lens.sort_unstable();
            lens.dedup();
            index.prefix_lens = lens;
        }
        Authorizer {
            types,
            super_users: super_users.iter().cloned().collect(),
            allow_if_no_acl,
        }
    }

    /// Whether `principal` (`User:name`) connecting from `host` (its IP
    /// address as text) may do `operation` on the resource `name` of
    /// `resource_type`.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.super_users.contains(principal) {
            return true;
        }
        let host_ip = canonical_ip(host);
        let mut any_acl = false;
        let mut allowed = false;
        for entry in self.types[resource_type.index()].applying(name) {
            any_acl = true;
            if !entry.applies_to(principal, host, host_ip) {
                continue;
            }
            match entry.permission {
                Permission::Deny if entry.operation.denies(operation) => return false,
                Permission::Deny => {}
                Permission::Allow => allowed |= entry.operation.allows(operation),
            }
        }
        if any_acl {
            allowed
        } else {
            self.allow_if_no_acl
        }
    }

    /// Whether `principal` may do `operation` on at least one resource of
    /// `resource_type` (used where Kafka checks "WRITE on any topic", e.g.
    /// InitProducerId without IDEMPOTENT_WRITE), as Kafka's
    /// `authorizeByResourceType`: true for super users; false if a DENY
    /// (of the operation or ALL) on LITERAL `*` applies to the principal and
    /// host; true if an ALLOW on LITERAL `*` does; otherwise true if an
    /// ALLOW on some other pattern does that no DENY dominates (a DENY on
    /// the same literal name, or a PREFIXED DENY whose prefix the allowed
    /// name or prefix starts with). With no bindings on the type at all,
    /// `allow.everyone.if.no.acl.found` decides. Implication (READ implies
    /// DESCRIBE) does not apply here, as in Kafka.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if self.super_users.contains(principal) {
            return true;
        }
        let index = &self.types[resource_type.index()];
        if index.is_empty() {
            return self.allow_if_no_acl;
        }
        let host_ip = canonical_ip(host);
        let relevant = |e: &&Entry| {
            e.applies_to(principal, host, host_ip)
                && (e.operation == operation || e.operation == Operation::All)
        };
        let mut deny_literal = HashSet::new();
        let mut deny_prefixed = HashSet::new();
        let mut allow_literal = Vec::new();
        let mut allow_prefixed = Vec::new();
        let mut wildcard_allow = false;
        for (name, entries) in &index.literal {
            for entry in entries.iter().filter(relevant) {
                match (entry.permission, name == WILDCARD_RESOURCE) {
                    (Permission::Deny, true) => return false,
                    (Permission::Deny, false) => {
                        deny_literal.insert(name.as_str());
                    }
                    (Permission::Allow, true) => wildcard_allow = true,
                    (Permission::Allow, false) => allow_literal.push(name.as_str()),
                }
            }
        }
        if wildcard_allow {
            return true;
        }
        for (prefix, entries) in &index.prefixed {
            for entry in entries.iter().filter(relevant) {
                match entry.permission {
                    Permission::Deny => {
                        deny_prefixed.insert(prefix.as_str());
                    }
                    Permission::Allow => allow_prefixed.push(prefix.as_str()),
                }
            }
        }
        let dominated = |name: &str| {
            name.char_indices()
                .filter_map(|(i, c)| name.get(..i + c.len_utf8()))
                .any(|prefix| deny_prefixed.contains(prefix))
        };
        allow_literal
            .iter()
            .any(|name| !deny_literal.contains(name) && !dominated(name))
            || allow_prefixed.iter().any(|prefix| !dominated(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "User:alice";
    const BOB: &str = "User:bob";
    const IP: &str = "10.0.0.1";

    fn binding(
        resource_type: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        host: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            name: name.to_owned(),
            pattern,
            principal: principal.to_owned(),
            host: host.to_owned(),
            operation,
            permission,
        }
    }

    fn allow_topic(name: &str, pattern: PatternType, principal: &str, op: Operation) -> AclBinding {
        binding(
            ResourceType::Topic,
            name,
            pattern,
            principal,
            "*",
            op,
            Permission::Allow,
        )
    }

    fn deny_topic(name: &str, pattern: PatternType, principal: &str, op: Operation) -> AclBinding {
        binding(
            ResourceType::Topic,
            name,
            pattern,
            principal,
            "*",
            op,
            Permission::Deny,
        )
    }

    fn authz(bindings: &[AclBinding]) -> Authorizer {
        Authorizer::new(bindings, &[], false)
    }

    fn topic(a: &Authorizer, principal: &str, op: Operation, name: &str) -> bool {
        a.authorize(principal, IP, op, ResourceType::Topic, name)
    }

    #[test]
    fn codes_round_trip() {
        for c in i8::MIN..=i8::MAX {
            if let Some(t) = ResourceType::from_code(c) {
                assert_eq!(t.code(), c);
            }
            if let Some(p) = PatternType::from_code(c) {
                assert_eq!(p.code(), c);
            }
            if let Some(o) = Operation::from_code(c) {
                assert_eq!(o.code(), c);
            }
            if let Some(p) = Permission::from_code(c) {
                assert_eq!(p.code(), c);
            }
        }
        assert_eq!(ResourceType::from_code(0), None);
        assert_eq!(ResourceType::from_code(1), None);
        assert_eq!(ResourceType::from_code(2), Some(ResourceType::Topic));
        assert_eq!(ResourceType::from_code(7), Some(ResourceType::User));
        assert_eq!(ResourceType::from_code(8), None);
        assert_eq!(PatternType::from_code(2), None);
        assert_eq!(PatternType::from_code(4), Some(PatternType::Prefixed));
        assert_eq!(Operation::from_code(1), None);
        assert_eq!(Operation::from_code(2), Some(Operation::All));
        assert_eq!(Operation::from_code(14), Some(Operation::DescribeTokens));
        assert_eq!(Operation::from_code(15), None);
        assert_eq!(Permission::from_code(1), None);
        assert_eq!(Permission::from_code(2), Some(Permission::Deny));
        assert_eq!(Permission::from_code(3), Some(Permission::Allow));
    }

    #[test]
    fn literal_pattern() {
        let a = authz(&[allow_topic(
            "orders",
            PatternType::Literal,
            ALICE,
            Operation::Read,
        )]);
        assert!(topic(&a, ALICE, Operation::Read, "orders"));
        assert!(!topic(&a, ALICE, Operation::Write, "orders"));
        assert!(!topic(&a, ALICE, Operation::Read, "orders2"));
        assert!(!topic(&a, ALICE, Operation::Read, "order"));
        assert!(!topic(&a, BOB, Operation::Read, "orders"));
        // Another resource type with the same name is another resource.
        assert!(!a.authorize(ALICE, IP, Operation::Read, ResourceType::Group, "orders"));
    }

    #[test]
    fn prefixed_pattern() {
        let a = authz(&[allow_topic(
            "ord",
            PatternType::Prefixed,
            ALICE,
            Operation::Read,
        )]);
        assert!(topic(&a, ALICE, Operation::Read, "ord"));
        assert!(topic(&a, ALICE, Operation::Read, "orders"));
        assert!(!topic(&a, ALICE, Operation::Read, "or"));
        assert!(!topic(&a, ALICE, Operation::Read, "xorders"));
        // A prefixed "*" is a literal prefix, not a wildcard.
        let a = authz(&[allow_topic(
            "*",
            PatternType::Prefixed,
            ALICE,
            Operation::Read,
        )]);
        assert!(!topic(&a, ALICE, Operation::Read, "orders"));
        assert!(topic(&a, ALICE, Operation::Read, "*orders"));
    }

    #[test]
    fn prefixed_pattern_multibyte_names() {
        let a = authz(&[
            allow_topic("é", PatternType::Prefixed, ALICE, Operation::Read),
            allow_topic("ab", PatternType::Prefixed, ALICE, Operation::Read),
        ]);
        assert!(topic(&a, ALICE, Operation::Read, "été"));
        // Byte length 2 falls inside "é" of "xé": no panic, no match.
        assert!(!topic(&a, ALICE, Operation::Read, "xé"));
        assert!(topic(&a, ALICE, Operation::Read, "abc"));
    }

    #[test]
    fn wildcard_literal() {
        let a = authz(&[allow_topic(
            "*",
            PatternType::Literal,
            ALICE,
            Operation::Read,
        )]);
        assert!(topic(&a, ALICE, Operation::Read, "orders"));
        assert!(topic(&a, ALICE, Operation::Read, "anything"));
        assert!(topic(&a, ALICE, Operation::Read, "*"));
        assert!(!topic(&a, ALICE, Operation::Write, "orders"));
        assert!(!topic(&a, BOB, Operation::Read, "orders"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, ALICE, Operation::Read),
            deny_topic("orders", PatternType::Literal, ALICE, Operation::Read),
        ]);
        assert!(!topic(&a, ALICE, Operation::Read, "orders"));
    }

    #[test]
    fn prefixed_deny_overrides_literal_allow() {
        let a = authz(&[
            allow_topic(
                "secret-orders",
                PatternType::Literal,
                ALICE,
                Operation::Read,
            ),
            deny_topic("secret", PatternType::Prefixed, ALICE, Operation::Read),
            allow_topic("public", PatternType::Literal, ALICE, Operation::Read),
        ]);
        assert!(!topic(&a, ALICE, Operation::Read, "secret-orders"));
        assert!(topic(&a, ALICE, Operation::Read, "public"));
    }

    #[test]
    fn wildcard_deny_overrides_literal_allow() {
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, ALICE, Operation::Write),
            deny_topic("*", PatternType::Literal, "User:*", Operation::Write),
        ]);
        assert!(!topic(&a, ALICE, Operation::Write, "orders"));
    }

    #[test]
    fn deny_all_denies_every_operation() {
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, ALICE, Operation::All),
            deny_topic("orders", PatternType::Literal, ALICE, Operation::All),
        ]);
        for op in [Operation::Read, Operation::Write, Operation::Describe] {
            assert!(!topic(&a, ALICE, op, "orders"));
        }
    }

    #[test]
    fn deny_for_someone_else_does_not_deny() {
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, ALICE, Operation::Read),
            deny_topic("orders", PatternType::Literal, BOB, Operation::Read),
            deny_topic("orders", PatternType::Literal, ALICE, Operation::Write),
        ]);
        assert!(topic(&a, ALICE, Operation::Read, "orders"));
        assert!(!topic(&a, BOB, Operation::Read, "orders"));
    }

    #[test]
    fn wildcard_principal() {
        let a = authz(&[allow_topic(
            "orders",
            PatternType::Literal,
            "User:*",
            Operation::Read,
        )]);
        assert!(topic(&a, ALICE, Operation::Read, "orders"));
        assert!(topic(&a, BOB, Operation::Read, "orders"));
        assert!(topic(&a, "User:ANONYMOUS", Operation::Read, "orders"));
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, "User:*", Operation::Read),
            deny_topic("orders", PatternType::Literal, BOB, Operation::Read),
        ]);
        assert!(topic(&a, ALICE, Operation::Read, "orders"));
        assert!(!topic(&a, BOB, Operation::Read, "orders"));
    }

    #[test]
    fn hosts() {
        let on_host = |host: &str, permission| {
            binding(
                ResourceType::Topic,
                "orders",
                PatternType::Literal,
                ALICE,
                host,
                Operation::Read,
                permission,
            )
        };
        let a = authz(&[on_host("10.0.0.1", Permission::Allow)]);
        assert!(a.authorize(
            ALICE,
            "10.0.0.1",
            Operation::Read,
            ResourceType::Topic,
            "orders"
        ));
        assert!(!a.authorize(
            ALICE,
            "10.0.0.2",
            Operation::Read,
            ResourceType::Topic,
            "orders"
        ));
        // Java reports IPv4-mapped clients as IPv4.
        assert!(a.authorize(
            ALICE,
            "::ffff:10.0.0.1",
            Operation::Read,
            ResourceType::Topic,
            "orders"
        ));

        let a = authz(&[on_host("*", Permission::Allow)]);
        assert!(a.authorize(
            ALICE,
            "10.0.0.2",
            Operation::Read,
            ResourceType::Topic,
            "orders"
        ));
        assert!(a.authorize(ALICE, "::1", Operation::Read, ResourceType::Topic, "orders"));

        let a = authz(&[
            on_host("*", Permission::Allow),
            on_host("0:0:0:0:0:0:0:1", Permission::Deny),
        ]);
        assert!(!a.authorize(ALICE, "::1", Operation::Read, ResourceType::Topic, "orders"));
        assert!(a.authorize(
            ALICE,
            "10.0.0.1",
            Operation::Read,
            ResourceType::Topic,
            "orders"
        ));
    }

    #[test]
    fn super_users_are_allowed_everything() {
        let a = Authorizer::new(
            &[deny_topic(
                "*",
                PatternType::Literal,
                "User:*",
                Operation::All,
            )],
            &[ALICE.to_owned()],
            false,
        );
        assert!(topic(&a, ALICE, Operation::Write, "orders"));
        assert!(a.authorize(
            ALICE,
            IP,
            Operation::ClusterAction,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
        assert!(a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic));
        assert!(!topic(&a, BOB, Operation::Write, "orders"));
        // "alice" without the type is not the super user.
        assert!(!topic(&a, "alice", Operation::Write, "orders"));
    }

    #[test]
    fn allow_if_no_acl_found() {
        for allow in [false, true] {
            let a = Authorizer::new(&[], &[], allow);
            assert_eq!(topic(&a, ALICE, Operation::Read, "orders"), allow);

            // Bindings on other resources or types leave "orders" ACL-less.
            let a = Authorizer::new(
                &[
                    allow_topic("other", PatternType::Literal, BOB, Operation::Read),
                    allow_topic("ordersx", PatternType::Prefixed, BOB, Operation::Read),
                    binding(
                        ResourceType::Group,
                        "orders",
                        PatternType::Literal,
                        BOB,
                        "*",
                        Operation::Read,
                        Permission::Allow,
                    ),
                ],
                &[],
                allow,
            );
            assert_eq!(topic(&a, ALICE, Operation::Read, "orders"), allow);

            // A binding for someone else on the resource: no longer ACL-less.
            let a = Authorizer::new(
                &[allow_topic(
                    "orders",
                    PatternType::Literal,
                    BOB,
                    Operation::Read,
                )],
                &[],
                allow,
            );
            assert!(!topic(&a, ALICE, Operation::Read, "orders"));
            assert!(topic(&a, BOB, Operation::Read, "orders"));

            // Also through a prefix or the wildcard, and for another operation.
            for b in [
                allow_topic("ord", PatternType::Prefixed, BOB, Operation::Write),
                allow_topic("*", PatternType::Literal, BOB, Operation::Write),
            ] {
                let a = Authorizer::new(&[b], &[], allow);
                assert!(!topic(&a, ALICE, Operation::Read, "orders"));
            }
        }
    }

    #[test]
    fn implied_describe() {
        for op in [
            Operation::Read,
            Operation::Write,
            Operation::Delete,
            Operation::Alter,
        ] {
            let a = authz(&[allow_topic("orders", PatternType::Literal, ALICE, op)]);
            assert!(topic(&a, ALICE, Operation::Describe, "orders"), "{op:?}");
            assert!(!topic(&a, ALICE, Operation::DescribeConfigs, "orders"));
        }
        for op in [
            Operation::Create,
            Operation::AlterConfigs,
            Operation::DescribeConfigs,
        ] {
            let a = authz(&[allow_topic("orders", PatternType::Literal, ALICE, op)]);
            assert!(!topic(&a, ALICE, Operation::Describe, "orders"), "{op:?}");
        }
        let a = authz(&[allow_topic(
            "orders",
            PatternType::Literal,
            ALICE,
            Operation::AlterConfigs,
        )]);
        assert!(topic(&a, ALICE, Operation::DescribeConfigs, "orders"));
        assert!(!topic(&a, ALICE, Operation::Alter, "orders"));
        // Implication goes one way only.
        let a = authz(&[allow_topic(
            "orders",
            PatternType::Literal,
            ALICE,
            Operation::Describe,
        )]);
        assert!(!topic(&a, ALICE, Operation::Read, "orders"));
    }

    #[test]
    fn deny_read_does_not_deny_describe() {
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, ALICE, Operation::Describe),
            deny_topic("orders", PatternType::Literal, ALICE, Operation::Read),
        ]);
        assert!(topic(&a, ALICE, Operation::Describe, "orders"));
        assert!(!topic(&a, ALICE, Operation::Read, "orders"));
        // Nor does a DENY of ALTER_CONFIGS deny DESCRIBE_CONFIGS.
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, ALICE, Operation::All),
            deny_topic(
                "orders",
                PatternType::Literal,
                ALICE,
                Operation::AlterConfigs,
            ),
        ]);
        assert!(topic(&a, ALICE, Operation::DescribeConfigs, "orders"));
        assert!(!topic(&a, ALICE, Operation::AlterConfigs, "orders"));
    }

    #[test]
    fn allow_all() {
        let a = authz(&[allow_topic(
            "orders",
            PatternType::Literal,
            ALICE,
            Operation::All,
        )]);
        for c in 2..=14 {
            let op = Operation::from_code(c).unwrap();
            assert!(topic(&a, ALICE, op, "orders"), "{op:?}");
        }
        assert!(!topic(&a, BOB, Operation::Read, "orders"));
    }

    #[test]
    fn cluster_resource() {
        let b = AclBinding::from_wire(4, CLUSTER_NAME, 3, ALICE, "*", 9, 3).unwrap();
        let a = authz(&[b]);
        assert!(a.authorize(
            ALICE,
            IP,
            Operation::ClusterAction,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
        assert!(!a.authorize(
            ALICE,
            IP,
            Operation::Alter,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
    }

    fn sample() -> Vec<AclBinding> {
        vec![
            allow_topic("orders", PatternType::Literal, ALICE, Operation::Read),
            allow_topic("*", PatternType::Literal, "User:*", Operation::Describe),
            deny_topic("ord", PatternType::Prefixed, BOB, Operation::Write),
            allow_topic("pay", PatternType::Prefixed, BOB, Operation::Write),
            binding(
                ResourceType::Group,
                "orders",
                PatternType::Literal,
                ALICE,
                "10.0.0.1",
                Operation::Read,
                Permission::Allow,
            ),
        ]
    }

    fn selected(filter: &AclFilter) -> Vec<usize> {
        sample()
            .iter()
            .enumerate()
            .filter(|(_, b)| filter.matches(b))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn filter_any() {
        assert_eq!(selected(&AclFilter::any()), vec![0, 1, 2, 3, 4]);
        let f = AclFilter::from_wire(1, None, 1, None, None, 1, 1).unwrap();
        assert_eq!(f, AclFilter::any());
        // ANY with a name: exact name, any pattern type.
        let f = AclFilter::from_wire(1, Some("orders"), 1, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![0, 4]);
        let f = AclFilter::from_wire(2, Some("orders"), 1, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![0]);
        let f = AclFilter::from_wire(2, Some("ord"), 1, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![2]);
    }

    #[test]
    fn filter_match() {
        let f = AclFilter::from_wire(2, Some("orders"), 2, None, None, 1, 1).unwrap();
        assert_eq!(f.pattern, PatternFilter::Match);
        assert_eq!(selected(&f), vec![0, 1, 2]);
        let f = AclFilter::from_wire(2, Some("payments"), 2, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![1, 3]);
        let f = AclFilter::from_wire(1, Some("orders"), 2, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![0, 1, 2, 4]);
        // Without a name, MATCH matches like ANY.
        let f = AclFilter::from_wire(2, None, 2, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![0, 1, 2, 3]);
    }

    #[test]
    fn filter_literal_and_prefixed() {
        let f = AclFilter::from_wire(1, None, 3, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![0, 1, 4]);
        let f = AclFilter::from_wire(2, Some("*"), 3, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![1]);
        // LITERAL with a name is exact: "*" bindings are not included.
        let f = AclFilter::from_wire(2, Some("orders"), 3, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![0]);
        let f = AclFilter::from_wire(1, None, 4, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![2, 3]);
        // PREFIXED with a name is the exact prefix, not a match.
        let f = AclFilter::from_wire(2, Some("orders"), 4, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), Vec::<usize>::new());
        let f = AclFilter::from_wire(2, Some("ord"), 4, None, None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![2]);
    }

    #[test]
    fn filter_principal_host_operation_permission() {
        let f = AclFilter::from_wire(1, None, 1, Some(ALICE), None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![0, 4]);
        // A principal filter is exact: User:* matches only User:* bindings.
        let f = AclFilter::from_wire(1, None, 1, Some("User:*"), None, 1, 1).unwrap();
        assert_eq!(selected(&f), vec![1]);
        let f = AclFilter::from_wire(1, None, 1, None, Some("10.0.0.1"), 1, 1).unwrap();
        assert_eq!(selected(&f), vec![4]);
        let f = AclFilter::from_wire(1, None, 1, None, Some("::ffff:10.0.0.1"), 1, 1).unwrap();
        assert_eq!(selected(&f), vec![4]);
        let f = AclFilter::from_wire(1, None, 1, None, Some("*"), 1, 1).unwrap();
        assert_eq!(selected(&f), vec![0, 1, 2, 3]);
        // A concrete operation matches only that operation (no implication).
        let f = AclFilter::from_wire(1, None, 1, None, None, 4, 1).unwrap();
        assert_eq!(selected(&f), vec![2, 3]);
        let f = AclFilter::from_wire(1, None, 1, None, None, 8, 1).unwrap();
        assert_eq!(selected(&f), vec![1]);
        let f = AclFilter::from_wire(1, None, 1, None, None, 1, 2).unwrap();
        assert_eq!(selected(&f), vec![2]);
        let f = AclFilter::from_wire(1, None, 1, None, None, 1, 3).unwrap();
        assert_eq!(selected(&f), vec![0, 1, 3, 4]);
        let f = AclFilter::from_wire(2, Some("orders"), 2, Some(BOB), None, 4, 2).unwrap();
        assert_eq!(selected(&f), vec![2]);
    }

    #[test]
    fn filter_refuses_unknown() {
        assert_eq!(
            AclFilter::from_wire(0, None, 1, None, None, 1, 1),
            Err(AclError::FilterResourceType { code: 0 })
        );
        assert_eq!(
            AclFilter::from_wire(9, None, 1, None, None, 1, 1),
            Err(AclError::FilterResourceType { code: 9 })
        );
        assert_eq!(
            AclFilter::from_wire(1, None, 0, None, None, 1, 1),
            Err(AclError::FilterPatternType { code: 0 })
        );
        assert_eq!(
            AclFilter::from_wire(1, None, 5, None, None, 1, 1),
            Err(AclError::FilterPatternType { code: 5 })
        );
        assert_eq!(
            AclFilter::from_wire(1, None, 1, None, None, 0, 1),
            Err(AclError::FilterOperation { code: 0 })
        );
        assert_eq!(
            AclFilter::from_wire(1, None, 1, None, None, -1, 1),
            Err(AclError::FilterOperation { code: -1 })
        );
        assert_eq!(
            AclFilter::from_wire(1, None, 1, None, None, 1, 0),
            Err(AclError::FilterPermission { code: 0 })
        );
        assert_eq!(
            AclFilter::from_wire(1, None, 1, None, None, 1, 4),
            Err(AclError::FilterPermission { code: 4 })
        );
    }

    #[test]
    fn binding_from_wire() {
        let b = AclBinding::from_wire(2, "orders", 4, ALICE, "::1", 2, 2).unwrap();
        assert_eq!(
            b,
            binding(
                ResourceType::Topic,
                "orders",
                PatternType::Prefixed,
                ALICE,
                "::1",
                Operation::All,
                Permission::Deny,
            )
        );
        assert!(AclBinding::from_wire(2, "*", 3, "User:*", "*", 3, 3).is_ok());
        assert!(AclBinding::from_wire(7, "bob", 3, ALICE, "192.168.1.9", 11, 3).is_ok());
        assert!(AclBinding::from_wire(4, CLUSTER_NAME, 4, ALICE, "*", 9, 3).is_ok());
        assert!(AclBinding::from_wire(2, "t", 3, "User:a:b", "*", 3, 3).is_ok());
    }

    #[test]
    fn binding_from_wire_refusals() {
        let wire = |rt, name: &str, pat, principal: &str, host: &str, op, perm| {
            AclBinding::from_wire(rt, name, pat, principal, host, op, perm)
        };
        assert_eq!(
            wire(1, "t", 3, ALICE, "*", 3, 3),
            Err(AclError::BindingResourceType { code: 1 })
        );
        assert_eq!(
            wire(0, "t", 3, ALICE, "*", 3, 3),
            Err(AclError::BindingResourceType { code: 0 })
        );
        assert_eq!(
            wire(8, "t", 3, ALICE, "*", 3, 3),
            Err(AclError::BindingResourceType { code: 8 })
        );
        for pat in [0, 1, 2, 5] {
            assert_eq!(
                wire(2, "t", pat, ALICE, "*", 3, 3),
                Err(AclError::BindingPatternType { code: pat })
            );
        }
        for op in [0, 1, 15, -3] {
            assert_eq!(
                wire(2, "t", 3, ALICE, "*", op, 3),
                Err(AclError::BindingOperation { code: op })
            );
        }
        for perm in [0, 1, 4] {
            assert_eq!(
                wire(2, "t", 3, ALICE, "*", 3, perm),
                Err(AclError::BindingPermission { code: perm })
            );
        }
        assert_eq!(
            wire(2, "", 3, ALICE, "*", 3, 3),
            Err(AclError::EmptyResourceName)
        );
        for name in ["x", "*"] {
            assert_eq!(
                wire(4, name, 3, ALICE, "*", 9, 3),
                Err(AclError::ClusterName {
                    name: name.to_owned()
                })
            );
        }
        for principal in ["bob", "User:", "Group:ops", ":bob", "", "user:bob"] {
            assert_eq!(
                wire(2, "t", 3, principal, "*", 3, 3),
                Err(AclError::Principal {
                    principal: principal.to_owned()
                })
            );
        }
        for host in ["x", "", "localhost", "10.0.0", "10.0.0.1/24", "**"] {
            assert_eq!(
                wire(2, "t", 3, ALICE, host, 3, 3),
                Err(AclError::Host {
                    host: host.to_owned()
                })
            );
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            AclError::BindingResourceType { code: 1 }.to_string(),
            "resource type 1 (ANY) cannot be stored in a binding"
        );
        assert_eq!(
            AclError::BindingPatternType { code: 2 }.to_string(),
            "pattern type 2 (MATCH) cannot be stored in a binding; only LITERAL (3) and PREFIXED (4) can"
        );
        assert_eq!(
            AclError::BindingOperation { code: 0 }.to_string(),
            "operation 0 (UNKNOWN) cannot be stored in a binding"
        );
        assert_eq!(
            AclError::Principal {
                principal: "bob".into()
            }
            .to_string(),
            "principal \"bob\" is not of the form User:name"
        );
        assert_eq!(
            AclError::Host { host: "x".into() }.to_string(),
            "host \"x\" is neither * nor an IP address"
        );
        assert_eq!(
            AclError::ClusterName { name: "x".into() }.to_string(),
            "a CLUSTER binding must name kafka-cluster, not \"x\""
        );
    }

    #[test]
    fn authorize_any_allow_and_wildcard_deny() {
        // An ALLOW on any one pattern of the type is enough.
        for b in [
            allow_topic("orders", PatternType::Literal, ALICE, Operation::Write),
            allow_topic("ord", PatternType::Prefixed, ALICE, Operation::Write),
            allow_topic("*", PatternType::Literal, "User:*", Operation::Write),
            allow_topic("orders", PatternType::Literal, ALICE, Operation::All),
        ] {
            let a = authz(std::slice::from_ref(&b));
            assert!(
                a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic),
                "{b:?}"
            );
            assert!(!a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Group));
        }
        let a = authz(&[allow_topic(
            "orders",
            PatternType::Literal,
            ALICE,
            Operation::Write,
        )]);
        assert!(!a.authorize_any(BOB, IP, Operation::Write, ResourceType::Topic));
        assert!(!a.authorize_any(ALICE, IP, Operation::Read, ResourceType::Topic));
        // No implication here, as in Kafka.
        assert!(!a.authorize_any(ALICE, IP, Operation::Describe, ResourceType::Topic));

        // A DENY on LITERAL "*" for the principal wins.
        for deny in [
            deny_topic("*", PatternType::Literal, ALICE, Operation::Write),
            deny_topic("*", PatternType::Literal, "User:*", Operation::All),
        ] {
            let a = authz(&[
                allow_topic("orders", PatternType::Literal, ALICE, Operation::Write),
                allow_topic("*", PatternType::Literal, ALICE, Operation::Write),
                deny,
            ]);
            assert!(!a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic));
        }
        // A wildcard DENY for someone else, another host or operation does not.
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, ALICE, Operation::Write),
            deny_topic("*", PatternType::Literal, BOB, Operation::Write),
            deny_topic("*", PatternType::Literal, ALICE, Operation::Read),
            binding(
                ResourceType::Topic,
                "*",
                PatternType::Literal,
                ALICE,
                "10.9.9.9",
                Operation::Write,
                Permission::Deny,
            ),
        ]);
        assert!(a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic));
        assert!(!a.authorize_any(ALICE, "10.9.9.9", Operation::Write, ResourceType::Topic));
    }

    #[test]
    fn authorize_any_dominated_denies() {
        // A DENY on the same literal, or a prefix of it, leaves nothing allowed.
        for deny in [
            deny_topic("orders", PatternType::Literal, ALICE, Operation::Write),
            deny_topic("ord", PatternType::Prefixed, ALICE, Operation::Write),
            deny_topic("orders", PatternType::Prefixed, ALICE, Operation::Write),
        ] {
            let a = authz(&[
                allow_topic("orders", PatternType::Literal, ALICE, Operation::Write),
                deny.clone(),
            ]);
            assert!(
                !a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic),
                "{deny:?}"
            );
        }
        // A prefixed ALLOW is dominated only by a prefixed DENY of a prefix of it.
        let a = authz(&[
            allow_topic("ord", PatternType::Prefixed, ALICE, Operation::Write),
            deny_topic("ord", PatternType::Literal, ALICE, Operation::Write),
            deny_topic("orders", PatternType::Prefixed, ALICE, Operation::Write),
        ]);
        assert!(a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic));
        let a = authz(&[
            allow_topic("orders", PatternType::Prefixed, ALICE, Operation::Write),
            deny_topic("or", PatternType::Prefixed, ALICE, Operation::Write),
        ]);
        assert!(!a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic));
        // One undominated ALLOW is enough.
        let a = authz(&[
            allow_topic("orders", PatternType::Literal, ALICE, Operation::Write),
            allow_topic("payments", PatternType::Literal, ALICE, Operation::Write),
            deny_topic("ord", PatternType::Prefixed, ALICE, Operation::Write),
        ]);
        assert!(a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic));
    }

    #[test]
    fn authorize_any_super_users_and_no_acls() {
        let a = Authorizer::new(&[], &[ALICE.to_owned()], false);
        assert!(a.authorize_any(ALICE, IP, Operation::Write, ResourceType::Topic));
        assert!(!a.authorize_any(BOB, IP, Operation::Write, ResourceType::Topic));
        let a = Authorizer::new(&[], &[], true);
        assert!(a.authorize_any(BOB, IP, Operation::Write, ResourceType::Topic));
        let a = Authorizer::new(
            &[allow_topic(
                "orders",
                PatternType::Literal,
                ALICE,
                Operation::Read,
            )],
            &[],
            true,
        );
        assert!(!a.authorize_any(BOB, IP, Operation::Write, ResourceType::Topic));
        assert!(a.authorize_any(BOB, IP, Operation::Write, ResourceType::Group));
    }

    #[test]
    fn binding_serde_round_trip() {
        let b = AclBinding::from_wire(5, "tx-", 4, "User:*", "fe80::1", 4, 2).unwrap();
        let json = serde_json::to_string(&b).unwrap();
        let back: AclBinding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        for b in sample() {
            let json = serde_json::to_vec(&b).unwrap();
            assert_eq!(serde_json::from_slice::<AclBinding>(&json).unwrap(), b);
        }
    }
}
