//! Header hygiene: what a request and a response lose and gain on their way through.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and are removed both ways:
//! `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`,
//! `TE` (except `TE: trailers`, which gRPC needs end to end) and `Upgrade` (kept, with
//! `Connection: upgrade`, on an HTTP/1.1 upgrade request and its `101` response).
//!
//! Requests gain `X-Forwarded-For` (the peer appended to any incoming list), `X-Forwarded-Proto`,
//! `X-Forwarded-Host`, `X-Forwarded-Port` and `X-Request-Id` (a random 128-bit hex id, unless
//! the proxy trusts incoming ids and one is present). `Host` passes unchanged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// What the proxy knows about a client connection, computed once per connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer address as a header value, for `X-Forwarded-For`.
    peer_ip: HeaderValue,
    /// The local port as a header value, for `X-Forwarded-Port`.
    port: HeaderValue,
    /// True on the TLS listener.
    pub tls: bool,
    /// The SNI server name the client sent, lower-case.
    pub sni: Option<Box<str>>,
    /// The client certificate verified in the TLS handshake, if the client sent one.
    pub client_cert: Option<Arc<PeerCert>>,
    /// The HTTP/1.1 head timeout's view of the connection (none for HTTP/2).
    pub head_timer: Option<Arc<crate::head_timeout::HeadTimer>>,
    /// The streams open on an HTTP/2 connection, for its idle timeout (none for HTTP/1.1).
    pub h2_streams: Option<Arc<crate::head_timeout::H2Streams>>,
}

/// What the proxy keeps of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// Subject alternative names: DNS names, URIs, e-mail addresses and IPs, as text.
    pub sans: Vec<String>,
}

impl ConnInfo {
    /// Information about a connection from `peer` to `local`.
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool, sni: Option<Box<str>>) -> Self {
        let ip = peer.ip().to_canonical();
        Self {
            peer,
            peer_ip: HeaderValue::from_str(&ip.to_string()).expect("an IP is a header value"),
            port: HeaderValue::from(local.port()),
            tls,
            sni,
            client_cert: None,
            head_timer: None,
            h2_streams: None,
        }
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (the left-most entry
/// when all are). Entries that do not parse end the walk: nothing left of them can be trusted.
pub fn client_ip(headers: &HeaderMap, conn: &ConnInfo, trusted: &[IpNet]) -> IpAddr {
    let peer = conn.peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    for entry in entries {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// Policy knobs of request hygiene.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hygiene {
    /// Keep an incoming `X-Request-Id`.
    pub trust_request_id: bool,
}

/// Removes hop-by-hop headers. When `allow_upgrade` and the message asks for an upgrade,
/// `Upgrade` and `Connection: upgrade` are kept and `true` is returned.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, allow_upgrade: bool) -> bool {
    // Nearly every message has none: one pass over the names costs less than the seven
    // hashed lookups below.
    let hop_by_hop = |name: &HeaderName| {
        name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::TE
            || name == header::UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
    };
    if !headers.keys().any(hop_by_hop) {
        return false;
    }
    let mut connection_upgrade = false;
    if headers.contains_key(header::CONNECTION) {
        let mut listed: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("upgrade") {
                    connection_upgrade = true;
                } else if let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                    && name != header::HOST
                {
                    listed.push(name);
                }
            }
        }
        headers.remove(header::CONNECTION);
        for name in listed {
            headers.remove(name);
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    if let Some(te) = headers.remove(header::TE)
        && te.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let upgrade = headers.remove(header::UPGRADE);
    match upgrade {
        Some(upgrade) if allow_upgrade && connection_upgrade => {
            headers.insert(header::UPGRADE, upgrade);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            true
        }
        _ => false,
    }
}

/// Cleans a request for the upstream and adds the forwarding headers. `host` is the request's
/// host as the client sent it. Returns true for an upgrade request.
pub fn prepare_request(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    host: &HeaderValue,
    allow_upgrade: bool,
    hygiene: Hygiene,
) -> bool {
    let upgrade = strip_hop_by_hop(headers, allow_upgrade);
    // Room for the five headers added below at once, rather than a growth and a rehash.
    headers.reserve(5);
    // Several X-Forwarded-For lines are one list: they are folded into one, the peer last.
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(entry) => {
            entry.insert(conn.peer_ip.clone());
        }
        header::Entry::Occupied(mut entry) => {
            let mut list = Vec::with_capacity(64);
            for value in entry.iter() {
                list.extend_from_slice(value.as_bytes());
                list.extend_from_slice(b", ");
            }
            list.extend_from_slice(conn.peer_ip.as_bytes());
            let folded = HeaderValue::from_bytes(&list).unwrap_or_else(|_| conn.peer_ip.clone());
            entry.insert(folded);
        }
    }
    let proto = if conn.tls { "https" } else { "http" };
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(&X_FORWARDED_HOST, host.clone());
    headers.insert(&X_FORWARDED_PORT, conn.port.clone());
    if !(hygiene.trust_request_id && headers.contains_key(&X_REQUEST_ID)) {
        headers.insert(&X_REQUEST_ID, request_id());
    }
    upgrade
}

/// Cleans an upstream response for the client. A `101` to an upgrade keeps its `Upgrade`.
pub fn prepare_response(headers: &mut HeaderMap, switching_protocols: bool) {
    strip_hop_by_hop(headers, switching_protocols);
}

/// A random 128-bit id as 32 lower-case hex digits.
fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for b in buf.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&buf).expect("hex is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(tls: bool) -> ConnInfo {
        ConnInfo::new(
            "10.0.0.7:5555".parse().unwrap(),
            "0.0.0.0:8443".parse().unwrap(),
            tls,
            None,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        assert!(!strip_hop_by_hop(&mut h, true));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn te_trailers_and_upgrade_kept() {
        let mut h = headers(&[
            ("te", "trailers, deflate"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(strip_hop_by_hop(&mut h, true));
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        let mut h = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert!(!strip_hop_by_hop(&mut h, false));
        assert!(h.is_empty());
    }

    #[test]
    fn forwarding_headers() {
        let host = HeaderValue::from_static("app.example.com");
        let mut h = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-request-id", "abc")]);
        prepare_request(&mut h, &conn(true), &host, true, Hygiene::default());
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-forwarded-port"], "8443");
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

        let mut h = headers(&[("x-request-id", "abc")]);
        let trust = Hygiene {
            trust_request_id: true,
        };
        prepare_request(&mut h, &conn(false), &host, true, trust);
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn several_forwarded_for_lines_fold() {
        let host = HeaderValue::from_static("h");
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        prepare_request(&mut h, &conn(false), &host, true, Hygiene::default());
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.7");
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(request_id(), request_id());
    }

    #[test]
    fn client_ip_trusts_only_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.1.1.1")]);
        // The peer 10.0.0.7 is trusted, 10.1.1.1 too: the client is 203.0.113.5, not the
        // spoofable left-most entry.
        assert_eq!(
            client_ip(&h, &conn(false), &trusted).to_string(),
            "203.0.113.5"
        );
        // Untrusted peers are the client, whatever they claim.
        assert_eq!(client_ip(&h, &conn(false), &[]).to_string(), "10.0.0.7");
        // All trusted: the left-most.
        let h = headers(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(
            client_ip(&h, &conn(false), &trusted).to_string(),
            "10.9.9.9"
        );
        // Garbage stops the walk at the last good address.
        let h = headers(&[("x-forwarded-for", "203.0.113.9, nonsense, 10.1.1.1")]);
        assert_eq!(
            client_ip(&h, &conn(false), &trusted).to_string(),
            "10.1.1.1"
        );
    }
}
