//! End-to-end tests against a real cluster live in `tests/`. They run when `KUBECONFIG` is set
//! and print that they skipped otherwise.
