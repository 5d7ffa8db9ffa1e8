//! The Portico operator as a library: the binary wires these modules together.
//!
//! - [`provision`]: `provision::run(client, Settings::new(namespace))` keeps the proxies of
//!   every Portico IngressClass running.
//! - [`status`]: `StatusWriter::new(client, namespace, leadership)`, then
//!   `writer.update(&output)` after each translation.
//! - [`leader`]: `Elector::new(client, LeaseSettings::new(namespace, pod)).run()` gives the
//!   `Leadership` the status writer needs.
pub mod leader;
pub mod provision;
pub mod status;

#[cfg(test)]
mod fixtures;
