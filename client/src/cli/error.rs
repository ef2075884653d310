//! [`CliError`]: what went wrong, what to do about it, and the exit code.

use super::{EXIT_FAILED, EXIT_UNREACHABLE};
use crate::protocol::ErrorCode;
use crate::ClientError;
use std::error::Error as _;
use std::io::IsTerminal;

/// A failed command: printed as one `error:` line, an optional `hint:`
/// line, then the cause chain, one `caused by:` line per cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// One of the `EXIT_*` constants of [`crate::cli`].
    pub exit_code: u8,
    pub message: String,
    pub hint: Option<String>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl CliError {
    pub fn new(exit_code: u8, message: impl Into<String>) -> CliError {
        CliError {
            exit_code,
            message: message.into(),
            hint: None,
            source: None,
        }
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

    /// A client error, classified: unreachable node or refusal.
    pub fn from_client(node: &str, error: ClientError) -> CliError {
        match &error {
            ClientError::Transport { .. } => {
                CliError::new(EXIT_UNREACHABLE, format!("cannot reach the node at {node}"))
                    .with_hint(
                        "is a node running there? start one with `sessiondb serve`, \
                 or point --node (or SESSIONDB_NODE) at one",
                    )
            }
            ClientError::InvalidUrl { .. } => CliError::new(super::EXIT_USAGE, error.to_string())
                .with_hint("give --node (or SESSIONDB_NODE) as http://host:port, https://host:port or host:port"),
            ClientError::Api { code, message, .. } => {
                let hint = hint_for_code(code);
                let error = CliError::new(EXIT_FAILED, format!("{message} ({code})"));
                match hint {
                    Some(hint) => error.with_hint(hint),
                    None => error,
                }
            }
            ClientError::Decode { .. } => {
                CliError::new(EXIT_FAILED, "cannot read the node's answer").with_hint(
                    "the node may run another version; `sessiondb-ctl status` shows its version",
                )
            }
            _ => CliError::new(EXIT_FAILED, error.to_string()),
        }
        .with_source(error)
    }

    /// The lines printed for this error, without styling.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!("error: {}", self.message)];
        if let Some(hint) = &self.hint {
            lines.push(format!("  hint: {hint}"));
        }
        let mut cause = self.source();
        while let Some(error) = cause {
            lines.push(format!("  caused by: {error}"));
            cause = error.source();
        }
        lines
    }

    /// Prints the error on stderr, with a red `error:` on a terminal
    /// (unless `NO_COLOR` is set).
    pub fn print(&self) {
        let styled = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        for (index, line) in self.lines().into_iter().enumerate() {
            match line.strip_prefix("error:") {
                Some(rest) if index == 0 && styled => eprintln!("\x1b[1;31merror:\x1b[0m{rest}"),
                _ => eprintln!("{line}"),
            }
        }
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
        ErrorCode::Unauthorized => "give the node's admin token with --admin-token (or SESSIONDB_ADMIN_TOKEN); a node without one configured printed its generated token once at its first start (docs/security.md)",
        ErrorCode::Forbidden => "this command needs the admin token, not an ingest key (an ingest key may only import into its own project)",
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

    #[test]
    fn api_errors_exit_1_with_a_hint_and_the_cause() {
        let error = CliError::from_client(
            "http://n:1",
            ClientError::Api {
                status: 404,
                code: ErrorCode::UnknownProject,
                message: "no project named shop".into(),
                retry_after_seconds: None,
            },
        );
        assert_eq!(error.exit_code, EXIT_FAILED);
        let lines = error.lines();
        assert_eq!(lines[0], "error: no project named shop (unknown_project)");
        assert!(lines[1].starts_with("  hint: `sessiondb-ctl projects list`"));
        assert_eq!(
            lines[2],
            "  caused by: server answered 404 unknown_project: no project named shop"
        );
    }
}
