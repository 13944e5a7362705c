//! The `icebreaker` command.
//!
//! - `icebreaker serve [--config FILE] [flags]`: runs the STUN/TURN server. With no argument it
//!   serves UDP 3478 on every interface with a generated user, and prints how to connect.
//! - `icebreaker check-config FILE [flags]`: checks a configuration file with flags over it and
//!   prints the effective configuration, secrets redacted. Exit status 0 when valid, 2 with
//!   `error: FILE:LINE:COLUMN: reason` on standard error when not.
//! - `icebreaker credentials --secret S --user U [--ttl SECS] [--uri URI]... [--json]`: prints
//!   TURN REST API credentials and an `iceServers` snippet to paste into a WebRTC application.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use icebreaker::config::Secret;
use icebreaker::{Config, Flags};
use icebreaker_wire::credentials::RestPassword;

/// Icebreaker STUN/TURN server.
#[derive(Parser)]
#[command(name = "icebreaker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the STUN/TURN server (UDP 3478 on every interface by default).
    Serve(Box<Serve>),
    /// Check a configuration file, with flags over it, and print the effective configuration.
    CheckConfig(Box<CheckConfig>),
    /// Print TURN REST API credentials and an iceServers snippet for a WebRTC application.
    Credentials(Credentials),
}

#[derive(Args)]
struct Serve {
    /// A TOML configuration file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Args)]
struct CheckConfig {
    /// The TOML configuration file.
    file: PathBuf,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Args)]
struct Credentials {
    /// A shared secret from the server's auth-secrets.
    #[arg(long, value_name = "SECRET")]
    secret: String,
    /// The application's user id, put after the expiry time in the username.
    #[arg(long, value_name = "USER")]
    user: String,
    /// Seconds until the credentials expire.
    #[arg(long, value_name = "SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    ttl: u64,
    /// A TURN URI for the snippet (repeatable).
    #[arg(
        long = "uri",
        value_name = "URI",
        default_value = "turn:127.0.0.1:3478"
    )]
    uris: Vec<String>,
    /// Print only the JSON snippet.
    #[arg(long)]
    json: bool,
}

/// The exit status of a configuration that does not load, the same as a usage error.
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Credentials(args) => credentials(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Serve) -> anyhow::Result<ExitCode> {
    let config = match Config::load(args.config.as_deref(), &args.flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(CONFIG_ERROR));
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            config.log_level.as_str(),
        ))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let source = icebreaker::serve::Source {
        file: args.config,
        flags: args.flags,
    };
    icebreaker::serve::run(config, source)?;
    Ok(ExitCode::SUCCESS)
}

fn check_config(args: &CheckConfig) -> anyhow::Result<ExitCode> {
    let config = match Config::load(Some(&args.file), &args.flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(CONFIG_ERROR));
        }
    };
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# Effective configuration: defaults, then {}, then flags.",
        args.file.display()
    )?;
    out.write_all(config.to_toml().as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The `iceServers` member of an RTCConfiguration, as the W3C WebRTC API spells it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct IceConfiguration<'a> {
    ice_servers: [IceServer<'a>; 1],
}

#[derive(serde::Serialize)]
struct IceServer<'a> {
    urls: &'a [String],
    username: &'a str,
    credential: &'a str,
}

fn credentials(args: &Credentials) -> anyhow::Result<()> {
    if let Err(reason) = args.secret.parse::<Secret>() {
        eprintln!("warning: an Icebreaker server refuses this secret: {reason}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let expiry = now
        .checked_add(args.ttl)
        .context("--ttl runs past the end of time")?;
    let username = format!("{expiry}:{}", args.user);
    let password = RestPassword::new(args.secret.as_bytes(), &username);
    let snippet = serde_json::to_string_pretty(&IceConfiguration {
        ice_servers: [IceServer {
            urls: &args.uris,
            username: &username,
            credential: password.as_str(),
        }],
    })?;

    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(out, "username:   {username}")?;
        writeln!(out, "credential: {}", password.as_str())?;
        writeln!(out, "expires:    {expiry} (Unix time, in {} s)", args.ttl)?;
        writeln!(out)?;
    }
    writeln!(out, "{snippet}")?;
    Ok(())
}
