//! Where objects go: parsing bucket URIs and building the object store.
//!
//! Ferry takes AutoMQ's bucket URIs (the value after `ID@` in
//! `s3.data.buckets`, `s3.wal.path` and `automq.zonerouter.channels`):
//!
//! ```text
//! [ID@]s3://BUCKET?region=R[&endpoint=URL][&pathStyle=true|false]
//!     [&authType=static|instance][&accessKey=..][&secretKey=..]
//!     [&batchInterval=MS][&maxBytesInBatch=BYTES]
//! [ID@]file:///some/dir[?batchInterval=MS][&maxBytesInBatch=BYTES]
//! ```
//!
//! `file://` makes a local directory the bucket (created if missing).
//! Credentials, when the URI has none, come from `KAFKA_S3_ACCESS_KEY` /
//! `KAFKA_S3_SECRET_KEY`, then `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
//! (with `AWS_SESSION_TOKEN`). `authType=instance` uses the machine's role
//! (instance metadata, web identity or container credentials) and refuses
//! static keys. The secret key never shows in `Debug` or `Display` output.
//!
//! Virtual-hosted requests are the default, as in AutoMQ; with an `endpoint`
//! whose host is an IP address or `localhost` (a local S3 server), where
//! virtual hosts cannot resolve, path-style requests are used instead.
//!
//! [`FaultyStore`] wraps any store with PUT/GET latency and injected PUT
//! failures, for tests.

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
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    RetryConfig,
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
}

/// Where a bucket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketLocation {
    S3(S3Bucket),
    /// A local directory used as the bucket.
    File {
        dir: PathBuf,
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
}

const S3_PARAMS: &str =
    "region, endpoint, pathStyle, authType, accessKey, secretKey, batchInterval, maxBytesInBatch";

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
        };
        let is_s3 = match url.scheme() {
            "s3" => true,
            "file" => false,
            other => return Err(WalError::config("bucket URI scheme", "s3 or file", other)),
        };
        let mut seen = Vec::new();
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
                _ if !is_s3 => {
                    return Err(WalError::config(
                        key,
                        "only batchInterval or maxBytesInBatch in a file:// URI",
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
            BucketLocation::File { dir }
        };
        Ok(BucketUri {
            id,
            location,
            batch_interval,
            max_bytes_in_batch,
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
        match &self.location {
            BucketLocation::File { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| WalError::Io {
                    op: "create bucket directory",
                    path: dir.clone(),
                    source: Arc::new(e),
                })?;
                let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                    WalError::store("open bucket directory", dir.display().to_string(), e)
                })?;
                Ok(Arc::new(fs))
            }
            BucketLocation::S3(s3) => Ok(Arc::new(build_s3(s3, env)?)),
        }
    }
}

fn build_s3(
    s3: &S3Bucket,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<object_store::aws::AmazonS3, WalError> {
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
        .with_client_options(
            ClientOptions::new()
                .with_timeout(Duration::from_secs(30))
                .with_connect_timeout(Duration::from_secs(5))
                .with_allow_http(s3.endpoint.as_ref().is_some_and(|e| e.scheme() == "http")),
        );

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
            }
            BucketLocation::File { dir } => write!(f, "file://{}", dir.display())?,
        }
        if self.batch_interval != BATCH_INTERVAL_DEFAULT {
            params.push(("batchInterval", self.batch_interval.as_millis().to_string()));
        }
        if self.max_bytes_in_batch != MAX_BYTES_IN_BATCH_DEFAULT {
            params.push(("maxBytesInBatch", self.max_bytes_in_batch.to_string()));
        }
        for (i, (k, v)) in params.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
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
        }
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
        self.inner.get_ranges(location, ranges).await
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

#[cfg(test)]
mod tests {
    use super::*;

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
                dir: PathBuf::from("/tmp/ferry-bucket")
            }
        );
        assert_eq!(u.batch_interval, Duration::from_millis(5));
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
        u.build_store().unwrap();
        assert!(dir.is_dir());
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
