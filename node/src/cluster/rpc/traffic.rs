//! Traffic accounting: bytes of node-to-node RPCs by peer zone and kind,
//! rendered as `ferry_zone_bytes_total`.

#[allow(unused_imports)]
use super::*;
use crate::prom::{Exposition, Kind};

/// What an RPC is for, as counted in `ferry_zone_bytes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RpcKind {
    Handoff,
    Replica,
    Forward,
    /// Kafka clients' own connections (counted by the node they talk to,
    /// by the client's zone; `unknown` when it has none).
    Client,
    /// The node's connections to etcd (leases, watches, the cluster's
    /// tables), by the zone of the etcd endpoint; `unknown` when no zone
    /// CIDR block holds its address.
    Coordinator,
}

impl RpcKind {
    pub const ALL: [RpcKind; 5] = [
        RpcKind::Handoff,
        RpcKind::Replica,
        RpcKind::Forward,
        RpcKind::Client,
        RpcKind::Coordinator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RpcKind::Handoff => "handoff",
            RpcKind::Replica => "replica",
            RpcKind::Forward => "forward",
            RpcKind::Client => "client",
            RpcKind::Coordinator => "coordinator",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Bytes to and from one peer zone, by kind.
#[derive(Debug, Default)]
pub struct ZoneTraffic {
    out: [AtomicU64; RpcKind::ALL.len()],
    inn: [AtomicU64; RpcKind::ALL.len()],
}

impl ZoneTraffic {
    pub fn add(&self, kind: RpcKind, bytes_out: u64, bytes_in: u64) {
        if bytes_out > 0 {
            self.out[kind.index()].fetch_add(bytes_out, Relaxed);
        }
        if bytes_in > 0 {
            self.inn[kind.index()].fetch_add(bytes_in, Relaxed);
        }
    }

    /// Bytes out and in for `kind`.
    pub fn get(&self, kind: RpcKind) -> (u64, u64) {
        (
            self.out[kind.index()].load(Relaxed),
            self.inn[kind.index()].load(Relaxed),
        )
    }
}

/// A node's RPC bytes by peer zone and kind, counted by the caller: "out"
/// is the request frames a node sent, "in" the response frames it got
/// back, size prefixes and headers included. The callee does not count, so
/// summing over nodes counts every byte once. The map is locked once per
/// connection (the client keeps the zone's counters); each call then adds
/// to atomics.
#[derive(Debug, Default)]
pub struct RpcTraffic {
    zones: Mutex<HashMap<String, Arc<ZoneTraffic>>>,
}

impl RpcTraffic {
    pub fn new() -> RpcTraffic {
        RpcTraffic::default()
    }

    /// The counters for `zone`, created on first use.
    pub fn zone(&self, zone: &str) -> Arc<ZoneTraffic> {
        let mut zones = self.zones.lock();
        if let Some(z) = zones.get(zone) {
            return z.clone();
        }
        let z = Arc::new(ZoneTraffic::default());
        zones.insert(zone.to_owned(), z.clone());
        z
    }

    /// `(peer zone, kind, bytes out, bytes in)` for every zone and kind
    /// with traffic, sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64, u64)> {
        let zones = self.zones.lock();
        let mut rows = Vec::new();
        for (zone, t) in zones.iter() {
            for kind in RpcKind::ALL {
                let (o, i) = t.get(kind);
                if o > 0 || i > 0 {
                    rows.push((zone.clone(), kind.as_str(), o, i));
                }
            }
        }
        rows.sort();
        rows
    }

    /// Appends `ferry_zone_bytes_total{local_zone,peer_zone,kind,direction}`
    /// in Prometheus text format to `o`.
    pub fn render(&self, local_zone: &str, o: &mut String) {
        let mut e = Exposition::new();
        let name = "ferry_zone_bytes_total";
        e.family(name, Kind::Counter);
        let mut cross = 0u64;
        for (zone, kind, bytes_out, bytes_in) in self.snapshot() {
            // Clients of unknown zone are not counted as crossing: nothing
            // says where they are.
            if zone != local_zone && zone != "unknown" {
                cross += bytes_out + bytes_in;
            }
            for (direction, n) in [("out", bytes_out), ("in", bytes_in)] {
                e.sample(
                    name,
                    &[
                        ("local_zone", local_zone),
                        ("peer_zone", &zone),
                        ("kind", kind),
                        ("direction", direction),
                    ],
                    n,
                );
            }
        }
        // Every node-to-node byte this node sent to or received from
        // another zone, as its calls counted them.
        let name = "ferry_cross_zone_bytes_total";
        e.family(name, Kind::Counter)
            .sample(name, &[("local_zone", local_zone)], cross);
        o.push_str(&e.finish());
    }
}
