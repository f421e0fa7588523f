//! The security keys of each listener: its protocol, TLS material
//! (`ssl.*`), SASL mechanisms (`sasl.enabled.mechanisms`), and which
//! listener carries node-to-node calls (`inter.broker.listener.name`).
//!
//! As in Kafka, a key may be given for one listener with the prefix
//! `listener.name.<listener name in lower case>.`, which wins over the
//! unprefixed key. Files are not read here: [`crate::security`] loads them
//! when the node starts (and again when they change).

use super::*;

/// A listener's security protocol (`listener.security.protocol.map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(text: &str) -> Option<SecurityProtocol> {
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// PEM text: a file, or the value of an inline key. `Debug` never shows
/// inline text (it may be a private key).
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => write!(f, "File({})", p.display()),
            Pem::Inline(_) => f.write_str("Inline([redacted])"),
        }
    }
}

/// A private key's password; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPassword(pub String);

impl fmt::Debug for KeyPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client certificate is asked for; one that is given must verify.
    Requested,
    /// Connections without a verified client certificate are refused.
    Required,
}

/// A listener's (or the node-to-node client's) TLS material.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// The private key (`ssl.keystore.key`, or the key in the
    /// `ssl.keystore.location` file).
    pub key: Pem,
    /// The certificate chain, leaf first (`ssl.keystore.certificate.chain`,
    /// or the certificates in the `ssl.keystore.location` file).
    pub chain: Pem,
    /// `ssl.key.password`: the password of an encrypted PKCS#8 key.
    pub key_password: Option<KeyPassword>,
    /// CA certificates that client (and, for node-to-node calls, server)
    /// certificates must chain to (`ssl.truststore.location` or
    /// `ssl.truststore.certificates`); `None`: the system's roots are not
    /// used, so no client certificate verifies.
    pub truststore: Option<Pem>,
    pub client_auth: ClientAuth,
    /// `ssl.principal.mapping.rules`.
    pub principal_rules: PrincipalRules,
    /// `ssl.endpoint.identification.algorithm`: `https` (Kafka's default)
    /// checks a peer's certificate names its host; empty does not (the
    /// chain is still verified).
    pub verify_host: bool,
}

/// A SASL mechanism Ferry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(text: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(text.trim()))
    }
}

/// What a listener asks of its connections.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSecurity {
    /// The listener's name, upper case.
    pub name: String,
    pub protocol: SecurityProtocol,
    /// For SSL and SASL_SSL listeners.
    pub tls: Option<TlsSettings>,
    /// For SASL listeners: `sasl.enabled.mechanisms`.
    pub sasl_mechanisms: Vec<SaslMechanism>,
}

/// The keys read per listener, with or without the `listener.name.<l>.`
/// prefix.
pub const LISTENER_KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
    "ssl.client.auth",
    "ssl.principal.mapping.rules",
    "ssl.endpoint.identification.algorithm",
    "sasl.enabled.mechanisms",
    "sasl.jaas.config",
    "plain.sasl.jaas.config",
    "scram-sha-256.sasl.jaas.config",
    "scram-sha-512.sasl.jaas.config",
];

/// The user a node authenticates as on a SASL inter-broker listener
/// (`sasl.mechanism.inter.broker.protocol`, and the username and password
/// of the listener's `sasl.jaas.config`). The password never appears in
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslLogin {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism.name())
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Kafka's default `sasl.enabled.mechanisms` is GSSAPI, which Ferry does
/// not serve; Ferry's default is the SCRAM pair.
pub const SASL_MECHANISMS_DEFAULT: &str = "SCRAM-SHA-256,SCRAM-SHA-512";

/// Whether `key` is a per-listener key (`listener.name.<l>.<key>`) for one
/// of `listeners`.
pub(super) fn is_listener_key(key: &str, listeners: &[&str]) -> bool {
    let Some(rest) = key.strip_prefix("listener.name.") else {
        return false;
    };
    listeners.iter().any(|l| {
        rest.strip_prefix(&l.to_ascii_lowercase())
            .and_then(|k| k.strip_prefix('.'))
            .is_some_and(|k| LISTENER_KEYS.contains(&k))
    })
}

impl Reader<'_> {
    /// The key Kafka would read for `listener`: the prefixed one if set.
    fn listener_key(&self, listener: &str, key: &str) -> String {
        let prefixed = format!("listener.name.{}.{key}", listener.to_ascii_lowercase());
        if self.value(&prefixed).is_some() {
            prefixed
        } else {
            key.to_owned()
        }
    }

    /// The security of every listener; errors are recorded.
    pub(super) fn listener_security(&mut self, listeners: &[Listener]) -> Vec<ListenerSecurity> {
        listeners
            .iter()
            .map(|l| {
                let tls = if l.protocol.tls() {
                    self.tls_settings(&l.name)
                } else {
                    None
                };
                let sasl_mechanisms = if l.protocol.sasl() {
                    self.sasl_mechanisms(&l.name)
                } else {
                    Vec::new()
                };
                ListenerSecurity {
                    name: l.name.clone(),
                    protocol: l.protocol,
                    tls,
                    sasl_mechanisms,
                }
            })
            .collect()
    }

    fn sasl_mechanisms(&mut self, listener: &str) -> Vec<SaslMechanism> {
        let key = self.listener_key(listener, "sasl.enabled.mechanisms");
        let text = self
            .value(&key)
            .unwrap_or(SASL_MECHANISMS_DEFAULT)
            .to_owned();
        let mut out = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match SaslMechanism::parse(name) {
                Some(m) if !out.contains(&m) => out.push(m),
                Some(_) => {}
                None => {
                    self.fail(
                        &key,
                        ConfigError::Unsupported {
                            key: key.clone(),
                            message: format!(
                                "{name} is not a mechanism Ferry serves; it serves PLAIN, \
                                 SCRAM-SHA-256 and SCRAM-SHA-512"
                            ),
                        },
                    );
                    return Vec::new();
                }
            }
        }
        if out.is_empty() {
            self.fail(
                &key,
                ConfigError::invalid(
                    &key,
                    "at least one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 for a SASL listener",
                    &text,
                ),
            );
        }
        out
    }

    fn tls_settings(&mut self, listener: &str) -> Option<TlsSettings> {
        let k = |r: &Self, key: &str| r.listener_key(listener, key);
        let mut ok = true;
        for (key, allowed) in [("ssl.keystore.type", "PEM"), ("ssl.truststore.type", "PEM")] {
            let key = k(self, key);
            if let Some(v) = self.value(&key) {
                if !v.eq_ignore_ascii_case(allowed) {
                    let message = format!(
                        "{v} stores are not supported; give keys and certificates in PEM \
                         (ssl.keystore.type=PEM)"
                    );
                    self.fail(
                        &key,
                        ConfigError::Unsupported {
                            key: key.clone(),
                            message,
                        },
                    );
                    ok = false;
                }
            }
        }
        // A PEM keystore has no password of its own: the key has one.
        let keystore_password = k(self, "ssl.keystore.password");
        if self
            .value(&keystore_password)
            .is_some_and(|v| !v.is_empty())
        {
            let message = "a PEM keystore has no password; give an encrypted key's password \
                           as ssl.key.password"
                .to_owned();
            self.fail(
                &keystore_password,
                ConfigError::Unsupported {
                    key: keystore_password.clone(),
                    message,
                },
            );
            ok = false;
        }
        let key_password = self
            .value(&k(self, "ssl.key.password"))
            .filter(|v| !v.is_empty())
            .map(|v| KeyPassword(v.to_owned()));
        let location = k(self, "ssl.keystore.location");
        let inline_key = k(self, "ssl.keystore.key");
        let inline_chain = k(self, "ssl.keystore.certificate.chain");
        let (key, chain) = match (
            self.value(&location).map(str::to_owned),
            self.value(&inline_key).map(str::to_owned),
            self.value(&inline_chain).map(str::to_owned),
        ) {
            (Some(path), None, None) => {
                let p = PathBuf::from(path);
                (Pem::File(p.clone()), Pem::File(p))
            }
            (None, Some(key), Some(chain)) => (Pem::Inline(key), Pem::Inline(chain)),
            (Some(_), _, _) => {
                self.errors.push(ConfigError::Conflict {
                    key: location,
                    message: format!(
                        "is set together with {inline_key} or {inline_chain}; give one or the \
                         other"
                    ),
                });
                return None;
            }
            _ => {
                self.errors.push(ConfigError::Unsupported {
                    key: location,
                    message: format!(
                        "listener {listener} is TLS and needs a key and certificate chain: \
                         ssl.keystore.location (a PEM file with both), or {inline_key} and \
                         {inline_chain}"
                    ),
                });
                return None;
            }
        };
        let truststore_location = k(self, "ssl.truststore.location");
        let truststore_inline = k(self, "ssl.truststore.certificates");
        let truststore = match (
            self.value(&truststore_location).map(str::to_owned),
            self.value(&truststore_inline).map(str::to_owned),
        ) {
            (Some(p), None) => Some(Pem::File(PathBuf::from(p))),
            (None, Some(text)) => Some(Pem::Inline(text)),
            (None, None) => None,
            (Some(_), Some(_)) => {
                self.errors.push(ConfigError::Conflict {
                    key: truststore_location,
                    message: format!("is set together with {truststore_inline}; give one"),
                });
                return None;
            }
        };
        let auth_key = k(self, "ssl.client.auth");
        let client_auth = self
            .parse(&auth_key, |key, v| match v.to_ascii_lowercase().as_str() {
                "required" => Ok(ClientAuth::Required),
                "requested" => Ok(ClientAuth::Requested),
                "none" | "" => Ok(ClientAuth::None),
                _ => Err(ConfigError::invalid(key, "required, requested or none", v)),
            })
            .unwrap_or(ClientAuth::None);
        if client_auth != ClientAuth::None && truststore.is_none() {
            self.errors.push(ConfigError::Conflict {
                key: auth_key,
                message: format!(
                    "asks for client certificates on listener {listener}, but no \
                     ssl.truststore.location or ssl.truststore.certificates says which CAs \
                     they must chain to"
                ),
            });
            ok = false;
        }
        let rules_key = k(self, "ssl.principal.mapping.rules");
        let principal_rules = self
            .parse(&rules_key, PrincipalRules::parse)
            .unwrap_or_default();
        let verify_key = k(self, "ssl.endpoint.identification.algorithm");
        let verify_host = self
            .parse(&verify_key, |key, v| {
                match v.to_ascii_lowercase().as_str() {
                    "https" => Ok(true),
                    "" => Ok(false),
                    _ => Err(ConfigError::invalid(key, "https, or empty for none", v)),
                }
            })
            .unwrap_or(true);
        ok.then_some(TlsSettings {
            key,
            chain,
            key_password,
            truststore,
            client_auth,
            principal_rules,
            verify_host,
        })
    }

    /// For a SASL inter-broker listener: the mechanism
    /// (`sasl.mechanism.inter.broker.protocol`, one the listener serves) and
    /// the user from the listener's `sasl.jaas.config`
    /// (`listener.name.<l>.<mechanism>.sasl.jaas.config`, else
    /// `sasl.jaas.config`). `None` for other listeners; errors are recorded.
    pub(super) fn inter_broker_login(
        &mut self,
        listener: &str,
        security: &[ListenerSecurity],
    ) -> Option<SaslLogin> {
        let sec = security.iter().find(|l| l.name == listener)?;
        if !sec.protocol.sasl() {
            return None;
        }
        let key = "sasl.mechanism.inter.broker.protocol";
        let Some(text) = self.value(key).map(str::to_owned) else {
            self.fail(
                key,
                ConfigError::invalid(
                    key,
                    format!(
                        "the mechanism nodes authenticate with on the {listener} listener \
                         (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
                    ),
                    "",
                ),
            );
            return None;
        };
        let mechanism = match SaslMechanism::parse(text.trim()) {
            Some(m) if sec.sasl_mechanisms.contains(&m) => m,
            _ => {
                let served: Vec<&str> = sec.sasl_mechanisms.iter().map(|m| m.name()).collect();
                self.fail(
                    key,
                    ConfigError::invalid(
                        key,
                        format!(
                            "a mechanism the {listener} listener serves ({})",
                            served.join(", ")
                        ),
                        &text,
                    ),
                );
                return None;
            }
        };
        let prefixed = format!(
            "listener.name.{}.{}.sasl.jaas.config",
            listener.to_ascii_lowercase(),
            mechanism.name().to_ascii_lowercase()
        );
        let jaas_key = if self.value(&prefixed).is_some() {
            prefixed
        } else {
            "sasl.jaas.config".to_owned()
        };
        let Some(jaas) = self.value(&jaas_key).map(str::to_owned) else {
            self.fail(
                &jaas_key,
                ConfigError::invalid(
                    &jaas_key,
                    "a login module entry with the username and password this node \
                     authenticates as to other nodes",
                    "",
                ),
            );
            return None;
        };
        let entry = match super::jaas::parse(&jaas) {
            Ok(e) => e,
            Err(e) => {
                // The value is never shown: it holds a password.
                self.fail(
                    &jaas_key,
                    ConfigError::invalid(&jaas_key, format!("a JAAS login entry ({e})"), REDACTED),
                );
                return None;
            }
        };
        match (entry.option("username"), entry.option("password")) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some(SaslLogin {
                mechanism,
                username: u.to_owned(),
                password: p.to_owned(),
            }),
            _ => {
                self.fail(
                    &jaas_key,
                    ConfigError::invalid(
                        &jaas_key,
                        "a login entry with non-empty username and password options",
                        REDACTED,
                    ),
                );
                None
            }
        }
    }

    /// `inter.broker.listener.name`, or the listener that
    /// `security.inter.broker.protocol` names, or the only listener.
    pub(super) fn inter_broker_listener(&mut self, listeners: &[Listener]) -> String {
        let named = self.value("inter.broker.listener.name").map(str::to_owned);
        let by_protocol = self
            .value("security.inter.broker.protocol")
            .map(str::to_owned);
        let pick = match (named, by_protocol) {
            (Some(_), Some(_)) => {
                self.errors.push(ConfigError::Conflict {
                    key: "inter.broker.listener.name".to_owned(),
                    message: "is set together with security.inter.broker.protocol; set one"
                        .to_owned(),
                });
                return String::new();
            }
            (Some(n), None) => ("inter.broker.listener.name", n.to_ascii_uppercase()),
            (None, Some(p)) => ("security.inter.broker.protocol", p.to_ascii_uppercase()),
            (None, None) => match listeners {
                [only] => return only.name.clone(),
                _ => ("inter.broker.listener.name", "PLAINTEXT".to_owned()),
            },
        };
        let (key, name) = pick;
        if listeners.iter().any(|l| l.name == name) {
            return name;
        }
        if listeners.is_empty() {
            return name;
        }
        let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        self.errors.push(ConfigError::invalid(
            key,
            format!(
                "the name of one of the listeners ({}) to carry node-to-node calls",
                names.join(", ")
            ),
            &name,
        ));
        String::new()
    }
}

/// `ssl.principal.mapping.rules`: how a client certificate's subject
/// (RFC 2253, as Java prints it: `CN=alice,OU=eng,O=Example`) becomes a
/// principal name. Rules are tried in order; the first that matches wins.
/// `DEFAULT` keeps the whole subject; `RULE:pattern/replacement/[LU]`
/// matches the whole subject against `pattern` and replaces it, then
/// lower- or upper-cases it. The default is `DEFAULT`.
#[derive(Debug, Clone, Default)]
pub struct PrincipalRules(Vec<PrincipalRule>);

#[derive(Debug, Clone)]
enum PrincipalRule {
    Default,
    Replace {
        pattern: regex::Regex,
        replacement: String,
        case: Option<char>,
    },
}

impl PartialEq for PrincipalRules {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}

impl PrincipalRules {
    pub fn parse(key: &str, text: &str) -> Result<PrincipalRules, ConfigError> {
        let expected = "DEFAULT or RULE:pattern/replacement/[LU], separated by commas";
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            rest = rest.trim_start_matches([',', ' ', '\n', '\t']);
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(PrincipalRule::Default);
                rest = after;
                continue;
            }
            let Some(after) = rest.strip_prefix("RULE:") else {
                return Err(ConfigError::invalid(key, expected, text));
            };
            // pattern/replacement/ then an optional L or U. A pattern may
            // hold commas, so the rule ends at its third unescaped slash.
            let mut parts = Vec::new();
            let mut current = String::new();
            let mut chars = after.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            if n != '/' {
                                current.push('\\');
                            }
                            current.push(n);
                        }
                    }
                    '/' => {
                        parts.push(std::mem::take(&mut current));
                        if parts.len() == 2 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => current.push(c),
                }
            }
            let (Some(end), [pattern, replacement]) = (end, parts.as_slice()) else {
                return Err(ConfigError::invalid(key, expected, text));
            };
            let mut tail = &after[end..];
            let case = match tail.chars().next() {
                Some(c @ ('L' | 'U')) => {
                    tail = &tail[1..];
                    Some(c)
                }
                _ => None,
            };
            let pattern = regex::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| ConfigError::invalid(key, format!("{expected} ({e})"), text))?;
            rules.push(PrincipalRule::Replace {
                pattern,
                replacement: java_replacement(replacement),
                case,
            });
            rest = tail;
        }
        if rules.is_empty() {
            return Err(ConfigError::invalid(key, expected, text));
        }
        Ok(PrincipalRules(rules))
    }

    /// The principal name for a certificate subject; `None` if no rule
    /// matches (Kafka then refuses the connection).
    pub fn apply(&self, subject: &str) -> Option<String> {
        if self.0.is_empty() {
            return Some(subject.to_owned());
        }
        for rule in &self.0 {
            match rule {
                PrincipalRule::Default => return Some(subject.to_owned()),
                PrincipalRule::Replace {
                    pattern,
                    replacement,
                    case,
                } => {
                    if pattern.is_match(subject) {
                        let out = pattern.replace(subject, replacement.as_str()).into_owned();
                        return Some(match case {
                            Some('L') => out.to_lowercase(),
                            Some('U') => out.to_uppercase(),
                            _ => out,
                        });
                    }
                }
            }
        }
        None
    }

    fn describe(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|r| match r {
                PrincipalRule::Default => "DEFAULT".to_owned(),
                PrincipalRule::Replace {
                    pattern,
                    replacement,
                    case,
                } => format!("{}/{replacement}/{case:?}", pattern.as_str()),
            })
            .collect()
    }
}

/// Java's `$1` group references as the regex crate writes them (`${1}`),
/// so `$1x` stays group 1 followed by `x`.
fn java_replacement(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            if digits.is_empty() {
                out.push_str("$$");
            } else {
                out.push_str(&format!("${{{digits}}}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_rules_map_a_subject_as_kafka_does() {
        let rules = PrincipalRules::parse(
            "k",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/L,DEFAULT",
        )
        .unwrap();
        assert_eq!(
            rules
                .apply("CN=kafka-node,OU=ServiceUsers,O=Example")
                .as_deref(),
            Some("kafka-node")
        );
        assert_eq!(
            rules.apply("CN=Alice,OU=Eng,O=Example").as_deref(),
            Some("alice@eng")
        );
        assert_eq!(rules.apply("CN=other").as_deref(), Some("CN=other"));
        let only = PrincipalRules::parse("k", "RULE:^CN=([^,]*).*$/$1/U").unwrap();
        assert_eq!(only.apply("CN=bob,O=x").as_deref(), Some("BOB"));
        assert_eq!(only.apply("O=x"), None, "no rule matches");
        assert_eq!(
            PrincipalRules::default().apply("CN=a").as_deref(),
            Some("CN=a")
        );
        for bad in ["", "RULE:abc", "NOPE", "RULE:(/x/"] {
            assert!(PrincipalRules::parse("k", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listener_keys_are_known_only_for_configured_listeners() {
        let ls = ["CLIENT", "INTERNAL"];
        assert!(is_listener_key(
            "listener.name.client.ssl.keystore.location",
            &ls
        ));
        assert!(is_listener_key(
            "listener.name.internal.sasl.enabled.mechanisms",
            &ls
        ));
        assert!(!is_listener_key("listener.name.other.ssl.client.auth", &ls));
        assert!(!is_listener_key("listener.name.client.ssl.nope", &ls));
    }
}
