//! Static API keys: the key is compared with every configured key in constant time, and the
//! matched client id is forwarded in the configured header.
//!
//! The key itself is left on the request, as Envoy Gateway and ingress-nginx do; a backend that
//! must not see it can drop it with the `headers` block.

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use subtle::ConstantTimeEq;

use super::token::{self, Source};
use super::{AuthConfigError, AuthMethod, Identity, Outcome, header_name};

/// A prepared `apiKey` block.
pub struct ApiKey {
    /// Client id and key.
    keys: Vec<(String, Vec<u8>)>,
    sources: Vec<Source>,
    forward_client_id: Option<HeaderName>,
}

impl ApiKey {
    pub fn new(config: &portico_api::policy::ApiKeyAuth) -> Result<Self, AuthConfigError> {
        let mut sources = config
            .extract_from
            .iter()
            .map(Source::new)
            .collect::<Result<Vec<_>, _>>()?;
        if sources.is_empty() {
            sources.push(Source::Header {
                name: HeaderName::from_static("x-api-key"),
                prefix: String::new(),
            });
        }
        if let Some((client, _)) = config.keys.iter().find(|(_, k)| k.is_empty()) {
            return Err(AuthConfigError::ApiKey(format!(
                "client {client} has an empty key"
            )));
        }
        Ok(Self {
            keys: config
                .keys
                .iter()
                .map(|(client, key)| (client.clone(), key.as_bytes().to_vec()))
                .collect(),
            sources,
            forward_client_id: config
                .forward_client_id_header
                .as_deref()
                .map(header_name)
                .transpose()?,
        })
    }

    /// Headers this method sets on accepted requests.
    pub fn set_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.forward_client_id.iter()
    }

    pub fn check(&self, parts: &mut Parts) -> Outcome {
        let Some((_, presented)) = token::find(&self.sources, parts) else {
            return Outcome::Refused(None);
        };
        // Every key is compared, so the time taken does not tell which client came close.
        let mut matched = None;
        for (client, key) in &self.keys {
            if bool::from(key.as_slice().ct_eq(presented.as_bytes())) {
                matched = Some(client);
            }
        }
        let Some(client) = matched else {
            return Outcome::Refused(None);
        };
        if let Some(name) = &self.forward_client_id
            && let Ok(v) = HeaderValue::from_str(client)
        {
            parts.headers.insert(name.clone(), v);
        }
        Outcome::Accepted(Identity {
            method: AuthMethod::ApiKey,
            subject: Some(client.clone()),
            claims: None,
            client_id: Some(client.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use portico_api::policy::{ApiKeyAuth, Authentication, TokenSource};

    use super::super::test_support::*;
    use super::super::{AuthLayer, AuthMethod};

    fn layer(extract_from: Vec<TokenSource>) -> AuthLayer {
        let config = Authentication {
            api_key: Some(ApiKeyAuth {
                keys: BTreeMap::from([
                    ("ci".into(), "s3cr3t-ci".into()),
                    ("dash".into(), "s3cr3t-dash".into()),
                ]),
                extract_from,
                forward_client_id_header: Some("x-client-id".into()),
            }),
            ..Default::default()
        };
        AuthLayer::new(&config, &env()).unwrap()
    }

    #[tokio::test]
    async fn matched_key_forwards_the_client_id() {
        let l = layer(Vec::new());
        let seen = run(
            &l,
            request("/", &[("x-api-key", "s3cr3t-dash"), ("x-client-id", "ci")]),
        )
        .await;
        assert_eq!(seen.status, 200);
        assert_eq!(seen.upstream.unwrap()["x-client-id"], "dash");
        let id = seen.identity.unwrap();
        assert_eq!(id.method, AuthMethod::ApiKey);
        assert_eq!(id.client_id.as_deref(), Some("dash"));
    }

    #[tokio::test]
    async fn missing_or_wrong_key_is_401() {
        let l = layer(Vec::new());
        assert_eq!(run(&l, request("/", &[])).await.status, 401);
        let wrong = run(&l, request("/", &[("x-api-key", "s3cr3t-ci2")])).await;
        assert_eq!(wrong.status, 401);
        assert!(wrong.upstream.is_none());
        // A prefix of a valid key is not a valid key.
        assert_eq!(
            run(&l, request("/", &[("x-api-key", "s3cr3t")]))
                .await
                .status,
            401
        );
    }

    #[tokio::test]
    async fn key_from_a_query_parameter() {
        let l = layer(vec![TokenSource::Query("api_key".into())]);
        let seen = run(&l, request("/p?api_key=s3cr3t-ci", &[])).await;
        assert_eq!(seen.status, 200);
        assert_eq!(seen.upstream.unwrap()["x-client-id"], "ci");
        // The default header is not looked at when sources are configured.
        let header = run(&l, request("/p", &[("x-api-key", "s3cr3t-ci")])).await;
        assert_eq!(header.status, 401);
    }
}
