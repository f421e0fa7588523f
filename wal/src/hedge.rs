//! Requests to the bucket that do not wait on one slow answer: deadlines,
//! hedged PUTs and GETs, and a PUT limit that backs off when S3 throttles.
//!
//! [`HedgedStore`] wraps the node's store, below every writer and reader:
//!
//! - **Deadlines.** Every PUT and GET attempt ends with a retriable error
//!   after [`DEADLINE_PER_DELAY`] hedge delays (at least [`DEADLINE_MIN`],
//!   at most [`HedgeConfig::request_timeout`]), so a stalled connection
//!   costs a wait of seconds, never a stuck upload.
//! - **Hedging.** When a PUT (whole-object, `PutMode::Overwrite`) or a ranged
//!   GET has not answered after the hedge delay, the same request is sent
//!   again and the first success wins; the other is dropped. The delay is
//!   the p90 of the latencies seen over a sliding window of recent requests
//!   of that kind, never below [`HedgeConfig::delay_floor`]. A budget caps
//!   the extra requests: each request earns `max_extra_percent / 100` of a
//!   token (at most [`HEDGE_TOKENS_MAX`] are saved up) and a hedge spends
//!   one, so over any long run hedges are at most that share of requests.
//!   Two PUTs of one key carry the same bytes, so whichever lands last
//!   leaves the same object: recovery and deletion by reference see one
//!   object either way (ARCHITECTURE.md, "Hedged requests").
//! - **Throttling.** An answer of 503 SlowDown halves the number of PUTs the
//!   node lets run at once (at most once per [`THROTTLE_CUT_GAP`]); each
//!   success adds `1 / limit` back, up to [`HedgeConfig::puts_inflight_max`]
//!   (additive increase, multiplicative decrease). A PUT is not hedged
//!   while the node's PUTs in flight are at the limit: a throttled bucket
//!   gets fewer requests, not more.
//! - **Retries.** A PUT or GET that fails with a retriable error (a 5xx, a
//!   throttle, a timeout, a dropped connection; not a proven NotFound, not a
//!   refusal) is tried again, up to [`HedgeConfig::attempts`] times in all,
//!   with jittered backoff; a conditional PUT only after a 503 SlowDown,
//!   which S3 answers before it does anything. The WAL writer retries whole
//!   uploads on top of this, up to the object's deadline.
//!
//! Conditional PUTs, multipart uploads, LIST, DELETE and COPY pass through
//! unhedged, with the client's own timeouts.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::stats::{StoreStats, WalStats};

/// Recent latencies the hedge delay is computed from, per request kind.
pub const HEDGE_WINDOW: usize = 512;
/// Latencies seen before any request is hedged.
pub const HEDGE_WARMUP: usize = 20;
/// Hedge tokens saved up at most: how many hedges a burst of slow requests
/// may send at once after a quiet spell.
pub const HEDGE_TOKENS_MAX: f64 = 5.0;
/// Shortest gap between two cuts of the PUT limit: 503s answered for
/// requests sent together count as one signal.
pub const THROTTLE_CUT_GAP: Duration = Duration::from_millis(100);
/// The shortest deadline of an attempt: an attempt may take this long, or
/// [`DEADLINE_PER_DELAY`] hedge delays, before it is given up (at most
/// [`HedgeConfig::request_timeout`]).
pub const DEADLINE_MIN: Duration = Duration::from_secs(2);
pub const DEADLINE_PER_DELAY: u32 = 8;
/// The quantile of recent latencies a request is hedged after.
pub const HEDGE_QUANTILE: f64 = 0.9;

/// How a [`HedgedStore`] times, hedges and limits requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    /// Hedge PUTs and GETs at all (`hedge=` on the bucket URI).
    pub hedge: bool,
    /// Extra requests hedging may add, in percent of requests
    /// (`s3.hedge.max.extra.percent`, default 10).
    pub max_extra_percent: u32,
    /// The hedge delay never goes below this.
    pub delay_floor: Duration,
    /// The hedge delay before [`HEDGE_WARMUP`] latencies are known: a fresh
    /// node (a restart reading its objects back) still hedges a stalled GET.
    pub delay_initial: Duration,
    /// Longest one PUT or GET attempt may take.
    pub request_timeout: Duration,
    /// Most PUTs in flight at once when S3 does not throttle.
    pub puts_inflight_max: usize,
    /// Attempts of a PUT or GET that fails with a retriable error.
    pub attempts: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            hedge: true,
            max_extra_percent: 10,
            delay_floor: Duration::from_millis(20),
            delay_initial: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            puts_inflight_max: 64,
            attempts: 3,
        }
    }
}

/// The sliding window and the budget of one request kind.
#[derive(Debug)]
struct Hedger {
    state: Mutex<HedgerState>,
    earn: f64,
    floor: Duration,
    initial: Duration,
}

#[derive(Debug)]
struct HedgerState {
    window: VecDeque<u64>,
    /// The delay computed from the window, refreshed every 16 samples.
    delay: Option<Duration>,
    since_refresh: u32,
    tokens: f64,
}

impl Hedger {
    fn new(max_extra_percent: u32, floor: Duration, initial: Duration) -> Hedger {
        Hedger {
            state: Mutex::new(HedgerState {
                window: VecDeque::with_capacity(HEDGE_WINDOW),
                delay: None,
                since_refresh: 0,
                tokens: HEDGE_TOKENS_MAX.min(f64::from(max_extra_percent)),
            }),
            earn: f64::from(max_extra_percent) / 100.0,
            floor,
            initial,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HedgerState> {
        // A panic while holding it leaves plain numbers behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request starts: it earns its share of a hedge, and learns after
    /// how long it is hedged.
    fn start(&self) -> Duration {
        let mut s = self.lock();
        s.tokens = (s.tokens + self.earn).min(HEDGE_TOKENS_MAX);
        s.delay.unwrap_or(self.initial.max(self.floor))
    }

    /// Spends a token for a hedge, if there is one.
    fn try_spend(&self) -> bool {
        let mut s = self.lock();
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A request answered after `latency` (or was still waiting then).
    fn record(&self, latency: Duration) {
        let mut s = self.lock();
        if s.window.len() == HEDGE_WINDOW {
            s.window.pop_front();
        }
        s.window
            .push_back(latency.as_micros().min(u128::from(u64::MAX)) as u64);
        s.since_refresh += 1;
        if s.window.len() >= HEDGE_WARMUP && (s.delay.is_none() || s.since_refresh >= 16) {
            s.since_refresh = 0;
            let mut v: Vec<u64> = s.window.iter().copied().collect();
            let at = ((v.len() as f64 * HEDGE_QUANTILE) as usize).min(v.len() - 1);
            let (_, q, _) = v.select_nth_unstable(at);
            s.delay = Some(Duration::from_micros(*q).max(self.floor));
        }
    }

    #[cfg(test)]
    fn delay(&self) -> Option<Duration> {
        self.lock().delay
    }
}

/// The AIMD limit on PUTs in flight.
#[derive(Debug)]
struct PutLimit {
    max: usize,
    state: Mutex<LimitState>,
    room: Notify,
}

#[derive(Debug)]
struct LimitState {
    limit: f64,
    inflight: usize,
    last_cut: Option<Instant>,
}

/// A PUT's place under the limit, given back on drop.
struct PutPermit<'a>(&'a PutLimit);

impl Drop for PutPermit<'_> {
    fn drop(&mut self) {
        self.0.lock().inflight -= 1;
        self.0.room.notify_waiters();
    }
}

impl PutLimit {
    fn new(max: usize) -> PutLimit {
        let max = max.max(1);
        PutLimit {
            max,
            state: Mutex::new(LimitState {
                limit: max as f64,
                inflight: 0,
                last_cut: None,
            }),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn acquire(&self) -> PutPermit<'_> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut s = self.lock();
                if s.inflight < s.limit as usize {
                    s.inflight += 1;
                    return PutPermit(self);
                }
            }
            room.await;
        }
    }

    /// The current limit, whole.
    fn limit(&self) -> usize {
        self.lock().limit as usize
    }

    /// Whether one more request fits under the limit (the caller already
    /// holds a place).
    fn has_room(&self) -> bool {
        let s = self.lock();
        s.inflight < s.limit as usize
    }

    fn on_success(&self) {
        let grew = {
            let mut s = self.lock();
            let before = s.limit as usize;
            s.limit = (s.limit + 1.0 / s.limit).min(self.max as f64);
            s.limit as usize > before
        };
        if grew {
            self.room.notify_waiters();
        }
    }

    /// A 503 SlowDown: halve the limit (not below 1), once per gap.
    fn on_throttle(&self, now: Instant) -> bool {
        let mut s = self.lock();
        if s.last_cut
            .is_some_and(|t| now.duration_since(t) < THROTTLE_CUT_GAP)
        {
            return false;
        }
        s.last_cut = Some(now);
        s.limit = (s.limit / 2.0).max(1.0);
        true
    }
}

/// See the module doc.
pub struct HedgedStore {
    inner: Arc<dyn ObjectStore>,
    config: HedgeConfig,
    puts: Hedger,
    gets: Hedger,
    limit: PutLimit,
    stats: Arc<StoreStats>,
}

impl fmt::Debug for HedgedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgedStore")
            .field("inner", &self.inner.to_string())
            .field("config", &self.config)
            .finish()
    }
}

impl fmt::Display for HedgedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HedgedStore({})", self.inner)
    }
}

/// Which way a hedged request went.
enum Outcome<T> {
    /// The first request answered (either way) before or after a hedge.
    First(object_store::Result<T>),
    /// The hedge answered first with a success.
    Hedge(T),
}

impl HedgedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, config: HedgeConfig) -> HedgedStore {
        HedgedStore::with_stats(inner, config, Arc::new(StoreStats::default()))
    }

    /// A store that counts into `stats` (the node's, for `/metrics`).
    pub fn with_stats(
        inner: Arc<dyn ObjectStore>,
        config: HedgeConfig,
        stats: Arc<StoreStats>,
    ) -> HedgedStore {
        stats
            .put_limit
            .store(config.puts_inflight_max.max(1) as u64, Ordering::Relaxed);
        HedgedStore {
            inner,
            puts: Hedger::new(
                config.max_extra_percent,
                config.delay_floor,
                config.delay_initial,
            ),
            gets: Hedger::new(
                config.max_extra_percent,
                config.delay_floor,
                config.delay_initial,
            ),
            limit: PutLimit::new(config.puts_inflight_max),
            config,
            stats,
        }
    }

    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    pub fn config(&self) -> HedgeConfig {
        self.config
    }

    /// Runs `make()` once, under the request deadline, and once more if it
    /// has not answered after the hedge delay and the budget allows; the
    /// first success wins. If one fails, the other is still waited for.
    async fn hedged<T, Fut>(
        &self,
        hedger: &Hedger,
        may_hedge: bool,
        make: impl Fn() -> Fut,
    ) -> object_store::Result<T>
    where
        Fut: Future<Output = object_store::Result<T>>,
    {
        let is_put = std::ptr::eq(hedger, &self.puts);
        let started = Instant::now();
        let delay = hedger.start();
        // The attempt's deadline follows what the bucket answers in: a
        // stalled request is given up after seconds, not the whole timeout.
        let timeout = (delay * DEADLINE_PER_DELAY)
            .max(DEADLINE_MIN)
            .min(self.config.request_timeout);
        let bounded = |f: Fut| async move {
            match tokio::time::timeout(timeout, f).await {
                Ok(r) => r,
                Err(_) => Err(object_store::Error::Generic {
                    store: "ferry-s3",
                    source: Box::new(RequestTimedOut(timeout)),
                }),
            }
        };
        let delay = Some(delay).filter(|_| self.config.hedge && may_hedge);
        let first = bounded(make());
        tokio::pin!(first);
        let outcome = match delay {
            None => Outcome::First(first.await),
            Some(delay) => {
                tokio::select! {
                    r = &mut first => Outcome::First(r),
                    () = tokio::time::sleep(delay) => {
                        if (is_put && !self.limit.has_room()) || !hedger.try_spend() {
                            Outcome::First(first.await)
                        } else {
                            WalStats::add(&self.stats.hedges_sent, 1);
                            if is_put {
                                WalStats::add(&self.stats.put_hedges_sent, 1);
                            }
                            let second = bounded(make());
                            tokio::pin!(second);
                            tokio::select! {
                                r = &mut first => match r {
                                    Ok(v) => Outcome::First(Ok(v)),
                                    Err(e) => match second.await {
                                        Ok(v) => Outcome::Hedge(v),
                                        Err(_) => Outcome::First(Err(e)),
                                    },
                                },
                                r = &mut second => match r {
                                    Ok(v) => Outcome::Hedge(v),
                                    Err(_) => Outcome::First(first.await),
                                },
                            }
                        }
                    }
                }
            }
        };
        // The first request took at least this long: that is what the
        // window wants to know, whoever answered.
        let elapsed = started.elapsed();
        match outcome {
            Outcome::First(Ok(v)) => {
                hedger.record(elapsed);
                Ok(v)
            }
            Outcome::Hedge(v) => {
                hedger.record(elapsed);
                WalStats::add(&self.stats.hedges_won, 1);
                if is_put {
                    WalStats::add(&self.stats.put_hedges_won, 1);
                }
                Ok(v)
            }
            Outcome::First(Err(e)) => {
                if is_timeout(&e) {
                    hedger.record(elapsed);
                    WalStats::add(&self.stats.request_timeouts, 1);
                }
                Err(e)
            }
        }
    }

    fn note_put_error(&self, e: &object_store::Error) {
        if crate::store::is_slow_down(e) {
            WalStats::add(&self.stats.throttles, 1);
            if self.limit.on_throttle(Instant::now()) {
                tracing::warn!(
                    limit = self.limit.limit(),
                    "S3 answered 503 SlowDown: fewer PUTs at once"
                );
            }
            self.stats
                .put_limit
                .store(self.limit.limit() as u64, Ordering::Relaxed);
        }
    }
}

/// The wait before attempt `attempt + 1`: 50 ms, doubling, jittered.
fn backoff(attempt: u32) -> Duration {
    static SPREAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base = Duration::from_millis(50) * 2u32.saturating_pow(attempt.saturating_sub(1)).min(64);
    let n = SPREAD.fetch_add(1, Ordering::Relaxed);
    crate::writer::jitter(base, n, attempt)
}

/// A request attempt that passed its deadline.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {} ms (the request deadline)", .0.as_millis())]
pub struct RequestTimedOut(pub Duration);

/// True for an attempt ended by [`HedgeConfig::request_timeout`].
pub fn is_timeout(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { source, .. } if source.is::<RequestTimedOut>())
}

/// True for an error another attempt may not see: 5xx, throttling, a
/// timeout, a dropped connection. NotFound, refusals and bad requests are
/// answers, not failures.
fn worth_retrying(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::InvalidPath { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

#[async_trait]
impl ObjectStore for HedgedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // Only an overwrite can be sent twice: a conditional PUT's second
        // copy would be refused because the first landed.
        let overwrite = matches!(opts.mode, PutMode::Overwrite);
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = self.limit.acquire().await;
                let started = Instant::now();
                let result = self
                    .hedged(&self.puts, overwrite, || {
                        self.inner.put_opts(location, payload.clone(), opts.clone())
                    })
                    .await;
                match &result {
                    Ok(_) => {
                        self.stats.put_request.record(started.elapsed());
                        self.limit.on_success();
                        self.stats
                            .put_limit
                            .store(self.limit.limit() as u64, Ordering::Relaxed);
                    }
                    Err(e) => self.note_put_error(e),
                }
                result
            };
            match result {
                Err(e)
                    if attempt < self.config.attempts
                        && (crate::store::is_slow_down(&e) || overwrite && worth_retrying(&e)) =>
                {
                    WalStats::add(&self.stats.retries, 1);
                    tracing::debug!(object_key = %location, attempt, error = %e, "PUT failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        // A ranged read is small: its body is read inside the hedge, so a
        // slow body is hedged like a slow first byte. Whole objects and
        // HEADs stream as the inner store answers them.
        let ranged = options.range.is_some() && !options.head;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let result = self
                .hedged(&self.gets, ranged, || {
                    let options = options.clone();
                    async move {
                        let got = self.inner.get_opts(location, options).await?;
                        if !ranged {
                            return Ok(got);
                        }
                        let (meta, range, attributes, extensions) = (
                            got.meta.clone(),
                            got.range.clone(),
                            got.attributes.clone(),
                            got.extensions.clone(),
                        );
                        let body = got.bytes().await?;
                        Ok(GetResult {
                            payload: GetResultPayload::Stream(Box::pin(
                                futures_util::stream::once(async move { Ok(body) }),
                            )),
                            meta,
                            range,
                            attributes,
                            extensions,
                        })
                    }
                })
                .await;
            match result {
                Ok(r) => {
                    self.stats.get_request.record(started.elapsed());
                    return Ok(r);
                }
                Err(e) if attempt < self.config.attempts && worth_retrying(&e) => {
                    WalStats::add(&self.stats.retries, 1);
                    tracing::debug!(object_key = %location, attempt, error = %e, "GET failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            out.push(
                self.get_opts(location, GetOptions::new().with_range(Some(r.clone())))
                    .await?
                    .bytes()
                    .await?,
            );
        }
        Ok(out)
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

    #[test]
    fn the_hedge_delay_is_the_p90_of_the_window_with_a_floor() {
        let h = Hedger::new(10, Duration::from_millis(20), Duration::from_millis(500));
        for i in 0..(HEDGE_WARMUP - 1) {
            h.record(Duration::from_millis(100 + i as u64));
        }
        assert_eq!(h.delay(), None, "no delay before the warm-up");
        // 100 samples 1..=100 ms: p90 is 91 ms (the 90th of 100, 0-based).
        let h = Hedger::new(10, Duration::from_millis(20), Duration::from_millis(500));
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let d = h.delay().unwrap();
        assert!(
            d >= Duration::from_millis(89) && d <= Duration::from_millis(92),
            "{d:?}"
        );
        // All fast: the floor.
        let h = Hedger::new(10, Duration::from_millis(20), Duration::from_millis(500));
        for _ in 0..50 {
            h.record(Duration::from_micros(300));
        }
        assert_eq!(h.delay(), Some(Duration::from_millis(20)));
    }

    #[test]
    fn the_budget_allows_the_given_share_of_hedges_and_no_more() {
        let h = Hedger::new(10, Duration::from_millis(1), Duration::from_millis(1));
        let mut hedges = 0;
        for _ in 0..10_000 {
            h.start();
            // Every request is slow: each tries to hedge.
            if h.try_spend() {
                hedges += 1;
            }
        }
        // 10% of 10000, and the tokens a new node starts with.
        let most = 1000 + HEDGE_TOKENS_MAX as usize;
        assert!(
            (999..=most).contains(&hedges),
            "{hedges} hedges for 10000 requests at 10%"
        );
        // A quiet spell saves up at most HEDGE_TOKENS_MAX.
        let h = Hedger::new(10, Duration::from_millis(1), Duration::from_millis(1));
        for _ in 0..10_000 {
            h.start();
        }
        let burst = (0..100).filter(|_| h.try_spend()).count();
        assert_eq!(burst, HEDGE_TOKENS_MAX as usize);
        // A budget of 0 never hedges.
        let h = Hedger::new(0, Duration::from_millis(1), Duration::from_millis(1));
        for _ in 0..1000 {
            h.start();
        }
        assert!(!h.try_spend());
    }

    #[test]
    fn slow_down_halves_the_put_limit_once_per_gap_and_successes_win_it_back() {
        let l = PutLimit::new(16);
        let t0 = Instant::now();
        assert!(l.on_throttle(t0));
        assert_eq!(l.limit(), 8);
        assert!(
            !l.on_throttle(t0 + Duration::from_millis(10)),
            "one cut per gap"
        );
        assert_eq!(l.limit(), 8);
        assert!(l.on_throttle(t0 + THROTTLE_CUT_GAP));
        assert_eq!(l.limit(), 4);
        for i in 1..10 {
            l.on_throttle(t0 + THROTTLE_CUT_GAP * (i + 1));
        }
        assert_eq!(l.limit(), 1, "never below one");

        // Additive increase: about limit successes per step of one.
        let mut successes = 0;
        while l.limit() < 16 {
            l.on_success();
            successes += 1;
        }
        assert!(
            (100..=140).contains(&successes),
            "{successes} successes from 1 to 16"
        );
    }

    fn model_store(model: crate::store::LatencyModel, config: HedgeConfig) -> HedgedStore {
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        HedgedStore::new(
            Arc::new(crate::store::LatencyStore::new(inner, model, 7)),
            config,
        )
    }

    /// Half the requests stall for ever: every PUT and GET still answers,
    /// through hedges (which win) or deadlines and retries, and what was
    /// PUT reads back.
    #[tokio::test]
    async fn stalled_requests_are_hedged_or_timed_out_and_retried() {
        let model = crate::store::LatencyModel {
            stall_ppm: 500_000,
            ..Default::default()
        };
        let config = HedgeConfig {
            max_extra_percent: 100,
            delay_floor: Duration::from_millis(5),
            delay_initial: Duration::from_millis(5),
            request_timeout: Duration::from_millis(300),
            attempts: 8,
            ..HedgeConfig::default()
        };
        let store = model_store(model, config);
        for i in 0..20u8 {
            let key = Path::from(format!("wal/1/{i}"));
            let put = store.put_opts(&key, PutPayload::from(vec![i; 100]), PutOptions::default());
            tokio::time::timeout(Duration::from_secs(10), put)
                .await
                .expect("the PUT answered")
                .expect("the PUT succeeded");
            let get = store.get_opts(&key, GetOptions::new().with_range(Some(10..20)));
            let got =
                tokio::time::timeout(Duration::from_secs(10), async { get.await?.bytes().await })
                    .await
                    .expect("the GET answered")
                    .expect("the GET succeeded");
            assert_eq!(&got[..], &[i; 10]);
        }
        let s = store.stats();
        let (sent, won) = (
            s.hedges_sent.load(Ordering::Relaxed),
            s.hedges_won.load(Ordering::Relaxed),
        );
        assert!(won > 0 && won <= sent, "hedges sent {sent}, won {won}");
        assert_eq!(s.put_request.count(), 20);
        assert_eq!(s.get_request.count(), 20);
    }

    /// 503 SlowDown: the PUT is retried and succeeds, and the limit is cut.
    #[tokio::test]
    async fn slow_down_is_retried_and_cuts_the_put_limit() {
        let model = crate::store::LatencyModel {
            slow_down_ppm: 300_000,
            ..Default::default()
        };
        let config = HedgeConfig {
            attempts: 20,
            puts_inflight_max: 8,
            ..HedgeConfig::default()
        };
        let store = model_store(model, config);
        for i in 0..20u8 {
            let key = Path::from(format!("wal/1/{i}"));
            store
                .put_opts(&key, PutPayload::from(vec![i; 10]), PutOptions::default())
                .await
                .expect("retried past SlowDown");
        }
        let s = store.stats();
        assert!(s.throttles.load(Ordering::Relaxed) > 0);
        assert_eq!(
            s.retries.load(Ordering::Relaxed),
            s.throttles.load(Ordering::Relaxed)
        );
        assert!(s.put_limit.load(Ordering::Relaxed) < 8, "the limit was cut");
    }

    #[tokio::test]
    async fn the_put_limit_holds_puts_back_until_one_ends() {
        let l = Arc::new(PutLimit::new(2));
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let waiting = {
            let l = l.clone();
            tokio::spawn(async move {
                let _c = l.acquire().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a third PUT waits at a limit of 2");
        assert!(!l.has_room(), "no room for a hedge at the limit");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a freed place lets the waiting PUT go")
            .unwrap();
    }
}
