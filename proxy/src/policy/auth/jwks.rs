//! JSON Web Key Sets: parsed keys, and the cache of remote sets shared across snapshots.
//!
//! A remote set is fetched on first use and kept for the provider's cache duration. A token
//! whose `kid` is not in the set refetches it (a key rotation), at most once per
//! [`MIN_REFETCH_INTERVAL`] per URI so that tokens with made-up `kid`s cannot turn the proxy
//! against the issuer. A failed fetch keeps the last good set and is not retried before that
//! interval either. Concurrent requests that need a fetch wait for one and share its result.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::client::HttpClient;

/// Least time between two fetches of one URI, but for an expired cache.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Time a JWKS endpoint has to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One verification key and the algorithms it may verify.
pub struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    /// The JWK's `alg`, or every algorithm of its key type: an RSA key never verifies an HMAC
    /// signature, which is what stops algorithm confusion.
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key: an inline set may hold HMAC secrets.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The usable keys of a JWKS document.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document. Keys for encryption, of unsupported types, or symmetric when
    /// `allow_symmetric` is false are skipped; an unreadable key is an error.
    pub fn parse(json: &str, allow_symmetric: bool) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or("the JWKS has no \"keys\" array")?;
        let mut set = KeySet::default();
        for (i, value) in keys.iter().enumerate() {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
                tracing::debug!(index = i, "skipping a JWK of an unsupported type");
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let family: &[Algorithm] = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => &[
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => &[Algorithm::ES256],
                    EllipticCurve::P384 => &[Algorithm::ES384],
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                    EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
                    _ => continue,
                },
                AlgorithmParameters::OctetKey(_) if allow_symmetric => {
                    &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
                }
                _ => continue,
            };
            let algorithms = match jwk.common.key_algorithm {
                Some(declared) => match Algorithm::from_str(&declared.to_string()) {
                    Ok(alg) if family.contains(&alg) => vec![alg],
                    _ => continue,
                },
                None => family.to_vec(),
            };
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {i}: {e}"))?;
            set.keys.push(Key {
                kid: jwk.common.key_id.clone(),
                key,
                algorithms,
            });
        }
        Ok(set)
    }

    /// Keys that may verify a token signed with `alg` under `kid`: the keys with that `kid`,
    /// or every key when the token names none.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |k| {
            k.algorithms.contains(&alg) && (kid.is_none() || k.kid.as_deref() == kid)
        })
    }

    /// True when a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Remote key sets by URI. Cloning shares the cache.
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

struct Inner {
    client: HttpClient,
    min_refetch: Duration,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

#[derive(Default)]
struct Entry {
    state: Mutex<State>,
    /// One fetch at a time per URI; requests that wait for it use its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default, Clone)]
struct State {
    keys: Option<Arc<KeySet>>,
    /// Last successful fetch.
    fetched_at: Option<SystemTime>,
    /// Last fetch, successful or not.
    attempted_at: Option<SystemTime>,
    /// Counts fetches, so a request that waited for one does not start another.
    generation: u64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let uris = self.inner.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("JwksCache")
            .field("uris", &uris)
            .field("min_refetch", &self.inner.min_refetch)
            .finish()
    }
}

fn since(then: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    // A clock that went back counts as no time passed.
    then.map(|t| now.duration_since(t).unwrap_or(Duration::ZERO))
}

impl JwksCache {
    pub(super) fn new(client: HttpClient, min_refetch: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                min_refetch,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn entry(&self, uri: &str) -> Arc<Entry> {
        let mut entries = self.inner.entries.lock().unwrap();
        entries.entry(uri.to_owned()).or_default().clone()
    }

    /// The key set of `uri`: cached while younger than `cache_for`, fetched otherwise. `None`
    /// when no fetch has succeeded yet.
    pub async fn get(
        &self,
        uri: &str,
        cache_for: Duration,
        now: SystemTime,
    ) -> Option<Arc<KeySet>> {
        let entry = self.entry(uri);
        let state = entry.state.lock().unwrap().clone();
        let fresh = since(state.fetched_at, now).is_some_and(|age| age < cache_for);
        let backing_off =
            since(state.attempted_at, now).is_some_and(|a| a < self.inner.min_refetch);
        if fresh || backing_off {
            return state.keys;
        }
        self.fetch(uri, &entry, state.generation, now).await
    }

    /// Refetches the set of `uri` because a token names a `kid` it lacks, unless a fetch was
    /// made less than the minimum interval ago.
    pub async fn refresh(&self, uri: &str, now: SystemTime) -> Option<Arc<KeySet>> {
        let entry = self.entry(uri);
        let state = entry.state.lock().unwrap().clone();
        if since(state.attempted_at, now).is_some_and(|a| a < self.inner.min_refetch) {
            return state.keys;
        }
        self.fetch(uri, &entry, state.generation, now).await
    }

    async fn fetch(
        &self,
        uri: &str,
        entry: &Entry,
        seen_generation: u64,
        now: SystemTime,
    ) -> Option<Arc<KeySet>> {
        let _one = entry.fetching.lock().await;
        {
            let state = entry.state.lock().unwrap();
            if state.generation != seen_generation {
                return state.keys.clone();
            }
        }
        let fetched = self.download(uri).await;
        let mut state = entry.state.lock().unwrap();
        state.generation += 1;
        state.attempted_at = Some(now);
        match fetched {
            Ok(set) => {
                tracing::debug!(uri, keys = set.keys.len(), "JWKS fetched");
                state.keys = Some(Arc::new(set));
                state.fetched_at = Some(now);
            }
            Err(why) => {
                tracing::warn!(uri, error = %why, kept = state.keys.is_some(), "JWKS fetch failed");
            }
        }
        state.keys.clone()
    }

    async fn download(&self, uri: &str) -> Result<KeySet, String> {
        let req = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("bad URI: {e}"))?;
        let response = self
            .inner
            .client
            .send(req, FETCH_TIMEOUT, MAX_JWKS_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response
            .into_body()
            .ok_or("the JWKS is larger than 1 MiB")?;
        let text = std::str::from_utf8(&body).map_err(|_| "the JWKS is not UTF-8")?;
        // A set served over the network carries public keys only.
        KeySet::parse(text, false)
    }
}
