//! The operator's own PKI: a CA, and a serving certificate it signs for the names proxies dial.
//!
//! The CA's key is used once, to sign, and then dropped: nothing can be issued under the CA
//! later, and a new set (CA included) is generated whenever one is missing. Proxies trust the CA
//! certificate alone, published where they can mount it; they re-read it on every reconnect.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;

/// File and Secret key of the CA certificate.
pub const CA_CERT: &str = "ca.crt";
/// File and Secret key of the serving certificate chain.
pub const TLS_CERT: &str = "tls.crt";
/// File and Secret key of the serving key.
pub const TLS_KEY: &str = "tls.key";

/// Why certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// CA certificate and serving certificate and key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_pem_len", &self.ca_pem.len())
            .field("cert_pem_len", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Pki {
    /// A new CA and a serving certificate for `names` (DNS names or IP addresses).
    pub fn generate(names: &[String]) -> Result<Self, PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "portico-operator CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "portico-operator");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Checks that the three parts parse, so a damaged store is replaced rather than served.
    pub fn validate(&self) -> Result<(), PkiError> {
        ca_roots(self.ca_pem.as_bytes())?;
        self.server_config().map(drop)
    }

    /// A TLS server configuration presenting the serving certificate, speaking HTTP/2 only.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let chain = certs(self.cert_pem.as_bytes(), TLS_CERT)?;
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| invalid(TLS_KEY, "no PEM private key"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reads `dir`/{ca.crt, tls.crt, tls.key}; `None` when any is missing.
    pub fn read_dir(dir: &Path) -> Result<Option<Self>, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(PkiError::Io {
                    path: path.display().to_string(),
                    source,
                }),
            }
        };
        match (read(CA_CERT)?, read(TLS_CERT)?, read(TLS_KEY)?) {
            (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Ok(Some(Self {
                ca_pem,
                cert_pem,
                key_pem,
            })),
            _ => Ok(None),
        }
    }

    /// Writes the three files into `dir` (created if needed); the key is readable by its owner
    /// alone.
    pub fn write_dir(&self, dir: &Path) -> Result<(), PkiError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| PkiError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for (name, text) in [
            (TLS_KEY, &self.key_pem),
            (TLS_CERT, &self.cert_pem),
            (CA_CERT, &self.ca_pem),
        ] {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            write_private(&tmp, text.as_bytes()).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The set in `dir`, generated for `names` and written there when absent or unreadable.
    pub fn load_or_generate_dir(dir: &Path, names: &[String]) -> Result<Self, PkiError> {
        if let Some(pki) = Self::read_dir(dir)? {
            match pki.validate() {
                Ok(()) => return Ok(pki),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "replacing unusable certificates")
                }
            }
        }
        let pki = Self::generate(names)?;
        pki.write_dir(dir)?;
        Ok(pki)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// The crypto provider of the workspace (aws-lc-rs), explicitly, so that no process-wide
/// default has to be installed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn invalid(what: &str, why: &str) -> PkiError {
    PkiError::Invalid {
        what: what.to_owned(),
        why: why.to_owned(),
    }
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, &e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(what, "no PEM certificate"));
    }
    Ok(certs)
}

/// A root store holding the CA certificates in `pem`.
pub fn ca_roots(pem: &[u8]) -> Result<rustls::RootCertStore, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(pem, CA_CERT)? {
        roots
            .add(cert)
            .map_err(|e| invalid(CA_CERT, &e.to_string()))?;
    }
    Ok(roots)
}

/// A TLS client configuration trusting `ca_pem` alone, speaking HTTP/2 only.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let roots = ca_roots(ca_pem)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_set_round_trips_through_a_directory() {
        let dir = std::env::temp_dir().join(format!("portico-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = Pki::load_or_generate_dir(&dir, &names).unwrap();
        first.validate().unwrap();
        let again = Pki::load_or_generate_dir(&dir, &names).unwrap();
        assert_eq!(first, again, "an existing set is kept");

        std::fs::write(dir.join(TLS_KEY), "garbage").unwrap();
        let replaced = Pki::load_or_generate_dir(&dir, &names).unwrap();
        assert_ne!(replaced.ca_pem, first.ca_pem, "a damaged set is replaced");
        assert_eq!(Pki::read_dir(&dir).unwrap().unwrap(), replaced);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
