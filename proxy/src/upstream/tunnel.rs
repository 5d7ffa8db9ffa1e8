//! Upgraded connections (WebSocket and other HTTP/1.1 upgrades): bytes copied both ways until
//! either side closes, or until the drain deadline.
//!
//! A tunnel holds its two connections and nothing of the snapshot, so it survives any number
//! of configuration changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// The open tunnels and the signal that closes them.
#[derive(Debug)]
pub struct Tunnels {
    active: AtomicUsize,
    stop: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Self {
            active: AtomicUsize::new(0),
            stop: watch::Sender::new(false),
        }
    }
}

struct Active(Arc<Tunnels>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tunnels {
    /// Tunnels open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Closes every tunnel, now and from now on.
    pub fn close_all(&self) {
        self.stop.send_replace(true);
    }

    /// Joins the client's and the upstream's upgraded connections once both upgrades complete.
    pub fn spawn(self: &Arc<Self>, client: OnUpgrade, upstream: OnUpgrade) {
        self.active.fetch_add(1, Ordering::Relaxed);
        let active = Active(self.clone());
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            let _active = active;
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = copied {
                        tracing::debug!(error = %e, "tunnel ended");
                    }
                }
                _ = stop.wait_for(|stop| *stop) => {
                    tracing::debug!("tunnel closed at the drain deadline");
                }
            }
        });
    }
}
