//! `portico-proxy`: see `portico-proxy --help`.

/// mimalloc rather than glibc's allocator: every request allocates and frees buffers of a few
/// KiB (hyper's read buffers, the request's future), which glibc serves slowly from its bins,
/// and it hands freed memory back to the system after a burst of connections.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portico_proxy::main()
}
