//! Host and path validation, as the API server validates Ingresses (standalone mode has no API
//! server to do it).

use std::net::IpAddr;

/// The host lower-cased, or why it is invalid. A host is an RFC 1123 subdomain, optionally
/// preceded by `*.` (a wildcard for exactly one label); IP addresses are not allowed.
pub(crate) fn validate_host(host: &str) -> Result<String, String> {
    let host = host.to_ascii_lowercase();
    if host.parse::<IpAddr>().is_ok() {
        return Err("must be a DNS name, not an IP address".to_owned());
    }
    let name = host.strip_prefix("*.").unwrap_or(&host);
    if name.contains('*') {
        return Err("a wildcard must be the whole first label, as in *.example.com".to_owned());
    }
    if host.len() > 253 {
        return Err("must be no more than 253 characters".to_owned());
    }
    for label in name.split('.') {
        let valid = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(
                "must be a lower-case RFC 1123 subdomain: labels of letters, digits and '-', \
                 starting and ending with a letter or digit, separated by '.'"
                    .to_owned(),
            );
        }
    }
    Ok(host)
}

/// Why `path` is invalid for an `Exact` or `Prefix` path type, if it is.
pub(crate) fn invalid_path(path: &str) -> Option<String> {
    // The API server's own rules for these path types.
    const SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
    const SUFFIXES: [&str; 2] = ["/..", "/."];
    if !path.starts_with('/') {
        return Some("must be an absolute path, starting with '/'".to_owned());
    }
    if let Some(seq) = SEQUENCES.iter().find(|s| path.contains(*s)) {
        return Some(format!("must not contain '{seq}'"));
    }
    if let Some(suffix) = SUFFIXES.iter().find(|s| path.ends_with(*s)) {
        return Some(format!("must not end with '{suffix}'"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for (host, want) in [
            ("example.com", Some("example.com")),
            ("Foo.Example.COM", Some("foo.example.com")),
            ("*.example.com", Some("*.example.com")),
            ("a-1.b2", Some("a-1.b2")),
            ("localhost", Some("localhost")),
            ("1.2.3.4", None),
            ("::1", None),
            ("*", None),
            ("*.", None),
            ("foo.*.example.com", None),
            ("*foo.example.com", None),
            ("**.example.com", None),
            ("example.com.", None),
            ("-a.example.com", None),
            ("a-.example.com", None),
            ("a_b.example.com", None),
            ("example.com:80", None),
            ("", None),
        ] {
            assert_eq!(validate_host(host).ok().as_deref(), want, "{host:?}");
        }
        assert!(validate_host(&"a".repeat(64)).is_err());
        assert!(validate_host(&["a"; 127].join(".")).is_ok());
        assert!(validate_host(&["a"; 128].join(".")).is_err());
    }

    #[test]
    fn paths() {
        for path in ["/", "/foo", "/foo/", "/a.b/c", "/%20"] {
            assert_eq!(invalid_path(path), None, "{path}");
        }
        for path in [
            "", "foo", "/a//b", "/a/./b", "/a/../b", "/a%2fb", "/a%2Fb", "/a/..", "/a/.",
        ] {
            assert!(invalid_path(path).is_some(), "{path}");
        }
    }
}
