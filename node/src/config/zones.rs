//! Zone names and `automq.zone.cidr.blocks`.

use super::*;

/// One network of a zone, from `automq.zone.cidr.blocks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneCidr {
    pub zone: String,
    pub net: IpNet,
}

/// Longest zone name taken from a client (`client.id` tag or `rack_id`).
pub const ZONE_NAME_MAX: usize = 128;

/// Whether `zone` is a plausible zone name: 1 to [`ZONE_NAME_MAX`] letters,
/// digits, `-`, `_` and `.`, as `automq.zone.cidr.blocks` accepts. Anything
/// else from a client is ignored, so that no odd byte reaches logs or
/// metric labels.
pub fn is_zone_name(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= ZONE_NAME_MAX
        && zone
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Parses one CIDR block, IPv4 or IPv6, with an explicit prefix length.
/// Host bits may be set and are dropped (`10.0.0.7/19` is `10.0.0.0/19`),
/// as in most tools.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| "a CIDR block like 10.0.0.0/19 (the /prefix is missing)".to_owned())?;
    let addr: IpAddr = addr.parse().map_err(|_| {
        format!("a CIDR block with an IPv4 or IPv6 address before the /, not {addr:?}")
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 =
        prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
            format!("a prefix length from 0 to {max} after the /, not {prefix:?}")
        })?;
    IpNet::new(addr, prefix)
        .map(|net| net.trunc())
        .map_err(|e| e.to_string())
}

/// Parses `zone@cidr,cidr<>zone@cidr`.
pub(super) fn parse_zone_cidrs(key: &str, text: &str) -> Result<Vec<ZoneCidr>, ConfigError> {
    let form = "zone@cidr[,cidr...] entries separated by <>, e.g. \
                us-east-1a@10.0.0.0/19,10.0.32.0/19<>us-east-1b@10.0.64.0/19";
    let mut out: Vec<ZoneCidr> = Vec::new();
    if text.trim().is_empty() {
        return Ok(out);
    }
    for entry in text.split("<>") {
        let entry = entry.trim();
        let (zone, cidrs) = entry
            .split_once('@')
            .ok_or_else(|| ConfigError::invalid(key, form, entry))?;
        let zone = zone.trim();
        if !is_zone_name(zone) {
            return Err(ConfigError::invalid(
                key,
                format!("{form} (a zone name is letters, digits, '-', '_' and '.')"),
                entry,
            ));
        }
        for cidr in cidrs.split(',') {
            let cidr = cidr.trim();
            let net = parse_cidr(cidr).map_err(|expected| {
                ConfigError::invalid(key, format!("{expected} in zone {zone}"), cidr)
            })?;
            if let Some(other) = out.iter().find(|z| z.net == net && z.zone != zone) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "each CIDR block in one zone only, but it is in {} and {zone}",
                        other.zone
                    ),
                    cidr,
                ));
            }
            out.push(ZoneCidr {
                zone: zone.to_owned(),
                net,
            });
        }
    }
    Ok(out)
}

pub(super) fn format_zone_cidrs(blocks: &[ZoneCidr]) -> String {
    let mut zones: Vec<(&str, Vec<String>)> = Vec::new();
    for block in blocks {
        match zones.iter_mut().find(|(z, _)| *z == block.zone) {
            Some((_, nets)) => nets.push(block.net.to_string()),
            None => zones.push((block.zone.as_str(), vec![block.net.to_string()])),
        }
    }
    zones
        .iter()
        .map(|(zone, nets)| format!("{zone}@{}", nets.join(",")))
        .collect::<Vec<_>>()
        .join("<>")
}
