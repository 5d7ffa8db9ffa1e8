//! Proxy authentication by TokenReview.
//!
//! A proxy presents a projected ServiceAccount token of audience `portico.dev`. The API server
//! says whose it is; the operator then requires the ServiceAccount `portico-proxy-<class>` of
//! its own namespace, so that a proxy reads its own class's snapshot and nothing else. Accepted
//! tokens are remembered for a minute (by a keyed hash, never in clear), so a fleet
//! reconnecting after an operator restart costs one review per proxy, not one per attempt.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};
use portico_distribute::protocol::TOKEN_AUDIENCE;
use portico_distribute::server::{AuthError, AuthFuture, Authenticator, Peer};

/// How long an accepted token is trusted without asking again.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most tokens remembered; beyond, the oldest half is dropped.
const CACHE_MAX: usize = 4096;

/// Authenticates proxies with the TokenReview API.
pub struct TokenReviewer {
    client: Client,
    namespace: String,
    hasher: RandomState,
    /// Token hash -> (identity, when reviewed).
    cache: Mutex<HashMap<u64, (String, Instant)>>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Requires proxies of class `c` to run as `system:serviceaccount:<namespace>:portico-proxy-c`.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            hasher: RandomState::new(),
            cache: Mutex::default(),
        }
    }

    /// The user name a proxy of `class` must authenticate as.
    pub fn expected_user(&self, class: &str) -> String {
        format!(
            "system:serviceaccount:{}:portico-proxy-{class}",
            self.namespace
        )
    }

    fn cached(&self, key: u64) -> Option<String> {
        let cache = self.cache.lock().unwrap();
        let (identity, at) = cache.get(&key)?;
        (at.elapsed() < CACHE_TTL).then(|| identity.clone())
    }

    fn remember(&self, key: u64, identity: &str) {
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL / 2);
        }
        cache.insert(key, (identity.to_owned(), Instant::now()));
    }

    /// The identity the API server vouches for, or why not.
    async fn review(&self, token: &str) -> Result<String, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![TOKEN_AUDIENCE.to_owned()]),
            },
            ..Default::default()
        };
        let api = Api::<TokenReview>::all(self.client.clone());
        let reviewed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Unauthenticated(
                status
                    .error
                    .unwrap_or_else(|| "token not authenticated".into()),
            ));
        }
        let audience_ok = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == TOKEN_AUDIENCE));
        if !audience_ok {
            return Err(AuthError::Unauthenticated(format!(
                "the token is not for audience {TOKEN_AUDIENCE}"
            )));
        }
        status
            .user
            .and_then(|u| u.username)
            .ok_or_else(|| AuthError::Unauthenticated("the token names no user".into()))
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str, class: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let key = self.hasher.hash_one(token);
            let identity = match self.cached(key) {
                Some(identity) => identity,
                None => {
                    let identity = self.review(token).await?;
                    self.remember(key, &identity);
                    identity
                }
            };
            let expected = self.expected_user(class);
            if identity != expected {
                return Err(AuthError::Forbidden(format!(
                    "{identity} may not read class {class} (expected {expected})"
                )));
            }
            Ok(Peer { identity })
        })
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock;

    use super::*;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn reviewer() -> (TokenReviewer, Handle) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        (TokenReviewer::new(client, "portico-system"), handle)
    }

    /// Expects one TokenReview of `token` and answers it with `status`.
    async fn answer_review(handle: &mut Handle, token: &str, status: Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "/apis/authentication.k8s.io/v1/tokenreviews?"
        );
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["spec"]["token"], token);
        assert_eq!(body["spec"]["audiences"], json!(["portico.dev"]));
        let mut reply = body;
        reply["status"] = status;
        send.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    }

    fn authenticated(user: &str) -> Value {
        json!({"authenticated": true, "audiences": ["portico.dev"], "user": {"username": user}})
    }

    async fn within_a_second<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(1), f)
            .await
            .expect("done within a second")
    }

    #[tokio::test]
    async fn the_class_service_account_is_accepted_once_and_then_remembered() {
        let (reviewer, mut handle) = reviewer();
        let server = tokio::spawn(async move {
            answer_review(
                &mut handle,
                "tok",
                authenticated("system:serviceaccount:portico-system:portico-proxy-web"),
            )
            .await;
            handle
        });
        let peer = within_a_second(reviewer.authenticate("tok", "web"))
            .await
            .unwrap();
        assert_eq!(
            peer.identity,
            "system:serviceaccount:portico-system:portico-proxy-web"
        );
        let _handle = within_a_second(server).await.unwrap();
        // Remembered: no second request reaches the (now silent) API server.
        within_a_second(reviewer.authenticate("tok", "web"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn another_class_is_forbidden() {
        let (reviewer, mut handle) = reviewer();
        tokio::spawn(async move {
            answer_review(
                &mut handle,
                "tok",
                authenticated("system:serviceaccount:portico-system:portico-proxy-web"),
            )
            .await;
        });
        let err = within_a_second(reviewer.authenticate("tok", "internal"))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Forbidden(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_service_account_of_another_namespace_is_forbidden() {
        let (reviewer, mut handle) = reviewer();
        tokio::spawn(async move {
            answer_review(
                &mut handle,
                "tok",
                authenticated("system:serviceaccount:default:portico-proxy-web"),
            )
            .await;
        });
        let err = within_a_second(reviewer.authenticate("tok", "web"))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Forbidden(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_unauthenticated_or_wrong_audience_token_is_refused() {
        let (reviewer, mut handle) = reviewer();
        tokio::spawn(async move {
            answer_review(
                &mut handle,
                "bad",
                json!({"authenticated": false, "error": "token expired"}),
            )
            .await;
            answer_review(
                &mut handle,
                "other-audience",
                json!({"authenticated": true, "audiences": [], "user": {"username": "system:serviceaccount:portico-system:portico-proxy-web"}}),
            )
            .await;
        });
        let err = within_a_second(reviewer.authenticate("bad", "web"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuthError::Unauthenticated(ref m) if m.contains("expired")),
            "{err:?}"
        );
        let err = within_a_second(reviewer.authenticate("other-audience", "web"))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Unauthenticated(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_api_server_failure_is_unavailable_not_a_refusal() {
        let (reviewer, mut handle) = reviewer();
        tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(
                Response::builder()
                    .status(500)
                    .body(Body::from(
                        serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd down", "reason": "InternalError", "code": 500})).unwrap(),
                    ))
                    .unwrap(),
            );
        });
        let err = within_a_second(reviewer.authenticate("tok", "web"))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    }
}
