//! `sessiondb-ctl`, the ops CLI (`docs/cli.md`), as a library module so
//! that `main.rs` is one line and the pieces can be tested.
//!
//! Layout: [`args`] (clap definitions: the help text), [`error`]
//! ([`CliError`] and how it is printed), one module per command family
//! ([`node`], [`projects`], [`import`], [`results`], [`cluster`],
//! [`shards`]), and
//! [`table`] (plain
//! text tables and time formatting).
//!
//! Every command prints its answer on stdout — a human table, or with
//! `--json` one JSON document — and everything else (errors, hints,
//! progress) on stderr.

pub mod args;
pub mod cluster;
pub mod error;
pub mod import;
pub mod node;
pub mod nodes;
pub mod projects;
pub mod results;
pub mod shards;
pub mod table;

use crate::Client;
use args::{
    AdminTokenCommand, Cli, ClusterCommand, Command, NodesCommand, ProjectsCommand, ShardsCommand,
};
use clap::Parser;
pub use error::CliError;
use std::process::ExitCode;

/// The command did what was asked.
pub const EXIT_OK: u8 = 0;
/// The command failed: the node answered with an error (unknown project,
/// invalid setting, …) or an answer that could not be read.
pub const EXIT_FAILED: u8 = 1;
/// The command line is wrong (unknown flag, missing argument, bad value).
pub const EXIT_USAGE: u8 = 2;
/// The node could not be reached (nothing listening, timeout, reset), or
/// events of an import could not be delivered after every retry.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The input is the problem: the import file cannot be read, or some of its
/// lines were rejected (malformed locally, or refused by the node). The
/// rest was imported; the rejections file lists every rejected line.
pub const EXIT_INPUT: u8 = 4;

/// Runs the CLI with the process's arguments; answers the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `--help` and `--version` are "errors" printed on stdout.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            let error =
                CliError::new(EXIT_FAILED, "cannot start the async runtime").with_source(source);
            error.print();
            return ExitCode::from(error.exit_code);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            error.print();
            ExitCode::from(error.exit_code)
        }
    }
}

/// Runs one parsed command; answers the exit code of a command that ran to
/// its end (an import with rejections ends with [`EXIT_INPUT`]).
pub async fn run(mut cli: Cli) -> Result<u8, CliError> {
    cli.node = node_url(&cli.node);
    // An import needs only a project's ingest key; everything else the
    // admin token.
    let token = match &cli.command {
        Command::Import(_) => cli.ingest_key.clone().or(cli.admin_token.clone()),
        _ => cli.admin_token.clone(),
    };
    let mut client = match token {
        Some(token) => Client::new(cli.node.clone()).with_token(token),
        None => Client::new(cli.node.clone()),
    };
    if let Some(path) = &cli.ca_file {
        let pem = std::fs::read(path).map_err(|error| {
            CliError::new(
                EXIT_USAGE,
                format!("cannot read --ca-file {}", path.display()),
            )
            .with_source(error)
        })?;
        client = client.with_ca_pem(&pem).map_err(|error| {
            CliError::new(EXIT_USAGE, format!("invalid --ca-file {}", path.display()))
                .with_source(error)
        })?;
    }
    let context = Context {
        node: cli.node,
        json: cli.json,
    };
    match cli.command {
        Command::Ping => node::ping(&client, &context).await,
        Command::Status => node::status(&client, &context).await,
        Command::Projects(command) => match command {
            ProjectsCommand::Create { name, settings } => {
                projects::create(&client, &context, name, settings).await
            }
            ProjectsCommand::List => projects::list(&client, &context).await,
            ProjectsCommand::Show { name } => projects::show(&client, &context, &name).await,
            ProjectsCommand::Configure { name, settings } => {
                projects::configure(&client, &context, &name, settings).await
            }
            ProjectsCommand::RotateKey { name, rotate } => {
                projects::rotate_key(&client, &context, &name, rotate.grace_ms).await
            }
        },
        Command::AdminToken(AdminTokenCommand::Rotate(rotate)) => {
            projects::rotate_admin_token(&client, &context, rotate.grace_ms).await
        }
        Command::Import(args) => import::run(&client, &context, args).await,
        Command::Results(args) => results::run(&client, &context, args).await,
        Command::Cluster(ClusterCommand::Status) => cluster::status(&client, &context).await,
        Command::Shards(ShardsCommand::List) => shards::list(&client, &context).await,
        Command::Shards(ShardsCommand::Move { shard, to }) => {
            shards::move_shard(&client, &context, shard, to).await
        }
        Command::Shards(ShardsCommand::Rebalance) => shards::rebalance(&client, &context).await,
        Command::Nodes(NodesCommand::List) => nodes::list(&client, &context).await,
        Command::Nodes(NodesCommand::Drain { node_id }) => {
            nodes::drain(&client, &context, node_id).await
        }
        Command::Nodes(NodesCommand::Remove { node_id }) => {
            nodes::remove(&client, &context, node_id).await
        }
    }
}

/// `--node` as a base URL: `host:port` means `http://host:port` (the way
/// the node prints its address); a URL with a scheme is kept.
pub fn node_url(node: &str) -> String {
    if node.contains("://") {
        node.to_string()
    } else {
        format!("http://{node}")
    }
}

/// What every command needs besides its own arguments.
#[derive(Debug, Clone)]
pub struct Context {
    /// The node's base URL, for messages.
    pub node: String,
    /// Print JSON instead of tables.
    pub json: bool,
}

impl Context {
    /// Prints `value` as pretty JSON on stdout.
    pub fn print_json<T: serde::Serialize>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).map_err(|source| {
            CliError::new(EXIT_FAILED, "cannot print JSON").with_source(source)
        })?;
        println!("{text}");
        Ok(())
    }
}
