//! The `sessiondb` binary: everything lives in the library (`cli::main`).

/// mimalloc instead of glibc's malloc: the node holds millions of small,
/// long-lived allocations (events, ids, names) made and freed from many
/// threads, where glibc's per-thread arenas keep freed memory and spend a
/// large share of replay in `malloc_consolidate` / `unlink_chunk`
/// (docs/benchmarks.md, "Memory per live visitor", for the numbers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sessiondb_node::cli::main()
}
