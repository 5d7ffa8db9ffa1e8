//! Per-route IngressPolicy middleware, one tower layer per block.

pub mod auth;
