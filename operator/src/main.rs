//! The Portico operator: watches the cluster (or, for development, a manifests directory),
//! translates, and streams each IngressClass's snapshot to its proxies. See `lib.rs`.

fn main() -> std::process::ExitCode {
    portico_operator::main()
}
