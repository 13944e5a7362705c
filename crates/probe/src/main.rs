//! `ice-probe URI... [--user U --password P | --secret S]`: see `ice-probe --help`.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use ice_probe::cli::{Cli, Colour, unix_now};
use ice_probe::{output, run};

/// The exit status when the probe itself cannot run (2 is clap's, for usage errors).
const CANNOT_RUN: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = match cli.options(unix_now()) {
        Ok(options) => options,
        Err(message) => Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let report = runtime.block_on(run::run(&options.uris, &options.settings));
    if let Some(path) = &options.prometheus {
        let metrics = output::prometheus(&report, unix_now().as_secs_f64());
        if let Err(error) = output::write_atomically(path, &metrics) {
            eprintln!("error: cannot write {}: {error}", path.display());
            return ExitCode::from(CANNOT_RUN);
        }
    }
    let text = if options.json {
        output::json(&report) + "\n"
    } else {
        let colour = match options.colour {
            Colour::Always => true,
            Colour::Never => false,
            Colour::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        output::table(&report, colour)
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    ExitCode::from(report.exit_code())
}
