//! Portico's operator.
//!
//! ```text
//! watch (one per kind) │ manifests dir ──▶ batch::Shared (Index) ──batch──▶ translate
//!        ──▶ Hub::publish per class ──▶ distribution server (h2 + TLS) ──▶ proxies
//!        ──▶ Translated (reports, statuses, versions) + Hub::acks ──▶ status writer
//! IngressClass ──▶ provision (Deployment, Service, ServiceAccount, PDB per class)
//! ```
//!
//! `run` wires it: the index's sources (cluster watches, or a manifests directory in
//! development mode), the batch loop, the PKI (a Secret, or files), proxy authentication
//! (TokenReview, or a static token), the distribution server and the admin listener; in a
//! cluster also the provisioning controller ([`provision::run`]), the Lease ([`leader`]) and the
//! status writer ([`status::StatusWriter`]).

pub mod admin;
pub mod batch;
pub mod cli;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod pki_secret;
pub mod provision;
pub mod run;
pub mod status;
pub mod telemetry;
pub mod tokenreview;
pub mod watch;

#[cfg(test)]
mod fixtures;

pub use batch::Translated;
pub use run::{Handles, RunError, main, run};
