//! `projects create|list|show|configure`.

use super::args::SettingsArgs;
use super::node::print_fields;
use super::table::{format_duration_ms, format_utc, Align, Table};
use super::{CliError, Context, EXIT_OK, EXIT_USAGE};
use crate::protocol::{CreateProject, Project, ProjectList, ProjectSettingsPatch, RotatedKey};
use crate::Client;

impl SettingsArgs {
    /// The settings given on the command line, as a patch.
    pub fn to_patch(&self) -> ProjectSettingsPatch {
        ProjectSettingsPatch {
            session_gap_ms: self.session_gap_ms,
            session_max_ms: self.session_max_ms,
            midnight_split: self.midnight_split,
            time_zone: self.time_zone.clone(),
            allowed_lateness_ms: self.allowed_lateness_ms,
            future_skew_ms: self.future_skew_ms,
            bucket_ms: self.bucket_ms,
            hll_precision: self.hll_precision,
            retention_ms: self.retention_ms,
            breakdown_attributes: self.breakdown_attributes.clone(),
        }
    }
}

pub async fn create(
    client: &Client,
    context: &Context,
    name: String,
    settings: SettingsArgs,
) -> Result<u8, CliError> {
    let request = CreateProject {
        name,
        settings: settings.to_patch(),
    };
    let project = client
        .create_project(&request)
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&project)?;
        return Ok(EXIT_OK);
    }
    // The key first and alone on stdout, so `KEY=$(… projects create …)`
    // catches it; what it is on stderr.
    match &project.ingest_key {
        Some(key) => {
            println!("{key}");
            eprintln!(
                "created project {}; above is its ingest key, shown once (the node keeps only \
                 its hash)",
                project.name
            );
        }
        None => eprintln!("created project {}", project.name),
    }
    if context.verbose {
        println!();
        print_settings(&project);
    }
    Ok(EXIT_OK)
}

/// `projects rotate-key`: a new ingest key, printed once.
pub async fn rotate_key(
    client: &Client,
    context: &Context,
    name: &str,
    grace_ms: Option<i64>,
) -> Result<u8, CliError> {
    let rotated = client
        .rotate_ingest_key(name, grace_ms)
        .await
        .map_err(|error| context.client_error(error))?;
    print_rotated(context, &format!("ingest key of project {name}"), &rotated)
}

/// `admin-token rotate`: a new admin token for the node, printed once.
pub async fn rotate_admin_token(
    client: &Client,
    context: &Context,
    grace_ms: Option<i64>,
) -> Result<u8, CliError> {
    let rotated = client
        .rotate_admin_token(grace_ms)
        .await
        .map_err(|error| context.client_error(error))?;
    print_rotated(context, "admin token", &rotated)
}

fn print_rotated(context: &Context, what: &str, rotated: &RotatedKey) -> Result<u8, CliError> {
    if context.json {
        context.print_json(rotated)?;
        return Ok(EXIT_OK);
    }
    println!("new {what} (shown once; the node keeps only its hash):");
    println!("{}", rotated.key);
    match rotated.previous_valid_until_ms {
        Some(until_ms) => eprintln!(
            "the old {what} keeps working until {} (node clock); switch every user of it before then",
            format_utc(until_ms)
        ),
        None => eprintln!("the old {what} no longer works"),
    }
    Ok(EXIT_OK)
}

pub async fn list(client: &Client, context: &Context) -> Result<u8, CliError> {
    let projects = client
        .projects()
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&ProjectList { projects })?;
        return Ok(EXIT_OK);
    }
    if projects.is_empty() {
        println!("no projects; create one with `sessiondb-ctl projects create <name>`");
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("EXPERIMENTS", Align::Right),
        ("SESSION GAP", Align::Right),
        ("BUCKET", Align::Right),
        ("TIME ZONE", Align::Left),
        ("BREAKDOWNS", Align::Left),
    ]);
    for project in &projects {
        let settings = &project.settings;
        table.row(vec![
            project.name.clone(),
            project.experiments.len().to_string(),
            format_duration_ms(settings.session_gap_ms),
            format_duration_ms(settings.bucket_ms),
            settings.time_zone.clone(),
            settings.breakdown_attributes.join(","),
        ]);
    }
    print!("{}", table.render());
    Ok(EXIT_OK)
}

pub async fn show(client: &Client, context: &Context, name: &str) -> Result<u8, CliError> {
    let project = client
        .project(name)
        .await
        .map_err(|error| context.client_error(error))?;
    print_project(context, &project)
}

pub async fn configure(
    client: &Client,
    context: &Context,
    name: &str,
    settings: SettingsArgs,
) -> Result<u8, CliError> {
    let patch = settings.to_patch();
    if patch == ProjectSettingsPatch::default() {
        return Err(CliError::new(EXIT_USAGE, "nothing to configure")
            .with_hint("pass at least one setting, e.g. --session-gap-ms 900000 (see --help)"));
    }
    let project = client
        .configure_project(name, &patch)
        .await
        .map_err(|error| context.client_error(error))?;
    if !context.json {
        println!("configured project {}", project.name);
    }
    print_project(context, &project)
}

fn print_project(context: &Context, project: &Project) -> Result<u8, CliError> {
    if context.json {
        context.print_json(project)?;
        return Ok(EXIT_OK);
    }
    print_settings(project);
    Ok(EXIT_OK)
}

/// The project's settings and experiments as `name: value` lines.
fn print_settings(project: &Project) {
    let settings = &project.settings;
    let duration = |ms: i64| format!("{} ({ms} ms)", format_duration_ms(ms));
    let experiments = if project.experiments.is_empty() {
        "(none yet)".to_string()
    } else {
        project.experiments.join(", ")
    };
    print_fields(&[
        ("name", project.name.clone()),
        ("session_gap_ms", duration(settings.session_gap_ms)),
        ("session_max_ms", duration(settings.session_max_ms)),
        ("midnight_split", settings.midnight_split.to_string()),
        ("time_zone", settings.time_zone.clone()),
        (
            "allowed_lateness_ms",
            duration(settings.allowed_lateness_ms),
        ),
        ("future_skew_ms", duration(settings.future_skew_ms)),
        ("bucket_ms", duration(settings.bucket_ms)),
        ("hll_precision", settings.hll_precision.to_string()),
        ("retention_ms", duration(settings.retention_ms)),
        (
            "breakdown_attributes",
            settings.breakdown_attributes.join(","),
        ),
        ("experiments", experiments),
    ]);
}
