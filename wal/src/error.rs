//! Errors of the WAL crate, in two levels.
//!
//! [`FormatError`] says what is wrong with the bytes of a WAL object. It knows
//! nothing of where the bytes came from. [`WalError`] is what every public
//! function returns: it says which operation failed on which object key, and
//! [`WalError::is_retriable`] tells the caller (the node, which maps it to a
//! Kafka error code) whether trying again later can succeed.
//!
//! `WalError` is `Clone` because one failed upload fails every entry of the
//! object, and each entry's caller gets its own copy. Sources that are not
//! `Clone` (`object_store::Error`, `std::io::Error`) are held in an `Arc`.

use std::path::PathBuf;
use std::sync::Arc;

/// What is wrong with the bytes of a WAL object (see `object.rs` for the layout).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than the layout needs.
    #[error("truncated {what}: need {needed} bytes, have {available}")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// The header or footer magic is not Ferry's.
    #[error("bad {what} magic")]
    BadMagic { what: &'static str },
    /// A format version this build cannot read.
    #[error(
        "unsupported WAL object version {version} (this build reads versions 1 to {supported})"
    )]
    UnsupportedVersion { version: u16, supported: u16 },
    /// Header flag bits this build does not know.
    #[error("unknown header flags {flags:#06x}")]
    UnknownFlags { flags: u16 },
    /// A CRC32C stored in the object does not match the bytes.
    #[error("CRC32C mismatch over {what}: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        what: String,
        stored: u32,
        computed: u32,
    },
    /// The index is well-formed bytes but describes an impossible object.
    #[error("bad index: {reason}")]
    BadIndex { reason: String },
    /// A value does not fit the format's fixed-width field.
    #[error("{what} is {len}, more than the format allows ({max})")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
}

/// Every error the public API returns.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// A configuration value (URI parameter or `WalConfig` field) is bad.
    /// `found` never holds a secret.
    #[error("invalid {param}: expected {expected}, found {found:?}")]
    Config {
        param: String,
        expected: String,
        found: String,
    },
    /// A local file operation failed (e.g. creating the `file://` bucket directory).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// An object store call failed.
    #[error("{op} {key}: {source}")]
    Store {
        op: &'static str,
        key: String,
        #[source]
        source: Arc<object_store::Error>,
    },
    /// An object's bytes are not a valid WAL object, or fail a CRC check.
    #[error("corrupt WAL object {key}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: FormatError,
    },
    /// The entry given to `append` cannot be written.
    #[error("invalid WAL entry for {topic}-{partition}: {reason}")]
    InvalidEntry {
        topic: String,
        partition: i32,
        reason: String,
    },
    /// The writer holds `inflight_bytes_max` of unacknowledged data already.
    /// Retriable: try again once earlier appends are acknowledged.
    #[error(
        "WAL backpressure: {inflight_bytes} bytes unacknowledged, {requested_bytes} more \
         would pass inflight_bytes_max={inflight_bytes_max}"
    )]
    Backpressure {
        inflight_bytes: usize,
        requested_bytes: usize,
        inflight_bytes_max: usize,
    },
    /// An object was not durable before `upload_deadline`. The data may or may
    /// not be in the bucket. Retriable.
    #[error("upload of {key} failed after {attempts} attempts in {elapsed_ms} ms: {source}")]
    UploadFailed {
        key: String,
        attempts: u32,
        elapsed_ms: u64,
        #[source]
        source: Arc<object_store::Error>,
    },
    /// An earlier entry of the same partition failed (in object `failed_key`),
    /// so this one cannot be acknowledged without leaving a hole in the
    /// partition's offsets. The partition stays failed until the caller
    /// rewinds it and calls `WalHandle::resume_partition`. Retriable.
    #[error(
        "partition {topic}-{partition} has a failed WAL write in {failed_key}; \
         rewind it and call resume_partition"
    )]
    PartitionFailed {
        topic: String,
        partition: i32,
        failed_key: String,
    },
    /// The writer has stopped.
    #[error("the WAL writer is stopped")]
    Closed,
    /// Starting the I/O runtime failed.
    #[error("start the WAL I/O runtime: {source}")]
    Runtime {
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A blocking wait ran out of time.
    #[error("{op} did not finish within {timeout_ms} ms")]
    TimedOut { op: &'static str, timeout_ms: u64 },
}

impl WalError {
    /// True if the same request can succeed later without any change by the
    /// caller (Kafka would answer with a retriable error code).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            WalError::Backpressure { .. }
                | WalError::UploadFailed { .. }
                | WalError::PartitionFailed { .. }
                | WalError::Store { .. }
                | WalError::TimedOut { .. }
        )
    }

    /// True only for a store's proven NotFound: the one error that makes an
    /// object absent. Every other store error (500, 503, a timeout, a
    /// refused connection) says nothing about the object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, WalError::Store { source, .. }
            if matches!(**source, object_store::Error::NotFound { .. }))
    }

    pub(crate) fn store(op: &'static str, key: impl Into<String>, e: object_store::Error) -> Self {
        WalError::Store {
            op,
            key: key.into(),
            source: Arc::new(e),
        }
    }

    pub(crate) fn corrupt(key: impl Into<String>, source: FormatError) -> Self {
        WalError::Corrupt {
            key: key.into(),
            source,
        }
    }

    pub(crate) fn config(
        param: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        WalError::Config {
            param: param.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}
