//! Snapshot distribution: the operator streams each IngressClass's snapshot to that class's
//! proxies over HTTP/2 and TLS.
//!
//! ```text
//! operator: translate ──publish(class, Snapshot)──▶ Hub ──▶ serve (h2 + TLS, one stream per proxy)
//!                                                   ▲                       │ NDJSON frames
//!                                            acks() │                       ▼
//! proxy:                              POST /v1/acks ◀── client::run ──▶ on_snapshot(Snapshot)
//! ```
//!
//! # Protocol
//!
//! A proxy opens `GET /v1/snapshots/{class}?proxy={id}&epoch={e}&version={v}` with
//! `Authorization: Bearer {token}` over HTTP/2 (ALPN `h2`) and TLS. The server answers 401 for
//! a token it does not accept, 403 for a token that may not read `class`, and otherwise 200 with
//! a body that never ends on its own: one JSON [`protocol::Message`] per line
//! (`application/x-ndjson`; compact JSON holds no raw newline).
//!
//! - `full`: the whole snapshot at `version`.
//! - `backends`: only `backends` changed since `base`, the version the proxy holds: the ids in
//!   `changed` are inserted or replaced, those in `removed` dropped. Endpoint churn thus costs
//!   the changed backends, not the routing table.
//! - `ping`: sent when nothing else was for a while, so a proxy can tell a silent operator from
//!   a dead connection.
//!
//! Versions count up per class from 1 and are meaningful only within an `epoch`, a random id
//! the operator draws at start. `epoch` and `version` in the request are what the proxy holds
//! (both absent on first contact): when they name the latest version nothing is resent, when
//! they name a recent one whose routes are unchanged a `backends` delta is sent, otherwise (an
//! operator restart, a long absence) a `full` one.
//!
//! After applying a version the proxy posts [`protocol::Ack`] as JSON to `POST /v1/acks/{class}`
//! with the same token (204, or 409 when the epoch is not the server's). The resume parameters
//! of a new stream count as an ack too. [`server::Hub::acks`] reports, per class and proxy,
//! the last version applied and whether a stream is open: what the `Programmed` condition is
//! made of.
//!
//! A proxy that loses the operator keeps serving its last snapshot and reconnects with capped
//! exponential backoff and jitter, reading its token and CA file afresh each time (a projected
//! token rotates; a CA ConfigMap may change).

mod body;
pub mod client;
pub mod pki;
pub mod protocol;
pub mod server;
