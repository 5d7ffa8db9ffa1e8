//! The PROXY protocol (v1 text and v2 binary), for proxies behind a load balancer that passes
//! the client's address this way (`--proxy-protocol`; AWS NLB, HAProxy and others).
//!
//! With it on, every connection must begin with a header; the address it names becomes the
//! connection's peer (so `X-Forwarded-For`, ipAccess and rate limits by client IP use it). A
//! connection without a valid header is closed. `LOCAL` and `UNKNOWN` headers (health checks)
//! keep the TCP peer. Exactly the header's bytes are consumed, so TLS and HTTP start right after.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::{HeaderResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// Reads the header at the start of `stream` within `limit` and returns the client address it
/// names, or `None` for a header that names none.
pub async fn read_header(
    stream: &mut TcpStream,
    limit: Duration,
) -> io::Result<Option<SocketAddr>> {
    tokio::time::timeout(limit, read(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY protocol header in time"))?
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("PROXY protocol: {what}"),
    )
}

async fn read(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    // 15 bytes: the shortest v1 header (`PROXY UNKNOWN\r\n`), and all but one byte of v2's fixed part.
    let mut start = [0u8; 15];
    stream.read_exact(&mut start).await?;
    if start[..12] == *V2_SIGNATURE {
        let mut header = start.to_vec();
        header.push(stream.read_u8().await?);
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        header.resize(16 + len, 0);
        stream.read_exact(&mut header[16..]).await?;
        return match HeaderResult::parse(&header) {
            HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            }),
            _ => Err(invalid("malformed v2 header")),
        };
    }
    if !start.starts_with(b"PROXY ") {
        return Err(invalid("the connection does not start with a header"));
    }
    // v1: the rest of the line, one read at a time so nothing after it is consumed.
    let mut header = start.to_vec();
    while !header.ends_with(b"\r\n") {
        if header.len() >= V1_MAX {
            return Err(invalid("v1 header longer than 107 bytes"));
        }
        header.push(stream.read_u8().await?);
    }
    match HeaderResult::parse(&header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        _ => Err(invalid("malformed v1 header")),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn roundtrip(bytes: Vec<u8>) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let got = read_header(&mut stream, Duration::from_secs(2)).await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        client.await.unwrap();
        (got, rest)
    }

    #[tokio::test]
    async fn v1_and_v2_headers_name_the_client_and_nothing_more_is_read() {
        let (got, rest) =
            roundtrip(b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\r\nGET / HTTP/1.1\r\n".to_vec())
                .await;
        assert_eq!(got.unwrap(), Some("203.0.113.9:5555".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (got, _) = roundtrip(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n".to_vec()).await;
        assert_eq!(got.unwrap(), Some("[2001:db8::7]:4000".parse().unwrap()));
        let (got, _) = roundtrip(b"PROXY UNKNOWN\r\n".to_vec()).await;
        assert_eq!(got.unwrap(), None);

        let src: SocketAddr = "198.51.100.4:1234".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        v2.extend_from_slice(b"\x16\x03\x01");
        let (got, rest) = roundtrip(v2).await;
        assert_eq!(got.unwrap(), Some(src));
        assert_eq!(rest, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn connections_without_a_header_are_refused() {
        let (got, _) = roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (got, _) = roundtrip(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 and a very long line that never ends ............................................................\r\n".to_vec()).await;
        assert!(got.is_err());
        let (got, _) = roundtrip(b"PROXY TCP4 nonsense\r\n".to_vec()).await;
        assert!(got.is_err());
    }
}
