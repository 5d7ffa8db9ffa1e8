//! TLS Secrets into snapshot certificates.
//!
//! A Secret serves when it is of type `kubernetes.io/tls`, or of any type holding both
//! `tls.crt` and `tls.key`. Both must be PEM: the certificate with at least one `CERTIFICATE`
//! block, the key with a `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block. The check
//! is structural (armour lines and base64 bodies); the proxy parses the DER when it loads the
//! snapshot. The PEM text is carried as is.

use k8s_openapi::api::core::v1::Secret;
use portico_api::Certificate;

use crate::{Index, ObjectKey, Warning};

const TLS_TYPE: &str = "kubernetes.io/tls";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

/// The certificate in Secret `namespace/name`, or why it cannot serve.
pub(crate) fn certificate(
    index: &Index,
    namespace: &str,
    name: &str,
) -> Result<Certificate, Warning> {
    let Some(secret) = index.secrets.get(&ObjectKey::new(namespace, name)) else {
        return Err(Warning::new(
            "SecretNotFound",
            format!("TLS Secret {namespace}/{name} not found; its hosts are served over HTTP only"),
        ));
    };
    let invalid = |why: &str| {
        Warning::new(
            "InvalidCertificate",
            format!("TLS Secret {namespace}/{name}: {why}; its hosts are served over HTTP only"),
        )
    };
    let (cert, key) = match (field(secret, CERT_KEY), field(secret, KEY_KEY)) {
        (Some(cert), Some(key)) => (cert, key),
        _ if secret.type_.as_deref() == Some(TLS_TYPE) => {
            return Err(invalid("tls.crt or tls.key is missing or empty"));
        }
        _ => {
            return Err(invalid(
                "it is not of type kubernetes.io/tls and holds no tls.crt and tls.key",
            ));
        }
    };
    let (Ok(cert), Ok(key)) = (std::str::from_utf8(cert), std::str::from_utf8(key)) else {
        return Err(invalid("tls.crt or tls.key is not PEM text"));
    };
    let labels = pem_labels(cert).map_err(|why| invalid(&format!("tls.crt: {why}")))?;
    if !labels.iter().any(|l| l == "CERTIFICATE") {
        return Err(invalid("tls.crt holds no PEM CERTIFICATE block"));
    }
    let labels = pem_labels(key).map_err(|why| invalid(&format!("tls.key: {why}")))?;
    if labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY") {
        return Err(invalid("tls.key is encrypted, which is not supported"));
    }
    if !labels.iter().any(|l| {
        matches!(
            l.as_str(),
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
        )
    }) {
        return Err(invalid("tls.key holds no PEM private key block"));
    }
    Ok(Certificate {
        cert_pem: cert.to_owned(),
        key_pem: key.to_owned(),
    })
}

fn field<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| v.0.as_slice())
        .filter(|v| !v.is_empty())
}

/// The labels of the PEM blocks in `text`, in order. Text outside blocks is allowed (OpenSSL
/// writes explanatory lines); a block that is not closed, or whose body is not base64, is not.
fn pem_labels(text: &str) -> Result<Vec<String>, String> {
    let mut labels = Vec::new();
    let mut open: Option<(&str, usize)> = None;
    for line in text.lines().map(str::trim) {
        match open {
            None => {
                if let Some(label) = armour(line, "-----BEGIN ") {
                    open = Some((label, 0));
                }
            }
            Some((label, body_len)) => {
                if let Some(end) = armour(line, "-----END ") {
                    if end != label {
                        return Err(format!("BEGIN {label} closed by END {end}"));
                    }
                    if body_len == 0 || body_len % 4 != 0 {
                        return Err(format!("{label} block is not valid base64"));
                    }
                    labels.push(label.to_owned());
                    open = None;
                } else if line
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                {
                    open = Some((label, body_len + line.len()));
                } else {
                    return Err(format!("{label} block is not valid base64"));
                }
            }
        }
    }
    match open {
        Some((label, _)) => Err(format!("{label} block is not closed")),
        None if labels.is_empty() => Err("no PEM block".to_owned()),
        None => Ok(labels),
    }
}

fn armour<'l>(line: &'l str, prefix: &str) -> Option<&'l str> {
    line.strip_prefix(prefix)?
        .strip_suffix("-----")
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_labels_reads_blocks_and_rejects_broken_ones() {
        let good = "subject=CN=x\n-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n\
                    -----BEGIN CERTIFICATE-----\nQUI=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_labels(good).unwrap(), ["CERTIFICATE", "CERTIFICATE"]);
        assert_eq!(
            pem_labels(
                "-----BEGIN EC PRIVATE KEY-----\r\nQUJD\r\n-----END EC PRIVATE KEY-----\r\n"
            )
            .unwrap(),
            ["EC PRIVATE KEY"]
        );
        for bad in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\nQUJD\n",
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nQUJ\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nQU*D\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nQUJD\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(pem_labels(bad).is_err(), "{bad:?}");
        }
    }
}
