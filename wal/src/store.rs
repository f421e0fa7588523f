//! Where objects go: parsing bucket URIs and building the object store.
//!
//! Ferry takes AutoMQ's bucket URIs (the value after `ID@` in
//! `s3.data.buckets`, `s3.wal.path` and `automq.zonerouter.channels`):
//!
//! ```text
//! [ID@]s3://BUCKET?region=R[&endpoint=URL][&pathStyle=true|false]
//!     [&authType=static|instance][&accessKey=..][&secretKey=..][&caFile=PATH]
//!     [&batchInterval=MS][&maxBytesInBatch=BYTES]
//! [ID@]file:///some/dir[?batchInterval=MS][&maxBytesInBatch=BYTES][&directIo=true|false]
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
//! `maxBytesInBatch` setting looks alike on it. Five optional parameters, in
//! either kind of URI, make [`BucketUri::build_store`] wrap the store in a
//! [`LatencyStore`] that delays each request the way S3 does:
//!
//! ```text
//! putLatencyP50Ms=MS&putLatencyP99Ms=MS   PUT latency: median and 99th percentile
//! getLatencyP50Ms=MS&getLatencyP99Ms=MS   GET (and HEAD) latency, the same way
//! latencyMsPerMiB=MS                      added per MiB sent or received
//! ```
//!
//! e.g. `s3.wal.path=0@file:///tmp/b?batchInterval=100&putLatencyP50Ms=50&putLatencyP99Ms=300&latencyMsPerMiB=20`.
//! Each pair is given together or not at all, with `0 < p50 <= p99 <=
//! 600000`; fractions of a millisecond are kept to the microsecond. A
//! request's delay is drawn from the log-normal distribution that has that
//! median and that 99th percentile (see [`LogNormal::from_quantiles`]), plus
//! `latencyMsPerMiB` x its size in MiB, a fixed cost (so the p99 of a 4 MiB
//! PUT is `putLatencyP99Ms + 4 x latencyMsPerMiB`). The size of a PUT is its
//! payload, of a GET the bytes it returns (none for a HEAD); a multipart
//! upload is delayed once, when it starts, without the per-MiB cost. LIST,
//! DELETE, COPY and RENAME are not delayed.

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
}

/// The median and 99th percentile of a request latency, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyQuantiles {
    pub p50_us: u64,
    pub p99_us: u64,
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
}

impl LatencyModel {
    /// True when it delays nothing.
    pub fn is_off(&self) -> bool {
        self.put.is_none() && self.get.is_none() && self.us_per_mib == 0
    }
}

const LATENCY_PARAMS: &str =
    "putLatencyP50Ms, putLatencyP99Ms, getLatencyP50Ms, getLatencyP99Ms, latencyMsPerMiB";

const S3_PARAMS: &str = "region, endpoint, pathStyle, authType, accessKey, secretKey, caFile, \
     batchInterval, maxBytesInBatch, putLatencyP50Ms, putLatencyP99Ms, getLatencyP50Ms, \
     getLatencyP99Ms, latencyMsPerMiB";

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

/// Checks one latency pair: both or neither, `p50 <= p99`.
fn latency_pair(
    kind: &str,
    p50: Option<u64>,
    p99: Option<u64>,
) -> Result<Option<LatencyQuantiles>, WalError> {
    let (p50_key, p99_key) = (format!("{kind}LatencyP50Ms"), format!("{kind}LatencyP99Ms"));
    match (p50, p99) {
        (None, None) => Ok(None),
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
        (Some(p50_us), Some(p99_us)) => Ok(Some(LatencyQuantiles { p50_us, p99_us })),
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
        let mut us_per_mib = 0;
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
                "latencyMsPerMiB" => {
                    us_per_mib = parse_ms(&key, &value, 0.0, false, LATENCY_MS_PER_MIB_MAX)?;
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
                            "only batchInterval, maxBytesInBatch, directIo or the latency model \
                             ({LATENCY_PARAMS}) in a file:// URI"
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
            put: latency_pair("put", put_p50, put_p99)?,
            get: latency_pair("get", get_p50, get_p99)?,
            us_per_mib,
        };
        Ok(BucketUri {
            id,
            location,
            batch_interval,
            max_bytes_in_batch,
            latency,
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
        tracing::info!(model = ?self.latency, "S3 latency model on: requests are delayed");
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
        for (kind, q) in [("put", self.latency.put), ("get", self.latency.get)] {
            if let Some(q) = q {
                let (p50, p99) = match kind {
                    "put" => ("putLatencyP50Ms", "putLatencyP99Ms"),
                    _ => ("getLatencyP50Ms", "getLatencyP99Ms"),
                };
                params.push((p50, ms(q.p50_us)));
                params.push((p99, ms(q.p99_us)));
            }
        }
        if self.latency.us_per_mib > 0 {
            params.push(("latencyMsPerMiB", ms(self.latency.us_per_mib)));
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

/// Delays PUTs and GETs by the S3 latency model (see the module doc). The
/// delay goes through tokio time, so the store must be called on a tokio
/// runtime (the WAL's I/O runtime is one); called elsewhere, it delays
/// nothing and says so once.
#[derive(Debug)]
pub struct LatencyStore {
    inner: Arc<dyn ObjectStore>,
    model: LatencyModel,
    put: Option<LogNormal>,
    get: Option<LogNormal>,
    rng: SplitMix64,
    warned_no_runtime: AtomicBool,
}

impl LatencyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, model: LatencyModel, seed: u64) -> LatencyStore {
        let dist = |q: Option<LatencyQuantiles>| {
            q.map(|q| LogNormal::from_quantiles(q.p50_us as f64, q.p99_us as f64))
        };
        LatencyStore {
            inner,
            model,
            put: dist(model.put),
            get: dist(model.get),
            rng: SplitMix64::new(seed),
            warned_no_runtime: AtomicBool::new(false),
        }
    }

    pub fn model(&self) -> LatencyModel {
        self.model
    }

    fn draw(&self, dist: Option<LogNormal>, bytes: u64) -> Duration {
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
        self.wait(self.put_delay(payload.content_length() as u64))
            .await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.wait(self.put_delay(0)).await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
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
        for (uri, param, expected) in cases {
            let (p, e) = err_param(uri);
            assert_eq!(p, param, "{uri}");
            assert!(
                e.contains(expected),
                "{uri}: expected {expected:?} in {e:?}"
            );
        }
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
                    p99_us: 300_000
                }),
                get: Some(LatencyQuantiles {
                    p50_us: 12_500,
                    p99_us: 80_000
                }),
                us_per_mib: 20_000,
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
        for (uri, param, expected) in cases {
            let (p, e) = err_param(uri);
            assert_eq!(p, param, "{uri}");
            assert!(
                e.contains(expected),
                "{uri}: expected {expected:?} in {e:?}"
            );
        }
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
                    }),
                    get: None,
                    us_per_mib: 0,
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
            }),
            get: None,
            us_per_mib: 0,
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
                }),
                get: None,
                us_per_mib: 20_000,
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
    fn ip_endpoints_default_to_path_style() {
        let ip: Url = "http://127.0.0.1:9000".parse().unwrap();
        let host: Url = "https://storage.example.com".parse().unwrap();
        let local: Url = "http://localhost:9000".parse().unwrap();
        assert!(host_cannot_be_virtual(&ip));
        assert!(host_cannot_be_virtual(&local));
        assert!(!host_cannot_be_virtual(&host));
    }
}
