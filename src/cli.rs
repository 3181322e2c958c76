//! The command line: `clearml-gateway [--env-file FILE] [--routes FILE] [--check-config |
//! --health-check]`.

use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug, Default)]
pub struct Cli {
    /// `--env-file FILE`: a `runtime.env` read before the environment.
    pub env_file: Option<PathBuf>,
    /// `--routes FILE`: serve this fixed route table (standalone mode).
    pub routes: Option<PathBuf>,
    /// `--check-config`: print the effective configuration and exit.
    pub check_config: bool,
    /// `--health-check`: ask the running gateway's `/_gateway/health`, exit 0 if healthy.
    pub health_check: bool,
    /// `--help`.
    pub help: bool,
    /// `--version`.
    pub version: bool,
}

/// Shown by `--help` and after a usage error.
pub const USAGE: &str = "\
usage: clearml-gateway [--env-file FILE] [--routes FILE] [--check-config | --health-check]
       clearml-gateway --help | --version

  --env-file FILE   read variables from a runtime.env first (the environment wins)
  --routes FILE     standalone mode: serve the fixed routes of a TOML file
                    (only without CLEARML_API_HOST; nothing is authenticated)
  --check-config    print the effective configuration, secrets masked, and exit; with
                    CLEARML_API_HOST, also log in to ClearML and look up LISTEN_QUEUE_NAME
                    (read-only; exit 1 if ClearML cannot be reached or refuses the keys)
  --health-check    ask the gateway running with this configuration for /_gateway/health;
                    exit 0 if it answers 200 (the container image's health check)
  -h, --help        print this help and exit
  -V, --version     print the version and exit

Configuration comes from the environment: see docs/configuration.md.
Exit status: 0 after a clean shutdown, 2 for a configuration or usage error (nothing was
bound), 1 for a failure at run time (e.g. the port is taken).";

impl Cli {
    /// Parses the process arguments.
    pub fn from_args() -> Result<Self, lexopt::Error> {
        Self::parse(lexopt::Parser::from_env())
    }

    fn parse(mut parser: lexopt::Parser) -> Result<Self, lexopt::Error> {
        use lexopt::prelude::*;
        let mut cli = Cli::default();
        while let Some(arg) = parser.next()? {
            match arg {
                Long("env-file") => cli.env_file = Some(parser.value()?.into()),
                Long("routes") => cli.routes = Some(parser.value()?.into()),
                Long("check-config") => cli.check_config = true,
                Long("health-check") => cli.health_check = true,
                Short('h') | Long("help") => cli.help = true,
                Short('V') | Long("version") => cli.version = true,
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(cli)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, lexopt::Error> {
        Cli::parse(lexopt::Parser::from_args(args.iter().copied()))
    }

    #[test]
    fn options_take_their_values() {
        let cli = parse(&[
            "--env-file",
            "runtime.env",
            "--routes=r.toml",
            "--check-config",
        ])
        .unwrap();
        assert_eq!(cli.env_file.unwrap().to_str(), Some("runtime.env"));
        assert_eq!(cli.routes.unwrap().to_str(), Some("r.toml"));
        assert!(cli.check_config);
    }

    #[test]
    fn unknown_arguments_are_errors() {
        assert!(
            parse(&["--rotes", "r.toml"])
                .unwrap_err()
                .to_string()
                .contains("--rotes")
        );
        assert!(parse(&["--routes"]).is_err());
        assert!(parse(&["stray"]).is_err());
    }
}
