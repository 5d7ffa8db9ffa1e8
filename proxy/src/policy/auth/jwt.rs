//! JWT bearer tokens, verified against each provider's JWKS.
//!
//! A token is accepted when its signature verifies with a key of the set (the key named by
//! `kid`, or any key when it names none) under an algorithm that key may use (`alg: none` and
//! HMAC with a public key never verify), its `iss` and `aud` match, `exp` is in the future and
//! `nbf` in the past, within the provider's clock skew. `exp` is required: a proxy should not
//! accept tokens that never expire. The token is stripped from the upstream request unless the
//! provider forwards it; chosen claims become request headers.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, KeySet};
use super::token::{self, Source};
use super::{AuthConfigError, AuthEnv, AuthMethod, Clock, Identity, Outcome, header_name};

/// A prepared `jwt` block.
pub struct Jwt {
    providers: Vec<Provider>,
    cache: JwksCache,
    clock: Clock,
}

struct Provider {
    name: String,
    issuer: Option<String>,
    /// `iss` and `aud` rules; `exp` and `nbf` are checked against the clock here.
    validation: Validation,
    keys: Keys,
    sources: Vec<Source>,
    claim_to_headers: Vec<(String, HeaderName)>,
    skew_secs: u64,
    forward_token: bool,
}

enum Keys {
    Inline(Arc<KeySet>),
    Remote { uri: String, cache_for: Duration },
}

impl Jwt {
    pub fn new(
        config: &portico_api::policy::JwtAuth,
        env: &AuthEnv,
    ) -> Result<Self, AuthConfigError> {
        let providers = config
            .providers
            .iter()
            .map(|p| {
                Provider::new(p).map_err(|why| AuthConfigError::Jwt {
                    provider: p.name.clone(),
                    why,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            providers,
            cache: env.jwks.clone(),
            clock: env.clock.clone(),
        })
    }

    /// Headers this method sets on accepted requests.
    pub fn set_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.providers
            .iter()
            .flat_map(|p| p.claim_to_headers.iter().map(|(_, h)| h))
    }

    pub async fn check(&self, parts: &mut Parts) -> Outcome {
        let mut presented = false;
        for provider in &self.providers {
            let Some((source, token)) = token::find(&provider.sources, parts) else {
                continue;
            };
            presented = true;
            let claims = match provider.verify(&token, &self.cache, &self.clock).await {
                Ok(claims) => claims,
                Err(why) => {
                    // Never the token itself.
                    tracing::debug!(provider = %provider.name, reason = why, "JWT refused");
                    continue;
                }
            };
            if !provider.forward_token {
                source.strip(parts);
            }
            for (claim, header) in &provider.claim_to_headers {
                if let Some(v) =
                    claim_text(&claims, claim).and_then(|text| HeaderValue::from_str(&text).ok())
                {
                    parts.headers.insert(header.clone(), v);
                }
            }
            let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
            return Outcome::Accepted(Identity {
                method: AuthMethod::Jwt,
                subject,
                claims: Some(Arc::new(claims)),
                client_id: None,
            });
        }
        let challenge = if presented {
            HeaderValue::from_static(r#"Bearer error="invalid_token""#)
        } else {
            HeaderValue::from_static("Bearer")
        };
        Outcome::Refused(Some(challenge))
    }
}

impl Provider {
    fn new(p: &portico_api::policy::JwtProvider) -> Result<Self, String> {
        let keys = match &p.jwks {
            // A missing Secret or ConfigMap: the translator reported it, no token passes.
            portico_api::policy::Jwks::Inline(json) if json.trim().is_empty() => {
                Keys::Inline(Arc::default())
            }
            portico_api::policy::Jwks::Inline(json) => {
                let set = KeySet::parse(json, true)?;
                if set.keys.is_empty() {
                    return Err("the JWKS has no usable signing key".into());
                }
                Keys::Inline(Arc::new(set))
            }
            portico_api::policy::Jwks::Remote {
                uri,
                cache_duration_ms,
            } => {
                let parsed: http::Uri = uri.parse().map_err(|_| format!("bad JWKS URI {uri}"))?;
                if !matches!(parsed.scheme_str(), Some("https" | "http")) || parsed.host().is_none()
                {
                    return Err(format!("the JWKS URI {uri} is not an http(s) URL"));
                }
                Keys::Remote {
                    uri: uri.clone(),
                    cache_for: Duration::from_millis(*cache_duration_ms),
                }
            }
        };
        let mut sources = p
            .extract_from
            .iter()
            .map(Source::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if sources.is_empty() {
            sources.push(Source::bearer());
        }
        let claim_to_headers = p
            .claim_to_headers
            .iter()
            .map(|c| Ok((c.claim.clone(), header_name(&c.header)?)))
            .collect::<Result<_, AuthConfigError>>()
            .map_err(|e| e.to_string())?;

        let mut validation = Validation {
            validate_exp: false,
            validate_nbf: false,
            leeway: 0,
            ..Validation::default()
        };
        validation.required_spec_claims.clear();
        if let Some(iss) = &p.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        if p.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&p.audiences);
            validation.required_spec_claims.insert("aud".into());
        }
        Ok(Self {
            name: p.name.clone(),
            issuer: p.issuer.clone(),
            validation,
            keys,
            sources,
            claim_to_headers,
            skew_secs: p.clock_skew_ms.div_ceil(1000),
            forward_token: p.forward_token,
        })
    }

    /// The token's claims, or why it is refused.
    async fn verify(
        &self,
        token: &str,
        cache: &JwksCache,
        clock: &Clock,
    ) -> Result<Map<String, Value>, &'static str> {
        // `alg: none` and unknown algorithms fail here.
        let header = decode_header(token).map_err(|_| "malformed token or algorithm")?;
        // A token of another issuer must not make this provider fetch keys.
        if let Some(issuer) = &self.issuer {
            let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
                .map_err(|_| "malformed claims")?;
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err("issuer");
            }
        }
        let now = clock();
        let keys = match &self.keys {
            Keys::Inline(set) => set.clone(),
            Keys::Remote { uri, cache_for } => {
                let mut set = cache.get(uri, *cache_for, now).await;
                if let Some(kid) = &header.kid
                    && !set.as_ref().is_some_and(|s| s.has_kid(kid))
                {
                    set = cache.refresh(uri, now).await;
                }
                set.ok_or("no key set could be fetched")?
            }
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let mut verified = None;
        for key in keys.candidates(header.kid.as_deref(), header.alg) {
            if let Ok(data) = decode::<Map<String, Value>>(token, &key.key, &validation) {
                verified = Some(data.claims);
                break;
            }
        }
        let claims = verified.ok_or("signature, issuer or audience")?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let skew = self.skew_secs as f64;
        let exp = claims.get("exp").and_then(Value::as_f64).ok_or("no exp")?;
        if now >= exp + skew {
            return Err("expired");
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_f64().ok_or("malformed nbf")?;
            if now + skew < nbf {
                return Err("not yet valid");
            }
        }
        Ok(claims)
    }
}

/// A claim as header text; see [`super::Identity::claim`].
pub fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    let value = claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, key| v.get(key))
    })?;
    match value {
        Value::Array(items) => {
            let texts: Option<Vec<String>> = items.iter().map(scalar_text).collect();
            texts.map(|t| t.join(","))
        }
        other => scalar_text(other),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use bytes::Bytes;
    use http::Response;
    use http_body_util::Full;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use portico_api::policy::{
        Authentication, ClaimToHeader, Jwks, JwtAuth, JwtProvider, TokenSource,
    };
    use serde_json::json;

    use super::super::test_support::*;
    use super::super::{AuthLayer, AuthMethod};
    use super::*;

    /// An EC P-256 key generated for the test: what signs, and its public JWK.
    struct TestKey {
        encoding: EncodingKey,
        jwk: Value,
    }

    impl TestKey {
        fn new(kid: &str) -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let raw = pair.public_key_raw();
            Self {
                encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
                jwk: json!({
                    "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
                }),
            }
        }

        fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = kid.map(str::to_owned);
            encode(&header, claims, &self.encoding).unwrap()
        }
    }

    fn jwks(keys: &[&TestKey]) -> String {
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
    }

    /// 2030-01-01T00:00:00Z, the tests' fixed now.
    const NOW: u64 = 1_893_456_000;

    fn clock_at(secs: u64) -> Clock {
        Arc::new(move || UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn provider(keys: Jwks) -> JwtProvider {
        JwtProvider {
            name: "local".into(),
            issuer: Some("https://issuer.test".into()),
            audiences: vec!["shop".into()],
            jwks: keys,
            claim_to_headers: vec![
                ClaimToHeader {
                    claim: "sub".into(),
                    header: "x-user".into(),
                },
                ClaimToHeader {
                    claim: "org.team".into(),
                    header: "x-team".into(),
                },
                ClaimToHeader {
                    claim: "admin".into(),
                    header: "x-admin".into(),
                },
            ],
            clock_skew_ms: 30_000,
            ..Default::default()
        }
    }

    fn layer_with(providers: Vec<JwtProvider>, env: &AuthEnv) -> AuthLayer {
        let config = Authentication {
            jwt: Some(JwtAuth { providers }),
            ..Default::default()
        };
        AuthLayer::new(&config, env).unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": "https://issuer.test", "aud": "shop", "sub": "u-42",
            "exp": NOW + 60, "nbf": NOW - 60,
            "org": {"team": "blue"}, "admin": true,
        })
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[tokio::test]
    async fn a_valid_token_passes_with_claim_headers_and_is_stripped() {
        let key = TestKey::new("k1");
        let env = env().with_clock(clock_at(NOW));
        let l = layer_with(vec![provider(Jwks::Inline(jwks(&[&key])))], &env);
        let token = key.sign(Some("k1"), &claims());
        let seen = run(
            &l,
            request(
                "/",
                &[("authorization", &bearer(&token)), ("x-user", "root")],
            ),
        )
        .await;
        assert_eq!(seen.status, 200);
        let upstream = seen.upstream.unwrap();
        assert_eq!(upstream["x-user"], "u-42");
        assert_eq!(upstream["x-team"], "blue");
        assert_eq!(upstream["x-admin"], "true");
        assert!(!upstream.contains_key("authorization"));
        let id = seen.identity.unwrap();
        assert_eq!(id.method, AuthMethod::Jwt);
        assert_eq!(id.subject.as_deref(), Some("u-42"));
        assert_eq!(id.claim("org.team").as_deref(), Some("blue"));
        assert_eq!(id.claim("exp"), Some((NOW + 60).to_string()));
    }

    #[tokio::test]
    async fn forward_token_keeps_it_and_a_key_without_kid_is_tried() {
        let key = TestKey::new("k1");
        let env = env().with_clock(clock_at(NOW));
        let mut p = provider(Jwks::Inline(jwks(&[&TestKey::new("other"), &key])));
        p.forward_token = true;
        p.extract_from = vec![TokenSource::Cookie("session".into())];
        let l = layer_with(vec![p], &env);
        let token = key.sign(None, &claims());
        let seen = run(&l, request("/", &[("cookie", &format!("session={token}"))])).await;
        assert_eq!(seen.status, 200);
        assert!(
            seen.upstream.unwrap()["cookie"]
                .to_str()
                .unwrap()
                .contains(&token)
        );
    }

    #[tokio::test]
    async fn time_issuer_audience_and_signature_are_checked() {
        let key = TestKey::new("k1");
        let l = |secs| {
            layer_with(
                vec![provider(Jwks::Inline(jwks(&[&key])))],
                &env().with_clock(clock_at(secs)),
            )
        };
        let token = key.sign(Some("k1"), &claims());
        let status = |l: AuthLayer, token: String| async move {
            run(&l, request("/", &[("authorization", &bearer(&token))])).await
        };
        // exp is NOW+60 and the skew 30s: valid until NOW+90, nbf NOW-60 from NOW-90.
        assert_eq!(status(l(NOW + 89), token.clone()).await.status, 200);
        assert_eq!(status(l(NOW - 89), token.clone()).await.status, 200);
        let late = status(l(NOW + 90), token.clone()).await;
        assert_eq!(late.status, 401);
        assert_eq!(
            late.headers["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(status(l(NOW - 91), token.clone()).await.status, 401);

        let mut other = claims();
        other["aud"] = json!(["billing"]);
        assert_eq!(
            status(l(NOW), key.sign(Some("k1"), &other)).await.status,
            401
        );
        let mut other = claims();
        other["iss"] = json!("https://evil.test");
        assert_eq!(
            status(l(NOW), key.sign(Some("k1"), &other)).await.status,
            401
        );
        let mut other = claims();
        other.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            status(l(NOW), key.sign(Some("k1"), &other)).await.status,
            401
        );
        // Signed by a key not in the set.
        let stranger = TestKey::new("k1");
        assert_eq!(
            status(l(NOW), stranger.sign(Some("k1"), &claims()))
                .await
                .status,
            401
        );
        // A tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"iss": "https://issuer.test", "aud": "shop", "sub": "admin", "exp": NOW + 60})).unwrap(),
        );
        parts[1] = &forged;
        assert_eq!(status(l(NOW), parts.join(".")).await.status, 401);
    }

    #[tokio::test]
    async fn alg_none_and_hmac_with_the_public_key_are_refused() {
        let key = TestKey::new("k1");
        let l = layer_with(
            vec![provider(Jwks::Inline(jwks(&[&key])))],
            &env().with_clock(clock_at(NOW)),
        );
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
            b64(claims())
        );
        let seen = run(&l, request("/", &[("authorization", &bearer(&none))])).await;
        assert_eq!(seen.status, 401);
        // HS256 keyed with the public key's JWK text, the classic confusion attack.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let secret = key.jwk.to_string();
        let confused = encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let seen = run(&l, request("/", &[("authorization", &bearer(&confused))])).await;
        assert_eq!(seen.status, 401);
    }

    #[tokio::test]
    async fn no_token_is_a_bare_bearer_challenge() {
        let key = TestKey::new("k1");
        let l = layer_with(vec![provider(Jwks::Inline(jwks(&[&key])))], &env());
        let seen = run(&l, request("/", &[])).await;
        assert_eq!(seen.status, 401);
        assert_eq!(seen.headers["www-authenticate"], "Bearer");
    }

    #[test]
    fn bad_inline_jwks_is_a_configuration_error_and_empty_refuses_all() {
        for bad in [
            "{",
            r#"{"nokeys": []}"#,
            r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "!!", "y": "!!"}]}"#,
        ] {
            let config = Authentication {
                jwt: Some(JwtAuth {
                    providers: vec![provider(Jwks::Inline(bad.into()))],
                }),
                ..Default::default()
            };
            assert!(AuthLayer::new(&config, &env()).is_err(), "{bad}");
        }
        let config = Authentication {
            jwt: Some(JwtAuth {
                providers: vec![provider(Jwks::Inline(String::new()))],
            }),
            ..Default::default()
        };
        assert!(AuthLayer::new(&config, &env()).is_ok());
    }

    /// A JWKS endpoint on 127.0.0.1 serving `body`, counting fetches.
    async fn jwks_server(body: Arc<Mutex<String>>) -> (String, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let count = fetches.clone();
        let addr = serve(move |_req| {
            count.fetch_add(1, Ordering::SeqCst);
            let body = body.lock().unwrap().clone();
            async move { Response::new(Full::new(Bytes::from(body))) }
        })
        .await;
        (format!("http://{addr}/jwks.json"), fetches)
    }

    #[tokio::test]
    async fn remote_jwks_is_cached_and_refetched_for_an_unknown_kid() {
        let k1 = TestKey::new("k1");
        let k2 = TestKey::new("k2");
        let served = Arc::new(Mutex::new(jwks(&[&k1])));
        let (uri, fetches) = jwks_server(served.clone()).await;
        let now = Arc::new(AtomicUsize::new(NOW as usize));
        let clock_now = now.clone();
        let env = env()
            .with_clock(Arc::new(move || {
                UNIX_EPOCH + Duration::from_secs(clock_now.load(Ordering::SeqCst) as u64)
            }))
            .with_jwks_refetch_interval(Duration::from_secs(10));
        let l = layer_with(
            vec![provider(Jwks::Remote {
                uri,
                cache_duration_ms: 300_000,
            })],
            &env,
        );
        let send = |token: String| {
            let l = l.clone();
            async move {
                run(&l, request("/", &[("authorization", &bearer(&token))]))
                    .await
                    .status
            }
        };
        let mut c = claims();
        c["exp"] = json!(NOW + 3600);
        assert_eq!(send(k1.sign(Some("k1"), &c)).await, 200);
        assert_eq!(send(k1.sign(Some("k1"), &c)).await, 200);
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "cached");

        // The issuer rotates to k2: the unknown kid refetches once.
        *served.lock().unwrap() = jwks(&[&k1, &k2]);
        now.fetch_add(11, Ordering::SeqCst);
        assert_eq!(send(k2.sign(Some("k2"), &c)).await, 200);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Made-up kids within the interval do not fetch again.
        for _ in 0..3 {
            assert_eq!(send(k2.sign(Some("nope"), &c)).await, 401);
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "refetches are rate limited"
        );

        // The endpoint breaks after the cache expires: the last good set is kept.
        *served.lock().unwrap() = "not json".into();
        now.fetch_add(301, Ordering::SeqCst);
        assert_eq!(send(k1.sign(Some("k1"), &c)).await, 200);
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_https_jwks_with_an_untrusted_certificate_is_not_used() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let k1 = TestKey::new("k1");
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(crypto)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let done = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if acceptor.accept(tcp).await.is_ok() {
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let l = layer_with(
            vec![provider(Jwks::Remote {
                uri: format!("https://127.0.0.1:{}/jwks.json", addr.port()),
                cache_duration_ms: 1000,
            })],
            &env().with_clock(clock_at(NOW)),
        );
        let token = k1.sign(Some("k1"), &claims());
        let seen = run(&l, request("/", &[("authorization", &bearer(&token))])).await;
        assert_eq!(seen.status, 401);
        assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_token_of_another_issuer_does_not_make_a_provider_fetch_keys() {
        let k1 = TestKey::new("k1");
        let (uri, fetches) = jwks_server(Arc::new(Mutex::new(jwks(&[&TestKey::new("r1")])))).await;
        let mut remote = provider(Jwks::Remote {
            uri,
            cache_duration_ms: 60_000,
        });
        remote.name = "remote".into();
        remote.issuer = Some("https://other.test".into());
        remote.claim_to_headers = vec![ClaimToHeader {
            claim: "sub".into(),
            header: "x-remote-user".into(),
        }];
        let l = layer_with(
            vec![remote, provider(Jwks::Inline(jwks(&[&k1])))],
            &env().with_clock(clock_at(NOW)),
        );
        let token = k1.sign(Some("k1"), &claims());
        let seen = run(
            &l,
            request(
                "/",
                &[
                    ("authorization", &bearer(&token)),
                    ("x-remote-user", "spoofed"),
                ],
            ),
        )
        .await;
        assert_eq!(seen.status, 200);
        assert_eq!(fetches.load(Ordering::SeqCst), 0);
        // Every provider's claim headers are the proxy's, not only the one that accepted.
        let upstream = seen.upstream.unwrap();
        assert!(!upstream.contains_key("x-remote-user"));
        assert_eq!(upstream["x-user"], "u-42");
    }

    #[tokio::test]
    async fn unreachable_jwks_refuses_tokens() {
        let k1 = TestKey::new("k1");
        // Bound then closed: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let l = layer_with(
            vec![provider(Jwks::Remote {
                uri: format!("http://{addr}/jwks.json"),
                cache_duration_ms: 1000,
            })],
            &env().with_clock(clock_at(NOW)),
        );
        let token = k1.sign(Some("k1"), &claims());
        let seen = run(&l, request("/", &[("authorization", &bearer(&token))])).await;
        assert_eq!(seen.status, 401);
    }
}
