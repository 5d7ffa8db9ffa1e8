//! `portico-proxy`: see `portico-proxy --help`.

fn main() -> std::process::ExitCode {
    portico_proxy::main()
}
