//! `sessiondb-ctl`: the SessionDB ops CLI. Everything is in
//! `sessiondb_client::cli`; see `docs/cli.md`.

fn main() -> std::process::ExitCode {
    sessiondb_client::cli::main()
}
