//! The Portico operator as a library: the binary wires these modules together.
pub mod leader;
pub mod provision;
pub mod status;

#[cfg(test)]
mod fixtures;
