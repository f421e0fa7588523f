//! Where objects go: parsing bucket URIs and building the object store.
//!
//! Ferry takes AutoMQ's bucket URIs (the value after `ID@` in
//! `s3.data.buckets`, `s3.wal.path` and `automq.zonerouter.channels`):
//!
//! ```text
//! [ID@]s3://BUCKET?region=R[&endpoint=URL][&pathStyle=true|false]
//!     [&authType=static|instance][&accessKey=..][&secretKey=..][&caFile=PATH]
//!     [&batchInterval=MS][&maxBytesInBatch=BYTES][&hedge=true|false]
//! [ID@]file:///some/dir[?batchInterval=MS][&maxBytesInBatch=BYTES][&directIo=true|false]
//!     [&hedge=true|false]
//! ```
//!
//! A `file://` bucket writes objects of 256 KiB and more with `O_DIRECT`
//! (see [`crate::direct`]); `directIo=false` writes them through the page
//! cache instead.
//!
//! `file://` makes a local directory the bucket (created if missing).
//! Credentials, when the URI has none, come from `KAFKA_S3_ACCESS_KEY` /
//! `KAFKA_S3_SECRET_KEY`, then `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
//! (with `AWS_SESSION_TOKEN`). `authType=instance` uses the machine's role
//! (instance metadata, web identity or container credentials) and refuses
//! static keys. The secret key never shows in `Debug` or `Display` output.
//!
//! An `https` endpoint's certificate is verified against the system's roots
//! and, with `caFile`, the CA certificates (PEM) in that file: an S3 server
//! with a private CA.
//!
//! Virtual-hosted requests are the default, as in AutoMQ; with an `endpoint`
//! whose host is an IP address or `localhost` (a local S3 server), where
//! virtual hosts cannot resolve, path-style requests are used instead.
//!
//! [`FaultyStore`] wraps any store with PUT/GET latency, injected PUT
//! failures and injected read failures (GET, HEAD, LIST: an HTTP 500 or 503,
//! or a timeout, for a number of attempts or a period), for tests.
//!
//! # The S3 latency model
//!
//! A local directory answers in microseconds, so every `batchInterval` /
//! `maxBytesInBatch` setting looks alike on it. Optional parameters, in
//! either kind of URI, make [`BucketUri::build_store`] wrap the store in a
//! [`LatencyStore`] that delays and fails requests the way S3 does:
//!
//! ```text
//! putLatencyP50Ms=MS&putLatencyP99Ms=MS   PUT latency: median and 99th percentile
//! putLatencyP999Ms=MS                     PUT 99.9th percentile (a heavier tail)
//! getLatencyP50Ms=MS&getLatencyP99Ms=MS   GET (and HEAD) latency, the same way
//! getLatencyP999Ms=MS                     GET 99.9th percentile
//! latencyMsPerMiB=MS                      added per MiB sent or received
//! slowDownRate=F                          fraction answered 503 SlowDown
//! serverErrorRate=F                       fraction answered 500 InternalError
//! stallRate=F                             fraction that never answers
//! prefixPutsPerSecond=N                   PUTs per key prefix per second, then 503
//! prefixGetsPerSecond=N                   GETs (and HEADs) per key prefix per second
//! ```
//!
//! e.g. `s3.wal.path=0@file:///tmp/b?batchInterval=100&putLatencyP50Ms=50&putLatencyP99Ms=300&latencyMsPerMiB=20`.
//! `perf/s3-model.md` gives the values the benchmarks use and the published
//! S3 figures they come from.
//!
//! Each pair is given together or not at all, with `0 < p50 <= p99 <=
//! 600000`; fractions of a millisecond are kept to the microsecond. A
//! request's delay is drawn from the log-normal distribution that has that
//! median and that 99th percentile (see [`LogNormal::from_quantiles`]), plus
//! `latencyMsPerMiB` x its size in MiB, a fixed cost (so the p99 of a 4 MiB
//! PUT is `putLatencyP99Ms + 4 x latencyMsPerMiB`). The size of a PUT is its
//! payload, of a GET the bytes it returns (none for a HEAD); a multipart
//! upload is delayed once, when it starts, without the per-MiB cost. LIST,
//! DELETE, COPY and RENAME are not delayed.
//!
//! A log-normal fitted to p50 and p99 has a thin tail: with 50 / 300 ms its
//! p99.9 is about 540 ms, while S3's slowest requests take seconds. A
//! `...P999Ms` (given with its pair, and at least its p99) bends the curve
//! above the 99th percentile so that the 99.9th is that value (see
//! [`TailedLogNormal`]); below the p99 nothing changes.
//!
//! The three rates are fractions from 0 to 1 (kept to the millionth, adding
//! up to at most 1) of PUTs and GETs (multipart starts and HEADs included).
//! A refused request (503 SlowDown or 500 InternalError, see [`ModelFault`])
//! waits its drawn latency and fails without reaching the wrapped store: a
//! refused PUT writes nothing. A stalled request never answers, as a
//! connection that hangs does; the model sits in front of the S3 client, so
//! the client's own timeout does not end it: the caller's timeout must.
//! [`is_slow_down`] and [`is_server_error`] recognise these errors, and the
//! same ones from a real S3.
//!
//! S3 scales request rates per key prefix: AWS documents at least 3,500
//! PUT/COPY/POST/DELETE and 5,500 GET/HEAD requests per second per
//! partitioned prefix, and answers 503 SlowDown past that. The model has no
//! such cap unless `prefixPutsPerSecond` / `prefixGetsPerSecond` set one: a
//! request past it within the current one-second window of its prefix (the
//! key without its last segment: `wal/3` for `wal/3/00000000000000000012.wal`)
//! is answered 503 SlowDown.
//!
//! # Hedging
//!
//! Hedged requests (see the writer) are on by default for s3:// buckets and
//! for the latency model; `hedge=false` turns them off for the bucket
//! (`hedge=true` turns them on for a plain `file://` one). See
//! [`BucketUri::hedging`].

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, CopyOptions, GetOptions, GetRange, GetResult, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, RetryConfig,
};
use url::Url;

use crate::error::WalError;

/// AutoMQ's default `batchInterval`.
pub const BATCH_INTERVAL_DEFAULT: Duration = Duration::from_millis(250);
/// AutoMQ's default `maxBytesInBatch`.
pub const MAX_BYTES_IN_BATCH_DEFAULT: usize = 8 * 1024 * 1024;
/// Upper bound accepted for `batchInterval`, in ms.
pub const BATCH_INTERVAL_MS_MAX: u64 = 60_000;
/// Upper bound accepted for `maxBytesInBatch`.
pub const MAX_BYTES_IN_BATCH_MAX: usize = 1 << 30;
/// Upper bound accepted for the latency model's quantiles, in ms (10 minutes).
pub const LATENCY_MS_MAX: f64 = 600_000.0;
/// Upper bound accepted for `latencyMsPerMiB`.
pub const LATENCY_MS_PER_MIB_MAX: f64 = 60_000.0;
/// The standard normal's 99th percentile, Φ⁻¹(0.99).
pub const Z_99: f64 = 2.326_347_874_040_840_8;
/// The standard normal's 99.9th percentile, Φ⁻¹(0.999).
pub const Z_999: f64 = 3.090_232_306_167_813;
/// A rate of 1 in the model's unit: rates are kept in parts per million.
pub const RATE_PPM_ONE: u32 = 1_000_000;
/// Upper bound accepted for `prefixPutsPerSecond` / `prefixGetsPerSecond`.
pub const PREFIX_REQUESTS_PER_SECOND_MAX: u32 = 1_000_000;
/// Prefixes whose request window the model keeps, per kind of request.
/// Past it, windows that have ended are dropped, then all of them.
pub const PREFIX_WINDOWS_MAX: usize = 65_536;
/// The length of a prefix's request-rate window.
pub const PREFIX_WINDOW: Duration = Duration::from_secs(1);

/// A string that must not be printed (a secret key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself: pass it on, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the S3 client gets credentials (`authType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// Access key and secret key, from the URI or the environment.
    Static,
    /// The machine's role: instance metadata, web identity or container credentials.
    Instance,
}

/// An S3 bucket and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Bucket {
    pub bucket: String,
    pub region: String,
    /// `endpoint`, for S3-compatible stores; `None` is AWS.
    pub endpoint: Option<Url>,
    /// `pathStyle`; `None` means not given (see the module doc for the default).
    pub path_style: Option<bool>,
    /// `authType`; `None` means static if keys are found, else instance.
    pub auth: Option<AuthType>,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// `caFile`: CA certificates (PEM) an `https` endpoint may chain to,
    /// besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// Where a bucket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketLocation {
    S3(S3Bucket),
    /// A local directory used as the bucket.
    File {
        dir: PathBuf,
        /// `directIo` (default true): large objects are written with `O_DIRECT`.
        direct_io: bool,
    },
}

/// A parsed bucket URI (see the module doc for the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUri {
    /// The `ID@` prefix, if there was one.
    pub id: Option<u16>,
    pub location: BucketLocation,
    /// `batchInterval` (default 250 ms).
    pub batch_interval: Duration,
    /// `maxBytesInBatch` (default 8 MiB).
    pub max_bytes_in_batch: usize,
    /// The S3 latency model (off unless its parameters are given).
    pub latency: LatencyModel,
    /// `hedge`; `None` means not given (see [`BucketUri::hedging`]).
    pub hedge: Option<bool>,
}

/// The median, 99th and (optionally) 99.9th percentile of a request
/// latency, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyQuantiles {
    pub p50_us: u64,
    pub p99_us: u64,
    /// `...P999Ms`: a tail heavier than the log-normal's; `None` keeps the
    /// log-normal's own.
    pub p999_us: Option<u64>,
}

/// The S3 latency model of a bucket URI (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencyModel {
    /// `putLatencyP50Ms` / `putLatencyP99Ms`.
    pub put: Option<LatencyQuantiles>,
    /// `getLatencyP50Ms` / `getLatencyP99Ms`.
    pub get: Option<LatencyQuantiles>,
    /// `latencyMsPerMiB`, in microseconds per MiB.
    pub us_per_mib: u64,
    /// `slowDownRate`: PUTs and GETs answered 503 SlowDown, in parts per
    /// million.
    pub slow_down_ppm: u32,
    /// `serverErrorRate`: PUTs and GETs answered 500 InternalError, in
    /// parts per million.
    pub server_error_ppm: u32,
    /// `stallRate`: PUTs and GETs that never answer, in parts per million.
    pub stall_ppm: u32,
    /// `prefixPutsPerSecond`: PUTs per key prefix per second before 503
    /// SlowDown; `None` is no cap.
    pub prefix_puts_per_second: Option<u32>,
    /// `prefixGetsPerSecond`: GETs and HEADs per key prefix per second
    /// before 503 SlowDown; `None` is no cap.
    pub prefix_gets_per_second: Option<u32>,
}

impl LatencyModel {
    /// True when it delays nothing and fails nothing.
    pub fn is_off(&self) -> bool {
        self.put.is_none()
            && self.get.is_none()
            && self.us_per_mib == 0
            && self.fault_ppm() == 0
            && self.prefix_puts_per_second.is_none()
            && self.prefix_gets_per_second.is_none()
    }

    /// The requests that stall or fail, in parts per million (at most
    /// [`RATE_PPM_ONE`] in a parsed model).
    pub fn fault_ppm(&self) -> u32 {
        self.stall_ppm
            .saturating_add(self.slow_down_ppm)
            .saturating_add(self.server_error_ppm)
    }
}

const LATENCY_PARAMS: &str = "putLatencyP50Ms, putLatencyP99Ms, putLatencyP999Ms, \
     getLatencyP50Ms, getLatencyP99Ms, getLatencyP999Ms, latencyMsPerMiB, slowDownRate, \
     serverErrorRate, stallRate, prefixPutsPerSecond, prefixGetsPerSecond";

const S3_PARAMS: &str = "region, endpoint, pathStyle, authType, accessKey, secretKey, caFile, \
     batchInterval, maxBytesInBatch, hedge, putLatencyP50Ms, putLatencyP99Ms, putLatencyP999Ms, \
     getLatencyP50Ms, getLatencyP99Ms, getLatencyP999Ms, latencyMsPerMiB, slowDownRate, \
     serverErrorRate, stallRate, prefixPutsPerSecond, prefixGetsPerSecond";

/// The parameter the three rates are checked against together.
const FAULT_RATES_SUM: &str = "slowDownRate + serverErrorRate + stallRate";

/// Parses milliseconds (fractions allowed) in `min..=max` into microseconds;
/// `min_exclusive` refuses `min` itself.
fn parse_ms(
    key: &str,
    value: &str,
    min: f64,
    min_exclusive: bool,
    max: f64,
) -> Result<u64, WalError> {
    let range = if min_exclusive {
        format!("milliseconds greater than {min} and at most {max}")
    } else {
        format!("milliseconds from {min} to {max}")
    };
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|ms| ms.is_finite() && *ms <= max && (*ms > min || (!min_exclusive && *ms == min)))
        .map(|ms| (ms * 1_000.0).round() as u64)
        .filter(|us| !min_exclusive || *us > 0)
        .ok_or_else(|| WalError::config(key, range, value))
}

/// Parses a fraction from 0 to 1 into parts per million. A positive rate
/// too small to keep (under half a millionth) is refused rather than kept
/// as 0.
fn parse_rate(key: &str, value: &str) -> Result<u32, WalError> {
    let rate = value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r));
    match rate.map(|r| (r, (r * f64::from(RATE_PPM_ONE)).round() as u32)) {
        Some((r, ppm)) if ppm > 0 || r == 0.0 => Ok(ppm),
        _ => Err(WalError::config(
            key,
            "a fraction from 0 to 1, to the millionth (e.g. 0.01)",
            value,
        )),
    }
}

/// Parses a per-prefix request rate, a positive integer.
fn parse_per_second(key: &str, value: &str) -> Result<u32, WalError> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=PREFIX_REQUESTS_PER_SECOND_MAX).contains(n))
        .ok_or_else(|| {
            WalError::config(
                key,
                format!("requests per second in 1..={PREFIX_REQUESTS_PER_SECOND_MAX}"),
                value,
            )
        })
}

/// A rate in parts per million, as the URI writes it.
fn rate_text(ppm: u32) -> String {
    (f64::from(ppm) / f64::from(RATE_PPM_ONE)).to_string()
}

/// Checks one latency pair and its optional p99.9: the pair both or
/// neither, `p50 <= p99 <= p999`, and a p99.9 only with the pair.
fn latency_pair(
    kind: &str,
    p50: Option<u64>,
    p99: Option<u64>,
    p999: Option<u64>,
) -> Result<Option<LatencyQuantiles>, WalError> {
    let (p50_key, p99_key) = (format!("{kind}LatencyP50Ms"), format!("{kind}LatencyP99Ms"));
    let p999_key = format!("{kind}LatencyP999Ms");
    let ms = |us: u64| (us as f64 / 1_000.0).to_string();
    match (p50, p99) {
        (None, None) => match p999 {
            None => Ok(None),
            Some(p999_us) => Err(WalError::config(
                p999_key,
                format!("to be given with {p50_key} and {p99_key}"),
                ms(p999_us),
            )),
        },
        (Some(_), None) => Err(WalError::config(
            p99_key,
            format!("to be given with {p50_key} (both or neither)"),
            "",
        )),
        (None, Some(_)) => Err(WalError::config(
            p50_key,
            format!("to be given with {p99_key} (both or neither)"),
            "",
        )),
        (Some(p50_us), Some(p99_us)) if p99_us < p50_us => Err(WalError::config(
            p99_key,
            format!(
                "milliseconds at least {p50_key} ({})",
                p50_us as f64 / 1_000.0
            ),
            (p99_us as f64 / 1_000.0).to_string(),
        )),
        (Some(_), Some(p99_us)) if p999.is_some_and(|p999_us| p999_us < p99_us) => {
            Err(WalError::config(
                p999_key,
                format!("milliseconds at least {p99_key} ({})", ms(p99_us)),
                p999.map(ms).unwrap_or_default(),
            ))
        }
        (Some(p50_us), Some(p99_us)) => Ok(Some(LatencyQuantiles {
            p50_us,
            p99_us,
            p999_us: p999,
        })),
    }
}

impl FromStr for BucketUri {
    type Err = WalError;
    fn from_str(s: &str) -> Result<BucketUri, WalError> {
        BucketUri::parse(s)
    }
}

impl BucketUri {
    /// Parses `[ID@]s3://...` or `[ID@]file:///...`.
    pub fn parse(s: &str) -> Result<BucketUri, WalError> {
        let s = s.trim();
        let (id, rest) = match s.split_once('@') {
            Some((id, rest)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
                let id = id.parse::<u16>().map_err(|_| {
                    WalError::config("bucket id", "an integer in 0..=65535 before '@'", id)
                })?;
                (Some(id), rest)
            }
            _ => (None, s),
        };
        let url = Url::parse(rest).map_err(|e| {
            WalError::config(
                "bucket URI",
                format!("s3://BUCKET?region=R[&...] or file:///DIR ({e})"),
                redact_uri(rest),
            )
        })?;
        let mut batch_interval = BATCH_INTERVAL_DEFAULT;
        let mut max_bytes_in_batch = MAX_BYTES_IN_BATCH_DEFAULT;
        let mut s3 = S3Bucket {
            bucket: String::new(),
            region: String::new(),
            endpoint: None,
            path_style: None,
            auth: None,
            access_key: None,
            secret_key: None,
            ca_file: None,
        };
        let is_s3 = match url.scheme() {
            "s3" => true,
            "file" => false,
            other => return Err(WalError::config("bucket URI scheme", "s3 or file", other)),
        };
        let mut seen = Vec::new();
        let mut put_p50 = None;
        let mut put_p99 = None;
        let mut get_p50 = None;
        let mut get_p99 = None;
        let mut put_p999 = None;
        let mut get_p999 = None;
        let mut us_per_mib = 0;
        let mut slow_down_ppm = 0;
        let mut server_error_ppm = 0;
        let mut stall_ppm = 0;
        let mut prefix_puts_per_second = None;
        let mut prefix_gets_per_second = None;
        let mut hedge = None;
        let mut direct_io = None;
        for (key, value) in url.query_pairs() {
            let key = key.into_owned();
            let shown = if key == "secretKey" {
                "[redacted]".to_string()
            } else {
                value.to_string()
            };
            if seen.contains(&key) {
                return Err(WalError::config(key, "to be given once", shown));
            }
            seen.push(key.clone());
            match key.as_str() {
                "batchInterval" => {
                    let ms = value
                        .parse::<u64>()
                        .ok()
                        .filter(|ms| (1..=BATCH_INTERVAL_MS_MAX).contains(ms))
                        .ok_or_else(|| {
                            WalError::config(
                                "batchInterval",
                                format!("milliseconds in 1..={BATCH_INTERVAL_MS_MAX}"),
                                shown.clone(),
                            )
                        })?;
                    batch_interval = Duration::from_millis(ms);
                }
                "maxBytesInBatch" => {
                    max_bytes_in_batch = value
                        .parse::<usize>()
                        .ok()
                        .filter(|b| (1..=MAX_BYTES_IN_BATCH_MAX).contains(b))
                        .ok_or_else(|| {
                            WalError::config(
                                "maxBytesInBatch",
                                format!("bytes in 1..={MAX_BYTES_IN_BATCH_MAX}"),
                                shown.clone(),
                            )
                        })?;
                }
                "putLatencyP50Ms" => {
                    put_p50 = Some(parse_ms(&key, &value, 0.0, true, LATENCY_MS_MAX)?)
                }
                "putLatencyP99Ms" => {
                    put_p99 = Some(parse_ms(&key, &value, 0.0, true, LATENCY_MS_MAX)?)
                }
                "getLatencyP50Ms" => {
                    get_p50 = Some(parse_ms(&key, &value, 0.0, true, LATENCY_MS_MAX)?)
                }
                "getLatencyP99Ms" => {
                    get_p99 = Some(parse_ms(&key, &value, 0.0, true, LATENCY_MS_MAX)?)
                }
                "putLatencyP999Ms" => {
                    put_p999 = Some(parse_ms(&key, &value, 0.0, true, LATENCY_MS_MAX)?)
                }
                "getLatencyP999Ms" => {
                    get_p999 = Some(parse_ms(&key, &value, 0.0, true, LATENCY_MS_MAX)?)
                }
                "latencyMsPerMiB" => {
                    us_per_mib = parse_ms(&key, &value, 0.0, false, LATENCY_MS_PER_MIB_MAX)?;
                }
                "slowDownRate" => slow_down_ppm = parse_rate(&key, &value)?,
                "serverErrorRate" => server_error_ppm = parse_rate(&key, &value)?,
                "stallRate" => stall_ppm = parse_rate(&key, &value)?,
                "prefixPutsPerSecond" => {
                    prefix_puts_per_second = Some(parse_per_second(&key, &value)?)
                }
                "prefixGetsPerSecond" => {
                    prefix_gets_per_second = Some(parse_per_second(&key, &value)?)
                }
                "hedge" => {
                    hedge = Some(parse_bool(&value).ok_or_else(|| {
                        WalError::config("hedge", "true or false", shown.clone())
                    })?);
                }
                "directIo" if !is_s3 => {
                    direct_io = Some(parse_bool(&value).ok_or_else(|| {
                        WalError::config("directIo", "true or false", shown.clone())
                    })?);
                }
                _ if !is_s3 => {
                    return Err(WalError::config(
                        key,
                        format!(
                            "only batchInterval, maxBytesInBatch, directIo, hedge or the latency \
                             model ({LATENCY_PARAMS}) in a file:// URI"
                        ),
                        shown,
                    ))
                }
                "region" => {
                    if value.is_empty() {
                        return Err(WalError::config("region", "a region name", shown));
                    }
                    s3.region = value.into_owned();
                }
                "endpoint" => {
                    let ep = Url::parse(&value)
                        .ok()
                        .filter(|u| {
                            matches!(u.scheme(), "http" | "https") && u.host_str().is_some()
                        })
                        .ok_or_else(|| {
                            WalError::config(
                                "endpoint",
                                "an http:// or https:// URL",
                                shown.clone(),
                            )
                        })?;
                    s3.endpoint = Some(ep);
                }
                "caFile" => {
                    if value.is_empty() {
                        return Err(WalError::config("caFile", "a path to a PEM file", shown));
                    }
                    s3.ca_file = Some(PathBuf::from(value.into_owned()));
                }
                "pathStyle" => {
                    s3.path_style = Some(parse_bool(&value).ok_or_else(|| {
                        WalError::config("pathStyle", "true or false", shown.clone())
                    })?);
                }
                "authType" => {
                    s3.auth = Some(match value.as_ref() {
                        "static" => AuthType::Static,
                        "instance" => AuthType::Instance,
                        _ => return Err(WalError::config("authType", "static or instance", shown)),
                    });
                }
                "accessKey" => s3.access_key = Some(value.into_owned()),
                "secretKey" => s3.secret_key = Some(Secret(value.into_owned())),
                _ => {
                    return Err(WalError::config(
                        key,
                        format!("a known parameter ({S3_PARAMS})"),
                        shown,
                    ))
                }
            }
        }
        let location = if is_s3 {
            let bucket = url.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(WalError::config(
                    "bucket",
                    "s3://BUCKET with a bucket name",
                    "",
                ));
            }
            if !matches!(url.path(), "" | "/") {
                return Err(WalError::config(
                    "bucket URI path",
                    "no path after the bucket name",
                    url.path(),
                ));
            }
            if s3.region.is_empty() {
                return Err(WalError::config("region", "region=R in an s3:// URI", ""));
            }
            if s3.auth == Some(AuthType::Instance)
                && (s3.access_key.is_some() || s3.secret_key.is_some())
            {
                return Err(WalError::config(
                    "authType",
                    "static when accessKey or secretKey is given",
                    "instance",
                ));
            }
            s3.bucket = bucket.to_string();
            BucketLocation::S3(s3)
        } else {
            if !matches!(url.host_str(), None | Some("") | Some("localhost")) {
                return Err(WalError::config(
                    "file URI",
                    "file:///ABSOLUTE/DIR (three slashes)",
                    rest,
                ));
            }
            let dir = url
                .to_file_path()
                .map_err(|()| WalError::config("file URI", "file:///ABSOLUTE/DIR", rest))?;
            BucketLocation::File {
                dir,
                direct_io: direct_io.unwrap_or(true),
            }
        };
        let latency = LatencyModel {
            put: latency_pair("put", put_p50, put_p99, put_p999)?,
            get: latency_pair("get", get_p50, get_p99, get_p999)?,
            us_per_mib,
            slow_down_ppm,
            server_error_ppm,
            stall_ppm,
            prefix_puts_per_second,
            prefix_gets_per_second,
        };
        // Each request meets at most one of them, so they share one draw.
        let fault_ppm =
            u64::from(slow_down_ppm) + u64::from(server_error_ppm) + u64::from(stall_ppm);
        if fault_ppm > u64::from(RATE_PPM_ONE) {
            return Err(WalError::config(
                FAULT_RATES_SUM,
                "a sum of at most 1",
                (fault_ppm as f64 / f64::from(RATE_PPM_ONE)).to_string(),
            ));
        }
        Ok(BucketUri {
            id,
            location,
            batch_interval,
            max_bytes_in_batch,
            latency,
            hedge,
        })
    }

    /// Whether the writer hedges requests to this bucket: `hedge` when
    /// given, else on for an s3:// bucket and for any bucket with the
    /// latency model on (see the module doc).
    pub fn hedging(&self) -> bool {
        self.hedge.unwrap_or_else(|| {
            matches!(self.location, BucketLocation::S3(_)) || !self.latency.is_off()
        })
    }

    /// Builds the store, reading credentials from the process environment.
    pub fn build_store(&self) -> Result<Arc<dyn ObjectStore>, WalError> {
        self.build_store_with_env(&|k| std::env::var(k).ok())
    }

    /// Builds the store, reading credentials through `env` (a test passes its own).
    pub fn build_store_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn ObjectStore>, WalError> {
        let store = self.build_bare_store(env)?;
        if self.latency.is_off() {
            return Ok(store);
        }
        tracing::info!(model = ?self.latency, "S3 latency model on: requests are delayed, and may fail or stall");
        Ok(Arc::new(LatencyStore::new(
            store,
            self.latency,
            seed_from_clock(),
        )))
    }

    fn build_bare_store(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn ObjectStore>, WalError> {
        match &self.location {
            BucketLocation::File { dir, direct_io } => {
                std::fs::create_dir_all(dir).map_err(|e| WalError::Io {
                    op: "create bucket directory",
                    path: dir.clone(),
                    source: Arc::new(e),
                })?;
                let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                    WalError::store("open bucket directory", dir.display().to_string(), e)
                })?;
                if *direct_io {
                    Ok(Arc::new(crate::direct::DirectDirStore::new(fs)))
                } else {
                    Ok(Arc::new(fs))
                }
            }
            BucketLocation::S3(s3) => Ok(Arc::new(build_s3(s3, env)?)),
        }
    }
}

fn build_s3(
    s3: &S3Bucket,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<object_store::aws::AmazonS3, WalError> {
    let mut options = ClientOptions::new()
        .with_timeout(Duration::from_secs(30))
        .with_connect_timeout(Duration::from_secs(5))
        .with_allow_http(s3.endpoint.as_ref().is_some_and(|e| e.scheme() == "http"));
    if let Some(path) = &s3.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            WalError::config(
                "caFile",
                format!("a readable PEM file ({e})"),
                path.display().to_string(),
            )
        })?;
        let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            WalError::config(
                "caFile",
                format!("PEM CA certificates ({e})"),
                path.display().to_string(),
            )
        })?;
        if certs.is_empty() {
            return Err(WalError::config(
                "caFile",
                "a file with at least one PEM certificate",
                path.display().to_string(),
            ));
        }
        for c in certs {
            options = options.with_root_certificate(c);
        }
    }
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        // The WAL writer retries whole uploads up to its own deadline, so the
        // client retries only briefly.
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
        })
        .with_client_options(options);

    let path_style = match (s3.path_style, &s3.endpoint) {
        (Some(p), _) => p,
        (None, Some(ep)) => host_cannot_be_virtual(ep),
        (None, None) => false,
    };
    match &s3.endpoint {
        Some(ep) => {
            let mut ep = ep.clone();
            if !path_style {
                let host = format!("{}.{}", s3.bucket, ep.host_str().unwrap_or_default());
                ep.set_host(Some(&host)).map_err(|e| {
                    WalError::config("endpoint", format!("a host that can take the bucket as a subdomain ({e}); or set pathStyle=true"), ep.as_str())
                })?;
            }
            b = b
                .with_endpoint(ep.as_str().trim_end_matches('/'))
                .with_virtual_hosted_style_request(!path_style);
        }
        None => b = b.with_virtual_hosted_style_request(!path_style),
    }

    let from_uri = (s3.access_key.clone(), s3.secret_key.clone());
    let from_kafka_env = (
        env("KAFKA_S3_ACCESS_KEY"),
        env("KAFKA_S3_SECRET_KEY").map(Secret),
    );
    let from_aws_env = (
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY").map(Secret),
    );
    let keys = [from_uri, from_kafka_env, from_aws_env.clone()]
        .into_iter()
        .find(|(a, s)| a.is_some() || s.is_some());
    let auth = s3.auth.unwrap_or(if keys.is_some() {
        AuthType::Static
    } else {
        AuthType::Instance
    });
    match auth {
        AuthType::Static => {
            let (Some(access), Some(secret)) = keys.clone().unwrap_or((None, None)) else {
                return Err(WalError::config(
                    "accessKey/secretKey",
                    "both keys for authType=static, in the URI, in KAFKA_S3_ACCESS_KEY and \
                     KAFKA_S3_SECRET_KEY, or in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    if keys.is_some() {
                        "only one of the two"
                    } else {
                        "none"
                    },
                ));
            };
            b = b
                .with_access_key_id(access)
                .with_secret_access_key(secret.expose());
            // A session token belongs to the AWS keys only.
            if keys == Some(from_aws_env) {
                if let Some(token) = env("AWS_SESSION_TOKEN") {
                    b = b.with_token(token);
                }
            }
        }
        AuthType::Instance => {
            for var in [
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_ROLE_ARN",
                "AWS_ROLE_SESSION_NAME",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "AWS_METADATA_ENDPOINT",
            ] {
                if let (Some(value), Ok(key)) = (
                    env(var),
                    AmazonS3ConfigKey::from_str(&var.to_ascii_lowercase()),
                ) {
                    b = b.with_config(key, value);
                }
            }
        }
    }
    b.build()
        .map_err(|e| WalError::store("configure S3 client", format!("s3://{}", s3.bucket), e))
}

/// A virtual host `BUCKET.HOST` cannot resolve for an IP address or localhost.
fn host_cannot_be_virtual(ep: &Url) -> bool {
    match ep.host() {
        Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_)) => true,
        Some(url::Host::Domain(d)) => d == "localhost",
        None => true,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The URI with any `secretKey` value replaced, for error messages.
fn redact_uri(s: &str) -> String {
    match s.find("secretKey=") {
        Some(at) => {
            let value_start = at + "secretKey=".len();
            let value_end = s[value_start..]
                .find('&')
                .map_or(s.len(), |e| value_start + e);
            format!("{}[redacted]{}", &s[..value_start], &s[value_end..])
        }
        None => s.to_string(),
    }
}

impl fmt::Display for BucketUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = self.id {
            write!(f, "{id}@")?;
        }
        let mut params: Vec<(&str, String)> = Vec::new();
        match &self.location {
            BucketLocation::S3(s3) => {
                write!(f, "s3://{}", s3.bucket)?;
                params.push(("region", s3.region.clone()));
                if let Some(ep) = &s3.endpoint {
                    params.push(("endpoint", ep.as_str().trim_end_matches('/').to_string()));
                }
                if let Some(p) = s3.path_style {
                    params.push(("pathStyle", p.to_string()));
                }
                if let Some(a) = s3.auth {
                    let a = match a {
                        AuthType::Static => "static",
                        AuthType::Instance => "instance",
                    };
                    params.push(("authType", a.to_string()));
                }
                if let Some(k) = &s3.access_key {
                    params.push(("accessKey", k.clone()));
                }
                if s3.secret_key.is_some() {
                    params.push(("secretKey", "[redacted]".to_string()));
                }
                if let Some(ca) = &s3.ca_file {
                    params.push(("caFile", ca.display().to_string()));
                }
            }
            BucketLocation::File { dir, direct_io } => {
                write!(f, "file://{}", dir.display())?;
                if !direct_io {
                    params.push(("directIo", "false".to_string()));
                }
            }
        }
        if self.batch_interval != BATCH_INTERVAL_DEFAULT {
            params.push(("batchInterval", self.batch_interval.as_millis().to_string()));
        }
        if self.max_bytes_in_batch != MAX_BYTES_IN_BATCH_DEFAULT {
            params.push(("maxBytesInBatch", self.max_bytes_in_batch.to_string()));
        }
        let ms = |us: u64| (us as f64 / 1_000.0).to_string();
        let m = &self.latency;
        for (kind, q) in [("put", m.put), ("get", m.get)] {
            if let Some(q) = q {
                let (p50, p99, p999) = match kind {
                    "put" => ("putLatencyP50Ms", "putLatencyP99Ms", "putLatencyP999Ms"),
                    _ => ("getLatencyP50Ms", "getLatencyP99Ms", "getLatencyP999Ms"),
                };
                params.push((p50, ms(q.p50_us)));
                params.push((p99, ms(q.p99_us)));
                if let Some(p999_us) = q.p999_us {
                    params.push((p999, ms(p999_us)));
                }
            }
        }
        if m.us_per_mib > 0 {
            params.push(("latencyMsPerMiB", ms(m.us_per_mib)));
        }
        for (key, ppm) in [
            ("slowDownRate", m.slow_down_ppm),
            ("serverErrorRate", m.server_error_ppm),
            ("stallRate", m.stall_ppm),
        ] {
            if ppm > 0 {
                params.push((key, rate_text(ppm)));
            }
        }
        if let Some(n) = m.prefix_puts_per_second {
            params.push(("prefixPutsPerSecond", n.to_string()));
        }
        if let Some(n) = m.prefix_gets_per_second {
            params.push(("prefixGetsPerSecond", n.to_string()));
        }
        if let Some(h) = self.hedge {
            params.push(("hedge", h.to_string()));
        }
        for (i, (k, v)) in params.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// A log-normal distribution: `exp(mu + sigma Z)` with `Z` standard normal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
    pub mu: f64,
    pub sigma: f64,
}

impl LogNormal {
    /// The log-normal whose median is `p50` and whose 99th percentile is
    /// `p99` (any unit; `0 < p50 <= p99`): the median of `exp(mu + sigma Z)`
    /// is `exp(mu)`, so `mu = ln p50`; its p99 is `exp(mu + sigma z99)`, so
    /// `sigma = ln(p99 / p50) / z99`, with `z99 = Φ⁻¹(0.99)` ([`Z_99`]).
    /// `p50 == p99` gives `sigma = 0`: every draw is `p50`.
    pub fn from_quantiles(p50: f64, p99: f64) -> LogNormal {
        LogNormal {
            mu: p50.ln(),
            sigma: (p99 / p50).ln() / Z_99,
        }
    }

    /// The value at standard-normal deviate `z`.
    pub fn at(&self, z: f64) -> f64 {
        (self.mu + self.sigma * z).exp()
    }
}

/// A log-normal whose tail above the 99th percentile may follow a second,
/// steeper slope: S3's slowest requests are slower than a log-normal fitted
/// to its p50 and p99 says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TailedLogNormal {
    /// The distribution up to the 99th percentile (and beyond, without a tail).
    pub body: LogNormal,
    /// Above `z99`, `ln(value)` grows by this much per unit of `z`; `None`
    /// keeps the body's `sigma`.
    pub tail_sigma: Option<f64>,
}

impl TailedLogNormal {
    /// The log-normal with that `p50` and `p99` ([`LogNormal::from_quantiles`])
    /// and, with a `p999` (`>= p99`), the tail through it: above `z99` a
    /// draw is `p99 x exp(tail_sigma (z - z99))`, with `tail_sigma =
    /// ln(p999 / p99) / (z999 - z99)`, so that `z999` ([`Z_999`]) gives
    /// exactly `p999`. The curve is continuous at `z99`.
    pub fn from_quantiles(p50: f64, p99: f64, p999: Option<f64>) -> TailedLogNormal {
        TailedLogNormal {
            body: LogNormal::from_quantiles(p50, p99),
            tail_sigma: p999.map(|p999| (p999 / p99).ln() / (Z_999 - Z_99)),
        }
    }

    /// The value at standard-normal deviate `z`.
    pub fn at(&self, z: f64) -> f64 {
        match self.tail_sigma {
            Some(tail_sigma) if z > Z_99 => self.body.at(Z_99) * (tail_sigma * (z - Z_99)).exp(),
            _ => self.body.at(z),
        }
    }
}

/// How the S3 model refuses a request. It travels as the source of an
/// `object_store::Error::Generic` from the store [`MODEL_STORE`], so
/// [`is_slow_down`] and [`is_server_error`] can find it by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModelFault {
    /// `slowDownRate`, or a prefix past its request-rate cap.
    #[error("503 SlowDown: the S3 model asks to reduce the request rate")]
    SlowDown,
    /// `serverErrorRate`.
    #[error("500 InternalError: the S3 model failed the request")]
    InternalError,
}

/// The `store` of the errors the S3 model answers.
pub const MODEL_STORE: &str = "S3 model";

impl ModelFault {
    /// The error a store call answers with.
    pub fn into_store_error(self) -> object_store::Error {
        object_store::Error::Generic {
            store: MODEL_STORE,
            source: Box::new(self),
        }
    }
}

/// True when `err` is S3 asking the client to slow down: a 503 (SlowDown),
/// from the model ([`ModelFault::SlowDown`]) or from a real S3.
///
/// object_store's S3 client retries a 503 itself (twice, see `build_s3`)
/// and then returns `Error::Generic` whose source holds the status; but
/// that type (`client::retry::RetryError`) sits in a private module, so it
/// cannot be downcast here. Its text can be read: "... status code: 503
/// Service Unavailable: <body>", or, for S3's 200-with-error-body answers,
/// the body with `<Code>SlowDown</Code>`. The object key is in that text
/// too, so a bare "503" is not matched: a key may hold those digits.
/// `FaultyStore`'s injected 503s match as well.
pub fn is_slow_down(err: &object_store::Error) -> bool {
    has_fault(
        err,
        ModelFault::SlowDown,
        &["status code: 503", "<code>slowdown</code>", "503 slowdown"],
    )
}

/// True when `err` is a 500 InternalError, from the model
/// ([`ModelFault::InternalError`]) or from a real S3, found as
/// [`is_slow_down`] finds a 503.
pub fn is_server_error(err: &object_store::Error) -> bool {
    has_fault(
        err,
        ModelFault::InternalError,
        &[
            "status code: 500",
            "<code>internalerror</code>",
            "500 internalerror",
        ],
    )
}

/// Walks `err` and its sources: a [`ModelFault`] decides; otherwise any of
/// `texts` (lower case) in one's message does.
fn has_fault(err: &object_store::Error, fault: ModelFault, texts: &[&str]) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<ModelFault>() {
            return *found == fault;
        }
        let message = e.to_string().to_ascii_lowercase();
        if texts.iter().any(|t| message.contains(t)) {
            return true;
        }
        next = e.source();
    }
    false
}

/// A SplitMix64 generator behind an atomic, so concurrent requests draw
/// without a lock; seeded, so a test's draws are reproducible.
#[derive(Debug)]
pub struct SplitMix64(AtomicU64);

impl SplitMix64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(AtomicU64::new(seed))
    }

    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    pub fn next_unit(&self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal deviate (Box-Muller).
    pub fn next_normal(&self) -> f64 {
        let (u1, u2) = (self.next_unit(), self.next_unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// The clock the model's per-prefix windows read: tokio's (so a paused
/// runtime pauses it too), or a test's.
#[derive(Clone)]
pub struct ModelClock(Arc<dyn Fn() -> std::time::Instant + Send + Sync>);

impl ModelClock {
    /// `tokio::time::Instant::now()`.
    pub fn tokio() -> ModelClock {
        ModelClock(Arc::new(|| tokio::time::Instant::now().into_std()))
    }

    /// A clock that reads `now`.
    pub fn new(now: impl Fn() -> std::time::Instant + Send + Sync + 'static) -> ModelClock {
        ModelClock(Arc::new(now))
    }

    fn now(&self) -> std::time::Instant {
        (self.0)()
    }
}

impl fmt::Debug for ModelClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelClock")
    }
}

/// A kind of request, as S3's per-prefix limits count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    /// PUT, and the POST that starts a multipart upload.
    Put,
    /// GET and HEAD.
    Get,
}

/// What the model does with one request, decided before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Answer,
    Refuse(ModelFault),
    Stall,
}

/// The requests one prefix has had in its current window.
#[derive(Debug, Clone, Copy)]
struct PrefixWindow {
    start: std::time::Instant,
    requests: u32,
}

/// Per-prefix windows, PUTs and GETs apart (each has its own cap).
#[derive(Debug, Default)]
struct PrefixWindows {
    puts: HashMap<String, PrefixWindow>,
    gets: HashMap<String, PrefixWindow>,
}

/// The prefix S3 scales by, for the model: the key without its last
/// segment (`wal/3` for `wal/3/00000000000000000012.wal`; `""` for a key
/// at the root).
fn key_prefix(location: &Path) -> &str {
    location.as_ref().rsplit_once('/').map_or("", |(p, _)| p)
}

/// Delays, refuses and stalls PUTs and GETs by the S3 latency model (see
/// the module doc). The delay goes through tokio time, so the store must be
/// called on a tokio runtime (the WAL's I/O runtime is one); called
/// elsewhere, it delays nothing and says so once.
///
/// The per-prefix windows sit behind a mutex: this is a model for tests,
/// `ferry dev` and the bench, not the node's hot path against real S3.
#[derive(Debug)]
pub struct LatencyStore {
    inner: Arc<dyn ObjectStore>,
    model: LatencyModel,
    put: Option<TailedLogNormal>,
    get: Option<TailedLogNormal>,
    rng: SplitMix64,
    clock: ModelClock,
    prefix_windows: std::sync::Mutex<PrefixWindows>,
    warned_no_runtime: AtomicBool,
}

impl LatencyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, model: LatencyModel, seed: u64) -> LatencyStore {
        let dist = |q: Option<LatencyQuantiles>| {
            q.map(|q| {
                TailedLogNormal::from_quantiles(
                    q.p50_us as f64,
                    q.p99_us as f64,
                    q.p999_us.map(|us| us as f64),
                )
            })
        };
        LatencyStore {
            inner,
            model,
            put: dist(model.put),
            get: dist(model.get),
            rng: SplitMix64::new(seed),
            clock: ModelClock::tokio(),
            prefix_windows: std::sync::Mutex::new(PrefixWindows::default()),
            warned_no_runtime: AtomicBool::new(false),
        }
    }

    /// The same store with the per-prefix windows read from `clock`.
    pub fn with_clock(mut self, clock: ModelClock) -> LatencyStore {
        self.clock = clock;
        self
    }

    pub fn model(&self) -> LatencyModel {
        self.model
    }

    /// Counts a request against its prefix's cap; true when it is past it.
    fn over_prefix_cap(&self, kind: RequestKind, location: &Path) -> bool {
        let cap = match kind {
            RequestKind::Put => self.model.prefix_puts_per_second,
            RequestKind::Get => self.model.prefix_gets_per_second,
        };
        let Some(cap) = cap else {
            return false;
        };
        let prefix = key_prefix(location);
        let now = self.clock.now();
        let mut all = self
            .prefix_windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let windows = match kind {
            RequestKind::Put => &mut all.puts,
            RequestKind::Get => &mut all.gets,
        };
        if windows.len() >= PREFIX_WINDOWS_MAX && !windows.contains_key(prefix) {
            windows.retain(|_, w| now.duration_since(w.start) < PREFIX_WINDOW);
            if windows.len() >= PREFIX_WINDOWS_MAX {
                // So many prefixes in one second is past what the model is
                // for: it forgets them all rather than grow.
                windows.clear();
            }
        }
        let fresh = PrefixWindow {
            start: now,
            requests: 0,
        };
        let window = windows.entry(prefix.to_string()).or_insert(fresh);
        if now.duration_since(window.start) >= PREFIX_WINDOW {
            *window = fresh;
        }
        window.requests = window.requests.saturating_add(1);
        window.requests > cap
    }

    /// Decides a request's fate: the prefix cap counts every request that
    /// arrives; then one draw picks a stall, a 503 or a 500 by their rates.
    fn verdict(&self, kind: RequestKind, location: &Path) -> Verdict {
        if self.over_prefix_cap(kind, location) {
            return Verdict::Refuse(ModelFault::SlowDown);
        }
        let m = &self.model;
        if m.fault_ppm() == 0 {
            // No draw: a model without faults draws the latencies it always did.
            return Verdict::Answer;
        }
        // 2^64 is not a multiple of a million, but the bias is under 1e-13.
        let draw = (self.rng.next_u64() % u64::from(RATE_PPM_ONE)) as u32;
        let stall_below = m.stall_ppm;
        let slow_down_below = stall_below.saturating_add(m.slow_down_ppm);
        let server_error_below = slow_down_below.saturating_add(m.server_error_ppm);
        if draw < stall_below {
            Verdict::Stall
        } else if draw < slow_down_below {
            Verdict::Refuse(ModelFault::SlowDown)
        } else if draw < server_error_below {
            Verdict::Refuse(ModelFault::InternalError)
        } else {
            Verdict::Answer
        }
    }

    /// Lets a request through, or answers for S3 without reaching the
    /// wrapped store: a refusal after `refusal_delay`, or never (a stall).
    async fn admit(
        &self,
        kind: RequestKind,
        location: &Path,
        refusal_delay: impl FnOnce() -> Duration,
    ) -> object_store::Result<()> {
        match self.verdict(kind, location) {
            Verdict::Answer => Ok(()),
            Verdict::Refuse(fault) => {
                self.wait(refusal_delay()).await;
                tracing::debug!(object_key = %location, %fault, "S3 model refused a request");
                Err(fault.into_store_error())
            }
            Verdict::Stall => {
                tracing::debug!(object_key = %location, "S3 model stalled a request");
                std::future::pending().await
            }
        }
    }

    fn draw(&self, dist: Option<TailedLogNormal>, bytes: u64) -> Duration {
        let base_us = dist.map_or(0.0, |d| d.at(self.rng.next_normal()));
        let size_us = self.model.us_per_mib as f64 * bytes as f64 / (1u64 << 20) as f64;
        // At most an hour, whatever the tail draws.
        Duration::from_micros((base_us + size_us).min(3.6e9) as u64)
    }

    /// The delay of a PUT of `bytes` bytes.
    pub fn put_delay(&self, bytes: u64) -> Duration {
        self.draw(self.put, bytes)
    }

    /// The delay of a GET returning `bytes` bytes.
    pub fn get_delay(&self, bytes: u64) -> Duration {
        self.draw(self.get, bytes)
    }

    async fn wait(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            if !self.warned_no_runtime.swap(true, Ordering::Relaxed) {
                tracing::warn!("S3 latency model: called outside a tokio runtime, not delaying");
            }
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

impl fmt::Display for LatencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LatencyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LatencyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let delay = self.put_delay(payload.content_length() as u64);
        self.admit(RequestKind::Put, location, || delay).await?;
        self.wait(delay).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let delay = self.put_delay(0);
        self.admit(RequestKind::Put, location, || delay).await?;
        self.wait(delay).await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        // A refused GET returns no bytes: its delay has no per-MiB part.
        self.admit(RequestKind::Get, location, || self.get_delay(0))
            .await?;
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        let bytes = if head {
            0
        } else {
            result.range.end.saturating_sub(result.range.start)
        };
        self.wait(self.get_delay(bytes)).await;
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.admit(RequestKind::Get, location, || self.get_delay(0))
            .await?;
        let got = self.inner.get_ranges(location, ranges).await?;
        let bytes = got.iter().map(|b| b.len() as u64).sum();
        self.wait(self.get_delay(bytes)).await;
        Ok(got)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// An object store wrapper that adds latency to PUTs and GETs and fails PUTs
/// on demand, and counts both. Latency goes through tokio time, so it must
/// run on a tokio runtime (the WAL's I/O runtime is one).
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    put_latency_us: AtomicU64,
    get_latency_us: AtomicU64,
    fail_next_puts: AtomicU64,
    fail_all_puts: AtomicBool,
    fail_puts_to: std::sync::Mutex<Option<Path>>,
    puts: AtomicU64,
    puts_failed: AtomicU64,
    gets: AtomicU64,
    read_faults: std::sync::Mutex<Option<(ReadFault, FaultWindow)>>,
    reads_failed: AtomicU64,
    refuse_suffix_ranges: AtomicBool,
    spare_lists: AtomicBool,
    fault_prefix: std::sync::Mutex<Option<String>>,
    /// Reads of one key wait this long (on top of every GET's latency).
    slow_key: std::sync::Mutex<Option<(Path, Duration)>>,
}

/// How an injected read failure (GET, HEAD or LIST) shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFault {
    /// The server answers with this HTTP status (500 InternalError, 503
    /// SlowDown): an error at once.
    Status(u16),
    /// The request hangs this long, then fails as a client timeout does.
    Timeout(Duration),
}

/// For how long injected read failures last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultWindow {
    /// The next `n` reads fail.
    Attempts(u64),
    /// Every read fails until then.
    Until(std::time::Instant),
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            put_latency_us: AtomicU64::new(0),
            get_latency_us: AtomicU64::new(0),
            fail_next_puts: AtomicU64::new(0),
            fail_all_puts: AtomicBool::new(false),
            fail_puts_to: std::sync::Mutex::new(None),
            puts: AtomicU64::new(0),
            puts_failed: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            read_faults: std::sync::Mutex::new(None),
            reads_failed: AtomicU64::new(0),
            refuse_suffix_ranges: AtomicBool::new(false),
            spare_lists: AtomicBool::new(false),
            fault_prefix: std::sync::Mutex::new(None),
            slow_key: std::sync::Mutex::new(None),
        }
    }

    /// Reads of `key` wait `delay` more than others (`None`: no key is
    /// slower): a request that finishes after one sent later.
    pub fn set_slow_key(&self, slow: Option<(Path, Duration)>) {
        *self
            .slow_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = slow;
    }

    async fn slow_key_gate(&self, location: &Path) {
        let delay = self
            .slow_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|(k, _)| k == location)
            .map(|(_, d)| *d);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }

    /// While set, injected read faults hit only keys (and LIST prefixes)
    /// that start with it, such as `wal/`: the rest of the bucket reads fine.
    pub fn set_fault_prefix(&self, prefix: Option<&str>) {
        *self
            .fault_prefix
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = prefix.map(str::to_owned);
    }

    /// Whether faults may hit `location`.
    fn in_fault_scope(&self, location: Option<&Path>) -> bool {
        let prefix = self
            .fault_prefix
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (prefix.as_deref(), location) {
            (None, _) => true,
            (Some(p), Some(l)) => {
                let l = l.as_ref();
                l.starts_with(p) || p.starts_with(l)
            }
            (Some(_), None) => false,
        }
    }

    /// While true, injected read faults spare LISTs: only GETs and HEADs
    /// fail (a listing that works, then reads of what it listed that do not).
    pub fn set_spare_lists(&self, spare: bool) {
        self.spare_lists.store(spare, Ordering::SeqCst);
    }

    /// The fault a LIST of `prefix` meets, if any.
    fn list_fault(&self, prefix: Option<&Path>) -> Option<ReadFault> {
        if self.spare_lists.load(Ordering::SeqCst) || !self.in_fault_scope(prefix) {
            return None;
        }
        self.read_fault()
    }

    /// While true, a GET with a suffix range (`bytes=-N`) fails with a 500,
    /// as s3s-fs answers one longer than the object.
    pub fn set_refuse_suffix_ranges(&self, refuse: bool) {
        self.refuse_suffix_ranges.store(refuse, Ordering::SeqCst);
    }

    /// Reads (GET, ranged GET, HEAD and LIST) fail as `fault` says, for
    /// `window`; `None` ends it.
    pub fn fail_reads(&self, fault: Option<(ReadFault, FaultWindow)>) {
        *self
            .read_faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fault;
    }

    /// Reads failed on purpose.
    pub fn read_failures(&self) -> u64 {
        self.reads_failed.load(Ordering::SeqCst)
    }

    /// The fault this read meets, if any (a counted window is used up by
    /// one).
    fn read_fault(&self) -> Option<ReadFault> {
        let mut f = self
            .read_faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (fault, window) = (*f)?;
        match window {
            FaultWindow::Attempts(0) => {
                *f = None;
                return None;
            }
            FaultWindow::Attempts(n) => *f = Some((fault, FaultWindow::Attempts(n - 1))),
            FaultWindow::Until(t) if std::time::Instant::now() >= t => {
                *f = None;
                return None;
            }
            FaultWindow::Until(_) => {}
        }
        self.reads_failed.fetch_add(1, Ordering::SeqCst);
        Some(fault)
    }

    /// Fails a read if a fault is on, after its delay.
    async fn read_gate(&self, what: &str, location: Option<&Path>) -> object_store::Result<()> {
        if !self.in_fault_scope(location) {
            return Ok(());
        }
        let Some(fault) = self.read_fault() else {
            return Ok(());
        };
        Err(fault_error(fault, what, location).await)
    }

    /// Every PUT waits this long before it runs (or fails).
    pub fn set_put_latency(&self, latency: Duration) {
        self.put_latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Every GET waits this long before it runs.
    pub fn set_get_latency(&self, latency: Duration) {
        self.get_latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// The next `n` PUTs fail (after their latency).
    pub fn fail_next_puts(&self, n: u64) {
        self.fail_next_puts.store(n, Ordering::SeqCst);
    }

    /// While true, every PUT fails: the bucket is down.
    pub fn set_puts_failing(&self, failing: bool) {
        self.fail_all_puts.store(failing, Ordering::SeqCst);
    }

    /// While set, every PUT to this key fails (others go through).
    pub fn fail_puts_to(&self, key: Option<Path>) {
        *self
            .fail_puts_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }

    /// PUT calls seen, failed or not.
    pub fn put_count(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    /// PUT calls failed on purpose.
    pub fn put_failures(&self) -> u64 {
        self.puts_failed.load(Ordering::SeqCst)
    }

    /// GET calls seen (ranged or not, HEAD included).
    pub fn get_count(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    fn should_fail_put(&self, location: &Path) -> bool {
        if self.fail_all_puts.load(Ordering::SeqCst) {
            return true;
        }
        let to_key = self
            .fail_puts_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if to_key.as_ref() == Some(location) {
            return true;
        }
        drop(to_key);
        self.fail_next_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    async fn put_gate(&self, location: &Path) -> object_store::Result<()> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let latency = self.put_latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if self.should_fail_put(location) {
            self.puts_failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: format!("injected PUT failure for {location}").into(),
            });
        }
        Ok(())
    }
}

/// The error an injected read fault gives, after its delay.
async fn fault_error(fault: ReadFault, what: &str, location: Option<&Path>) -> object_store::Error {
    let at = location.map_or_else(String::new, |l| format!(" {l}"));
    let message = match fault {
        ReadFault::Status(status) => {
            format!("injected {what}{at}: server returned non-2xx status code: {status}")
        }
        ReadFault::Timeout(d) => {
            tokio::time::sleep(d).await;
            format!("injected {what}{at}: operation timed out after {d:?}")
        }
    };
    object_store::Error::Generic {
        store: "FaultyStore",
        source: message.into(),
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.put_gate(location).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.put_gate(location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let latency = self.get_latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        self.slow_key_gate(location).await;
        let what = if options.head { "HEAD" } else { "GET" };
        self.read_gate(what, Some(location)).await?;
        if matches!(options.range, Some(GetRange::Suffix(_)))
            && self.refuse_suffix_ranges.load(Ordering::SeqCst)
        {
            return Err(fault_error(
                ReadFault::Status(500),
                "GET with a suffix range",
                Some(location),
            )
            .await);
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let latency = self.get_latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        self.slow_key_gate(location).await;
        self.read_gate("GET", Some(location)).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.list_fault(prefix) {
            None => self.inner.list(prefix),
            Some(fault) => {
                let prefix = prefix.cloned();
                futures_util::stream::once(async move {
                    Err(fault_error(fault, "LIST", prefix.as_ref()).await)
                })
                .boxed()
            }
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.list_fault(prefix) {
            None => self.inner.list_with_offset(prefix, offset),
            Some(fault) => {
                let prefix = prefix.cloned();
                futures_util::stream::once(async move {
                    Err(fault_error(fault, "LIST", prefix.as_ref()).await)
                })
                .boxed()
            }
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        if let Some(fault) = self.list_fault(prefix) {
            return Err(fault_error(fault, "LIST", prefix).await);
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `caFile` is kept, shown, and read when the store is built: a missing
    /// or empty file is an error naming the parameter.
    #[test]
    fn a_ca_file_for_an_https_endpoint() {
        let uri = BucketUri::parse(
            "s3://b?region=r&endpoint=https://10.0.0.9:9000&caFile=/etc/s3-ca.pem",
        )
        .unwrap();
        assert_eq!(
            s3(&uri).ca_file.as_deref(),
            Some(std::path::Path::new("/etc/s3-ca.pem"))
        );
        assert!(uri.to_string().contains("caFile=/etc/s3-ca.pem"), "{uri}");
        let e = match uri.build_store() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a missing CA file was taken"),
        };
        assert!(e.contains("caFile"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let uri = BucketUri::parse(&format!(
            "s3://b?region=r&endpoint=https://10.0.0.9:9000&caFile={}",
            empty.display()
        ))
        .unwrap();
        let e = match uri.build_store() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a CA file without a certificate was taken"),
        };
        assert!(
            e.contains("caFile") && e.contains("at least one PEM certificate"),
            "{e}"
        );
        assert!(BucketUri::parse("s3://b?region=r&caFile=").is_err());
    }

    fn s3(uri: &BucketUri) -> &S3Bucket {
        match &uri.location {
            BucketLocation::S3(s3) => s3,
            other => panic!("expected s3, got {other:?}"),
        }
    }

    /// Each URI is refused with a config error naming `param`, whose
    /// expectation mentions `expected`.
    fn refused_naming(cases: &[(&str, &str, &str)]) {
        for (uri, param, expected) in cases {
            let (p, e) = err_param(uri);
            assert_eq!(p, *param, "{uri}");
            assert!(
                e.contains(expected),
                "{uri}: expected {expected:?} in {e:?}"
            );
        }
    }

    fn err_param(s: &str) -> (String, String) {
        match BucketUri::parse(s) {
            Err(WalError::Config {
                param, expected, ..
            }) => (param, expected),
            other => panic!("{s}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_automq_uri() {
        let u = BucketUri::parse(
            "0@s3://my-bucket?region=us-east-1&endpoint=http://127.0.0.1:9000&pathStyle=true\
             &authType=static&accessKey=AK&secretKey=S%2Fk&batchInterval=100&maxBytesInBatch=1048576",
        )
        .unwrap();
        assert_eq!(u.id, Some(0));
        assert_eq!(u.batch_interval, Duration::from_millis(100));
        assert_eq!(u.max_bytes_in_batch, 1 << 20);
        let b = s3(&u);
        assert_eq!(b.bucket, "my-bucket");
        assert_eq!(b.region, "us-east-1");
        assert_eq!(
            b.endpoint.as_ref().unwrap().as_str(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(b.path_style, Some(true));
        assert_eq!(b.auth, Some(AuthType::Static));
        assert_eq!(b.access_key.as_deref(), Some("AK"));
        assert_eq!(b.secret_key.as_ref().unwrap().expose(), "S/k");
    }

    #[test]
    fn defaults_apply() {
        let u = BucketUri::parse("s3://b?region=eu-west-1").unwrap();
        assert_eq!(u.id, None);
        assert_eq!(u.batch_interval, BATCH_INTERVAL_DEFAULT);
        assert_eq!(u.max_bytes_in_batch, MAX_BYTES_IN_BATCH_DEFAULT);
        assert_eq!(s3(&u).path_style, None);
        assert_eq!(s3(&u).auth, None);
    }

    #[test]
    fn file_uri_is_a_directory() {
        let u: BucketUri = "1@file:///tmp/ferry-bucket?batchInterval=5"
            .parse()
            .unwrap();
        assert_eq!(u.id, Some(1));
        assert_eq!(
            u.location,
            BucketLocation::File {
                dir: PathBuf::from("/tmp/ferry-bucket"),
                direct_io: true,
            }
        );
        assert_eq!(u.batch_interval, Duration::from_millis(5));
        let buffered: BucketUri = "file:///tmp/b?directIo=false".parse().unwrap();
        assert!(matches!(
            buffered.location,
            BucketLocation::File {
                direct_io: false,
                ..
            }
        ));
        assert_eq!(buffered.to_string(), "file:///tmp/b?directIo=false");
        let e = "file:///tmp/b?directIo=maybe"
            .parse::<BucketUri>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("directIo") && e.contains("true or false"), "{e}");
        let e = "s3://b?region=r&directIo=false"
            .parse::<BucketUri>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("directIo"), "{e}");
    }

    #[test]
    fn bad_values_name_the_parameter_and_what_was_expected() {
        let cases = [
            (
                "s3://b?region=r&batchInterval=0",
                "batchInterval",
                "milliseconds",
            ),
            (
                "s3://b?region=r&batchInterval=abc",
                "batchInterval",
                "milliseconds",
            ),
            (
                "s3://b?region=r&maxBytesInBatch=-1",
                "maxBytesInBatch",
                "bytes",
            ),
            (
                "s3://b?region=r&pathStyle=yes",
                "pathStyle",
                "true or false",
            ),
            (
                "s3://b?region=r&authType=magic",
                "authType",
                "static or instance",
            ),
            ("s3://b?region=r&endpoint=ftp://x", "endpoint", "http"),
            ("s3://b?region=r&colour=blue", "colour", "known parameter"),
            ("s3://b?region=r&region=s", "region", "once"),
            ("s3://b", "region", "region=R"),
            ("s3://?region=r", "bucket", "bucket name"),
            ("s3://b/some/path?region=r", "bucket URI path", "no path"),
            ("gs://b?region=r", "bucket URI scheme", "s3 or file"),
            ("file:///d?region=r", "region", "file://"),
            ("file://relative/dir", "file URI", "three slashes"),
            ("99999@s3://b?region=r", "bucket id", "0..=65535"),
            (
                "s3://b?region=r&authType=instance&accessKey=a",
                "authType",
                "static",
            ),
            ("not a uri", "bucket URI", "s3://"),
        ];
        refused_naming(&cases);
    }

    #[test]
    fn secret_key_never_printed() {
        let u = BucketUri::parse("s3://b?region=r&accessKey=AK&secretKey=hunter2secret").unwrap();
        let debug = format!("{u:?}");
        let display = u.to_string();
        assert!(!debug.contains("hunter2secret"), "{debug}");
        assert!(!display.contains("hunter2secret"), "{display}");
        assert!(display.contains("secretKey=[redacted]"), "{display}");
        assert!(display.contains("accessKey=AK"), "{display}");
        // Nor in the error for a bad URI that carries one.
        let err = BucketUri::parse("s3://b?region=r&secretKey=hunter2secret&bad=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
        let err =
            BucketUri::parse("s3://b?region=r&secretKey=hunter2secret&secretKey=x").unwrap_err();
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
        let err = BucketUri::parse("zz:/ /?secretKey=hunter2secret").unwrap_err();
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        let text = "3@s3://b?region=r&endpoint=http://localhost:9000&pathStyle=false&authType=instance&batchInterval=100";
        let u = BucketUri::parse(text).unwrap();
        assert_eq!(u.to_string(), text);
        assert_eq!(BucketUri::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn static_auth_needs_keys_from_somewhere() {
        let u = BucketUri::parse("s3://b?region=r&authType=static").unwrap();
        let none = |_: &str| None;
        let err = u.build_store_with_env(&none).unwrap_err();
        assert!(
            matches!(&err, WalError::Config { param, .. } if param == "accessKey/secretKey"),
            "{err}"
        );
        // KAFKA_S3_* variables fill in.
        let kafka = |k: &str| match k {
            "KAFKA_S3_ACCESS_KEY" => Some("AK".to_string()),
            "KAFKA_S3_SECRET_KEY" => Some("SK".to_string()),
            _ => None,
        };
        u.build_store_with_env(&kafka).unwrap();
        // So do the AWS ones.
        let aws = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            _ => None,
        };
        u.build_store_with_env(&aws).unwrap();
        // Half a pair is an error that names both keys.
        let half = |k: &str| (k == "KAFKA_S3_ACCESS_KEY").then(|| "AK".to_string());
        let err = u.build_store_with_env(&half).unwrap_err();
        assert!(err.to_string().contains("only one of the two"), "{err}");
        // Instance auth needs no keys.
        let u = BucketUri::parse("s3://b?region=r&authType=instance").unwrap();
        u.build_store_with_env(&none).unwrap();
    }

    #[test]
    fn file_bucket_directory_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/bucket");
        let u = BucketUri::parse(&format!("file://{}", dir.display())).unwrap();
        let direct = u.build_store().unwrap();
        assert!(dir.is_dir());
        assert!(
            direct.to_string().starts_with("DirectDirStore("),
            "{direct}"
        );
        let u = BucketUri::parse(&format!("file://{}?directIo=false", dir.display())).unwrap();
        let buffered = u.build_store().unwrap();
        assert!(
            buffered.to_string().starts_with("LocalFileSystem("),
            "{buffered}"
        );
    }

    #[test]
    fn latency_model_parameters_parse_and_round_trip() {
        let text = "0@file:///tmp/b?batchInterval=100&putLatencyP50Ms=50&putLatencyP99Ms=300\
                    &getLatencyP50Ms=12.5&getLatencyP99Ms=80&latencyMsPerMiB=20";
        let u = BucketUri::parse(text).unwrap();
        assert_eq!(
            u.latency,
            LatencyModel {
                put: Some(LatencyQuantiles {
                    p50_us: 50_000,
                    p99_us: 300_000,
                    p999_us: None,
                }),
                get: Some(LatencyQuantiles {
                    p50_us: 12_500,
                    p99_us: 80_000,
                    p999_us: None,
                }),
                us_per_mib: 20_000,
                ..LatencyModel::default()
            }
        );
        assert_eq!(u.to_string(), text);
        assert_eq!(BucketUri::parse(&u.to_string()).unwrap(), u);
        // S3 URIs take them too; without them the model is off.
        let s = BucketUri::parse("s3://b?region=r&latencyMsPerMiB=0.5").unwrap();
        assert_eq!(s.latency.us_per_mib, 500);
        assert!(s.latency.put.is_none() && !s.latency.is_off());
        assert!(BucketUri::parse("file:///tmp/b").unwrap().latency.is_off());
    }

    #[test]
    fn bad_latency_values_name_the_key_and_what_was_expected() {
        let cases = [
            (
                "file:///d?putLatencyP50Ms=0&putLatencyP99Ms=5",
                "putLatencyP50Ms",
                "greater than 0",
            ),
            (
                "file:///d?putLatencyP50Ms=abc&putLatencyP99Ms=5",
                "putLatencyP50Ms",
                "milliseconds",
            ),
            (
                "file:///d?getLatencyP50Ms=1&getLatencyP99Ms=NaN",
                "getLatencyP99Ms",
                "milliseconds",
            ),
            (
                "file:///d?getLatencyP50Ms=1&getLatencyP99Ms=600001",
                "getLatencyP99Ms",
                "at most 600000",
            ),
            (
                "file:///d?putLatencyP50Ms=50",
                "putLatencyP99Ms",
                "both or neither",
            ),
            (
                "file:///d?getLatencyP99Ms=50",
                "getLatencyP50Ms",
                "both or neither",
            ),
            (
                "file:///d?putLatencyP50Ms=50&putLatencyP99Ms=10",
                "putLatencyP99Ms",
                "at least putLatencyP50Ms (50)",
            ),
            (
                "file:///d?latencyMsPerMiB=-1",
                "latencyMsPerMiB",
                "from 0 to 60000",
            ),
            (
                "file:///d?latencyMsPerMiB=1&latencyMsPerMiB=2",
                "latencyMsPerMiB",
                "once",
            ),
            ("file:///d?putLatency=5", "putLatency", "putLatencyP50Ms"),
            (
                "s3://b?region=r&getLatencyP50Ms=inf&getLatencyP99Ms=1",
                "getLatencyP50Ms",
                "milliseconds",
            ),
        ];
        refused_naming(&cases);
    }

    /// The `q`-quantile of sorted samples, nearest rank.
    fn quantile(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    fn store_with(model: LatencyModel, seed: u64) -> LatencyStore {
        let tmp = std::env::temp_dir();
        let fs = LocalFileSystem::new_with_prefix(tmp).unwrap();
        LatencyStore::new(Arc::new(fs), model, seed)
    }

    #[test]
    fn drawn_latencies_have_the_configured_p50_and_p99() {
        // 200,000 draws: the standard error of the empirical p99 of a
        // log-normal with sigma = ln(300/50)/2.326 = 0.770 is about 1%, of the
        // p50 under 0.5%; 3% and 5% leave room and still catch a wrong z99
        // (z = 2 would put the p99 at 50 x 6^(2.326/2) = 401 ms).
        for (p50_ms, p99_ms, seed) in [(50.0, 300.0, 1), (10.0, 12.0, 2), (20.0, 400.0, 3)] {
            let store = store_with(
                LatencyModel {
                    put: Some(LatencyQuantiles {
                        p50_us: (p50_ms * 1e3) as u64,
                        p99_us: (p99_ms * 1e3) as u64,
                        p999_us: None,
                    }),
                    get: None,
                    us_per_mib: 0,
                    ..LatencyModel::default()
                },
                seed,
            );
            let mut draws: Vec<f64> = (0..200_000)
                .map(|_| store.put_delay(0).as_secs_f64() * 1e3)
                .collect();
            draws.sort_by(f64::total_cmp);
            let (got50, got99) = (quantile(&draws, 0.5), quantile(&draws, 0.99));
            assert!(
                (got50 / p50_ms - 1.0).abs() < 0.03,
                "p50 {got50} ms, configured {p50_ms}"
            );
            assert!(
                (got99 / p99_ms - 1.0).abs() < 0.05,
                "p99 {got99} ms, configured {p99_ms}"
            );
            // And the model is spread, not constant, when p99 > p50.
            assert!(draws[0] < p50_ms && draws[draws.len() - 1] > p99_ms);
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_latencies() {
        let model = LatencyModel {
            put: Some(LatencyQuantiles {
                p50_us: 1_000,
                p99_us: 9_000,
                p999_us: None,
            }),
            get: None,
            us_per_mib: 0,
            ..LatencyModel::default()
        };
        let (a, b, c) = (
            store_with(model, 7),
            store_with(model, 7),
            store_with(model, 8),
        );
        let draw = |s: &LatencyStore| (0..50).map(|_| s.put_delay(0)).collect::<Vec<_>>();
        let (da, db, dc) = (draw(&a), draw(&b), draw(&c));
        assert_eq!(da, db);
        assert_ne!(da, dc);
    }

    #[test]
    fn each_mib_adds_its_fixed_cost() {
        // PUT constant at 10 ms (p50 = p99, sigma 0), 20 ms per MiB:
        // 4 MiB = 10 + 4 x 20 = 90 ms; 512 KiB = 10 + 10 = 20 ms.
        // GET has no distribution: 1 MiB = 20 ms, nothing = 0.
        let store = store_with(
            LatencyModel {
                put: Some(LatencyQuantiles {
                    p50_us: 10_000,
                    p99_us: 10_000,
                    p999_us: None,
                }),
                get: None,
                us_per_mib: 20_000,
                ..LatencyModel::default()
            },
            1,
        );
        assert_eq!(store.put_delay(4 << 20), Duration::from_millis(90));
        assert_eq!(store.put_delay(512 << 10), Duration::from_millis(20));
        assert_eq!(store.get_delay(1 << 20), Duration::from_millis(20));
        assert_eq!(store.get_delay(0), Duration::ZERO);
    }

    #[test]
    fn log_normal_fits_both_quantiles() {
        // mu = ln 50; sigma = ln 6 / 2.3263 = 0.77021; at z = 0 the median,
        // at z = z99 exactly the p99.
        let d = LogNormal::from_quantiles(50.0, 300.0);
        assert!((d.mu - 50f64.ln()).abs() < 1e-12);
        assert!((d.sigma - 0.770_21).abs() < 1e-5, "{}", d.sigma);
        assert!((d.at(0.0) - 50.0).abs() < 1e-9);
        assert!((d.at(Z_99) - 300.0).abs() < 1e-9);
    }

    #[test]
    fn standard_normal_draws_have_mean_zero_and_unit_variance() {
        // 100,000 draws: standard error of the mean 0.003, of the variance
        // about 0.0045; and 1% of them above z99.
        let rng = SplitMix64::new(42);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let above = xs.iter().filter(|x| **x > Z_99).count() as f64 / n as f64;
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!((var - 1.0).abs() < 0.025, "variance {var}");
        assert!((above - 0.01).abs() < 0.0015, "above z99: {above}");
    }

    #[test]
    fn a_uri_with_the_model_delays_puts_and_gets() {
        // Constant 40 ms PUTs and 30 ms GETs through build_store, as the node
        // builds its store; without the parameters nothing waits.
        use object_store::ObjectStoreExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let slow = BucketUri::parse(&format!(
            "file://{}?putLatencyP50Ms=40&putLatencyP99Ms=40&getLatencyP50Ms=30&getLatencyP99Ms=30",
            tmp.path().join("slow").display()
        ))
        .unwrap()
        .build_store()
        .unwrap();
        let fast = BucketUri::parse(&format!("file://{}", tmp.path().join("fast").display()))
            .unwrap()
            .build_store()
            .unwrap();
        let key = Path::from("a/b");
        rt.block_on(async {
            let t = std::time::Instant::now();
            slow.put(&key, PutPayload::from_static(b"hello"))
                .await
                .unwrap();
            let put = t.elapsed();
            let t = std::time::Instant::now();
            let got = slow.get(&key).await.unwrap().bytes().await.unwrap();
            let get = t.elapsed();
            assert_eq!(&got[..], b"hello");
            assert!(put >= Duration::from_millis(40), "PUT took {put:?}");
            assert!(get >= Duration::from_millis(30), "GET took {get:?}");
            let t = std::time::Instant::now();
            fast.put(&key, PutPayload::from_static(b"hello"))
                .await
                .unwrap();
            fast.get(&key).await.unwrap().bytes().await.unwrap();
            assert!(t.elapsed() < Duration::from_millis(30), "{:?}", t.elapsed());
        });
        assert!(slow.to_string().starts_with("LatencyStore("), "{slow}");
    }

    #[test]
    fn tail_fault_and_cap_parameters_parse_and_round_trip() {
        let text = "0@file:///tmp/b?putLatencyP50Ms=50&putLatencyP99Ms=300&putLatencyP999Ms=1500\
                    &getLatencyP50Ms=10&getLatencyP99Ms=80&getLatencyP999Ms=400.5\
                    &slowDownRate=0.01&serverErrorRate=0.002&stallRate=0.005\
                    &prefixPutsPerSecond=3500&prefixGetsPerSecond=5500&hedge=false";
        let u = BucketUri::parse(text).unwrap();
        assert_eq!(
            u.latency,
            LatencyModel {
                put: Some(LatencyQuantiles {
                    p50_us: 50_000,
                    p99_us: 300_000,
                    p999_us: Some(1_500_000),
                }),
                get: Some(LatencyQuantiles {
                    p50_us: 10_000,
                    p99_us: 80_000,
                    p999_us: Some(400_500),
                }),
                us_per_mib: 0,
                slow_down_ppm: 10_000,
                server_error_ppm: 2_000,
                stall_ppm: 5_000,
                prefix_puts_per_second: Some(3_500),
                prefix_gets_per_second: Some(5_500),
            }
        );
        assert_eq!(u.hedge, Some(false));
        assert_eq!(u.to_string(), text);
        assert_eq!(BucketUri::parse(&u.to_string()).unwrap(), u);
        // The same parameters in an s3:// URI; rates that add up to exactly 1.
        let text = "s3://b?region=r&slowDownRate=0.5&serverErrorRate=0.25&stallRate=0.25\
                    &prefixPutsPerSecond=1&hedge=true";
        let s = BucketUri::parse(text).unwrap();
        assert_eq!(s.latency.fault_ppm(), RATE_PPM_ONE);
        assert_eq!(s.to_string(), text);
        // Any one of them alone turns the model on.
        for param in [
            "slowDownRate=0.01",
            "serverErrorRate=0.01",
            "stallRate=0.000001",
            "prefixPutsPerSecond=10",
            "prefixGetsPerSecond=10",
        ] {
            let u = BucketUri::parse(&format!("file:///tmp/b?{param}")).unwrap();
            assert!(!u.latency.is_off(), "{param}");
        }
        // A rate of 0 is no rate, and is not shown.
        let zero = BucketUri::parse("file:///tmp/b?stallRate=0").unwrap();
        assert!(zero.latency.is_off());
        assert_eq!(zero.to_string(), "file:///tmp/b");
    }

    #[test]
    fn bad_tail_fault_and_cap_values_name_the_key() {
        let cases = [
            (
                "file:///d?putLatencyP999Ms=500",
                "putLatencyP999Ms",
                "to be given with putLatencyP50Ms and putLatencyP99Ms",
            ),
            (
                "file:///d?getLatencyP50Ms=10&getLatencyP99Ms=80&getLatencyP999Ms=50",
                "getLatencyP999Ms",
                "at least getLatencyP99Ms (80)",
            ),
            (
                "file:///d?putLatencyP50Ms=10&putLatencyP99Ms=80&putLatencyP999Ms=0",
                "putLatencyP999Ms",
                "greater than 0",
            ),
            (
                "file:///d?slowDownRate=-0.1",
                "slowDownRate",
                "fraction from 0 to 1",
            ),
            (
                "file:///d?serverErrorRate=1.5",
                "serverErrorRate",
                "fraction from 0 to 1",
            ),
            (
                "file:///d?stallRate=NaN",
                "stallRate",
                "fraction from 0 to 1",
            ),
            (
                "file:///d?stallRate=0.0000001",
                "stallRate",
                "to the millionth",
            ),
            ("s3://b?region=r&stallRate=2", "stallRate", "fraction"),
            (
                "file:///d?slowDownRate=0.5&serverErrorRate=0.4&stallRate=0.2",
                FAULT_RATES_SUM,
                "a sum of at most 1",
            ),
            (
                "file:///d?prefixPutsPerSecond=0",
                "prefixPutsPerSecond",
                "requests per second in 1..=1000000",
            ),
            (
                "file:///d?prefixGetsPerSecond=-5",
                "prefixGetsPerSecond",
                "requests per second",
            ),
            (
                "file:///d?prefixGetsPerSecond=1.5",
                "prefixGetsPerSecond",
                "requests per second",
            ),
            ("file:///d?hedge=maybe", "hedge", "true or false"),
            ("file:///d?colour=blue", "colour", "stallRate"),
            ("s3://b?region=r&colour=blue", "colour", "hedge"),
        ];
        refused_naming(&cases);
    }

    #[test]
    fn hedging_is_on_for_s3_and_the_model_unless_turned_off() {
        let hedging = |uri: &str| BucketUri::parse(uri).unwrap().hedging();
        assert!(hedging("s3://b?region=r"));
        assert!(!hedging("s3://b?region=r&hedge=false"));
        assert!(!hedging("file:///tmp/b"));
        assert!(hedging("file:///tmp/b?hedge=true"));
        assert!(hedging(
            "file:///tmp/b?putLatencyP50Ms=50&putLatencyP99Ms=300"
        ));
        assert!(hedging("file:///tmp/b?stallRate=0.01"));
        assert!(!hedging(
            "file:///tmp/b?putLatencyP50Ms=50&putLatencyP99Ms=300&hedge=false"
        ));
        // Shown only when given.
        let u = BucketUri::parse("file:///tmp/b?hedge=true").unwrap();
        assert_eq!(u.to_string(), "file:///tmp/b?hedge=true");
        assert_eq!(BucketUri::parse("s3://b?region=r").unwrap().hedge, None);
    }

    #[test]
    fn the_tail_bends_to_the_configured_p999() {
        // 1,000,000 draws: 1,000 above the p99.9. The standard error of the
        // empirical p99.9 is about 2% here (the tail's slope is
        // ln 5 / 0.764 = 2.1 per unit of z, and z's quantile error is 0.01),
        // so 10% is five of them; the p99 is held to 5% as before.
        let quantiles = |p999_us: Option<u64>, seed: u64| {
            let store = store_with(
                LatencyModel {
                    put: Some(LatencyQuantiles {
                        p50_us: 50_000,
                        p99_us: 300_000,
                        p999_us,
                    }),
                    ..LatencyModel::default()
                },
                seed,
            );
            let mut draws: Vec<f64> = (0..1_000_000)
                .map(|_| store.put_delay(0).as_secs_f64() * 1e3)
                .collect();
            draws.sort_by(f64::total_cmp);
            (
                quantile(&draws, 0.5),
                quantile(&draws, 0.99),
                quantile(&draws, 0.999),
            )
        };
        let (p50, p99, p999) = quantiles(Some(1_500_000), 11);
        assert!((p50 / 50.0 - 1.0).abs() < 0.03, "p50 {p50} ms");
        assert!((p99 / 300.0 - 1.0).abs() < 0.05, "p99 {p99} ms");
        assert!((p999 / 1_500.0 - 1.0).abs() < 0.10, "p99.9 {p999} ms");
        // Without it, the p99.9 is the plain log-normal's: 50 x 6^(z999/z99)
        // = 540 ms.
        let plain = LogNormal::from_quantiles(50.0, 300.0).at(Z_999);
        assert!((plain - 540.0).abs() < 1.0, "{plain}");
        let (_, p99, p999) = quantiles(None, 11);
        assert!((p99 / 300.0 - 1.0).abs() < 0.05, "p99 {p99} ms");
        assert!((p999 / plain - 1.0).abs() < 0.10, "p99.9 {p999} ms");
    }

    #[test]
    fn tailed_log_normal_is_continuous_and_hits_p999() {
        let d = TailedLogNormal::from_quantiles(50.0, 300.0, Some(1_500.0));
        assert!((d.at(Z_99) - 300.0).abs() < 1e-9);
        assert!((d.at(Z_999) - 1_500.0).abs() < 1e-6, "{}", d.at(Z_999));
        // Below z99 it is the body.
        assert_eq!(d.at(1.0), d.body.at(1.0));
        assert_eq!(d.at(-2.0), d.body.at(-2.0));
        // Without a p999 it is the log-normal everywhere.
        let plain = TailedLogNormal::from_quantiles(50.0, 300.0, None);
        assert_eq!(plain.at(3.5), plain.body.at(3.5));
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// A model over an in-memory store, and that store, to look behind the model.
    fn in_memory_with(
        model: LatencyModel,
        seed: u64,
    ) -> (Arc<object_store::memory::InMemory>, LatencyStore) {
        let inner = Arc::new(object_store::memory::InMemory::new());
        let store = LatencyStore::new(inner.clone(), model, seed);
        (inner, store)
    }

    /// Within four standard deviations of `n` draws at rate `p`.
    fn about(count: usize, n: usize, p: f64) -> bool {
        let (n, count) = (n as f64, count as f64);
        (count - n * p).abs() <= 4.0 * (n * p * (1.0 - p)).sqrt()
    }

    #[test]
    fn refused_requests_are_recognised_and_never_reach_the_store() {
        use object_store::ObjectStoreExt as _;
        let n = 4_000;
        for (model, slow_down) in [
            (
                LatencyModel {
                    slow_down_ppm: 50_000,
                    ..LatencyModel::default()
                },
                true,
            ),
            (
                LatencyModel {
                    server_error_ppm: 50_000,
                    ..LatencyModel::default()
                },
                false,
            ),
        ] {
            let (inner, store) = in_memory_with(model, 5);
            runtime().block_on(async {
                let mut refused = Vec::new();
                for i in 0..n {
                    let key = Path::from(format!("wal/1/{i:020}.wal"));
                    match store.put(&key, PutPayload::from_static(b"x")).await {
                        Ok(_) => {}
                        Err(e) => {
                            assert_eq!(is_slow_down(&e), slow_down, "{e}");
                            assert_eq!(is_server_error(&e), !slow_down, "{e}");
                            refused.push(key);
                        }
                    }
                }
                assert!(about(refused.len(), n, 0.05), "{} refused", refused.len());
                for key in &refused {
                    let e = inner.head(key).await.unwrap_err();
                    assert!(matches!(e, object_store::Error::NotFound { .. }), "{e}");
                }
                let stored = inner.list(None).count().await;
                assert_eq!(stored, n - refused.len());
                // GETs of objects that are there are refused at the same rate.
                let key = Path::from("wal/1/00000000000000000000.wal");
                inner
                    .put(&key, PutPayload::from_static(b"x"))
                    .await
                    .unwrap();
                let mut refused = 0;
                for _ in 0..n {
                    if let Err(e) = store.get(&key).await {
                        assert_eq!(is_slow_down(&e), slow_down, "{e}");
                        refused += 1;
                    }
                }
                assert!(about(refused, n, 0.05), "{refused} GETs refused");
            });
        }
    }

    #[test]
    fn a_stalled_request_never_answers_and_writes_nothing() {
        use object_store::ObjectStoreExt as _;
        let (inner, store) = in_memory_with(
            LatencyModel {
                stall_ppm: RATE_PPM_ONE,
                ..LatencyModel::default()
            },
            3,
        );
        let key = Path::from("wal/2/00000000000000000007.wal");
        let wait = Duration::from_millis(50);
        runtime().block_on(async {
            let put = tokio::time::timeout(wait, store.put(&key, PutPayload::from_static(b"x")));
            assert!(put.await.is_err(), "a stalled PUT answered");
            assert!(inner.head(&key).await.is_err(), "a stalled PUT wrote");
            inner
                .put(&key, PutPayload::from_static(b"x"))
                .await
                .unwrap();
            let get = tokio::time::timeout(wait, store.get(&key));
            assert!(get.await.is_err(), "a stalled GET answered");
        });
    }

    #[test]
    fn a_prefix_past_its_cap_is_slowed_down_for_the_rest_of_its_second() {
        use object_store::ObjectStoreExt as _;
        let base = std::time::Instant::now();
        let elapsed_ms = Arc::new(AtomicU64::new(0));
        let clock = {
            let elapsed_ms = elapsed_ms.clone();
            ModelClock::new(move || base + Duration::from_millis(elapsed_ms.load(Ordering::SeqCst)))
        };
        let (inner, store) = in_memory_with(
            LatencyModel {
                prefix_puts_per_second: Some(10),
                ..LatencyModel::default()
            },
            1,
        );
        let store = store.with_clock(clock);
        let put = |prefix: &str, i: u32| {
            let key = Path::from(format!("{prefix}/{i:020}.wal"));
            let store = &store;
            async move { store.put(&key, PutPayload::from_static(b"x")).await }
        };
        runtime().block_on(async {
            for i in 0..10 {
                put("wal/3", i).await.unwrap();
            }
            let e = put("wal/3", 10).await.unwrap_err();
            assert!(is_slow_down(&e), "{e}");
            assert!(inner
                .head(&Path::from("wal/3/00000000000000000010.wal"))
                .await
                .is_err());
            // Another prefix has its own window; GETs have no cap here.
            put("wal/4", 0).await.unwrap();
            store
                .get(&Path::from("wal/3/00000000000000000000.wal"))
                .await
                .unwrap();
            // Still the same second: still refused.
            elapsed_ms.store(999, Ordering::SeqCst);
            assert!(is_slow_down(&put("wal/3", 11).await.unwrap_err()));
            // A new window.
            elapsed_ms.store(1_000, Ordering::SeqCst);
            put("wal/3", 12).await.unwrap();
        });
        assert_eq!(
            key_prefix(&Path::from("wal/3/00000000000000000012.wal")),
            "wal/3"
        );
        assert_eq!(key_prefix(&Path::from("top")), "");
    }

    #[test]
    fn real_s3_slow_downs_and_internal_errors_are_recognised_by_their_text() {
        // What object_store 0.14's S3 client returns after its retries: a
        // Generic error whose (private) source prints the status and body.
        let s3 = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        };
        let slow = s3(
            "Error performing PUT http://127.0.0.1:9000/b/wal/1/00000000000000000001.wal in \
             1.2s, after 2 retries, max_retries: 2, retry_timeout: 10s  - Server returned \
             non-2xx status code: 503 Service Unavailable: <?xml version=\"1.0\"?><Error>\
             <Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
        );
        assert!(is_slow_down(&slow) && !is_server_error(&slow));
        // A 503 without a body (a HEAD); a 200 whose body holds SlowDown.
        assert!(is_slow_down(&s3(
            "Error performing HEAD http://h/b/k in 3ms - Server returned non-2xx status \
             code: 503 Service Unavailable: "
        )));
        assert!(is_slow_down(&s3(
            "Error performing PUT http://h/b/k in 3ms - Server returned error response: \
             <Error><Code>SlowDown</Code></Error>"
        )));
        let internal = s3(
            "Error performing GET http://h/b/wal/1/00000000000000000503.wal in 3ms - Server \
             returned non-2xx status code: 500 Internal Server Error: \
             <Error><Code>InternalError</Code></Error>",
        );
        // The key's "503" is not a status.
        assert!(is_server_error(&internal) && !is_slow_down(&internal));
        let other = s3("Error performing GET http://h/b/k in 3ms - connection reset");
        assert!(!is_slow_down(&other) && !is_server_error(&other));
        // The model's own errors, by type and by text.
        let model = ModelFault::SlowDown.into_store_error();
        assert!(is_slow_down(&model) && !is_server_error(&model));
        assert!(model.to_string().contains("503 SlowDown"), "{model}");
        let model = ModelFault::InternalError.into_store_error();
        assert!(is_server_error(&model) && !is_slow_down(&model));
        assert!(model.to_string().contains("500 InternalError"), "{model}");
        // FaultyStore's injected statuses read the same way.
        let injected = s3("injected GET k: server returned non-2xx status code: 503");
        assert!(is_slow_down(&injected));
    }

    #[test]
    fn ip_endpoints_default_to_path_style() {
        let ip: Url = "http://127.0.0.1:9000".parse().unwrap();
        let host: Url = "https://storage.example.com".parse().unwrap();
        let local: Url = "http://localhost:9000".parse().unwrap();
        assert!(host_cannot_be_virtual(&ip));
        assert!(host_cannot_be_virtual(&local));
        assert!(!host_cannot_be_virtual(&host));
    }
}
