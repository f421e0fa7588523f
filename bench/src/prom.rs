//! Reading a node's `/metrics` (Prometheus text format) during a sweep, and
//! turning counters sampled over time into rates over the measured window.
//!
//! The scrape is one HTTP/1.0 `GET /metrics` on loopback with a timeout on
//! every step and a cap on what is read: a small, bounded request to a
//! process the sweep started itself, so no HTTP client crate is needed.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// S3 PUT requests sent by the node (WAL and metadata, retries included).
pub const PUTS: &str = "ferry_s3_puts_total";
/// S3 GET requests sent by the node's WAL reader.
pub const GETS: &str = "ferry_s3_gets_total";
/// Second PUTs and GETs the node's hedged store sent because the first was
/// slow (PUT and GET hedges in one counter; not in [`PUTS`] or [`GETS`]).
/// Absent from nodes built before hedging: read as 0.
pub const HEDGES: &str = "ferry_s3_hedges_total";
/// Bytes the node exchanged with other zones (node-to-node RPCs, and
/// clients of another zone), summed over its labels.
pub const CROSS_ZONE_BYTES: &str = "ferry_cross_zone_bytes_total";
/// Node-to-node RPC and client bytes by zone, kind and direction.
pub const ZONE_BYTES: &str = "ferry_zone_bytes_total";

/// The most bytes read from one scrape.
const SCRAPE_BYTES_MAX: u64 = 16 << 20;

/// Fetches `http://addr/metrics` and returns the body.
pub fn scrape(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    conn.take(SCRAPE_BYTES_MAX)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no end of HTTP headers in the answer".to_string())?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered {status:?}"));
    }
    Ok(body.to_string())
}

/// One sample line of metric `name`: its labels (unescaped) and its value.
/// `None` for a comment, a line of another metric (`name` must end where the
/// labels or the value begin) or a line that does not parse.
pub fn series<'a>(line: &'a str, name: &str) -> Option<(Vec<(&'a str, String)>, f64)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let rest = line.strip_prefix(name)?;
    let (labels, rest) = if let Some(mut r) = rest.strip_prefix('{') {
        let mut labels = Vec::new();
        loop {
            r = r.trim_start();
            if let Some(after) = r.strip_prefix('}') {
                break (labels, after);
            }
            let (key, after) = r.split_once('=')?;
            // `"value"`, with `\"`, `\\` and `\n` escaped.
            let quoted = after.trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            };
            labels.push((key.trim(), value));
            r = quoted[end + 1..].trim_start();
            r = r.strip_prefix(',').unwrap_or(r);
        }
    } else if rest.starts_with(' ') {
        (Vec::new(), rest)
    } else {
        return None;
    };
    // `value [timestamp]`
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((labels, value))
}

/// The sum of every series of metric `name` (all label sets), or `None` if
/// the text has no series of that name.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for (_, v) in text.lines().filter_map(|line| series(line, name)) {
        *total.get_or_insert(0.0) += v;
    }
    total
}

/// Bytes that crossed zones by `kind`, from the
/// `ferry_zone_bytes_total{local_zone,peer_zone,kind,direction}` series:
/// both directions of every series whose peer zone is another known zone
/// (`unknown` is not counted as crossing), the way the node sums
/// `ferry_cross_zone_bytes_total`. Every kind with a series is a key, 0 when
/// none of its bytes crossed.
pub fn cross_zone_by_kind(text: &str) -> BTreeMap<String, f64> {
    let mut kinds = BTreeMap::new();
    for (labels, v) in text.lines().filter_map(|line| series(line, ZONE_BYTES)) {
        let get = |k: &str| {
            labels
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
        };
        let Some(kind) = get("kind") else {
            continue;
        };
        let total = kinds.entry(kind.to_string()).or_insert(0.0);
        let (local, peer) = (get("local_zone"), get("peer_zone"));
        if matches!((local, peer), (Some(l), Some(p)) if l != p && p != "unknown") {
            *total += v;
        }
    }
    kinds
}

/// The counters the sweep reads, at one moment, summed over the nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken (the middle of the scrape), Unix milliseconds.
    pub at_unix_ms: u64,
    pub puts: f64,
    pub gets: f64,
    /// Hedged PUTs and GETs; 0 for a node without the counter.
    pub hedges: f64,
    /// `None` while a node exports no cross-zone byte counter.
    pub cross_zone_bytes: Option<f64>,
    /// Cross-zone bytes by kind ([`cross_zone_by_kind`]).
    pub cross_zone_by_kind: BTreeMap<String, f64>,
    /// Handoff objects in the bucket, counted by the sweep (the node's
    /// metrics leave the handoff writer's PUTs out); `None` if not counted.
    pub handoff_objects: Option<f64>,
}

impl Sample {
    /// Reads the counters out of a scrape; missing PUT or GET counters are an
    /// error (the node always exports them), a missing hedge counter is 0.
    pub fn parse(text: &str, at_unix_ms: u64) -> Result<Sample, String> {
        let need = |name: &str| sum(text, name).ok_or_else(|| format!("no {name} in /metrics"));
        Ok(Sample {
            at_unix_ms,
            puts: need(PUTS)?,
            gets: need(GETS)?,
            hedges: sum(text, HEDGES).unwrap_or(0.0),
            cross_zone_bytes: sum(text, CROSS_ZONE_BYTES),
            cross_zone_by_kind: cross_zone_by_kind(text),
            handoff_objects: None,
        })
    }

    /// The scrapes of every node of a cluster, taken together, as one
    /// sample: counters summed; the cross-zone bytes only if every node
    /// exports them. At least one scrape is needed.
    pub fn parse_nodes(texts: &[String], at_unix_ms: u64) -> Result<Sample, String> {
        let mut all: Option<Sample> = None;
        for (node, text) in texts.iter().enumerate() {
            let s = Sample::parse(text, at_unix_ms).map_err(|e| format!("node {node}: {e}"))?;
            match &mut all {
                None => all = Some(s),
                Some(a) => {
                    a.puts += s.puts;
                    a.gets += s.gets;
                    a.hedges += s.hedges;
                    a.cross_zone_bytes = a
                        .cross_zone_bytes
                        .zip(s.cross_zone_bytes)
                        .map(|(x, y)| x + y);
                    for (kind, bytes) in s.cross_zone_by_kind {
                        *a.cross_zone_by_kind.entry(kind).or_insert(0.0) += bytes;
                    }
                }
            }
        }
        all.ok_or_else(|| "no node to scrape".to_string())
    }
}

/// Object-store requests and cross-zone bytes per second over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub puts_per_sec: f64,
    pub gets_per_sec: f64,
    /// 0 when not measured (see `cross_zone_measured`).
    pub cross_zone_bytes_per_sec: f64,
    /// Whether the node exported a cross-zone byte counter.
    pub cross_zone_measured: bool,
    /// Cross-zone bytes per second by kind (handoff, replica, forward,
    /// client, coordinator).
    pub cross_zone_by_kind_per_sec: BTreeMap<String, f64>,
    /// Handoff objects written per second (one PUT each), counted in the
    /// bucket; 0 when not counted.
    pub handoff_puts_per_sec: f64,
    /// Hedges (second PUTs and GETs) sent per second; 0 when the nodes do
    /// not export [`HEDGES`].
    pub hedges_per_sec: f64,
    /// The seconds between the two samples the rates come from.
    pub seconds: f64,
}

/// Rates between the first sample at or after `start_ms` and the last at or
/// before `end_ms` (so only the window is counted); `None` if fewer than two
/// samples fall in it.
pub fn window_rates(samples: &[Sample], start_ms: u64, end_ms: u64) -> Option<Rates> {
    let first = samples.iter().find(|s| s.at_unix_ms >= start_ms)?;
    let last = samples.iter().rev().find(|s| s.at_unix_ms <= end_ms)?;
    if last.at_unix_ms <= first.at_unix_ms {
        return None;
    }
    let seconds = (last.at_unix_ms - first.at_unix_ms) as f64 / 1e3;
    let rate = |a: f64, b: f64| (b - a).max(0.0) / seconds;
    let (cross_zone_bytes_per_sec, cross_zone_measured) =
        match (first.cross_zone_bytes, last.cross_zone_bytes) {
            (Some(a), Some(b)) => (rate(a, b), true),
            _ => (0.0, false),
        };
    let cross_zone_by_kind_per_sec = last
        .cross_zone_by_kind
        .iter()
        .map(|(kind, b)| {
            let a = first.cross_zone_by_kind.get(kind).copied().unwrap_or(0.0);
            (kind.clone(), rate(a, *b))
        })
        .collect();
    let handoff_puts_per_sec = match (first.handoff_objects, last.handoff_objects) {
        (Some(a), Some(b)) => rate(a, b),
        _ => 0.0,
    };
    Some(Rates {
        puts_per_sec: rate(first.puts, last.puts),
        gets_per_sec: rate(first.gets, last.gets),
        cross_zone_bytes_per_sec,
        cross_zone_measured,
        cross_zone_by_kind_per_sec,
        handoff_puts_per_sec,
        hedges_per_sec: rate(first.hedges, last.hedges),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE ferry_s3_puts_total counter\n\
        ferry_s3_puts_total{node=\"0\"} 120\n\
        ferry_s3_puts_total_other 99\n\
        # TYPE ferry_s3_gets_total counter\n\
        ferry_s3_gets_total{node=\"0\",x=\"a}b\"} 7 1700000000000\n\
        ferry_s3_gets_total{node=\"1\"} 3\n\
        ferry_bytes_in_total 5\n";

    #[test]
    fn sums_every_series_of_exactly_that_name() {
        // PUTs: 120 (the `_other` metric is another name). GETs: 7 + 3 = 10,
        // a timestamp after the value and a brace inside a label ignored.
        assert_eq!(sum(TEXT, PUTS), Some(120.0));
        assert_eq!(sum(TEXT, GETS), Some(10.0));
        assert_eq!(sum(TEXT, "ferry_bytes_in_total"), Some(5.0));
        assert_eq!(sum(TEXT, CROSS_ZONE_BYTES), None);
        let s = Sample::parse(TEXT, 42).unwrap();
        assert_eq!((s.puts, s.gets, s.cross_zone_bytes), (120.0, 10.0, None));
        assert!(Sample::parse("ferry_s3_gets_total 1\n", 0)
            .unwrap_err()
            .contains(PUTS));
    }

    fn sample(at: u64, puts: f64, gets: f64, cross: Option<f64>) -> Sample {
        Sample {
            at_unix_ms: at,
            puts,
            gets,
            hedges: 0.0,
            cross_zone_bytes: cross,
            cross_zone_by_kind: BTreeMap::new(),
            handoff_objects: None,
        }
    }

    /// What node 0 of `ferry dev --zones 3` renders (rpc.rs), in zone az1:
    /// a handoff to az2, replica reads from az3, its own zone's clients,
    /// an untagged client, and a client of az2 that connected to it.
    const AZ1: &str = "# TYPE ferry_s3_puts_total counter\n\
        ferry_s3_puts_total 40\n\
        ferry_s3_gets_total 2\n\
        # TYPE ferry_zone_bytes_total counter\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az1\",kind=\"client\",direction=\"out\"} 5000\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az1\",kind=\"client\",direction=\"in\"} 900000\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az2\",kind=\"client\",direction=\"out\"} 30\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az2\",kind=\"client\",direction=\"in\"} 70\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az2\",kind=\"handoff\",direction=\"out\"} 1200\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az2\",kind=\"handoff\",direction=\"in\"} 300\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az3\",kind=\"replica\",direction=\"out\"} 400\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az3\",kind=\"replica\",direction=\"in\"} 600\n\
        ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"unknown\",kind=\"client\",direction=\"in\"} 123\n\
        # TYPE ferry_cross_zone_bytes_total counter\n\
        ferry_cross_zone_bytes_total{local_zone=\"az1\"} 2600\n";

    #[test]
    fn labels_are_read_with_their_escapes() {
        // A quote, a backslash and a line break escaped in label values; a
        // comma and a brace inside a value; spaces around the labels.
        let line = r#"m{ a="x\"y" , b="c\\d\ne",c="{,}"} 2.5 1700000000000"#;
        let (labels, v) = series(line, "m").unwrap();
        assert_eq!(v, 2.5);
        assert_eq!(
            labels,
            vec![
                ("a", "x\"y".to_string()),
                ("b", "c\\d\ne".to_string()),
                ("c", "{,}".to_string())
            ]
        );
        assert_eq!(series("m 7", "m"), Some((Vec::new(), 7.0)));
        // Another metric, a comment, an unterminated value.
        assert_eq!(series("mm 7", "m"), None);
        assert_eq!(series("# m 7", "m"), None);
        assert_eq!(series(r#"m{a="x} 7"#, "m"), None);
        assert_eq!(series(r#"m{a=x} 7"#, "m"), None);
    }

    #[test]
    fn cross_zone_bytes_by_kind_count_other_known_zones_both_ways() {
        // client: az2 30 + 70 = 100 (az1's own clients and the unknown
        // one do not cross); handoff: 1,200 + 300 = 1,500; replica: 400 +
        // 600 = 1,000. Together 2,600, the node's own sum.
        let k = cross_zone_by_kind(AZ1);
        assert_eq!(k.len(), 3, "{k:?}");
        assert_eq!(k["client"], 100.0);
        assert_eq!(k["handoff"], 1_500.0);
        assert_eq!(k["replica"], 1_000.0);
        assert_eq!(k.values().sum::<f64>(), sum(AZ1, CROSS_ZONE_BYTES).unwrap());
        // Only same-zone traffic: the kind is there, at 0.
        let same = "ferry_zone_bytes_total{local_zone=\"az1\",peer_zone=\"az1\",kind=\"client\",direction=\"in\"} 9\n";
        assert_eq!(cross_zone_by_kind(same)["client"], 0.0);
    }

    #[test]
    fn the_nodes_of_a_cluster_are_summed() {
        // Node 1 in az2: 10 PUTs, 1 GET, 500 B of forwards to az1.
        let az2 = "ferry_s3_puts_total 10\nferry_s3_gets_total 1\n\
            ferry_zone_bytes_total{local_zone=\"az2\",peer_zone=\"az1\",kind=\"forward\",direction=\"out\"} 500\n\
            ferry_cross_zone_bytes_total{local_zone=\"az2\"} 500\n";
        let s = Sample::parse_nodes(&[AZ1.to_string(), az2.to_string()], 9).unwrap();
        // PUTs 40 + 10, GETs 2 + 1, cross-zone 2,600 + 500.
        assert_eq!((s.puts, s.gets), (50.0, 3.0));
        assert_eq!(s.cross_zone_bytes, Some(3_100.0));
        assert_eq!(s.cross_zone_by_kind["forward"], 500.0);
        assert_eq!(s.cross_zone_by_kind["handoff"], 1_500.0);
        assert_eq!(s.at_unix_ms, 9);
        // A node without the counter: not measured; a node without PUTs: an
        // error naming it.
        let old = "ferry_s3_puts_total 1\nferry_s3_gets_total 1\n".to_string();
        let s = Sample::parse_nodes(&[AZ1.to_string(), old], 0).unwrap();
        assert_eq!(s.cross_zone_bytes, None);
        let e = Sample::parse_nodes(&[AZ1.to_string(), "x 1".into()], 0).unwrap_err();
        assert!(e.contains("node 1") && e.contains(PUTS), "{e}");
        assert!(Sample::parse_nodes(&[], 0).is_err());
    }

    #[test]
    fn hedges_are_summed_over_the_nodes_and_missing_is_zero() {
        // Node 0 sent 5 hedges, node 1 2 (PUT and GET hedges in one
        // counter); a node from before hedging has no counter: 0, no error.
        let hedged = |n: u32| {
            format!(
                "ferry_s3_puts_total 1\nferry_s3_gets_total 1\n\
                 # TYPE ferry_s3_hedges_total counter\n\
                 ferry_s3_hedges_total{{node=\"0\"}} {n}\n\
                 ferry_s3_hedges_won_total{{node=\"0\"}} 99\n"
            )
        };
        let old = "ferry_s3_puts_total 1\nferry_s3_gets_total 1\n".to_string();
        assert_eq!(Sample::parse(&hedged(5), 0).unwrap().hedges, 5.0);
        assert_eq!(Sample::parse(&old, 0).unwrap().hedges, 0.0);
        let s = Sample::parse_nodes(&[hedged(5), hedged(2), old], 0).unwrap();
        assert_eq!(s.hedges, 7.0);
        // 7 -> 13 hedges over 2 s: 3/s.
        let mut a = sample(1_000, 0.0, 0.0, None);
        a.hedges = 7.0;
        let mut b = sample(3_000, 0.0, 0.0, None);
        b.hedges = 13.0;
        let r = window_rates(&[a, b], 1_000, 3_000).unwrap();
        assert_eq!(r.hedges_per_sec, 3.0);
        // Without the counter: 0 hedges/s.
        let samples = [sample(0, 0.0, 0.0, None), sample(1_000, 4.0, 0.0, None)];
        assert_eq!(
            window_rates(&samples, 0, 1_000).unwrap().hedges_per_sec,
            0.0
        );
    }

    #[test]
    fn rates_by_kind_and_handoff_objects_over_the_window() {
        // 2 s apart: handoff 1,500 -> 5,500 B = 2,000 B/s; replica appears
        // (from 0) at 1,000 B = 500 B/s; 10 -> 18 handoff objects = 4/s.
        let mut a = sample(1_000, 0.0, 0.0, Some(1_500.0));
        a.cross_zone_by_kind.insert("handoff".into(), 1_500.0);
        a.handoff_objects = Some(10.0);
        let mut b = sample(3_000, 0.0, 0.0, Some(6_500.0));
        b.cross_zone_by_kind.insert("handoff".into(), 5_500.0);
        b.cross_zone_by_kind.insert("replica".into(), 1_000.0);
        b.handoff_objects = Some(18.0);
        let r = window_rates(&[a, b], 1_000, 3_000).unwrap();
        assert_eq!(r.cross_zone_bytes_per_sec, 2_500.0);
        assert_eq!(r.cross_zone_by_kind_per_sec["handoff"], 2_000.0);
        assert_eq!(r.cross_zone_by_kind_per_sec["replica"], 500.0);
        assert_eq!(r.handoff_puts_per_sec, 4.0);
    }

    #[test]
    fn rates_count_only_the_samples_inside_the_window() {
        // Window 1,000..=3,000 ms. Samples at 750 (before), 1,250, 2,250,
        // 2,750, 3,250 (after): the rates come from 1,250 and 2,750, 1.5 s
        // apart. PUTs 30 -> 60: 30 / 1.5 = 20/s; GETs 2 -> 5: 2/s;
        // cross-zone 1,000 -> 4,000 B: 2,000 B/s.
        let samples = [
            sample(750, 0.0, 0.0, Some(0.0)),
            sample(1_250, 30.0, 2.0, Some(1_000.0)),
            sample(2_250, 50.0, 4.0, Some(3_000.0)),
            sample(2_750, 60.0, 5.0, Some(4_000.0)),
            sample(3_250, 500.0, 50.0, Some(9_999.0)),
        ];
        let r = window_rates(&samples, 1_000, 3_000).unwrap();
        assert_eq!(r.seconds, 1.5);
        assert_eq!(r.puts_per_sec, 20.0);
        assert_eq!(r.gets_per_sec, 2.0);
        assert_eq!(r.cross_zone_bytes_per_sec, 2_000.0);
        assert!(r.cross_zone_measured);
    }

    #[test]
    fn no_cross_zone_counter_is_zero_and_says_so() {
        let samples = [sample(0, 0.0, 0.0, None), sample(2_000, 8.0, 0.0, None)];
        let r = window_rates(&samples, 0, 2_000).unwrap();
        assert_eq!(r.puts_per_sec, 4.0);
        assert_eq!(r.cross_zone_bytes_per_sec, 0.0);
        assert!(!r.cross_zone_measured);
    }

    #[test]
    fn fewer_than_two_samples_in_the_window_give_no_rate() {
        let samples = [sample(500, 0.0, 0.0, None), sample(1_500, 1.0, 0.0, None)];
        assert_eq!(window_rates(&samples, 1_000, 2_000), None);
        assert_eq!(window_rates(&[], 0, 1), None);
    }

    #[test]
    fn scrapes_a_metrics_endpoint() {
        // A one-shot server that answers like the node's.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "404 Not Found"] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0, "request ended early");
                    request.extend_from_slice(&buf[..n]);
                }
                assert!(request.starts_with(b"GET /metrics HTTP/1.0\r\n"));
                let body = "ferry_s3_puts_total{node=\"0\"} 3\n";
                write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let body = scrape(addr, Duration::from_secs(5)).unwrap();
        assert_eq!(sum(&body, PUTS), Some(3.0));
        let err = scrape(addr, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("404"), "{err}");
        server.join().unwrap();
    }
}
