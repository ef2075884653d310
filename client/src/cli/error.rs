//! [`CliError`]: what went wrong, what to do about it, and the exit code;
//! [`Credential`]: which credential a command sent, and where it came from,
//! so that an authentication error can name it.

use super::{EXIT_FAILED, EXIT_INPUT, EXIT_UNREACHABLE, EXIT_USAGE};
use crate::protocol::ErrorCode;
use crate::ClientError;
use serde::Serialize;
use std::error::Error as _;
use std::io::IsTerminal;

/// A failed command: printed as one `error:` line and an optional `hint:`
/// line; the cause chain (one `caused by:` line per cause) only with `-v`.
/// With `--json`, one `{"error": {"code", "message", "hint"}}` document on
/// stdout instead.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// One of the `EXIT_*` constants of [`crate::cli`].
    pub exit_code: u8,
    /// A stable snake_case code for scripts: the node's error code when the
    /// node refused, else one of the CLI's own (`docs/cli.md`).
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// How errors are printed: from the global flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorStyle {
    /// `--json`: one JSON document on stdout.
    pub json: bool,
    /// `-v`: the cause chain too.
    pub verbose: bool,
}

/// The `--json` form of an error.
#[derive(Debug, Serialize)]
struct JsonError<'a> {
    error: JsonErrorBody<'a>,
}

#[derive(Debug, Serialize)]
struct JsonErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
    /// The cause chain, with `-v` only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<String>,
}

/// The CLI's own error code for an exit code, when no finer one applies.
fn default_code(exit_code: u8) -> &'static str {
    match exit_code {
        EXIT_USAGE => "usage",
        EXIT_UNREACHABLE => "unreachable",
        EXIT_INPUT => "input",
        _ => "failed",
    }
}

impl CliError {
    pub fn new(exit_code: u8, message: impl Into<String>) -> CliError {
        CliError {
            exit_code,
            code: default_code(exit_code).to_string(),
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> CliError {
        self.code = code.into();
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> CliError {
        self.source = Some(source.into());
        self
    }

    /// A client error, classified (unreachable node, refused credential,
    /// refusal), with the error itself as the cause.
    pub fn from_client(node: &str, credential: &Credential, error: ClientError) -> CliError {
        CliError::classify(node, credential, &error).with_source(error)
    }

    /// The error line and hint for a client error, without its cause.
    pub fn classify(node: &str, credential: &Credential, error: &ClientError) -> CliError {
        match error {
            ClientError::Transport { cause, .. } => CliError::new(
                EXIT_UNREACHABLE,
                format!("could not connect to {node}: {cause} — is a node running there?"),
            )
            .with_hint(
                "start one with `sessiondb serve`, or point --node (or SESSIONDB_NODE) at one; \
                 -v shows the whole cause",
            ),
            ClientError::InvalidUrl { .. } => CliError::new(EXIT_USAGE, error.to_string())
                .with_hint(
                    "give --node (or SESSIONDB_NODE) as http://host:port, https://host:port or host:port",
                ),
            ClientError::Api {
                status,
                code: code @ (ErrorCode::Unauthorized | ErrorCode::Forbidden),
                message,
                ..
            } => credential.refused(*status, code, message),
            ClientError::Api { code, message, .. } => {
                let error = CliError::new(EXIT_FAILED, format!("{message} ({code})"))
                    .with_code(code.as_str());
                match hint_for_code(code) {
                    Some(hint) => error.with_hint(hint),
                    None => error,
                }
            }
            ClientError::Decode { .. } => CliError::new(EXIT_FAILED, "cannot read the node's answer")
                .with_code("bad_answer")
                .with_hint(
                    "the node may run another version; `sessiondb-ctl status` shows its version",
                ),
            _ => CliError::new(EXIT_FAILED, error.to_string()),
        }
    }

    /// The cause chain, outermost first.
    pub fn causes(&self) -> Vec<String> {
        let mut causes = Vec::new();
        let mut cause = self.source();
        while let Some(error) = cause {
            causes.push(error.to_string());
            cause = error.source();
        }
        causes
    }

    /// The lines printed for this error, without styling.
    pub fn lines(&self, verbose: bool) -> Vec<String> {
        let mut lines = vec![format!("error: {}", self.message)];
        if let Some(hint) = &self.hint {
            lines.push(format!("  hint: {hint}"));
        }
        if verbose {
            lines.extend(
                self.causes()
                    .into_iter()
                    .map(|cause| format!("  caused by: {cause}")),
            );
        }
        lines
    }

    /// The `--json` document for this error.
    pub fn to_json(&self, verbose: bool) -> String {
        let document = JsonError {
            error: JsonErrorBody {
                code: &self.code,
                message: &self.message,
                hint: self.hint.as_deref(),
                causes: if verbose { self.causes() } else { Vec::new() },
            },
        };
        serde_json::to_string_pretty(&document).expect("an error serializes")
    }

    /// Prints the error: JSON on stdout with `--json`, else lines on
    /// stderr with a red `error:` on a terminal (unless `NO_COLOR` is set).
    pub fn print(&self, style: ErrorStyle) {
        if style.json {
            println!("{}", self.to_json(style.verbose));
            return;
        }
        let styled = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        for (index, line) in self.lines(style.verbose).into_iter().enumerate() {
            match line.strip_prefix("error:") {
                Some(rest) if index == 0 && styled => eprintln!("\x1b[1;31merror:\x1b[0m{rest}"),
                _ => eprintln!("{line}"),
            }
        }
    }
}

/// Which credential a command sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    AdminToken,
    IngestKey,
}

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// `--admin-token` / `--ingest-key`.
    Flag,
    /// `SESSIONDB_ADMIN_TOKEN` / `SESSIONDB_INGEST_KEY`.
    Environment,
}

/// The credential a command sent (or would have sent): named in the
/// errors of a 401 or 403, so a wrong token is never reported as a missing
/// one and the user knows which setting to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    pub kind: CredentialKind,
    /// `None`: none was given.
    pub source: Option<CredentialSource>,
}

impl Credential {
    /// `the admin token from SESSIONDB_ADMIN_TOKEN`, `the ingest key from
    /// --ingest-key`.
    pub fn describe(&self) -> String {
        let (name, flag, variable) = self.names();
        match self.source {
            Some(CredentialSource::Flag) => format!("the {name} from {flag}"),
            Some(CredentialSource::Environment) => format!("the {name} from {variable}"),
            None => format!("no {name}"),
        }
    }

    fn names(&self) -> (&'static str, &'static str, &'static str) {
        match self.kind {
            CredentialKind::AdminToken => ("admin token", "--admin-token", "SESSIONDB_ADMIN_TOKEN"),
            CredentialKind::IngestKey => ("ingest key", "--ingest-key", "SESSIONDB_INGEST_KEY"),
        }
    }

    /// The error for a 401 or 403 answer to this credential.
    fn refused(&self, status: u16, code: &ErrorCode, message: &str) -> CliError {
        let (name, flag, variable) = self.names();
        if self.source.is_none() {
            let hint = match self.kind {
                CredentialKind::IngestKey => {
                    "import takes a project's ingest key (--ingest-key or SESSIONDB_INGEST_KEY) \
                     or the admin token"
                }
                CredentialKind::AdminToken => {
                    "a node without a configured token printed its generated one once at its \
                     first start (docs/security.md)"
                }
            };
            let asked = match self.kind {
                CredentialKind::IngestKey => "no ingest key or admin token given",
                CredentialKind::AdminToken => "no admin token given",
            };
            return CliError::new(
                EXIT_FAILED,
                format!("{asked}: pass {flag} or set {variable}"),
            )
            .with_code("missing_credential")
            .with_hint(hint);
        }
        let described = self.describe();
        let error = if *code == ErrorCode::Forbidden {
            CliError::new(
                EXIT_FAILED,
                format!("{described} was refused ({status}): {message}"),
            )
            .with_hint(match self.kind {
                CredentialKind::AdminToken => {
                    "this command needs the node's admin token; an ingest key may only import \
                     into its own project"
                }
                CredentialKind::IngestKey => {
                    "an ingest key may only import into its own project; the events name another"
                }
            })
        } else {
            CliError::new(EXIT_FAILED, format!("{described} was refused ({status})")).with_hint(
                format!(
                "check the {name} in {}; it may be wrong, rotated or expired (docs/security.md)",
                match self.source {
                    Some(CredentialSource::Flag) => flag,
                    _ => variable,
                }
            ),
            )
        };
        error.with_code(code.as_str())
    }
}

/// What to do about an API error code (`docs/api.md`).
fn hint_for_code(code: &ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::UnknownProject => "`sessiondb-ctl projects list` shows the projects; create one with `projects create`",
        ErrorCode::ProjectExists => "change an existing project with `sessiondb-ctl projects configure`",
        ErrorCode::UnknownExperiment => "an experiment exists once a decision event names it; `sessiondb-ctl projects show <project>` lists them",
        ErrorCode::UnalignedRange => "--from and --to must be multiples of the project's bucket_ms (`sessiondb-ctl projects show <project>`)",
        ErrorCode::InvalidRange => "--from must be before --to",
        ErrorCode::UnknownBreakdown => "--breakdown must be one of the project's breakdown_attributes (`projects show`)",
        ErrorCode::UnknownBaseline => "--baseline must name a variation of the experiment",
        ErrorCode::ImmutableSetting => "bucket_ms and hll_precision are fixed when a project is created",
        ErrorCode::InvalidProjectName => "use 1–64 bytes of a-z, 0-9, `_` and `-`",
        ErrorCode::InvalidSettings => "`docs/api.md` lists each setting's range",
        ErrorCode::InvalidGrace => "--grace-ms must be 0 to 30 days in ms",
        ErrorCode::Overloaded | ErrorCode::Unavailable => "the node is busy; retry in a moment",
        ErrorCode::NotLeader => "moves and rebalances run on the leader: point --node at it (and use its admin token); `sessiondb-ctl cluster status` names it",
        ErrorCode::MoveRefused => "`sessiondb-ctl shards list` shows each shard's owner and any move in progress; the target must be another member",
        ErrorCode::MoveFailed => "the move was aborted and the old owner keeps the shard; check that both nodes are up, then retry",
        ErrorCode::NodeUnreachable => "the drained node does not answer: restart it and run the drain again, or `sessiondb-ctl nodes undrain <node>`",
        ErrorCode::DropFailed => "the new owner owns the shard; the old owner kept a stale copy, which it no longer serves",
        ErrorCode::UnknownShard => "`sessiondb-ctl shards list` shows the shards",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM_ENVIRONMENT: Credential = Credential {
        kind: CredentialKind::AdminToken,
        source: Some(CredentialSource::Environment),
    };

    #[test]
    fn api_errors_exit_1_with_a_hint_and_the_cause_behind_verbose() {
        let error = CliError::from_client(
            "http://n:1",
            &FROM_ENVIRONMENT,
            ClientError::Api {
                status: 404,
                code: ErrorCode::UnknownProject,
                message: "no project named shop".into(),
                retry_after_seconds: None,
            },
        );
        assert_eq!(error.exit_code, EXIT_FAILED);
        assert_eq!(error.code, "unknown_project");
        let lines = error.lines(false);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], "error: no project named shop (unknown_project)");
        assert!(lines[1].starts_with("  hint: `sessiondb-ctl projects list`"));
        assert_eq!(
            error.lines(true)[2],
            "  caused by: server answered 404 unknown_project: no project named shop"
        );
        let json: serde_json::Value = serde_json::from_str(&error.to_json(false)).unwrap();
        assert_eq!(json["error"]["code"], "unknown_project");
        assert!(json["error"]["hint"].is_string());
        assert!(json["error"].get("causes").is_none());
    }

    #[test]
    fn a_refused_credential_is_named_and_a_missing_one_is_not_called_wrong() {
        let unauthorized = ClientError::Api {
            status: 401,
            code: ErrorCode::Unauthorized,
            message: "missing or unknown credential".into(),
            retry_after_seconds: None,
        };
        let wrong = CliError::classify("http://n:1", &FROM_ENVIRONMENT, &unauthorized);
        assert_eq!(
            wrong.message,
            "the admin token from SESSIONDB_ADMIN_TOKEN was refused (401)"
        );
        let missing = Credential {
            kind: CredentialKind::AdminToken,
            source: None,
        };
        let missing = CliError::classify("http://n:1", &missing, &unauthorized);
        assert_eq!(
            missing.message,
            "no admin token given: pass --admin-token or set SESSIONDB_ADMIN_TOKEN"
        );
        assert_eq!(missing.code, "missing_credential");
    }
}
