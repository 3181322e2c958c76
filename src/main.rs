//! `clearml-gateway`: one process that replaces the ClearML AI Application Gateway.
//!
//! This file only wires: it reads the command line and the configuration, sets up logging
//! and the runtime, picks the mode (`mode`: where routes come from) and runs it until a signal
//! (`signals`) asks it to stop.

mod clearml;
mod cli;
mod config;
mod health;
mod logging;
mod metrics;
mod mode;
mod open_files;
mod preflight;
mod signals;
mod standalone;

use std::process::ExitCode;

use cli::Cli;
use config::Config;
use mode::{Mode, ModeError};

/// Exit status for a configuration or usage error (nothing was bound).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::from_args() {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("clearml-gateway: {err}\n\n{}", cli::USAGE);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.help {
        println!("{}", cli::USAGE);
        return ExitCode::SUCCESS;
    }
    if cli.version {
        println!("clearml-gateway {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.env_file.as_deref()) {
        Ok(config) => config,
        // Docker reserves a health check's status 2: a probe that cannot run is unhealthy.
        Err(err) if cli.health_check => {
            eprintln!("clearml-gateway: configuration error: {err}");
            return ExitCode::FAILURE;
        }
        Err(err) => return configuration_error(&err),
    };
    if cli.health_check {
        return health::check(&config);
    }
    let mode = Mode::choose(&config, cli.routes.as_deref());
    if cli.check_config {
        return check_config(&config, mode);
    }
    match mode {
        Ok(mode) => serve(config, mode),
        Err(err) => configuration_error(&err),
    }
}

fn configuration_error(err: &dyn std::error::Error) -> ExitCode {
    eprintln!("clearml-gateway: configuration error: {err}");
    ExitCode::from(EXIT_CONFIG)
}

/// `--check-config`: the effective configuration, whether the gateway could start, and in
/// ClearML mode whether ClearML lets it in (read-only).
fn check_config(config: &Config, mode: Result<Mode, ModeError>) -> ExitCode {
    print!("{}", config.render());
    match mode {
        Ok(mode) => {
            println!("# {}", mode.describe());
            let Some(clearml) = &config.clearml else {
                return ExitCode::SUCCESS;
            };
            match preflight::check_clearml(clearml, config) {
                Ok(lines) => {
                    lines.iter().for_each(|line| println!("# {line}"));
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    println!("# ClearML check failed: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(err) => {
            println!("# not startable: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Runs the gateway until it is told to stop.
fn serve(config: Config, mode: Mode) -> ExitCode {
    logging::init(&config.log);
    for name in &config.unknown_router_vars {
        tracing::warn!(variable = %name, "ignoring an environment variable that is not a gateway setting");
    }
    open_files::raise_and_report(config.http.max_connections);
    let runtime = match runtime(config.runtime_threads) {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let status = match runtime.block_on(mode.run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    };
    logging::flush();
    status
}

/// One thread runs everything on the current thread, with no work-stealing machinery and
/// no wake-ups between threads (nginx's one worker); more share the work between them.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}
