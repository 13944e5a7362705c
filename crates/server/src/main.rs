//! The `icebreaker` command.
//!
//! - `icebreaker serve [--config FILE] [flags]`: runs the STUN/TURN server. With no argument it
//!   serves UDP 3478 on every interface with a generated user, and prints how to connect.
//! - `icebreaker check-config FILE [flags]`: checks a configuration file with flags over it and
//!   prints the effective configuration, secrets redacted. Exit status 0 when valid, 2 with
//!   `error: FILE:LINE:COLUMN: reason` on standard error when not.
//! - `icebreaker credentials --secret S --user U [--ttl SECS] [--uri URI]... [--json]`: prints
//!   TURN REST API credentials and an `iceServers` snippet to paste into a WebRTC application.
//! - `icebreaker signal [--listen ADDR] [limits]`: runs a WebSocket signaling relay on
//!   `ws://ADDR/ROOM` (0.0.0.0:8080 by default) for two peers to exchange offer, answer and
//!   candidates; prints the URL form.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use icebreaker::config::{LogLevel, Secret};
use icebreaker::signal::SignalLimits;
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
    /// Run a WebSocket signaling relay with rooms, for peers to exchange offer and answer.
    Signal(Signal),
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

#[derive(Args)]
struct Signal {
    /// The TCP address to serve WebSocket upgrades on (every interface, port 8080, by default).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Rooms at once; a connection that would create one more is closed with 1013.
    #[arg(long, value_name = "N", default_value_t = SignalLimits::DEFAULT.max_rooms,
          value_parser = at_least(1))]
    max_rooms: usize,
    /// Members per room; one more is closed with 1008 "room is full".
    #[arg(long, value_name = "N", default_value_t = SignalLimits::DEFAULT.max_members,
          value_parser = at_least(2))]
    max_members: usize,
    /// The largest text message in bytes; a larger one is closed with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = SignalLimits::DEFAULT.max_message_bytes,
          value_parser = at_least(1))]
    max_message_bytes: usize,
    /// Seconds a connection may send nothing, not even a ping, before it is closed with 1001.
    #[arg(long, value_name = "SECS",
          default_value_t = SignalLimits::DEFAULT.idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Open connections at once; more are answered 503 Service Unavailable.
    #[arg(long, value_name = "N", default_value_t = SignalLimits::DEFAULT.max_connections,
          value_parser = at_least(1))]
    max_connections: usize,
    /// Log level: error, warn, info (rooms created and deleted, refusals), debug or trace.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        hide_possible_values = true
    )]
    log_level: LogLevel,
}

/// A parser for a count of at least `min`.
fn at_least(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(min..)
}

/// The exit status of a configuration that does not load, the same as a usage error.
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Credentials(args) => credentials(&args).map(|()| ExitCode::SUCCESS),
        Command::Signal(args) => signal(&args).map(|()| ExitCode::SUCCESS),
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
    init_logs(config.log_level);
    let source = icebreaker::serve::Source {
        file: args.config,
        flags: args.flags,
    };
    icebreaker::serve::run(config, source)?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to standard error, in color on a terminal.
fn init_logs(level: LogLevel) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level.as_str()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn signal(args: &Signal) -> anyhow::Result<()> {
    init_logs(args.log_level);
    let limits = SignalLimits {
        max_rooms: args.max_rooms,
        max_members: args.max_members,
        max_message_bytes: args.max_message_bytes,
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
        max_connections: args.max_connections,
    };
    icebreaker::signal::serve(args.listen, limits)
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
