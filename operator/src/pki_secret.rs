//! The operator's CA and serving certificate, kept in a Secret so that restarts and replicas
//! share them, and the CA certificate alone published in a ConfigMap for proxies to mount.
//!
//! The Secret is created when absent (a replica losing the race reads the winner's) and
//! replaced when it does not hold a usable set. Existing Secrets are never rotated here.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use portico_distribute::pki::{CA_CERT, Pki, PkiError, TLS_CERT, TLS_KEY};

/// Secret holding `ca.crt`, `tls.crt` and `tls.key`.
pub const SECRET_NAME: &str = "portico-operator-tls";
/// ConfigMap holding `ca.crt` for proxies.
pub const CONFIG_MAP_NAME: &str = "portico-ca";
/// Field manager of what the operator applies.
pub const FIELD_MANAGER: &str = "portico-operator";

/// Why the PKI could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum PkiSecretError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

fn from_secret(secret: &Secret) -> Option<Pki> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Some(Pki {
        ca_pem: text(CA_CERT)?,
        cert_pem: text(TLS_CERT)?,
        key_pem: text(TLS_KEY)?,
    })
}

fn to_secret(pki: &Pki, namespace: &str, resource_version: Option<String>) -> Secret {
    let data = [
        (CA_CERT, &pki.ca_pem),
        (TLS_CERT, &pki.cert_pem),
        (TLS_KEY, &pki.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect::<BTreeMap<_, _>>();
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version,
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                FIELD_MANAGER.to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// The PKI in the Secret of `namespace`, created (for `names`) or repaired as needed, with the
/// CA certificate applied to the ConfigMap.
pub async fn ensure(
    client: Client,
    namespace: &str,
    names: &[String],
) -> Result<Pki, PkiSecretError> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let pki = match secrets.get_opt(SECRET_NAME).await? {
        Some(secret) => match from_secret(&secret).filter(|p| p.validate().is_ok()) {
            Some(pki) => pki,
            None => {
                tracing::warn!(
                    secret = SECRET_NAME,
                    "the certificate Secret is unusable; replacing it"
                );
                let pki = Pki::generate(names)?;
                let secret = to_secret(&pki, namespace, secret.metadata.resource_version);
                secrets
                    .replace(SECRET_NAME, &PostParams::default(), &secret)
                    .await?;
                pki
            }
        },
        None => {
            let pki = Pki::generate(names)?;
            match secrets
                .create(&PostParams::default(), &to_secret(&pki, namespace, None))
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        secret = SECRET_NAME,
                        "generated the operator's CA and certificate"
                    );
                    pki
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => {
                    // Another replica was first: use its set.
                    let secret = secrets.get(SECRET_NAME).await?;
                    from_secret(&secret).ok_or_else(|| PkiError::Invalid {
                        what: SECRET_NAME.to_owned(),
                        why: "incomplete".to_owned(),
                    })?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    publish_ca(client, namespace, &pki.ca_pem).await?;
    Ok(pki)
}

/// Applies `ca.crt` to the proxies' ConfigMap.
async fn publish_ca(client: Client, namespace: &str, ca_pem: &str) -> Result<(), kube::Error> {
    let config_maps = Api::<ConfigMap>::namespaced(client, namespace);
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
        },
        "data": {CA_CERT: ca_pem},
    });
    config_maps
        .patch(
            CONFIG_MAP_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(config_map),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock;

    use super::*;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn names() -> Vec<String> {
        vec!["portico-operator.portico-system.svc".into()]
    }

    async fn next(
        handle: &mut Handle,
    ) -> (Method, String, Value, mock::SendResponse<Response<Body>>) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (method, uri, body, send)
    }

    fn respond(send: mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
    }

    /// Expects the ConfigMap apply and returns the CA it carried.
    async fn expect_ca_applied(handle: &mut Handle) -> String {
        let (method, uri, body, send) = next(handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/api/v1/namespaces/portico-system/configmaps/portico-ca?&force=true&fieldManager=portico-operator"
        );
        assert_eq!(body["metadata"]["name"], "portico-ca");
        let ca = body["data"]["ca.crt"].as_str().unwrap().to_owned();
        respond(send, 200, &body);
        ca
    }

    #[tokio::test]
    async fn a_missing_secret_is_created_and_its_ca_published() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let api = tokio::spawn(async move {
            let (method, uri, _, send) = next(&mut handle).await;
            assert_eq!(method, Method::GET);
            assert_eq!(
                uri,
                "/api/v1/namespaces/portico-system/secrets/portico-operator-tls"
            );
            respond(send, 404, &not_found());

            let (method, uri, body, send) = next(&mut handle).await;
            assert_eq!(method, Method::POST);
            assert_eq!(uri, "/api/v1/namespaces/portico-system/secrets?");
            assert_eq!(body["type"], "kubernetes.io/tls");
            assert_eq!(body["metadata"]["name"], "portico-operator-tls");
            let data = body["data"].as_object().unwrap();
            let keys: Vec<_> = data.keys().map(String::as_str).collect();
            assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
            respond(send, 201, &body);
            let ca = expect_ca_applied(&mut handle).await;
            (body, ca)
        });
        let pki = tokio::time::timeout(
            Duration::from_secs(1),
            ensure(client, "portico-system", &names()),
        )
        .await
        .unwrap()
        .unwrap();
        let (secret, ca) = tokio::time::timeout(Duration::from_secs(1), api)
            .await
            .unwrap()
            .unwrap();
        let secret: Secret = serde_json::from_value(secret).unwrap();
        assert_eq!(
            from_secret(&secret).unwrap(),
            pki,
            "the Secret holds what is served"
        );
        assert_eq!(ca, pki.ca_pem);
        pki.validate().unwrap();
    }

    #[tokio::test]
    async fn an_existing_secret_is_used_as_is() {
        let existing = Pki::generate(&names()).unwrap();
        let secret =
            serde_json::to_value(to_secret(&existing, "portico-system", Some("7".into()))).unwrap();
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let api = tokio::spawn(async move {
            let (method, _, _, send) = next(&mut handle).await;
            assert_eq!(method, Method::GET);
            respond(send, 200, &secret);
            expect_ca_applied(&mut handle).await
        });
        let pki = tokio::time::timeout(
            Duration::from_secs(1),
            ensure(client, "portico-system", &names()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(pki, existing);
        let ca = tokio::time::timeout(Duration::from_secs(1), api)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ca, existing.ca_pem);
    }

    #[tokio::test]
    async fn a_damaged_secret_is_replaced() {
        let mut damaged = to_secret(
            &Pki::generate(&names()).unwrap(),
            "portico-system",
            Some("7".into()),
        );
        damaged
            .data
            .as_mut()
            .unwrap()
            .insert(TLS_KEY.into(), ByteString(b"garbage".to_vec()));
        let damaged = serde_json::to_value(damaged).unwrap();
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let api = tokio::spawn(async move {
            let (_, _, _, send) = next(&mut handle).await;
            respond(send, 200, &damaged);
            let (method, uri, body, send) = next(&mut handle).await;
            assert_eq!(method, Method::PUT);
            assert_eq!(
                uri,
                "/api/v1/namespaces/portico-system/secrets/portico-operator-tls?"
            );
            assert_eq!(
                body["metadata"]["resourceVersion"], "7",
                "optimistic concurrency"
            );
            respond(send, 200, &body);
            expect_ca_applied(&mut handle).await
        });
        let pki = tokio::time::timeout(
            Duration::from_secs(1),
            ensure(client, "portico-system", &names()),
        )
        .await
        .unwrap()
        .unwrap();
        pki.validate().unwrap();
        let ca = tokio::time::timeout(Duration::from_secs(1), api)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ca, pki.ca_pem);
    }
}
