//! `ice-peer offer|answer --signal ws://HOST:PORT/ROOM [...]`: see `ice-peer --help`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use ice_peer::cli::Cli;
use ice_peer::driver;

/// The exit status of a run that did not succeed (2 is clap's, for usage errors).
const FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = match cli.options() {
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
            return ExitCode::from(FAILED);
        }
    };
    let report = runtime.block_on(driver::run(options));
    let printed = if cli.json {
        report.to_json().map(|json| json + "\n")
    } else {
        Ok(report.to_human())
    };
    let mut out = std::io::stdout().lock();
    match printed {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        Err(error) => eprintln!("error: cannot print the report: {error}"),
    }
    match &report.error {
        None => ExitCode::SUCCESS,
        Some(error) => {
            eprintln!("error: {error}");
            ExitCode::from(FAILED)
        }
    }
}
