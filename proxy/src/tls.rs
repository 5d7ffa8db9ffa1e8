//! TLS termination: one rustls `ServerConfig` per certificate of the snapshot, chosen per
//! ClientHello by SNI (through `Router::sni`), with a generated self-signed certificate for
//! names no entry covers.
//!
//! Parsed keys are cached by certificate id and reused by later snapshots while the PEM is
//! unchanged, so a snapshot swap costs no key parsing. All configs share one session cache and
//! one ticketer, so resumption survives swaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portico_api::{Certificate, Router};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::hygiene::PeerCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;

/// ALPN protocols offered to clients.
fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// A resolver that always answers with one certificate.
#[derive(Debug)]
struct Single(Arc<CertifiedKey>);

impl ResolvesServerCert for Single {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Parsed certificates and the state shared by every `ServerConfig`, kept across snapshots.
#[derive(Debug)]
pub struct CertStore {
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
    cache: Mutex<HashMap<String, (Certificate, Arc<CertifiedKey>)>>,
    fallback: Arc<ServerConfig>,
}

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no certificate in the PEM")]
    NoCertificate,
    #[error("no private key in the PEM")]
    NoKey,
    #[error("unreadable PEM: {0}")]
    Pem(#[from] std::io::Error),
    #[error("unusable key: {0}")]
    Key(#[from] rustls::Error),
    #[error("cannot generate the fallback certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

impl CertStore {
    /// A store with a freshly generated self-signed fallback certificate.
    pub fn new() -> Result<Self, CertError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let sessions: Arc<dyn StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(4096);
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().ok();
        let generated = rcgen::generate_simple_self_signed(vec![
            "portico.invalid".to_owned(),
            "localhost".to_owned(),
        ])?;
        let fallback_pem = Certificate {
            cert_pem: generated.cert.pem(),
            key_pem: generated.signing_key.serialize_pem(),
        };
        let fallback_key = Arc::new(certified_key(&provider, &fallback_pem)?);
        let fallback = server_config(&provider, &sessions, ticketer.as_ref(), fallback_key, None);
        Ok(Self {
            provider,
            sessions,
            ticketer,
            cache: Mutex::new(HashMap::new()),
            fallback,
        })
    }

    /// The TLS table of a snapshot. Certificates that cannot be parsed are logged and their
    /// hosts get the fallback certificate. Hosts with a client CA (IngressPolicy
    /// `clientCertificate`) get a config that asks for a client certificate and verifies it
    /// against that CA; clients without one still connect, and the routes that require one
    /// refuse them.
    pub fn table(&self, router: &Router) -> TlsTable {
        let snapshot = router.snapshot();
        let mut cache = self.cache.lock().unwrap();
        let mut configs: HashMap<(&str, Option<&str>), Arc<ServerConfig>> = HashMap::new();
        let mut by_host = HashMap::new();
        for entry in &snapshot.sni {
            let ca = entry.client_ca.as_ref().map(|c| c.ca_pem.as_str());
            if let Some(config) = configs.get(&(entry.certificate.as_str(), ca)) {
                by_host.insert(entry.host.clone(), config.clone());
                continue;
            }
            let Some(pem) = snapshot.certificates.get(&entry.certificate) else {
                tracing::warn!(certificate = %entry.certificate, host = %entry.host, "certificate missing from the snapshot; serving the fallback");
                continue;
            };
            let key = match cache.get(&entry.certificate) {
                Some((cached, key)) if cached == pem => key.clone(),
                _ => match certified_key(&self.provider, pem) {
                    Ok(key) => {
                        let key = Arc::new(key);
                        cache.insert(entry.certificate.clone(), (pem.clone(), key.clone()));
                        key
                    }
                    Err(e) => {
                        tracing::warn!(certificate = %entry.certificate, error = %e, "unusable certificate; serving the fallback");
                        continue;
                    }
                },
            };
            let verifier = ca.and_then(|ca| match client_verifier(&self.provider, ca) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(host = %entry.host, error = %e, "unusable client CA: no client certificates are asked for, and routes that require one refuse every request");
                    None
                }
            });
            let config = server_config(
                &self.provider,
                &self.sessions,
                self.ticketer.as_ref(),
                key,
                verifier,
            );
            configs.insert((entry.certificate.as_str(), ca), config.clone());
            by_host.insert(entry.host.clone(), config);
        }
        cache.retain(|id, _| snapshot.certificates.contains_key(id));
        TlsTable {
            by_host,
            fallback: self.fallback.clone(),
        }
    }

    /// A table with only the fallback certificate.
    pub fn empty_table(&self) -> TlsTable {
        TlsTable {
            by_host: HashMap::new(),
            fallback: self.fallback.clone(),
        }
    }
}

/// A verifier of client certificates issued by the CAs in `ca_pem`; clients may also send none.
fn client_verifier(
    provider: &Arc<CryptoProvider>,
    ca_pem: &str,
) -> Result<Arc<dyn ClientCertVerifier>, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    if roots.is_empty() {
        return Err(CertError::NoCertificate);
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| CertError::Key(rustls::Error::General(e.to_string())))
}

/// The subject alternative names of a verified client certificate (DER), as text.
pub fn peer_cert(der: &[u8]) -> Option<PeerCert> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    Some(s.to_string())
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                    16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(PeerCert { sans })
}

/// The server configs of one snapshot, by SNI entry host.
#[derive(Debug)]
pub struct TlsTable {
    by_host: HashMap<String, Arc<ServerConfig>>,
    fallback: Arc<ServerConfig>,
}

impl TlsTable {
    /// The config for a ClientHello's server name: the SNI entry's certificate, the `""`
    /// entry's when no name matches, else the fallback.
    pub fn choose(&self, router: &Router, server_name: Option<&str>) -> Arc<ServerConfig> {
        router
            .sni(server_name)
            .and_then(|entry| self.by_host.get(&entry.host))
            .unwrap_or(&self.fallback)
            .clone()
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    sessions: &Arc<dyn StoresServerSessions>,
    ticketer: Option<&Arc<dyn ProducesTickets>>,
    key: Arc<CertifiedKey>,
    client: Option<Arc<dyn ClientCertVerifier>>,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default versions");
    let builder = match client {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Single(key)));
    config.alpn_protocols = alpn();
    config.session_storage = sessions.clone();
    if let Some(ticketer) = ticketer {
        config.ticketer = ticketer.clone();
    }
    Arc::new(config)
}

fn certified_key(provider: &CryptoProvider, pem: &Certificate) -> Result<CertifiedKey, CertError> {
    let chain =
        rustls_pemfile::certs(&mut pem.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = rustls_pemfile::private_key(&mut pem.key_pem.as_bytes())?.ok_or(CertError::NoKey)?;
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}

#[cfg(test)]
mod tests {
    use portico_api::{Snapshot, SniHost};

    use super::*;

    fn pem(name: &str) -> Certificate {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        Certificate {
            cert_pem: c.cert.pem(),
            key_pem: c.signing_key.serialize_pem(),
        }
    }

    #[test]
    fn table_reuses_keys_and_falls_back() {
        let store = CertStore::new().unwrap();
        let mut s = Snapshot::empty("t");
        s.certificates.insert("ns/a".into(), pem("a.test"));
        s.certificates.insert(
            "ns/bad".into(),
            Certificate {
                cert_pem: "junk".into(),
                key_pem: "junk".into(),
            },
        );
        s.sni = vec![
            SniHost {
                host: "a.test".into(),
                certificate: "ns/a".into(),
                client_ca: None,
            },
            SniHost {
                host: "bad.test".into(),
                certificate: "ns/bad".into(),
                client_ca: None,
            },
        ];
        let router = Router::new(s);
        let table = store.table(&router);
        let a = table.choose(&router, Some("a.test"));
        assert!(!Arc::ptr_eq(&a, &store.fallback));
        assert!(Arc::ptr_eq(
            &table.choose(&router, Some("bad.test")),
            &store.fallback
        ));
        assert!(Arc::ptr_eq(&table.choose(&router, None), &store.fallback));
        let first = store.cache.lock().unwrap()["ns/a"].1.clone();
        let _again = store.table(&router);
        let second = store.cache.lock().unwrap()["ns/a"].1.clone();
        assert!(
            Arc::ptr_eq(&first, &second),
            "unchanged PEM is not parsed again"
        );
    }
}
