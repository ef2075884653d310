//! The `sessiondb` binary: everything lives in the library (`cli::main`).

fn main() -> std::process::ExitCode {
    sessiondb_node::cli::main()
}
