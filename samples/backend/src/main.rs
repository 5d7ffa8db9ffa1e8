//! `portico-sample-backend`: the upstream that `make run` and `make bench` put behind Portico.
//!
//! It answers every request with a JSON echo of what it received (so `curl` shows which backend a
//! route reached and which `X-Forwarded-*` headers the proxy added), echoes WebSocket frames on
//! `/ws`, and answers `/bench` with a fixed 12-byte body and as little work as possible, so a load
//! test measures the proxy and not the backend. HTTP/1.1 (keep-alive) and h2c on the same port.

mod handler;
mod ws;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Command line of the sample backend.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Name reported in every echo, so responses show which backend answered.
    #[arg(long, default_value = "sample")]
    name: String,
    /// Runtime threads; 1 runs a single-threaded runtime (what the benchmark pins to one core).
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portico-sample-backend: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico-sample-backend: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts connections until Ctrl-C or SIGTERM; each connection is served on its own task.
async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen))
    })?;
    eprintln!(
        "portico-sample-backend name={} listening={}",
        args.name,
        listener.local_addr()?
    );
    accept_loop(listener, args.name.into(), shutdown_signal()).await;
    Ok(())
}

/// Serves every connection of `listener` on its own task until `shutdown` resolves.
async fn accept_loop(listener: TcpListener, name: Arc<str>, shutdown: impl Future<Output = ()>) {
    // One builder for every connection: HTTP/1.1 with keep-alive, or h2c when the client opens
    // with the HTTP/2 preface.
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE under a connection storm: back off instead of spinning.
                    eprintln!("portico-sample-backend: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handler::handle(name.clone(), remote, req));
            // Errors here are clients going away mid-request; a sample has nothing to add.
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;

    /// A backend on an ephemeral loopback port, stopped when the test's runtime ends.
    async fn start(name: &str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(accept_loop(listener, name.into(), std::future::pending()));
        addr
    }

    #[tokio::test]
    async fn bench_answers_fixed_body_over_keep_alive() {
        let addr = start("blue").await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Two requests on one connection: the second proves keep-alive.
        let req = b"GET /bench HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..2 {
            conn.write_all(req).await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
            assert!(text.ends_with("\r\n\r\nhello world\n"), "{text}");
        }
    }

    #[tokio::test]
    async fn websocket_echoes_frames() {
        let addr = start("blue").await;
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("ping through portico"))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(1), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text("ping through portico"));
        ws.close(None).await.unwrap();
    }
}
