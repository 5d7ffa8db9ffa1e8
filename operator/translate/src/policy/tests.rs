//! Unit tests of policy resolution.
