//! The cost model: what a workload costs per month in cross-zone transfer
//! and object-store requests, for Kafka and for Ferry.
//!
//! # Prices
//!
//! Prices come from [`Prices::default`] or a file read by [`Prices::parse`]:
//! `key = value` lines, `#` comments, and optionally one `[prices]` header,
//! so the file is valid TOML too (`bench/prices.toml` is the defaults, as a
//! file). Every key is optional:
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `cross_zone_usd_per_gb_each_way` | 0.01 | charged to the sender and again to the receiver |
//! | `s3_put_usd_per_1000` | 0.005 | PUT (and POST, LIST) requests |
//! | `s3_get_usd_per_1000` | 0.0004 | GET requests |
//! | `storage_usd_per_gb_month` | 0.023 | object storage |
//! | `bytes_per_gb` | 1e9 | the GB prices are per (2^30 if your bill counts GiB) |
//! | `hours_per_month` | 730 | the month costs are per (8,760 h / 12) |
//!
//! A byte that crosses zones is paid twice, once each way: at the defaults,
//! $0.02 per GB.
//!
//! # Kafka
//!
//! Kafka with replication factor 3, one replica per zone in 3 zones, leaders
//! spread evenly:
//!
//! - **replication**: the leader sends every byte to two followers, both in
//!   other zones: 2x the produced bytes;
//! - **consumers**: a consumer group reads from the leader, which two times in
//!   three is in another zone: 2/3x per group.
//!
//! So one consumer group gives (2/3 + 2)x; with follower fetching (KIP-392)
//! consumers read from a replica in their own zone and only replication is
//! left: 2x. A producer sending to a leader in another zone adds another
//! 2/3x, left out here as it is in the usual (2/3 + 2)x figure: both figures
//! are lower bounds. Disks and machines are not priced.
//!
//! # Ferry
//!
//! Ferry's cross-zone bytes are its RPCs and metadata, measured, and its
//! requests are the WAL and handoff PUTs and the reads' GETs, measured; the
//! model prices what it is given (see [`FerryUsage`]).
//!
//! # Break-even of a handoff stream
//!
//! A proxy can forward `r` bytes/s to a leader in another zone directly, for
//! `r` x the per-byte cross-zone price (both ways), or write them to the bucket
//! in one handoff object per `batchInterval`, for `1 / batchInterval` PUTs per
//! second. [`handoff_break_even_bytes_per_sec`] is the `r` where the two cost
//! the same: above it the handoff is cheaper. It is the input for cost-aware
//! routing.

use crate::error::BenchError;
use serde::Serialize;
use std::path::Path;

/// Unit prices, and the units they are in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    pub cross_zone_usd_per_gb_each_way: f64,
    pub s3_put_usd_per_1000: f64,
    pub s3_get_usd_per_1000: f64,
    pub storage_usd_per_gb_month: f64,
    pub bytes_per_gb: f64,
    pub hours_per_month: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            cross_zone_usd_per_gb_each_way: 0.01,
            s3_put_usd_per_1000: 0.005,
            s3_get_usd_per_1000: 0.0004,
            storage_usd_per_gb_month: 0.023,
            bytes_per_gb: 1e9,
            hours_per_month: 730.0,
        }
    }
}

/// The keys a prices file may set.
pub const PRICE_KEYS: [&str; 6] = [
    "cross_zone_usd_per_gb_each_way",
    "s3_put_usd_per_1000",
    "s3_get_usd_per_1000",
    "storage_usd_per_gb_month",
    "bytes_per_gb",
    "hours_per_month",
];

impl Prices {
    /// Reads a prices file; keys it does not set keep their defaults.
    pub fn load(path: &Path) -> Result<Prices, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            op: "reading prices file",
            path: path.to_path_buf(),
            source,
        })?;
        Prices::parse(&text, &path.display().to_string())
    }

    /// Parses prices from `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Prices, BenchError> {
        let mut prices = Prices::default();
        let mut seen: Vec<&str> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let err = |reason: String| BenchError::Prices {
                path: origin.to_string(),
                line: index + 1,
                reason,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line == "[prices]" {
                continue;
            }
            if line.starts_with('[') {
                return Err(err(format!(
                    "unexpected section {line}; only [prices] is allowed"
                )));
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(format!("expected key = value, got {line:?}")));
            };
            let key = key.trim();
            let Some(known) = PRICE_KEYS.iter().find(|k| **k == key) else {
                return Err(err(format!(
                    "unknown key {key:?}; the keys are {}",
                    PRICE_KEYS.join(", ")
                )));
            };
            if seen.contains(known) {
                return Err(err(format!("{key} is set twice")));
            }
            seen.push(known);
            let value: f64 =
                value.trim().replace('_', "").parse().map_err(|_| {
                    err(format!("{key}: expected a number, got {:?}", value.trim()))
                })?;
            let positive_only = matches!(key, "bytes_per_gb" | "hours_per_month");
            if !value.is_finite() || value < 0.0 || (positive_only && value == 0.0) {
                let want = if positive_only { "> 0" } else { ">= 0" };
                return Err(err(format!("{key}: expected a number {want}, got {value}")));
            }
            match key {
                "cross_zone_usd_per_gb_each_way" => prices.cross_zone_usd_per_gb_each_way = value,
                "s3_put_usd_per_1000" => prices.s3_put_usd_per_1000 = value,
                "s3_get_usd_per_1000" => prices.s3_get_usd_per_1000 = value,
                "storage_usd_per_gb_month" => prices.storage_usd_per_gb_month = value,
                "bytes_per_gb" => prices.bytes_per_gb = value,
                _ => prices.hours_per_month = value,
            }
        }
        Ok(prices)
    }

    /// Seconds in the month costs are given for.
    pub fn seconds_per_month(&self) -> f64 {
        self.hours_per_month * 3_600.0
    }

    /// Dollars per byte that crosses zones, both ways counted.
    pub fn cross_zone_usd_per_byte(&self) -> f64 {
        2.0 * self.cross_zone_usd_per_gb_each_way / self.bytes_per_gb
    }

    /// Dollars per PUT request.
    pub fn put_usd(&self) -> f64 {
        self.s3_put_usd_per_1000 / 1_000.0
    }

    /// Dollars per GET request.
    pub fn get_usd(&self) -> f64 {
        self.s3_get_usd_per_1000 / 1_000.0
    }
}

/// Dollars per month, by what they pay for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MonthlyCost {
    pub cross_zone_usd: f64,
    pub put_usd: f64,
    pub get_usd: f64,
    pub storage_usd: f64,
    pub total_usd: f64,
}

impl MonthlyCost {
    fn new(cross_zone_usd: f64, put_usd: f64, get_usd: f64, storage_usd: f64) -> Self {
        MonthlyCost {
            cross_zone_usd,
            put_usd,
            get_usd,
            storage_usd,
            total_usd: cross_zone_usd + put_usd + get_usd + storage_usd,
        }
    }
}

/// The cross-zone transfer cost per month of `bytes_per_sec` crossing zones.
pub fn cross_zone_usd_per_month(prices: &Prices, bytes_per_sec: f64) -> f64 {
    bytes_per_sec * prices.seconds_per_month() * prices.cross_zone_usd_per_byte()
}

/// Kafka, RF=3 across 3 zones, consumers reading from leaders:
/// (2 + 2/3 x `consumer_groups`) x the produced bytes cross zones.
pub fn kafka_rf3(
    prices: &Prices,
    produced_bytes_per_sec: f64,
    consumer_groups: f64,
) -> MonthlyCost {
    let crossing = produced_bytes_per_sec * (2.0 + consumer_groups * 2.0 / 3.0);
    MonthlyCost::new(cross_zone_usd_per_month(prices, crossing), 0.0, 0.0, 0.0)
}

/// Kafka, RF=3 across 3 zones, with follower fetching: replication only,
/// 2x the produced bytes cross zones.
pub fn kafka_follower_fetching(prices: &Prices, produced_bytes_per_sec: f64) -> MonthlyCost {
    let crossing = produced_bytes_per_sec * 2.0;
    MonthlyCost::new(cross_zone_usd_per_month(prices, crossing), 0.0, 0.0, 0.0)
}

/// What a Ferry cluster was measured to use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FerryUsage {
    /// PUT requests per second, all nodes (WAL, handoff, compaction).
    pub puts_per_sec: f64,
    /// GET requests per second, all nodes.
    pub gets_per_sec: f64,
    /// Bytes per second crossing zones (RPCs, metadata), one way counted.
    pub cross_zone_bytes_per_sec: f64,
    /// Bytes kept in the bucket (produced rate x retention).
    pub stored_bytes: f64,
}

/// Ferry's cost per month for `usage`.
pub fn ferry(prices: &Prices, usage: &FerryUsage) -> MonthlyCost {
    let month = prices.seconds_per_month();
    MonthlyCost::new(
        cross_zone_usd_per_month(prices, usage.cross_zone_bytes_per_sec),
        usage.puts_per_sec * month * prices.put_usd(),
        usage.gets_per_sec * month * prices.get_usd(),
        usage.stored_bytes / prices.bytes_per_gb * prices.storage_usd_per_gb_month,
    )
}

/// The rate, in bytes per second, at which a handoff stream writing one
/// object per `batch_interval_secs` costs as much in PUTs as sending the same
/// bytes across zones: `r * cross_zone_usd_per_byte = put_usd / interval`.
pub fn handoff_break_even_bytes_per_sec(prices: &Prices, batch_interval_secs: f64) -> f64 {
    let puts_usd_per_sec = prices.put_usd() / batch_interval_secs;
    puts_usd_per_sec / prices.cross_zone_usd_per_byte()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to 1 part in 10^12 (the sums below are exact in decimal, not in
    /// binary floating point).
    fn assert_usd(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= expected.abs() * 1e-12,
            "{actual} != {expected}"
        );
    }

    #[test]
    fn kafka_rf3_at_one_megabyte_per_second() {
        // Produced 1,000,000 B/s; one consumer group: (2 + 2/3) x 1e6 =
        // 2,666,666.67 B/s cross zones. A month is 730 h x 3,600 =
        // 2,628,000 s: 2,666,666.67 x 2,628,000 = 7.008e12 B = 7,008 GB,
        // at $0.01 each way = $0.02/GB: $140.16.
        let c = kafka_rf3(&Prices::default(), 1e6, 1.0);
        assert_usd(c.cross_zone_usd, 140.16);
        assert_usd(c.total_usd, 140.16);
        // Two consumer groups: (2 + 4/3) x 1e6 x 2,628,000 = 8.76e12 B =
        // 8,760 GB x $0.02 = $175.20.
        assert_usd(kafka_rf3(&Prices::default(), 1e6, 2.0).total_usd, 175.20);
    }

    #[test]
    fn kafka_with_follower_fetching_pays_for_replication_only() {
        // 2 x 1e6 B/s x 2,628,000 s = 5.256e12 B = 5,256 GB x $0.02 = $105.12.
        let c = kafka_follower_fetching(&Prices::default(), 1e6);
        assert_usd(c.total_usd, 105.12);
    }

    #[test]
    fn the_design_figure_thirty_mebibytes_per_second() {
        // DESIGN.md: "At 30 MiB/s that is about $4,000 a month". 30 MiB/s =
        // 31,457,280 B/s; x 8/3 = 83,886,080 B/s; x 2,628,000 s =
        // 220,452,618,240,000 B = 220,452.61824 GB x $0.02 = $4,409.0523648.
        let c = kafka_rf3(&Prices::default(), 30.0 * 1_048_576.0, 1.0);
        assert_usd(c.total_usd, 4_409.052_364_8);
    }

    #[test]
    fn ferry_prices_requests_storage_and_its_few_cross_zone_bytes() {
        // 4 PUT/s x 2,628,000 s = 10,512,000 PUTs x $0.005/1000 = $52.56.
        // 20 GET/s x 2,628,000 = 52,560,000 GETs x $0.0004/1000 = $21.024.
        // 10,000 B/s x 2,628,000 = 26.28 GB x $0.02 = $0.5256.
        // 1e12 B stored = 1,000 GB x $0.023 = $23.
        // Total 52.56 + 21.024 + 0.5256 + 23 = $97.1096.
        let usage = FerryUsage {
            puts_per_sec: 4.0,
            gets_per_sec: 20.0,
            cross_zone_bytes_per_sec: 10_000.0,
            stored_bytes: 1e12,
        };
        let c = ferry(&Prices::default(), &usage);
        assert_usd(c.put_usd, 52.56);
        assert_usd(c.get_usd, 21.024);
        assert_usd(c.cross_zone_usd, 0.5256);
        assert_usd(c.storage_usd, 23.0);
        assert_usd(c.total_usd, 97.1096);
    }

    #[test]
    fn handoff_break_even() {
        // batchInterval 250 ms: 4 PUT/s x $0.000005 = $0.00002/s. A byte
        // across zones costs $0.02 / 1e9 = $2e-11. Break-even:
        // 2e-5 / 2e-11 = 1e6 B/s, 1 MB/s.
        let p = Prices::default();
        assert_usd(handoff_break_even_bytes_per_sec(&p, 0.25), 1e6);
        // 50 ms: 20 PUT/s = $1e-4/s, / 2e-11 = 5e6 B/s.
        assert_usd(handoff_break_even_bytes_per_sec(&p, 0.05), 5e6);
        // At that rate the two costs agree month by month:
        // 1e6 B/s across zones = 2,628 GB x $0.02 = $52.56 = 4 PUT/s for a month.
        let month_cross = cross_zone_usd_per_month(&p, 1e6);
        let month_puts = ferry(
            &p,
            &FerryUsage {
                puts_per_sec: 4.0,
                gets_per_sec: 0.0,
                cross_zone_bytes_per_sec: 0.0,
                stored_bytes: 0.0,
            },
        )
        .total_usd;
        assert_usd(month_cross, 52.56);
        assert_usd(month_puts, 52.56);
    }

    #[test]
    fn a_prices_file_overrides_what_it_names() {
        // GiB billing, a dearer link and a one-hour "month": 2^30 B/s across
        // zones for 3,600 s is 3,600 GiB, at $0.02 each way = $0.04 per GiB:
        // $144.
        let text = "# test prices\n[prices]\ncross_zone_usd_per_gb_each_way = 0.02 # dearer\n\
                    bytes_per_gb = 1_073_741_824\nhours_per_month=1\n";
        let p = Prices::parse(text, "test").unwrap();
        assert_eq!(p.cross_zone_usd_per_gb_each_way, 0.02);
        assert_eq!(p.bytes_per_gb, 1_073_741_824.0);
        assert_eq!(p.s3_put_usd_per_1000, 0.005, "unset keys keep defaults");
        assert_usd(cross_zone_usd_per_month(&p, 1_073_741_824.0), 144.0);
    }

    #[test]
    fn the_shipped_prices_file_is_the_defaults() {
        let text = include_str!("../prices.toml");
        assert_eq!(
            Prices::parse(text, "prices.toml").unwrap(),
            Prices::default()
        );
    }

    #[test]
    fn bad_prices_files_name_the_line_and_the_key() {
        let e = Prices::parse("\ns3_put_usd = 1\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("s3_put_usd"), "{e}");
        let e = Prices::parse("s3_get_usd_per_1000 = cheap", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a number"), "{e}");
        let e = Prices::parse("hours_per_month = 0", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("> 0"), "{e}");
        let e = Prices::parse("bytes_per_gb = 1\nbytes_per_gb = 2", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = Prices::parse("[aws]", "f").unwrap_err().to_string();
        assert!(e.contains("section"), "{e}");
    }
}
