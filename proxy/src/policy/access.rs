//! `ipAccess` and `clientCertificate`: who may reach the route at all.
//!
//! ipAccess: a deny entry always wins; a non-empty allow list refuses every address outside
//! it. The address is the TCP peer, or with `source: ClientIP` the client address that trusted
//! proxies reported (see `--trusted-proxies`). IPv4-mapped IPv6 peers compare as IPv4.
//!
//! clientCertificate: the TLS handshake of a host with a client CA asks for a certificate and
//! verifies it against that CA; here a route that requires one refuses requests without a
//! verified certificate, or whose certificate names none of the allowed SANs.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use ipnet::IpNet;
use portico_api::policy::{ClientCertificate, IpAccess, IpSource};
use tower::{Layer, Service};

use super::{BoxFuture, Client, Req, Res};
use crate::error::{ProxyError, Result};

/// Compiled `ipAccess` rules.
#[derive(Debug)]
struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    source: IpSource,
}

impl IpRules {
    fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// Refuses (403) requests from addresses the route's `ipAccess` does not admit.
#[derive(Debug, Clone)]
pub struct IpAccessLayer {
    rules: Arc<IpRules>,
}

impl IpAccessLayer {
    pub fn new(spec: &IpAccess) -> Self {
        Self {
            rules: Arc::new(IpRules {
                allow: spec.allow.clone(),
                deny: spec.deny.clone(),
                source: spec.source,
            }),
        }
    }
}

impl<S> Layer<S> for IpAccessLayer {
    type Service = IpFilter<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IpFilter {
            rules: self.rules.clone(),
            inner,
        }
    }
}

/// The service of [`IpAccessLayer`].
#[derive(Debug, Clone)]
pub struct IpFilter<S> {
    rules: Arc<IpRules>,
    inner: S,
}

impl<S> Service<Req> for IpFilter<S>
where
    S: Service<Req, Response = Res, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Res;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> BoxFuture {
        let Some(client) = req.extensions().get::<Client>() else {
            return Box::pin(async { Err(ProxyError::Internal("request without client info")) });
        };
        let ip = match self.rules.source {
            IpSource::Peer => client.conn.peer.ip(),
            IpSource::ClientIp => client.ip,
        };
        if !self.rules.admits(ip) {
            tracing::debug!(%ip, "refused by ipAccess");
            return Box::pin(async { Err(ProxyError::Forbidden("ipAccess")) });
        }
        Box::pin(self.inner.call(req))
    }
}

/// Refuses (403) requests without an acceptable verified client certificate.
#[derive(Debug, Clone)]
pub struct ClientCertLayer {
    rule: Arc<ClientCertificate>,
}

impl ClientCertLayer {
    pub fn new(spec: &ClientCertificate) -> Self {
        Self {
            rule: Arc::new(spec.clone()),
        }
    }
}

impl<S> Layer<S> for ClientCertLayer {
    type Service = ClientCert<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientCert {
            rule: self.rule.clone(),
            inner,
        }
    }
}

/// The service of [`ClientCertLayer`].
#[derive(Debug, Clone)]
pub struct ClientCert<S> {
    rule: Arc<ClientCertificate>,
    inner: S,
}

impl<S> Service<Req> for ClientCert<S>
where
    S: Service<Req, Response = Res, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Res;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> BoxFuture {
        let cert = req
            .extensions()
            .get::<Client>()
            .and_then(|c| c.conn.client_cert.clone());
        let verdict = match &cert {
            None if self.rule.required => Err("a client certificate is required"),
            None => Ok(()),
            Some(cert) => {
                if self.rule.allowed_sans.is_empty()
                    || cert
                        .sans
                        .iter()
                        .any(|san| self.rule.allowed_sans.iter().any(|a| a == san))
                {
                    Ok(())
                } else {
                    Err("the client certificate names no allowed SAN")
                }
            }
        };
        if let Err(why) = verdict {
            tracing::debug!(why, "refused by clientCertificate");
            return Box::pin(async { Err(ProxyError::Forbidden("clientCertificate")) });
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::StatusCode;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::body::ProxyBody;
    use crate::hygiene::{ConnInfo, PeerCert};
    use crate::upstream::RequestBody;

    fn req(peer: &str, client_ip: &str, cert: Option<PeerCert>) -> Req {
        let peer: SocketAddr = peer.parse().unwrap();
        let mut conn = ConnInfo::new(peer, "127.0.0.1:80".parse().unwrap(), true, None);
        conn.client_cert = cert.map(Arc::new);
        let mut req = Req::new(RequestBody::Empty);
        req.extensions_mut().insert(Client {
            conn: Arc::new(conn),
            ip: client_ip.parse().unwrap(),
        });
        req
    }

    async fn ok(_req: Req) -> Result<Res> {
        Ok(Res::new(ProxyBody::empty()))
    }

    async fn status<L>(layer: L, req: Req) -> StatusCode
    where
        L: Layer<tower::util::ServiceFn<fn(Req) -> BoxFuture>>,
        L::Service: Service<Req, Response = Res, Error = ProxyError>,
    {
        let handler: fn(Req) -> BoxFuture = |r| Box::pin(ok(r));
        match ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(handler))
            .oneshot(req)
            .await
        {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        }
    }

    fn ip(allow: &[&str], deny: &[&str], source: IpSource) -> IpAccessLayer {
        IpAccessLayer::new(&IpAccess {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
            source,
        })
    }

    #[tokio::test]
    async fn deny_wins_and_allow_lists_refuse_the_rest() {
        let layer = ip(&["10.0.0.0/8"], &["10.0.0.66/32"], IpSource::Peer);
        assert_eq!(
            status(layer.clone(), req("10.1.2.3:5", "1.1.1.1", None)).await,
            200
        );
        assert_eq!(
            status(layer.clone(), req("10.0.0.66:5", "1.1.1.1", None)).await,
            403
        );
        assert_eq!(
            status(layer.clone(), req("192.168.0.1:5", "10.0.0.1", None)).await,
            403
        );
        // An IPv4-mapped IPv6 peer is the IPv4 address.
        assert_eq!(
            status(layer, req("[::ffff:10.0.0.66]:5", "1.1.1.1", None)).await,
            403
        );
        let deny_only = ip(&[], &["192.168.0.0/16"], IpSource::Peer);
        assert_eq!(
            status(deny_only.clone(), req("8.8.8.8:5", "1.1.1.1", None)).await,
            200
        );
        assert_eq!(
            status(deny_only, req("192.168.1.1:5", "1.1.1.1", None)).await,
            403
        );
    }

    #[tokio::test]
    async fn client_ip_source_uses_the_reported_address() {
        let layer = ip(&["203.0.113.0/24"], &[], IpSource::ClientIp);
        assert_eq!(
            status(layer.clone(), req("10.0.0.1:5", "203.0.113.9", None)).await,
            200
        );
        assert_eq!(
            status(layer, req("203.0.113.9:5", "10.0.0.1", None)).await,
            403
        );
    }

    #[tokio::test]
    async fn client_certificates() {
        let required = ClientCertLayer::new(&ClientCertificate {
            required: true,
            allowed_sans: vec![],
        });
        let cert = |sans: &[&str]| PeerCert {
            sans: sans.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            status(required.clone(), req("1.1.1.1:1", "1.1.1.1", None)).await,
            403
        );
        assert_eq!(
            status(required, req("1.1.1.1:1", "1.1.1.1", Some(cert(&["a"])))).await,
            200
        );
        let named = ClientCertLayer::new(&ClientCertificate {
            required: false,
            allowed_sans: vec!["spiffe://cluster/ns/a".into()],
        });
        assert_eq!(
            status(named.clone(), req("1.1.1.1:1", "1.1.1.1", None)).await,
            200
        );
        assert_eq!(
            status(
                named.clone(),
                req("1.1.1.1:1", "1.1.1.1", Some(cert(&["b.example"])))
            )
            .await,
            403
        );
        assert_eq!(
            status(
                named,
                req(
                    "1.1.1.1:1",
                    "1.1.1.1",
                    Some(cert(&["x", "spiffe://cluster/ns/a"]))
                )
            )
            .await,
            200
        );
    }
}
