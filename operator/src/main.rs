//! The Portico operator. Cluster mode lands with the operator issue; today it translates a manifests
//! directory once and prints the result, which is what the operator will publish.
fn main() {}
