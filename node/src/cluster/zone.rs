//! A client's zone.
//!
//! DESIGN.md ("Metadata per zone") names three sources, tried in this order:
//!
//! 1. a tag in the client's `client.id`, read as a URL query string
//!    ([`zone_from_client_id`]): `automq_az=<zone>`, or another tool's
//!    spelling (`ws_az`, `warpstream_az`, `diskless_az`);
//! 2. the client's source address against `automq.zone.cidr.blocks`, longest
//!    prefix first, IPv4 and IPv6, IPv4-mapped IPv6 addresses matching IPv4
//!    blocks ([`ZoneTable::zone_of`]);
//! 3. for fetches, the request's `rack_id` (KIP-392 `client.rack`).
//!
//! The CIDR table changes at run time (AlterConfigs, or another node through
//! the coordinator). [`ZoneResolver`] publishes the current table in an
//! `ArcSwap`; a shard keeps a [`ZoneCache`] (an `arc_swap::Cache`), which
//! holds an `Arc` of the table and re-reads it only when the published one
//! moved (one pointer compare), so resolving a zone takes no lock shared
//! across cores.
//!
//! Clients whose zone is unknown are counted
//! ([`ZoneResolver::unknown_total`]) and logged at most once per
//! [`UNKNOWN_LOG_INTERVAL`] per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use crate::config::{is_zone_name, ZONE_NAME_MAX};
use crate::config::{Config, ConfigError, HostEnv, ZoneCidr};

/// The config key of the CIDR table.
pub const ZONE_CIDR_KEY: &str = "automq.zone.cidr.blocks";

/// The `client.id` keys that carry a zone, in priority order.
pub const CLIENT_ID_ZONE_KEYS: [&str; 4] = ["automq_az", "ws_az", "warpstream_az", "diskless_az"];

/// How often, at most, a client of unknown zone is logged per address.
pub const UNKNOWN_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Addresses remembered for the log rate limit; past this, older entries
/// are dropped (and, if all are recent, the log line is skipped: the count
/// still moves).
const UNKNOWN_LOG_ADDRESSES_MAX: usize = 4096;

/// The zone tagged in a `client.id`, read as a URL query string: parts split
/// on `&`, each `key=value`. The keys of [`CLIENT_ID_ZONE_KEYS`] are tried in
/// that order; the first part with that key and a non-empty value wins.
/// Parts without `=` (an application name, as in `automq_az=us-east-1a&my-app`)
/// are skipped, and so is a leading `?`. Values are not percent-decoded: a
/// zone name never needs it, and a value that is not a plausible zone name
/// ([`is_zone_name`]) counts as no tag.
///
/// ```
/// use ferry_node::cluster::zone::zone_from_client_id;
/// assert_eq!(zone_from_client_id("automq_az=us-east-1a&my-app"), Some("us-east-1a"));
/// assert_eq!(zone_from_client_id("my-app&ws_az=z2"), Some("z2"));
/// assert_eq!(zone_from_client_id("my-app"), None);
/// ```
pub fn zone_from_client_id(client_id: &str) -> Option<&str> {
    let query = client_id.strip_prefix('?').unwrap_or(client_id);
    CLIENT_ID_ZONE_KEYS.iter().find_map(|wanted| {
        query.split('&').find_map(|part| {
            let (key, value) = part.split_once('=')?;
            let value = value.trim();
            (key.trim() == *wanted && is_zone_name(value)).then_some(value)
        })
    })
}

/// Where a client's zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneSource {
    /// A tag in `client.id`.
    ClientId,
    /// The source address, by `automq.zone.cidr.blocks`.
    Address,
    /// The fetch request's `rack_id`.
    Rack,
}

/// A client's zone and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientZone<'a> {
    pub zone: &'a str,
    pub source: ZoneSource,
}

/// An immutable `automq.zone.cidr.blocks` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneTable {
    /// Sorted by prefix length, longest first, so the first match is the
    /// longest prefix. IPv4 blocks only ever match IPv4 addresses.
    blocks: Vec<ZoneCidr>,
    /// The value in its canonical form (as DescribeConfigs shows it).
    text: String,
}

impl ZoneTable {
    /// An empty table: no address has a zone.
    pub fn empty() -> ZoneTable {
        ZoneTable::default()
    }

    /// Parses an `automq.zone.cidr.blocks` value
    /// (`zone@cidr[,cidr...]<>zone@cidr...`; empty: no blocks). The checks
    /// and error messages are [`Config`]'s, so a bad value gets the same
    /// error whether it comes from the file, AlterConfigs or the coordinator.
    pub fn parse(text: &str) -> Result<ZoneTable, ConfigError> {
        let env = HostEnv {
            host_name: None,
            cores: 1,
        };
        let config = Config::from_pairs([(ZONE_CIDR_KEY, text)], env)?;
        Ok(ZoneTable::from_config(&config))
    }

    /// The table of a parsed [`Config`].
    pub fn from_config(config: &Config) -> ZoneTable {
        let text = config
            .describe()
            .into_iter()
            .find(|(key, _, _)| key == ZONE_CIDR_KEY)
            .and_then(|(_, value, _)| value)
            .unwrap_or_default();
        let mut blocks = config.zone_cidr_blocks.clone();
        // Stable: for equal prefixes the first listed wins, as in Config.
        blocks.sort_by_key(|b| std::cmp::Reverse(b.net.prefix_len()));
        ZoneTable { blocks, text }
    }

    /// The value in canonical form; empty when there are no blocks.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The blocks, longest prefix first.
    pub fn blocks(&self) -> &[ZoneCidr] {
        &self.blocks
    }

    /// The zone of an address: the longest matching prefix. An
    /// IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, from a dual-stack
    /// socket) is matched as the IPv4 address.
    pub fn zone_of(&self, addr: IpAddr) -> Option<&str> {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.blocks
            .iter()
            .find(|b| b.net.contains(&addr))
            .map(|b| b.zone.as_str())
    }

    /// A client's zone, in DESIGN's order: the `client.id` tag, then the
    /// source address, then `rack` (pass the fetch's `rack_id`, or `None`
    /// for other requests; an empty or implausible one is ignored). This
    /// neither counts nor logs; [`ZoneCache::resolve`] does.
    pub fn resolve<'a>(
        &'a self,
        client_id: &'a str,
        addr: Option<IpAddr>,
        rack: Option<&'a str>,
    ) -> Option<ClientZone<'a>> {
        if let Some(zone) = zone_from_client_id(client_id) {
            return Some(ClientZone {
                zone,
                source: ZoneSource::ClientId,
            });
        }
        if let Some(zone) = addr.and_then(|a| self.zone_of(a)) {
            return Some(ClientZone {
                zone,
                source: ZoneSource::Address,
            });
        }
        rack.map(str::trim)
            .filter(|r| is_zone_name(r))
            .map(|zone| ClientZone {
                zone,
                source: ZoneSource::Rack,
            })
    }
}

/// The node-wide, swappable CIDR table, and the count of clients of
/// unknown zone. Shared by every shard (in an `Arc`); shards read it
/// through a [`ZoneCache`].
#[derive(Debug)]
pub struct ZoneResolver {
    table: Arc<ArcSwap<ZoneTable>>,
    /// Taken by [`ZoneResolver::set_table`], so that changes do not race.
    writer: Mutex<()>,
    unknown: AtomicU64,
    log_interval: Duration,
    /// Last time each address was logged as of unknown zone.
    logged: Mutex<HashMap<IpAddr, Instant>>,
}

impl ZoneResolver {
    pub fn new(table: ZoneTable) -> ZoneResolver {
        ZoneResolver::with_log_interval(table, UNKNOWN_LOG_INTERVAL)
    }

    /// Logs a client of unknown zone at most once per `log_interval` per
    /// address.
    pub fn with_log_interval(table: ZoneTable, log_interval: Duration) -> ZoneResolver {
        ZoneResolver {
            table: Arc::new(ArcSwap::from_pointee(table)),
            writer: Mutex::new(()),
            unknown: AtomicU64::new(0),
            log_interval,
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// The table from a parsed [`Config`].
    pub fn from_config(config: &Config) -> ZoneResolver {
        ZoneResolver::new(ZoneTable::from_config(config))
    }

    /// The current table (shards use a [`ZoneCache`]).
    pub fn table(&self) -> Arc<ZoneTable> {
        self.table.load_full()
    }

    /// Replaces the table; returns whether it changed. Readers see the new
    /// table on their next call.
    pub fn set_table(&self, table: ZoneTable) -> bool {
        let _writer = self.writer.lock();
        if **self.table.load() == table {
            return false;
        }
        tracing::info!(
            key = ZONE_CIDR_KEY,
            value = table.text(),
            "zone CIDR blocks changed"
        );
        self.table.store(Arc::new(table));
        true
    }

    /// Parses `text` and replaces the table; on error nothing changes.
    pub fn set_text(&self, text: &str) -> Result<bool, ConfigError> {
        Ok(self.set_table(ZoneTable::parse(text)?))
    }

    /// How many times a client's zone was found unknown
    /// ([`note_unknown`](Self::note_unknown) calls).
    pub fn unknown_total(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Counts a client of unknown zone, and logs it unless this address was
    /// logged less than the log interval ago.
    pub fn note_unknown(&self, addr: Option<IpAddr>, client_id: &str) {
        let total = self.unknown.fetch_add(1, Ordering::Relaxed) + 1;
        let key = addr.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        let now = Instant::now();
        let log = {
            let mut logged = self.logged.lock();
            match logged.get(&key) {
                Some(at) if now.duration_since(*at) < self.log_interval => false,
                _ => {
                    if logged.len() >= UNKNOWN_LOG_ADDRESSES_MAX && !logged.contains_key(&key) {
                        let interval = self.log_interval;
                        logged.retain(|_, at| now.duration_since(*at) < interval);
                    }
                    if logged.len() < UNKNOWN_LOG_ADDRESSES_MAX || logged.contains_key(&key) {
                        logged.insert(key, now);
                        true
                    } else {
                        false
                    }
                }
            }
        };
        if log {
            let shown: String = client_id.chars().take(256).collect();
            tracing::warn!(
                peer = ?addr,
                client_id = ?shown,
                unknown_total = total,
                "client of unknown zone: it gets the true leaders, and its traffic may \
                 cross zones; tag its client.id with automq_az=<zone> or add its network \
                 to automq.zone.cidr.blocks"
            );
        }
    }
}

impl Default for ZoneResolver {
    fn default() -> Self {
        ZoneResolver::new(ZoneTable::empty())
    }
}

/// A shard's view of a [`ZoneResolver`]: an `Arc` of the table, re-read only
/// when the resolver published another. Not shared: one per shard (or per
/// connection).
#[derive(Debug, Clone)]
pub struct ZoneCache {
    resolver: Arc<ZoneResolver>,
    table: arc_swap::Cache<Arc<ArcSwap<ZoneTable>>, Arc<ZoneTable>>,
}

impl ZoneCache {
    pub fn new(resolver: Arc<ZoneResolver>) -> ZoneCache {
        let table = arc_swap::Cache::new(resolver.table.clone());
        ZoneCache { resolver, table }
    }

    /// The current table.
    pub fn table(&mut self) -> &Arc<ZoneTable> {
        self.table.load()
    }

    /// [`ZoneTable::resolve`] on the current table; a client whose zone is
    /// unknown is counted and (rate-limited) logged. Call it once per
    /// connection (and once more for a fetch with a `rack_id` from a client
    /// whose zone was unknown), not once per request, or the count means
    /// requests rather than clients.
    pub fn resolve<'a>(
        &'a mut self,
        client_id: &'a str,
        addr: Option<IpAddr>,
        rack: Option<&'a str>,
    ) -> Option<ClientZone<'a>> {
        let resolver = &self.resolver;
        let table: &'a Arc<ZoneTable> = self.table.load();
        let found = table.resolve(client_id, addr, rack);
        if found.is_none() {
            resolver.note_unknown(addr, client_id);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn client_id_tags() {
        let z = zone_from_client_id;
        assert_eq!(z("automq_az=us-east-1a&my-app"), Some("us-east-1a"));
        assert_eq!(z("my-app&ws_az=z2"), Some("z2"));
        assert_eq!(z("warpstream_az=use1-az1"), Some("use1-az1"));
        assert_eq!(z("diskless_az=b"), Some("b"));
        assert_eq!(z("?automq_az=a"), Some("a"));
        // Priority is by key, not by position.
        assert_eq!(z("ws_az=w&automq_az=a"), Some("a"));
        assert_eq!(z("diskless_az=d&warpstream_az=w&ws_az=x"), Some("x"));
        // First part with a given key wins.
        assert_eq!(z("automq_az=a&automq_az=b"), Some("a"));
        // Empty or implausible values are no tag; the next key is tried.
        assert_eq!(z("automq_az=&ws_az=w"), Some("w"));
        assert_eq!(z("automq_az= &x"), None);
        assert_eq!(z("automq_az=us%20east"), None);
        assert_eq!(z("automq_az=a b"), None);
        assert_eq!(z("automq_az=a=b"), None);
        assert_eq!(
            z(&format!("automq_az={}", "a".repeat(ZONE_NAME_MAX + 1))),
            None
        );
        assert_eq!(
            z(&format!("automq_az={}", "a".repeat(ZONE_NAME_MAX))).map(str::len),
            Some(ZONE_NAME_MAX)
        );
        // Surrounding blanks are tolerated.
        assert_eq!(z(" automq_az = z1 &app"), Some("z1"));
        // Not a tag.
        for odd in [
            "",
            "my-app",
            "&",
            "&&&",
            "=",
            "==",
            "automq_az",
            "automq_az_x=a",
            "xautomq_az=a",
            "AUTOMQ_AZ=a",
            "az=a",
            "app?automq_az=a",
            "\u{0}automq_az=a",
            "ünïcödé=ü&automq_az=ü",
        ] {
            assert_eq!(z(odd), None, "{odd:?}");
        }
    }

    fn table() -> ZoneTable {
        ZoneTable::parse(
            "a@10.0.0.0/8,2001:db8::/32<>b@10.1.0.0/16,2001:db8:1::/48<>c@10.1.2.0/24<>d@0.0.0.0/0",
        )
        .expect("valid table")
    }

    #[test]
    fn longest_prefix_v4_v6_and_mapped() {
        let t = table();
        assert_eq!(t.zone_of(ip("10.9.9.9")), Some("a"));
        assert_eq!(t.zone_of(ip("10.1.9.9")), Some("b"));
        assert_eq!(t.zone_of(ip("10.1.2.3")), Some("c"));
        assert_eq!(t.zone_of(ip("192.168.1.1")), Some("d"));
        assert_eq!(t.zone_of(ip("2001:db8:2::1")), Some("a"));
        assert_eq!(t.zone_of(ip("2001:db8:1::1")), Some("b"));
        assert_eq!(t.zone_of(ip("2001:db9::1")), None, "0.0.0.0/0 is IPv4 only");
        // IPv4-mapped IPv6 matches the IPv4 blocks.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        assert_eq!(t.zone_of(mapped), Some("c"));
        assert_eq!(t.zone_of(ip("::ffff:10.1.9.9")), Some("b"));
        // Not mapped: ::a01:203 is IPv4-compatible, not mapped.
        assert_eq!(
            t.zone_of(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0x0a01, 0x0203))),
            None
        );
        // Order of the text does not matter, only the prefix length.
        let t2 = ZoneTable::parse("c@10.1.2.0/24<>a@10.0.0.0/8").expect("valid");
        assert_eq!(t2.zone_of(ip("10.1.2.3")), Some("c"));
        let t3 = ZoneTable::parse("a@10.0.0.0/8<>c@10.1.2.0/24").expect("valid");
        assert_eq!(t3.zone_of(ip("10.1.2.3")), Some("c"));
        assert_eq!(t3.zone_of(ip("10.1.3.3")), Some("a"));
    }

    #[test]
    fn parse_errors_name_the_key_and_empty_is_empty() {
        let e = ZoneTable::parse("a@10.0.0.0").expect_err("no prefix");
        assert!(e.to_string().contains(ZONE_CIDR_KEY), "{e}");
        assert!(ZoneTable::parse("a@10.0.0.0/33").is_err());
        assert!(ZoneTable::parse("no-at-sign").is_err());
        assert!(ZoneTable::parse("a@10.0.0.0/8<>b@10.0.0.0/8").is_err());
        let empty = ZoneTable::parse("").expect("empty is fine");
        assert!(empty.is_empty());
        assert_eq!(empty.text(), "");
        assert_eq!(empty.zone_of(ip("10.0.0.1")), None);
        // Canonical text round-trips.
        let t = table();
        assert_eq!(ZoneTable::parse(t.text()).expect("canonical parses"), t);
        assert_eq!(
            ZoneTable::parse(" a@10.0.0.7/8 ").expect("valid").text(),
            "a@10.0.0.0/8"
        );
    }

    #[test]
    fn resolve_order() {
        let t = table();
        let a = Some(ip("10.1.2.3"));
        let got = t.resolve("automq_az=x&app", a, Some("r")).expect("tagged");
        assert_eq!((got.zone, got.source), ("x", ZoneSource::ClientId));
        let got = t.resolve("app", a, Some("r")).expect("by address");
        assert_eq!((got.zone, got.source), ("c", ZoneSource::Address));
        let got = t
            .resolve("app", Some(ip("fe80::1")), Some(" r1 "))
            .expect("by rack");
        assert_eq!((got.zone, got.source), ("r1", ZoneSource::Rack));
        assert_eq!(t.resolve("app", Some(ip("fe80::1")), Some("")), None);
        assert_eq!(t.resolve("app", None, Some("bad rack")), None);
        assert_eq!(t.resolve("app", None, None), None);
    }

    #[test]
    fn resolver_swap_at_run_time_and_unknown_count() {
        let resolver = Arc::new(ZoneResolver::new(
            ZoneTable::parse("a@10.0.0.0/8").expect("valid"),
        ));
        let mut cache = ZoneCache::new(resolver.clone());
        let mut other = ZoneCache::new(resolver.clone());
        let addr = Some(ip("10.1.2.3"));
        assert_eq!(cache.resolve("app", addr, None).map(|z| z.zone), Some("a"));
        let before = resolver.table();
        assert!(!resolver.set_text("a@10.0.0.0/8").expect("same value"));
        assert!(
            Arc::ptr_eq(&before, &resolver.table()),
            "no change, no swap"
        );
        assert!(resolver
            .set_text("b@10.1.0.0/16<>a@10.0.0.0/8")
            .expect("valid"));
        assert!(!Arc::ptr_eq(&before, &resolver.table()));
        assert_eq!(cache.resolve("app", addr, None).map(|z| z.zone), Some("b"));
        assert_eq!(other.resolve("app", addr, None).map(|z| z.zone), Some("b"));
        // A bad value changes nothing.
        assert!(resolver.set_text("b@nonsense").is_err());
        assert_eq!(cache.resolve("app", addr, None).map(|z| z.zone), Some("b"));
        assert_eq!(resolver.unknown_total(), 0);
        resolver.set_table(ZoneTable::empty());
        assert_eq!(cache.resolve("app", addr, None), None);
        assert_eq!(cache.resolve("app", addr, None), None);
        assert_eq!(other.resolve("app", None, None), None);
        assert_eq!(resolver.unknown_total(), 3);
        // Tagged clients are not unknown.
        assert!(cache.resolve("ws_az=z", addr, None).is_some());
        assert_eq!(resolver.unknown_total(), 3);
    }

    #[test]
    fn readers_on_other_threads_see_swaps() {
        let resolver = Arc::new(ZoneResolver::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut cache = ZoneCache::new(resolver.clone());
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut seen = std::collections::BTreeSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(z) = cache.table().zone_of(ip("10.0.0.1")) {
                            seen.insert(z.to_owned());
                        }
                    }
                    // The last value is always seen after the writer stops.
                    cache.table().zone_of(ip("10.0.0.1")).map(str::to_owned)
                })
            })
            .collect();
        for i in 0..200 {
            resolver
                .set_text(&format!("z{i}@10.0.0.0/8"))
                .expect("valid");
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert_eq!(r.join().expect("reader"), Some("z199".to_owned()));
        }
    }

    #[test]
    fn unknown_log_map_is_bounded() {
        let resolver = ZoneResolver::default();
        for i in 0..(UNKNOWN_LOG_ADDRESSES_MAX as u32 + 100) {
            resolver.note_unknown(Some(IpAddr::V4(Ipv4Addr::from(i))), "app");
        }
        assert!(resolver.logged.lock().len() <= UNKNOWN_LOG_ADDRESSES_MAX);
        assert_eq!(
            resolver.unknown_total(),
            UNKNOWN_LOG_ADDRESSES_MAX as u64 + 100
        );
    }
}
