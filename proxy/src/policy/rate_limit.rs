//! `rateLimit`: GCRA limits per key (governor), the in-flight cap, and limits shared through
//! Redis.
//!
//! A rule is a token bucket (GCRA): it holds `requests + burst` tokens, refilled at `requests`
//! per `period`, one every `period / requests`. So `100 per 1m` lets 100 requests through at
//! once and then one every 600 ms; over a long run the rate is the configured one, plus the
//! bucket's size once. Over the limit: 429 with `Retry-After`
//! and `RateLimit-*` headers. Keys: the client IP, a header's value (requests without the
//! header share one bucket), a JWT claim or the API key's client id (rules with those keys run
//! after authentication), or one global bucket.
//!
//! - `PerReplica`: each proxy enforces the whole limit; `DividedAmongReplicas`: each enforces
//!   its share (`requests / replicas`, at least 1), the replica count coming with the snapshot.
//! - `Distributed`: one GCRA cell per key in Redis (`--redis-url`), updated by a Lua script
//!   using the server's clock, so the limit holds across every proxy process. When Redis cannot
//!   answer within [`REDIS_TIMEOUT`], the rule falls back to a local `DividedAmongReplicas`
//!   bucket (logged and counted) rather than either refusing everything or limiting nothing.
//!
//! Buckets are identified by the snapshot's `bucketId`; a bucket whose id and limit are
//! unchanged is reused by the next snapshot, so a config change does not reset counters.
//! Memory is bounded: a bucket tracks at most [`MAX_KEYS`] keys; beyond that, keys are hashed
//! into [`OVERFLOW_BUCKETS`] shared cells (stricter, never looser), and keys idle long enough
//! to be back at a full bucket are dropped every [`SWEEP_EVERY`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
pub use portico_api::policy::Stage;
use portico_api::policy::{
    KeyType, RateLimit, RateLimitKey, RateLimitMatch, RateLimitRule, Replicas,
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::OnceCell;
use tower::{Layer, Service};

use super::auth::Identity;
use super::{BoxFuture, Client, Req, Res};
use crate::error::{ProxyError, RateLimited, Result};

/// Keys one bucket tracks before new keys share overflow cells.
pub const MAX_KEYS: usize = 100_000;
/// Shared cells for keys beyond [`MAX_KEYS`].
pub const OVERFLOW_BUCKETS: u64 = 1024;
/// How often idle keys are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How long a Redis check may take before the local fallback decides.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// The key of a bucket's cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Ip(IpAddr),
    Text(Box<str>),
    /// The key is missing from the request (no such header, no claim).
    Absent,
    Global,
    Overflow(u16),
}

impl Key {
    fn redis_suffix(&self) -> String {
        match self {
            Self::Ip(ip) => format!("ip:{ip}"),
            Self::Text(t) => format!("t:{t}"),
            Self::Absent => "absent".into(),
            Self::Global => "global".into(),
            Self::Overflow(n) => format!("overflow:{n}"),
        }
    }
}

type Limiter<C> = RateLimiter<Key, CountedStore, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// governor's DashMap store with a count of its keys kept as they come and go, so that the
/// key bound is checked in O(1) on every request; `DashMap::len` locks every shard.
#[derive(Debug, Default)]
struct CountedStore {
    cells: DashMapStateStore<Key>,
    keys: AtomicUsize,
}

impl StateStore for CountedStore {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> std::result::Result<T, E>
    where
        F: Fn(Option<Nanos>) -> std::result::Result<(T, Nanos), E>,
    {
        if let Some(cell) = self.cells.get(key) {
            return cell.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let cell = self.cells.entry(key.clone()).or_insert_with(|| {
            self.keys.fetch_add(1, Ordering::Relaxed);
            InMemoryState::default()
        });
        cell.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<Key> for CountedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.cells.retain(|_, cell| {
            // Reads the cell's time without changing it (an `Err` decision stores nothing).
            let older = cell
                .measure_and_replace(&NotKeyed::NonKey, |at| {
                    Err::<((), Nanos), bool>(at.unwrap_or_default() <= drop_below)
                })
                .unwrap_err();
            if older {
                self.keys.fetch_sub(1, Ordering::Relaxed);
            }
            !older
        });
    }

    fn shrink_to_fit(&self) {
        self.cells.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One GCRA bucket: a cell per key.
#[derive(Debug)]
pub struct LocalBucket<C: Clock = DefaultClock> {
    /// `(requests, period_ms, burst)` after dividing among replicas.
    fingerprint: (u32, u64, u32),
    limiter: Limiter<C>,
    clock: C,
    created: C::Instant,
    max_keys: usize,
    /// Milliseconds after `created` of the last sweep.
    last_sweep: AtomicU64,
}

impl<C: Clock + Clone> LocalBucket<C> {
    /// A bucket of `requests + burst` tokens refilled at `requests` per `period_ms`; `None` for a
    /// zero limit or period.
    pub fn new(
        requests: u32,
        period_ms: u64,
        burst: u32,
        clock: C,
        max_keys: usize,
    ) -> Option<Self> {
        let per_request = Duration::from_nanos(
            (u128::from(period_ms) * 1_000_000 / u128::from(requests.max(1))).max(1) as u64,
        );
        let quota = Quota::with_period(per_request)?
            .allow_burst(NonZeroU32::new(requests.saturating_add(burst))?);
        (requests > 0 && period_ms > 0).then(|| Self {
            fingerprint: (requests, period_ms, burst),
            limiter: RateLimiter::new(quota, CountedStore::default(), clock.clone()),
            created: clock.now(),
            clock,
            max_keys,
            last_sweep: AtomicU64::new(0),
        })
    }

    /// `Ok` if the request may go, else how long until it would be allowed.
    pub fn check(&self, key: Key) -> std::result::Result<(), Duration> {
        let key = if self.limiter.len() >= self.max_keys && !matches!(key, Key::Overflow(_)) {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            Key::Overflow((h.finish() % OVERFLOW_BUCKETS) as u16)
        } else {
            key
        };
        let result = self
            .limiter
            .check_key(&key)
            .map(|_| ())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()));
        self.sweep();
        result
    }

    /// Drops keys whose cells are back to a full bucket, at most once per [`SWEEP_EVERY`].
    fn sweep(&self) {
        let now_ms =
            Duration::from(self.clock.now().duration_since(self.created)).as_millis() as u64;
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64 {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }

    /// Keys tracked.
    #[cfg(test)]
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// The Redis side of `Distributed` limits.
#[derive(Debug)]
pub struct Redis {
    client: redis::Client,
    conn: OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    errors: Counter,
    last_warning: Mutex<Option<Instant>>,
}

/// GCRA on the Redis server's clock, in microseconds. KEYS[1]: the cell. ARGV: emission
/// interval, tolerance ((bucket size - 1) * interval). Returns 0 when allowed, else microseconds to wait.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
";

impl Redis {
    /// A client for `url` (`redis://host:port/db`); connects on first use.
    pub fn new(url: &str, errors: Counter) -> std::result::Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
            script: redis::Script::new(GCRA_SCRIPT),
            errors,
            last_warning: Mutex::new(None),
        })
    }

    /// `Ok(None)` if allowed, `Ok(Some(wait))` if limited.
    async fn check(
        &self,
        cell: &str,
        interval_us: u64,
        tolerance_us: u64,
    ) -> std::result::Result<Option<Duration>, String> {
        let attempt = async {
            let conn = self
                .conn
                .get_or_try_init(|| redis::aio::ConnectionManager::new(self.client.clone()))
                .await
                .map_err(|e| e.to_string())?;
            let mut conn = conn.clone();
            let wait: u64 = self
                .script
                .key(cell)
                .arg(interval_us)
                .arg(tolerance_us)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((wait > 0).then(|| Duration::from_micros(wait)))
        };
        match tokio::time::timeout(REDIS_TIMEOUT, attempt).await {
            Ok(Ok(verdict)) => Ok(verdict),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out".into()),
        }
    }

    fn warn(&self, error: &str) {
        self.errors.inc();
        let mut last = self.last_warning.lock().unwrap();
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                error,
                "Redis rate limiting unavailable; enforcing limits locally per replica"
            );
        }
    }
}

/// Buckets and the Redis client, shared across snapshots.
#[derive(Debug)]
pub struct Buckets {
    local: Mutex<HashMap<String, Weak<LocalBucket>>>,
    redis: Option<Arc<Redis>>,
}

impl Buckets {
    pub fn new(redis: Option<Redis>) -> Self {
        Self {
            local: Mutex::new(HashMap::new()),
            redis: redis.map(Arc::new),
        }
    }

    /// The bucket `id` with this limit: the existing one if its limit is unchanged.
    fn bucket(
        &self,
        id: &str,
        requests: u32,
        period_ms: u64,
        burst: u32,
    ) -> Option<Arc<LocalBucket>> {
        let mut local = self.local.lock().unwrap();
        local.retain(|_, b| b.strong_count() > 0);
        if let Some(existing) = local.get(id).and_then(Weak::upgrade)
            && existing.fingerprint == (requests, period_ms, burst)
        {
            return Some(existing);
        }
        let bucket = Arc::new(LocalBucket::new(
            requests,
            period_ms,
            burst,
            DefaultClock::default(),
            MAX_KEYS,
        )?);
        local.insert(id.to_owned(), Arc::downgrade(&bucket));
        Some(bucket)
    }

    /// The layer for the rules of `spec` that run at `stage`, if any.
    pub fn layer(
        &self,
        spec: &RateLimit,
        stage: Stage,
        replicas: u32,
    ) -> std::result::Result<Option<RateLimitLayer>, super::BuildError> {
        let replicas = replicas.max(1);
        let mut rules = Vec::new();
        for rule in spec.rules.iter().filter(|r| rule_stage(r) == stage) {
            rules.push(self.rule(rule, replicas)?);
        }
        let inflight = spec
            .concurrency
            .as_ref()
            .filter(|c| key_stage(c.key.as_ref()) == stage)
            .map(|c| {
                Arc::new(Inflight {
                    max: c.max_in_flight,
                    key: c.key.clone(),
                    global: AtomicU32::new(0),
                    keyed: Mutex::new(HashMap::new()),
                })
            });
        if rules.is_empty() && inflight.is_none() {
            return Ok(None);
        }
        Ok(Some(RateLimitLayer {
            rules: rules.into(),
            inflight,
            redis: self.redis.clone(),
        }))
    }

    fn rule(
        &self,
        rule: &RateLimitRule,
        replicas: u32,
    ) -> std::result::Result<Rule, super::BuildError> {
        let l = &rule.limit;
        let divided = |n: u32| (n / replicas).max(u32::from(n > 0));
        let (requests, burst) = match rule.replicas {
            Replicas::PerReplica => (l.requests, l.burst),
            Replicas::DividedAmongReplicas | Replicas::Distributed => {
                (divided(l.requests), l.burst / replicas)
            }
        };
        let local = self
            .bucket(&rule.bucket_id, requests, l.period_ms, burst)
            .ok_or_else(|| {
                super::BuildError::RateLimit(format!(
                    "rule {}: the limit and period must be positive",
                    rule.name
                ))
            })?;
        let distributed = (rule.replicas == Replicas::Distributed).then(|| {
            let interval_us =
                (u128::from(l.period_ms) * 1000 / u128::from(l.requests.max(1))).max(1) as u64;
            Distributed {
                prefix: format!("portico:rl:{}:", rule.bucket_id),
                interval_us,
                // A full bucket lets `requests + burst` through at once.
                tolerance_us: interval_us.saturating_mul(u64::from(
                    l.requests.saturating_add(l.burst).saturating_sub(1),
                )),
            }
        });
        if distributed.is_some() && self.redis.is_none() {
            tracing::warn!(rule = %rule.name, "a Distributed rate limit without --redis-url is enforced per replica (divided among replicas)");
        }
        Ok(Rule {
            name: rule.name.as_str().into(),
            matcher: rule.r#match.clone(),
            key: rule.key.clone(),
            local,
            distributed,
            limit: l.requests,
            window_secs: l.period_ms.div_ceil(1000),
        })
    }
}

fn key_stage(key: Option<&RateLimitKey>) -> Stage {
    match key.map(|k| k.r#type) {
        Some(KeyType::JwtClaim | KeyType::ApiKey) => Stage::PostAuth,
        _ => Stage::PreAuth,
    }
}

fn rule_stage(rule: &RateLimitRule) -> Stage {
    // A key that comes from the identity can only be read after authentication.
    match key_stage(Some(&rule.key)) {
        Stage::PostAuth => Stage::PostAuth,
        Stage::PreAuth => rule.stage,
    }
}

#[derive(Debug)]
struct Distributed {
    prefix: String,
    interval_us: u64,
    tolerance_us: u64,
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    matcher: Option<RateLimitMatch>,
    key: RateLimitKey,
    local: Arc<LocalBucket>,
    distributed: Option<Distributed>,
    limit: u32,
    window_secs: u64,
}

impl Rule {
    fn matches(&self, req: &Req) -> bool {
        let Some(m) = &self.matcher else { return true };
        (m.methods.is_empty() || m.methods.iter().any(|x| x == req.method().as_str()))
            && m.path_prefix
                .as_deref()
                .is_none_or(|p| req.uri().path().starts_with(p))
            && m.headers.iter().all(|h| {
                req.headers()
                    .get_all(h.name.as_str())
                    .iter()
                    .any(|v| v.as_bytes() == h.value.as_bytes())
            })
    }

    fn limited(&self, wait: Duration) -> ProxyError {
        ProxyError::RateLimited(Box::new(RateLimited {
            rule: self.name.clone(),
            limit: self.limit,
            window_secs: self.window_secs,
            retry_after: wait,
        }))
    }
}

fn key_of(key: &RateLimitKey, req: &Req) -> Key {
    let identity = || req.extensions().get::<Identity>();
    let text = |s: Option<String>| s.map_or(Key::Absent, |s| Key::Text(s.into()));
    match key.r#type {
        KeyType::Global => Key::Global,
        KeyType::ClientIp => req
            .extensions()
            .get::<Client>()
            .map_or(Key::Absent, |c| Key::Ip(c.ip.to_canonical())),
        KeyType::Header => key
            .name
            .as_deref()
            .and_then(|n| req.headers().get(n))
            .map_or(Key::Absent, |v| {
                Key::Text(String::from_utf8_lossy(v.as_bytes()).into())
            }),
        KeyType::JwtClaim => text(
            key.name
                .as_deref()
                .and_then(|n| identity().and_then(|i| i.claim(n))),
        ),
        KeyType::ApiKey => text(identity().and_then(|i| i.client_id.clone())),
    }
}

/// The in-flight cap.
#[derive(Debug)]
struct Inflight {
    max: u32,
    key: Option<RateLimitKey>,
    global: AtomicU32,
    keyed: Mutex<HashMap<Key, u32>>,
}

/// Releases an in-flight slot when the response body is done.
#[derive(Debug)]
struct Slot {
    inflight: Arc<Inflight>,
    key: Option<Key>,
}

impl Inflight {
    fn acquire(self: &Arc<Self>, req: &Req) -> Option<Slot> {
        match &self.key {
            None => {
                let taken = self
                    .global
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < self.max).then_some(n + 1)
                    })
                    .is_ok();
                taken.then(|| Slot {
                    inflight: self.clone(),
                    key: None,
                })
            }
            Some(k) => {
                let key = key_of(k, req);
                let mut keyed = self.keyed.lock().unwrap();
                let n = keyed.entry(key.clone()).or_insert(0);
                if *n >= self.max {
                    return None;
                }
                *n += 1;
                Some(Slot {
                    inflight: self.clone(),
                    key: Some(key),
                })
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.key.take() {
            None => {
                self.inflight.global.fetch_sub(1, Ordering::AcqRel);
            }
            Some(key) => {
                let mut keyed = self.inflight.keyed.lock().unwrap();
                if let Some(n) = keyed.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        keyed.remove(&key);
                    }
                }
            }
        }
    }
}

/// The rules of one stage of a route.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    rules: Arc<[Rule]>,
    inflight: Option<Arc<Inflight>>,
    redis: Option<Arc<Redis>>,
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimiting<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimiting {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimiting<S> {
    layer: RateLimitLayer,
    inner: S,
}

impl<S> Service<Req> for RateLimiting<S>
where
    S: Service<Req, Response = Res, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Res;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> BoxFuture {
        let mut remote = Vec::new();
        for (i, rule) in self.layer.rules.iter().enumerate() {
            if !rule.matches(&req) {
                continue;
            }
            let key = key_of(&rule.key, &req);
            match (&rule.distributed, &self.layer.redis) {
                (Some(_), Some(_)) => remote.push((i, key)),
                _ => {
                    if let Err(wait) = rule.local.check(key) {
                        let e = rule.limited(wait);
                        return Box::pin(async { Err(e) });
                    }
                }
            }
        }
        let inflight = self.layer.inflight.clone();
        let inner = self.inner.clone();
        if remote.is_empty() {
            return Box::pin(pass(inflight, inner, req));
        }
        let layer = self.layer.clone();
        Box::pin(async move {
            let redis = layer.redis.as_ref().expect("remote rules need Redis");
            for (i, key) in remote {
                let rule = &layer.rules[i];
                let d = rule
                    .distributed
                    .as_ref()
                    .expect("remote rules are distributed");
                let cell = format!("{}{}", d.prefix, key.redis_suffix());
                let verdict = match redis.check(&cell, d.interval_us, d.tolerance_us).await {
                    Ok(verdict) => verdict,
                    Err(e) => {
                        redis.warn(&e);
                        rule.local.check(key).err()
                    }
                };
                if let Some(wait) = verdict {
                    return Err(rule.limited(wait));
                }
            }
            pass(inflight, inner, req).await
        })
    }
}

/// Takes an in-flight slot (503 when none is free) and calls `inner`; the slot is held until
/// the response body is done.
async fn pass<S>(inflight: Option<Arc<Inflight>>, mut inner: S, req: Req) -> Result<Res>
where
    S: Service<Req, Response = Res, Error = ProxyError>,
{
    let slot = match &inflight {
        None => None,
        Some(inflight) => Some(inflight.acquire(&req).ok_or(ProxyError::Overloaded)?),
    };
    let res = inner.call(req).await?;
    Ok(match slot {
        Some(slot) => res.map(|b| b.with_guard(slot)),
        None => res,
    })
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn bucket(
        requests: u32,
        period_ms: u64,
        burst: u32,
        max_keys: usize,
    ) -> (LocalBucket<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            LocalBucket::new(requests, period_ms, burst, clock.clone(), max_keys).unwrap(),
            clock,
        )
    }

    #[test]
    fn a_full_bucket_then_the_rate() {
        // 10 per second, burst 2: twelve at once, then one every 100 ms.
        let (b, clock) = bucket(10, 1000, 2, 100);
        let ip = || Key::Ip("10.0.0.1".parse().unwrap());
        for _ in 0..12 {
            assert!(b.check(ip()).is_ok());
        }
        let wait = b.check(ip()).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Other keys have their own cells.
        assert!(b.check(Key::Ip("10.0.0.2".parse().unwrap())).is_ok());
        clock.advance(Duration::from_millis(100));
        assert!(b.check(ip()).is_ok());
        assert!(b.check(ip()).is_err());
        // Over 10 s at 100 tries a second, 10/s allows 100, not more.
        let mut allowed = 0;
        for _ in 0..1000 {
            clock.advance(Duration::from_millis(10));
            allowed += usize::from(b.check(ip()).is_ok());
        }
        assert_eq!(allowed, 100);
        // Idle for a while, the bucket is full again, never fuller.
        clock.advance(Duration::from_secs(60));
        let burst = (0..100).filter(|_| b.check(ip()).is_ok()).count();
        assert_eq!(burst, 12);
    }

    #[test]
    fn the_key_count_follows_the_cells() {
        let store = CountedStore::default();
        let touch = |key: Key, at: u64| {
            store
                .measure_and_replace(&key, |_| Ok::<_, ()>(((), Nanos::from(at))))
                .unwrap();
        };
        for i in 0..100u32 {
            touch(Key::Ip(IpAddr::from(i.to_be_bytes())), 10);
        }
        touch(Key::Global, 50);
        touch(Key::Ip(IpAddr::from(7u32.to_be_bytes())), 50);
        assert_eq!((store.len(), store.cells.len()), (101, 101));
        store.retain_recent(Nanos::from(20));
        assert_eq!((store.len(), store.cells.len()), (2, 2));
        assert!(!store.is_empty());
    }

    #[test]
    fn keys_are_bounded() {
        let (b, clock) = bucket(1, 60_000, 0, 1000);
        // A million distinct client IPs.
        for i in 0..1_000_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = b.check(Key::Ip(ip));
        }
        assert!(
            b.keys() <= 1000 + OVERFLOW_BUCKETS as usize,
            "{} keys",
            b.keys()
        );
        // Once the cells are back to full, the sweep drops them.
        clock.advance(Duration::from_secs(120));
        let _ = b.check(Key::Global);
        assert!(b.keys() <= 2, "{} keys after the sweep", b.keys());
    }

    #[test]
    fn divided_among_replicas_uses_the_snapshot_replica_count() {
        let buckets = Buckets::new(None);
        let rule = |replicas: Replicas| RateLimitRule {
            name: "r".into(),
            bucket_id: format!("ns/p/{replicas:?}"),
            r#match: None,
            key: RateLimitKey {
                r#type: KeyType::Global,
                name: None,
            },
            limit: portico_api::policy::Limit {
                requests: 100,
                period_ms: 60_000,
                burst: 8,
            },
            replicas,
            stage: Stage::PreAuth,
        };
        let per = buckets.rule(&rule(Replicas::PerReplica), 4).unwrap();
        assert_eq!(per.local.fingerprint, (100, 60_000, 8));
        let divided = buckets
            .rule(&rule(Replicas::DividedAmongReplicas), 4)
            .unwrap();
        assert_eq!(divided.local.fingerprint, (25, 60_000, 2));
        // Never below one request.
        let many = buckets
            .rule(&rule(Replicas::DividedAmongReplicas), 1000)
            .unwrap();
        assert_eq!(many.local.fingerprint.0, 1);
    }

    #[test]
    fn unchanged_buckets_survive_a_rebuild() {
        let buckets = Buckets::new(None);
        let a = buckets.bucket("ns/p/r", 5, 1000, 0).unwrap();
        assert!(Arc::ptr_eq(
            &a,
            &buckets.bucket("ns/p/r", 5, 1000, 0).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &buckets.bucket("ns/p/r", 6, 1000, 0).unwrap()
        ));
        assert!(LocalBucket::new(0, 1000, 0, DefaultClock::default(), 10).is_none());
    }
}
