//! Wall-clock time: what retention, record timestamps and group sessions
//! count in. Below every other module.

/// Wall-clock milliseconds, for retention and timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
