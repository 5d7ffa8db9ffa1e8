//! Endpoint choice: round-robin, or least-request by the power of two random choices.
//! Ejected endpoints are skipped; `None` means every endpoint is ejected.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use portico_api::LoadBalancer;

use super::endpoint::Endpoint;

/// Per-backend balancer state.
#[derive(Debug)]
pub struct Balancer {
    kind: LoadBalancer,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer of `kind`, starting at a random endpoint so that proxies do not all hit the
    /// first endpoint after a restart.
    pub fn new(kind: LoadBalancer) -> Self {
        Self {
            kind,
            next: AtomicUsize::new(fastrand::usize(..1024)),
        }
    }

    /// The endpoint for the next request.
    pub fn pick<'a>(&self, endpoints: &'a [Arc<Endpoint>]) -> Option<&'a Arc<Endpoint>> {
        match endpoints.len() {
            0 => None,
            1 => Some(&endpoints[0]).filter(|e| !e.is_ejected()),
            n => match self.kind {
                LoadBalancer::RoundRobin => self.round_robin(endpoints),
                LoadBalancer::LeastRequest => {
                    let a = fastrand::usize(..n);
                    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                    let (a, b) = (&endpoints[a], &endpoints[b]);
                    match (a.is_ejected(), b.is_ejected()) {
                        (false, false) if b.in_flight() < a.in_flight() => Some(b),
                        (false, _) => Some(a),
                        (true, false) => Some(b),
                        (true, true) => self.round_robin(endpoints),
                    }
                }
            },
        }
    }

    fn round_robin<'a>(&self, endpoints: &'a [Arc<Endpoint>]) -> Option<&'a Arc<Endpoint>> {
        let n = endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &endpoints[(start + i) % n])
            .find(|e| !e.is_ejected())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use portico_api::AppProtocol;

    use super::*;

    fn endpoints(n: u16) -> Vec<Arc<Endpoint>> {
        (1..=n)
            .map(|p| {
                Arc::new(Endpoint::new(
                    ([127, 0, 0, 1], p).into(),
                    AppProtocol::Http1,
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_ejected() {
        let eps = endpoints(3);
        let b = Balancer::new(LoadBalancer::RoundRobin);
        let mut seen: Vec<u16> = (0..6).map(|_| b.pick(&eps).unwrap().addr.port()).collect();
        seen.sort();
        assert_eq!(seen, [1, 1, 2, 2, 3, 3]);
        eps[1].eject(Duration::from_secs(60));
        assert!((0..10).all(|_| b.pick(&eps).unwrap().addr.port() != 2));
        eps[0].eject(Duration::from_secs(60));
        eps[2].eject(Duration::from_secs(60));
        assert!(b.pick(&eps).is_none());
        assert!(b.pick(&[]).is_none());
    }

    #[test]
    fn least_request_prefers_fewer_in_flight() {
        let eps = endpoints(2);
        let b = Balancer::new(LoadBalancer::LeastRequest);
        for _ in 0..5 {
            eps[0].start_request();
        }
        assert!((0..20).all(|_| b.pick(&eps).unwrap().addr.port() == 2));
        eps[1].eject(Duration::from_secs(60));
        assert_eq!(b.pick(&eps).unwrap().addr.port(), 1);
    }
}
