//! Reading a node's `/metrics` (Prometheus text format) during a sweep, and
//! turning counters sampled over time into rates over the measured window.
//!
//! The scrape is one HTTP/1.0 `GET /metrics` on loopback with a timeout on
//! every step and a cap on what is read: a small, bounded request to a
//! process the sweep started itself, so no HTTP client crate is needed.

use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// S3 PUT requests sent by the node (WAL and metadata, retries included).
pub const PUTS: &str = "ferry_s3_puts_total";
/// S3 GET requests sent by the node's WAL reader.
pub const GETS: &str = "ferry_s3_gets_total";
/// Bytes the node exchanged with other zones (node-to-node RPCs, and
/// clients of another zone), summed over its labels.
pub const CROSS_ZONE_BYTES: &str = "ferry_cross_zone_bytes_total";

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

/// The sum of every series of metric `name` (all label sets), or `None` if
/// the text has no series of that name.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `{labels} value` or ` value`.
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        // `value [timestamp]`
        if let Some(v) = value
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// The counters the sweep reads, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken (the middle of the scrape), Unix milliseconds.
    pub at_unix_ms: u64,
    pub puts: f64,
    pub gets: f64,
    /// `None` while the node exports no cross-zone byte counter.
    pub cross_zone_bytes: Option<f64>,
}

impl Sample {
    /// Reads the counters out of a scrape; missing PUT or GET counters are an
    /// error (the node always exports them).
    pub fn parse(text: &str, at_unix_ms: u64) -> Result<Sample, String> {
        let need = |name: &str| sum(text, name).ok_or_else(|| format!("no {name} in /metrics"));
        Ok(Sample {
            at_unix_ms,
            puts: need(PUTS)?,
            gets: need(GETS)?,
            cross_zone_bytes: sum(text, CROSS_ZONE_BYTES),
        })
    }
}

/// Object-store requests and cross-zone bytes per second over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    pub puts_per_sec: f64,
    pub gets_per_sec: f64,
    /// 0 when not measured (see `cross_zone_measured`).
    pub cross_zone_bytes_per_sec: f64,
    /// Whether the node exported a cross-zone byte counter.
    pub cross_zone_measured: bool,
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
    Some(Rates {
        puts_per_sec: rate(first.puts, last.puts),
        gets_per_sec: rate(first.gets, last.gets),
        cross_zone_bytes_per_sec,
        cross_zone_measured,
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
            cross_zone_bytes: cross,
        }
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
