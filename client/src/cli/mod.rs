//! `sessiondb-ctl`, the ops CLI (`docs/cli.md`), as a library module so
//! that `main.rs` is one line and the pieces can be tested.
//!
//! Layout: [`args`] (clap definitions: the help text), [`error`]
//! ([`CliError`] and how it is printed), one module per command family
//! ([`node`], [`projects`], [`import`], [`results`], [`cluster`],
//! [`shards`]), and
//! [`table`] (plain text tables and time formatting) and [`time`] (human
//! time input).
//!
//! Every command prints its answer on stdout — a human table, or with
//! `--json` one JSON document — and everything else (errors, hints,
//! progress) on stderr; with `--json` an error is a JSON document on stdout
//! too ([`CliError::print`]), so a script reads one place.

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
pub mod time;
pub mod weights;

use crate::{Client, ClientError};
use args::{
    AdminTokenCommand, Cli, ClusterCommand, Command, NodesCommand, ProjectsCommand, ShardsCommand,
};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
pub use error::{CliError, Credential, CredentialKind, CredentialSource, ErrorStyle};
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
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (cli, credentials) = match parse(&arguments) {
        Ok(parsed) => parsed,
        Err(code) => return ExitCode::from(code),
    };
    let style = ErrorStyle {
        json: cli.json,
        verbose: cli.verbose > 0,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            let error =
                CliError::new(EXIT_FAILED, "cannot start the async runtime").with_source(source);
            error.print(style);
            return ExitCode::from(error.exit_code);
        }
    };
    match runtime.block_on(run(cli, credentials)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            error.print(style);
            ExitCode::from(error.exit_code)
        }
    }
}

/// Where each credential came from: a flag, its variable, or nowhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialSources {
    pub admin_token: Option<CredentialSource>,
    pub ingest_key: Option<CredentialSource>,
}

/// Parses the command line. A usage error is printed (as JSON when
/// `--json` is among the arguments) and answered as its exit code, like
/// `--help` and `--version` (printed on stdout, exit 0).
fn parse(arguments: &[std::ffi::OsString]) -> Result<(Cli, CredentialSources), u8> {
    let parsed = Cli::command()
        .try_get_matches_from(arguments)
        .and_then(|matches| {
            let cli = Cli::from_arg_matches(&matches)?;
            Ok((cli, credential_sources(&matches)))
        });
    parsed.map_err(|error| {
        if !error.use_stderr() {
            let _ = error.print();
            return EXIT_OK;
        }
        if wants_json(arguments) {
            // clap's message up to its usage block, on one line.
            let rendered = error.render().to_string();
            let message = rendered
                .lines()
                .take_while(|line| !line.starts_with("Usage:"))
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .trim_start_matches("error: ")
                .to_string();
            CliError::new(EXIT_USAGE, message)
                .with_hint("`sessiondb-ctl --help` lists the commands and flags")
                .print(ErrorStyle {
                    json: true,
                    verbose: false,
                });
        } else {
            let _ = error.print();
        }
        EXIT_USAGE
    })
}

/// `--json` among the arguments before a `--`, for errors found before
/// the command line could be parsed.
fn wants_json(arguments: &[std::ffi::OsString]) -> bool {
    arguments
        .iter()
        .skip(1)
        .take_while(|argument| *argument != "--")
        .any(|argument| argument == "--json")
}

fn credential_sources(matches: &clap::ArgMatches) -> CredentialSources {
    let source = |id: &str| {
        // Global flags given after the subcommand are recorded there.
        let mut current = Some(matches);
        let mut found = None;
        while let Some(level) = current {
            match level.value_source(id) {
                Some(ValueSource::CommandLine) => return Some(CredentialSource::Flag),
                Some(ValueSource::EnvVariable) => found = Some(CredentialSource::Environment),
                _ => {}
            }
            current = level.subcommand().map(|(_, sub)| sub);
        }
        found
    };
    CredentialSources {
        admin_token: source("admin_token"),
        ingest_key: source("ingest_key"),
    }
}

/// Runs one parsed command; answers the exit code of a command that ran to
/// its end (an import with rejections ends with [`EXIT_INPUT`]).
pub async fn run(mut cli: Cli, sources: CredentialSources) -> Result<u8, CliError> {
    cli.node = node_url(&cli.node);
    // An import needs only a project's ingest key; everything else the
    // admin token.
    let (token, credential) = match &cli.command {
        Command::Import(_) if cli.ingest_key.is_some() => (
            cli.ingest_key.clone(),
            Credential {
                kind: CredentialKind::IngestKey,
                source: Some(sources.ingest_key.unwrap_or(CredentialSource::Flag)),
            },
        ),
        Command::Import(_) if cli.admin_token.is_none() => (
            None,
            Credential {
                kind: CredentialKind::IngestKey,
                source: None,
            },
        ),
        _ => (
            cli.admin_token.clone(),
            Credential {
                kind: CredentialKind::AdminToken,
                source: cli
                    .admin_token
                    .as_ref()
                    .map(|_| sources.admin_token.unwrap_or(CredentialSource::Flag)),
            },
        ),
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
        verbose: cli.verbose > 0,
        credential,
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
        Command::Weights(args) => weights::run(&client, &context, args).await,
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
        Command::Nodes(NodesCommand::Undrain { node_id }) => {
            nodes::undrain(&client, &context, node_id).await
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
    /// `-v`: say more.
    pub verbose: bool,
    /// The credential the command sends, for authentication errors.
    pub credential: Credential,
}

impl Context {
    /// A client error as the CLI reports it.
    pub fn client_error(&self, error: ClientError) -> CliError {
        CliError::from_client(&self.node, &self.credential, error)
    }

    /// How this command's errors are printed.
    pub fn error_style(&self) -> ErrorStyle {
        ErrorStyle {
            json: self.json,
            verbose: self.verbose,
        }
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn print_json<T: serde::Serialize>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).map_err(|source| {
            CliError::new(EXIT_FAILED, "cannot print JSON").with_source(source)
        })?;
        println!("{text}");
        Ok(())
    }
}
