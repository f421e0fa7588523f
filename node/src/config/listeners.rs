//! `listeners`, `advertised.listeners` and `listener.security.protocol.map`.

use super::*;

/// A Kafka listener, `NAME://host:port`. An empty host means every
/// interface, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Upper-cased listener name, e.g. `PLAINTEXT`.
    pub name: String,
    /// Host name or IP address, without brackets; may be empty.
    pub host: String,
    pub port: u16,
    /// From `listener.security.protocol.map` (PLAINTEXT until the map is
    /// applied).
    pub protocol: SecurityProtocol,
}

impl Listener {
    /// Whether the host means "every interface" and so cannot be given to
    /// clients as an address.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.host.as_str(), "" | "0.0.0.0" | "::")
    }

    /// `host:port` for binding a socket (IPv6 in brackets, `0.0.0.0` for an
    /// empty host).
    pub fn bind_address(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        join_host_port(host, self.port)
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.name,
            join_host_port(&self.host, self.port)
        )
    }
}

pub(super) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(super) fn parse_protocol_map(
    key: &str,
    text: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry.split_once(':').ok_or_else(|| {
            ConfigError::invalid(key, "NAME:PROTOCOL pairs separated by commas", entry)
        })?;
        let protocol = protocol.trim().to_ascii_uppercase();
        if !["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&protocol.as_str()) {
            return Err(ConfigError::invalid(
                key,
                "a protocol of PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                entry,
            ));
        }
        out.push((name.trim().to_ascii_uppercase(), protocol));
    }
    Ok(out)
}

pub(super) fn listener_protocol(
    key: &str,
    listener: &Listener,
    protocols: &[(String, String)],
) -> Result<SecurityProtocol, ConfigError> {
    protocols
        .iter()
        .find(|(n, _)| *n == listener.name)
        .and_then(|(_, p)| SecurityProtocol::parse(p))
        .ok_or_else(|| {
            ConfigError::invalid(
                key,
                format!(
                    "listener names with an entry in listener.security.protocol.map, and {} has none",
                    listener.name
                ),
                &listener.to_string(),
            )
        })
}

/// Parses `NAME://host:port[,NAME://host:port...]`.
pub(super) fn parse_listeners(key: &str, text: &str) -> Result<Vec<Listener>, ConfigError> {
    let expected = "comma-separated NAME://host:port, e.g. PLAINTEXT://0.0.0.0:9092";
    let mut out: Vec<Listener> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || ConfigError::invalid(key, expected, entry);
        let (name, address) = entry.split_once("://").ok_or_else(bad)?;
        let name = name.trim().to_ascii_uppercase();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad());
        }
        let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
            let (host, rest) = bracketed.split_once(']').ok_or_else(bad)?;
            (host, rest.strip_prefix(':').ok_or_else(bad)?)
        } else {
            let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
            if host.contains(':') {
                return Err(ConfigError::invalid(
                    key,
                    "IPv6 hosts in brackets, e.g. PLAINTEXT://[::1]:9092",
                    entry,
                ));
            }
            (host, port)
        };
        let port: u16 = port.parse().map_err(|_| {
            ConfigError::invalid(
                key,
                format!("{expected}, with a port from 0 to 65535"),
                entry,
            )
        })?;
        if out.iter().any(|l| l.name == name) {
            return Err(ConfigError::invalid(
                key,
                format!("a different name for every listener, and {name} is used twice"),
                text,
            ));
        }
        out.push(Listener {
            name,
            host: host.to_owned(),
            port,
            protocol: SecurityProtocol::Plaintext,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::invalid(key, expected, text));
    }
    Ok(out)
}
