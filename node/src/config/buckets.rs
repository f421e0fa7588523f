//! The AutoMQ `ID@URI` keys (`s3.data.buckets`, `s3.wal.path`,
//! `automq.zonerouter.channels`), parsed by `ferry-wal`'s `BucketUri`.

use super::*;

/// The storage behind an `ID@URI` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketScheme {
    /// `s3://bucket?region=...`: S3 or an S3-compatible store.
    S3,
    /// `file:///dir`: a local directory standing in for a bucket.
    File,
}

/// One `ID@URI` entry of `s3.data.buckets`, `s3.wal.path` or
/// `automq.zonerouter.channels`.
///
/// The URI is parsed by `ferry-wal` ([`ferry_wal::BucketUri`], the one
/// parser of bucket URIs: region, endpoint, credentials, batch settings,
/// the latency model) and checked here against the limits of the keys.
/// It may hold credentials, so `Debug` and `Display` show it redacted; only
/// [`BucketUri::uri`] gives it whole.
#[derive(Clone, PartialEq, Eq)]
pub struct BucketUri {
    /// The bucket id before the `@` (AutoMQ's, 0 and up).
    pub id: u16,
    /// What `ferry-wal` parsed, checked against this key's limits.
    pub parsed: ferry_wal::BucketUri,
    uri: String,
}

impl BucketUri {
    /// What kind of store the URI names.
    pub fn scheme(&self) -> BucketScheme {
        match self.parsed.location {
            ferry_wal::store::BucketLocation::S3(_) => BucketScheme::S3,
            ferry_wal::store::BucketLocation::File { .. } => BucketScheme::File,
        }
    }

    /// `batchInterval` from the query string, in ms (default 250). Used by
    /// the WAL and the handoff channel; read but unused for data buckets.
    pub fn batch_interval_ms(&self) -> u64 {
        u64::try_from(self.parsed.batch_interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// `maxBytesInBatch` from the query string (default 8 MiB).
    pub fn batch_bytes_max(&self) -> u64 {
        self.parsed.max_bytes_in_batch as u64
    }

    /// The URI after `ID@`, as written, **credentials included**: give it to
    /// the object store and never to a log.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// `ID@URI` with credentials replaced by [`REDACTED`].
    pub fn redacted(&self) -> String {
        format!("{}@{}", self.id, redact_text(&self.uri))
    }

    /// Parses one `ID@URI` for `key`.
    pub(super) fn parse(key: &str, text: &str) -> Result<BucketUri, ConfigError> {
        let expected_form =
            "ID@URI, e.g. 0@s3://bucket?region=us-east-1 or 0@file:///var/lib/ferry";
        let text = text.trim();
        let (id, uri) = text
            .split_once('@')
            .ok_or_else(|| ConfigError::invalid(key, expected_form, text))?;
        let id: u16 = id.trim().parse().map_err(|_| {
            ConfigError::invalid(key, "ID@URI with ID an integer from 0 to 65535", text)
        })?;
        let uri = uri.trim();
        let parsed = ferry_wal::BucketUri::parse(uri).map_err(|e| match e {
            ferry_wal::WalError::Config {
                param,
                expected,
                found,
            } => ConfigError::Invalid {
                key: key.to_owned(),
                expected: format!("{param}: {expected}"),
                // ferry-wal never puts a secret in `found`.
                got: found,
            },
            other => ConfigError::invalid(key, format!("{expected_form} ({other})"), text),
        })?;
        let bucket = BucketUri {
            id,
            parsed,
            uri: uri.to_owned(),
        };
        let batch_interval_ms = bucket.batch_interval_ms();
        if !(1..=BATCH_INTERVAL_MS_MAX).contains(&batch_interval_ms) {
            return Err(ConfigError::invalid(
                key,
                format!("batchInterval to be an integer from 1 to {BATCH_INTERVAL_MS_MAX} (milliseconds)"),
                &batch_interval_ms.to_string(),
            ));
        }
        let batch_bytes_max = bucket.batch_bytes_max();
        if !(1..=BATCH_BYTES_MAX_LIMIT).contains(&batch_bytes_max) {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "maxBytesInBatch to be an integer from 1 to {BATCH_BYTES_MAX_LIMIT} (bytes)"
                ),
                &batch_bytes_max.to_string(),
            ));
        }
        Ok(bucket)
    }

    /// Parses a comma-separated `ID@URI` list. As in AutoMQ, an entry ends at
    /// a comma followed by `ID@`, so commas inside a URI survive.
    pub(super) fn parse_list(key: &str, text: &str) -> Result<Vec<BucketUri>, ConfigError> {
        let mut entries = Vec::new();
        let mut start = 0;
        for (i, _) in text.match_indices(',') {
            if starts_with_id_at(&text[i + 1..]) {
                entries.push(&text[start..i]);
                start = i + 1;
            }
        }
        entries.push(&text[start..]);
        let mut out: Vec<BucketUri> = Vec::new();
        for entry in entries.into_iter().filter(|e| !e.trim().is_empty()) {
            let bucket = BucketUri::parse(key, entry)?;
            if out.iter().any(|b| b.id == bucket.id) {
                return Err(ConfigError::invalid(
                    key,
                    "a different ID for every URI",
                    text,
                ));
            }
            out.push(bucket);
        }
        Ok(out)
    }
}

pub(super) fn starts_with_id_at(s: &str) -> bool {
    let s = s.trim_start();
    let s = s.strip_prefix('-').unwrap_or(s);
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && s[digits..].starts_with('@')
}

impl fmt::Debug for BucketUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketUri")
            .field("id", &self.id)
            .field("scheme", &self.scheme())
            .field("uri", &redact_text(&self.uri))
            .field("batch_interval_ms", &self.batch_interval_ms())
            .field("batch_bytes_max", &self.batch_bytes_max())
            .finish()
    }
}

impl fmt::Display for BucketUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}
