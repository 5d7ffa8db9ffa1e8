//! Where credentials are read from (a header with a prefix, a cookie, a query parameter), and
//! how they are taken off the request before it goes upstream.

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri, header};
use portico_api::policy::TokenSource;

use super::{AuthConfigError, header_name};

/// A place a credential is read from.
#[derive(Debug, Clone)]
pub enum Source {
    Header { name: HeaderName, prefix: String },
    Cookie(String),
    Query(String),
}

impl Source {
    /// The snapshot's source, with its header name checked.
    pub fn new(source: &TokenSource) -> Result<Self, AuthConfigError> {
        Ok(match source {
            TokenSource::Header { name, prefix } => Self::Header {
                name: header_name(name)?,
                prefix: prefix.clone(),
            },
            TokenSource::Cookie(name) => Self::Cookie(name.clone()),
            TokenSource::Query(name) => Self::Query(name.clone()),
        })
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer() -> Self {
        Self::Header {
            name: header::AUTHORIZATION,
            prefix: "Bearer ".to_owned(),
        }
    }

    /// The credential, if the request carries a non-empty one here.
    pub fn find(&self, parts: &Parts) -> Option<String> {
        match self {
            Self::Header { name, prefix } => parts.headers.get_all(name).iter().find_map(|v| {
                let v = v.to_str().ok()?;
                // Auth schemes are case-insensitive (RFC 9110 11.1).
                let head = v.get(..prefix.len())?;
                let rest = v.get(prefix.len()..)?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| rest.trim())
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
            }),
            Self::Cookie(name) => parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    let v = v.trim().trim_matches('"');
                    (k.trim() == name && !v.is_empty()).then(|| v.to_owned())
                }),
            Self::Query(name) => parts
                .uri
                .query()?
                .split('&')
                .find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k) == *name).then(|| percent_decode(v))
                })
                .filter(|v| !v.is_empty()),
        }
    }

    /// Removes the credential from the request.
    pub fn strip(&self, parts: &mut Parts) {
        match self {
            Self::Header { name, .. } => {
                parts.headers.remove(name);
            }
            Self::Cookie(name) => {
                let kept: Vec<String> = parts
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|pair| {
                        !pair.is_empty()
                            && pair.split_once('=').is_none_or(|(k, _)| k.trim() != name)
                    })
                    .map(str::to_owned)
                    .collect();
                parts.headers.remove(header::COOKIE);
                if !kept.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
                {
                    parts.headers.insert(header::COOKIE, v);
                }
            }
            Self::Query(name) => {
                let Some(query) = parts.uri.query() else {
                    return;
                };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
                        percent_decode(k) != *name
                    })
                    .collect();
                let path = parts.uri.path();
                let pq = if kept.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}?{}", kept.join("&"))
                };
                let mut uri = std::mem::take(&mut parts.uri).into_parts();
                uri.path_and_query = PathAndQuery::try_from(pq).ok();
                if let Ok(u) = Uri::from_parts(uri) {
                    parts.uri = u;
                }
            }
        }
    }
}

/// The first credential found in `sources`, and where.
pub fn find<'a>(sources: &'a [Source], parts: &Parts) -> Option<(&'a Source, String)> {
    sources
        .iter()
        .find_map(|s| s.find(parts).map(|token| (s, token)))
}

/// `%XX` decoding; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_prefix_is_case_insensitive_and_required() {
        let s = Source::bearer();
        assert_eq!(
            s.find(&parts("/", &[("authorization", "bearer abc")])),
            Some("abc".into())
        );
        assert_eq!(s.find(&parts("/", &[("authorization", "Basic abc")])), None);
        assert_eq!(s.find(&parts("/", &[("authorization", "Bearer ")])), None);
    }

    #[test]
    fn cookie_is_found_and_stripped_alone() {
        let s = Source::Cookie("session".into());
        let mut p = parts("/", &[("cookie", "a=1; session=tok; b=2")]);
        assert_eq!(s.find(&p), Some("tok".into()));
        s.strip(&mut p);
        assert_eq!(p.headers["cookie"], "a=1; b=2");
        let mut only = parts("/", &[("cookie", "session=tok")]);
        s.strip(&mut only);
        assert!(!only.headers.contains_key("cookie"));
    }

    #[test]
    fn query_parameter_is_decoded_and_stripped() {
        let s = Source::Query("access_token".into());
        let mut p = parts("/x?a=1&access_token=t%2Bk&b=2", &[]);
        assert_eq!(s.find(&p), Some("t+k".into()));
        s.strip(&mut p);
        assert_eq!(p.uri, "/x?a=1&b=2");
        let mut only = parts("/x?access_token=t", &[]);
        s.strip(&mut only);
        assert_eq!(only.uri, "/x");
    }
}
