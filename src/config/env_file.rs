//! Reading a `runtime.env`: the `KEY=value` file that `docker compose --env-file` takes
//! (comments, blank lines, empty values, quotes, `export`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An env file that cannot be read, with the file and line at fault.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// The file could not be opened or read.
    #[error("env file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `KEY=value`.
    #[error("env file {path}, line {line}: cannot parse {text:?}: expected KEY=value")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The line's text.
        text: String,
    },
}

/// The variables of the env file at `path`, in file order (a later line wins).
pub fn read(path: &Path) -> Result<BTreeMap<String, String>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|(line, text)| EnvFileError::Syntax {
        path: path.to_owned(),
        line,
        text,
    })
}

/// Parses env-file text; on error, the 1-based line number and the line.
fn parse(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut vars = BTreeMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((key, value)) => {
                vars.insert(key, value);
            }
            Err(dotenvy::Error::LineParse(bad, _)) => return Err(locate(text, &bad)),
            Err(other) => return Err((0, other.to_string())),
        }
    }
    Ok(vars)
}

fn locate(text: &str, bad: &str) -> (usize, String) {
    let first = bad.lines().next().unwrap_or(bad).trim();
    let line = text
        .lines()
        .position(|l| l.trim() == first)
        .map_or(0, |i| i + 1);
    (line, first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_runtime_env_reads_as_compose_reads_it() {
        let text = "\
# ClearML gateway
PROXY_TAG=
ROUTER_NAME=main-router
ROUTER__WEBSERVER__SERVER_PORT=8010

AUTH_SECURE_ENABLED=true
export LISTEN_QUEUE_NAME=\"queue1 queue2\"
AUTH_COOKIE_NAME='allegro_token_x'
ROUTER_URL=https://gw.example.com # the load balancer
TCP_PORT_START=
";
        let vars = parse(text).unwrap();
        assert_eq!(vars["PROXY_TAG"], "");
        assert_eq!(vars["ROUTER_NAME"], "main-router");
        assert_eq!(vars["ROUTER__WEBSERVER__SERVER_PORT"], "8010");
        assert_eq!(vars["LISTEN_QUEUE_NAME"], "queue1 queue2");
        assert_eq!(vars["AUTH_COOKIE_NAME"], "allegro_token_x");
        assert_eq!(vars["ROUTER_URL"], "https://gw.example.com");
        assert_eq!(vars["TCP_PORT_START"], "");
        assert_eq!(vars.len(), 8);
    }

    #[test]
    fn a_broken_line_is_named_by_number() {
        let (line, text) = parse("A=1\n# ok\nthis is not an assignment\n").unwrap_err();
        assert_eq!(line, 3);
        assert_eq!(text, "this is not an assignment");
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let err = read(Path::new("/nonexistent/runtime.env")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("env file /nonexistent/runtime.env: ")
        );
    }
}
