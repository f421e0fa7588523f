//! The crate's one error type. Each variant says which flag, file, topic or
//! client operation failed, so the message alone tells the user what to fix.

use std::path::PathBuf;

/// Everything `ferry-bench` can fail at.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line value is invalid.
    #[error("{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },

    /// A line of a prices file is invalid.
    #[error("prices file {path}, line {line}: {reason}")]
    Prices {
        path: String,
        line: usize,
        reason: String,
    },

    /// A librdkafka call failed.
    #[error("{op} ({bootstrap}): {source}")]
    Kafka {
        op: String,
        bootstrap: String,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },

    /// The broker answered, but not in a way the run can use.
    #[error("{op} ({bootstrap}): {reason}")]
    Broker {
        op: String,
        bootstrap: String,
        reason: String,
    },

    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Encoding the JSON report failed.
    #[error("encoding the JSON report: {0}")]
    Json(#[from] serde_json::Error),

    /// A worker thread could not be started or panicked.
    #[error("thread {name}: {reason}")]
    Thread { name: String, reason: String },

    /// A `ferry` node the sweep started failed, or its `/metrics` did.
    #[error("ferry node ({what}): {reason}")]
    Node { what: String, reason: String },

    /// Drawing a plot failed.
    #[error("plotting {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}

impl BenchError {
    /// An invalid value for `flag`.
    pub fn flag(flag: &'static str, reason: impl Into<String>) -> Self {
        BenchError::Flag {
            flag,
            reason: reason.into(),
        }
    }
}
