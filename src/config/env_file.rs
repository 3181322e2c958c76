//! Reading a `runtime.env` as `docker compose --env-file` reads it.
//!
//! Compose's rules (compose-go's dotenv): `KEY=value` lines, `#` comment lines, blank
//! lines, an optional `export `; unquoted values run to the end of the line with a ` #`
//! comment cut off and outer white space trimmed — so `LISTEN_QUEUE_NAME=queue3 queue4`, as
//! the original gateway's docs write it, is one value with a space; `'single'` quotes are
//! literal; `"double"` quotes take `\n`-style escapes; `${VAR}`, `${VAR:-default}` and `$VAR`
//! expand outside single quotes from earlier lines, then the environment. A line with a key
//! and no `=` takes the value from the environment, which is read anyway.
//! Crates such as `dotenvy` refuse unquoted values with spaces, hence this reader.

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
    #[error("env file {path}, line {line}: {problem}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// The variables of the env file at `path` (a later line wins).
pub fn read(path: &Path) -> Result<BTreeMap<String, String>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, |name| std::env::var(name).ok()).map_err(|(line, problem)| EnvFileError::Syntax {
        path: path.to_owned(),
        line,
        problem,
    })
}

/// Parses env-file text; `environment` answers for names the file has not set. On error,
/// the 1-based line number and the problem.
pub(super) fn parse(
    text: &str,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut vars = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut index = 0;
    while index < lines.len() {
        let number = index + 1;
        // Only the start: a quoted value may run on to later lines, keeping the white space
        // before each line break.
        let line = lines[index].trim_start();
        index += 1;
        if line.trim_end().is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            check_key(line.trim_end()).map_err(|problem| (number, problem))?;
            continue;
        };
        let key = key.trim();
        check_key(key).map_err(|problem| (number, problem))?;
        let rest = rest.trim_start();
        let lookup = |name: &str| vars.get(name).cloned().or_else(|| environment(name));
        let value = match rest.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                let (raw, consumed) = quoted(&lines, index - 1, rest, quote)
                    .ok_or_else(|| (number, format!("{key}: the {quote} quote is never closed")))?;
                index += consumed;
                if quote == '"' {
                    expand(&unescape(&raw), &lookup)
                } else {
                    raw
                }
            }
            _ => expand(strip_comment(rest).trim_end(), &lookup),
        };
        vars.insert(key.to_owned(), value);
    }
    Ok(vars)
}

fn check_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!("{key:?} is not KEY=value"))
    }
}

/// The text between `quote` and its closing twin, which may be on a later line; also how
/// many further lines it took.
fn quoted(lines: &[&str], start: usize, rest: &str, quote: char) -> Option<(String, usize)> {
    let mut text = String::new();
    let mut current = &rest[1..];
    let mut consumed = 0;
    loop {
        if let Some(end) = closing(current, quote) {
            text.push_str(&current[..end]);
            return Some((text, consumed));
        }
        text.push_str(current);
        text.push('\n');
        consumed += 1;
        current = lines.get(start + consumed)?;
    }
}

fn closing(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            // `\$` stays escaped for `expand`, which turns it into a plain `$`.
            Some('$') => out.push_str("\\$"),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Cuts a ` #` comment off an unquoted value.
fn strip_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    (1..bytes.len())
        .find(|&i| bytes[i] == b'#' && bytes[i - 1].is_ascii_whitespace())
        .map_or(value, |i| &value[..i])
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR-default}`; `$$` and `\$` are `$`.
fn expand(text: &str, lookup: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(['$', '\\']) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if rest.as_bytes()[pos] == b'\\' {
            match after.strip_prefix('$') {
                Some(tail) => {
                    out.push('$');
                    rest = tail;
                }
                None => {
                    out.push('\\');
                    rest = after;
                }
            }
            continue;
        }
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                out.push_str(&rest[pos..]);
                return out;
            };
            out.push_str(&braced(&inner[..end], lookup));
            rest = &inner[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

fn braced(expression: &str, lookup: &impl Fn(&str) -> Option<String>) -> String {
    if let Some((name, default)) = expression.split_once(":-") {
        return lookup(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned());
    }
    if let Some((name, default)) = expression.split_once('-') {
        return lookup(name).unwrap_or_else(|| default.to_owned());
    }
    lookup(expression).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_alone(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
        parse(text, |name| (name == "HOME").then(|| "/root".to_owned()))
    }

    #[test]
    fn the_original_runtime_env_reads_as_compose_reads_it() {
        let text = "\
# ClearML gateway
PROXY_TAG=
ROUTER_NAME=main-router
ROUTER__WEBSERVER__SERVER_PORT=8010

AUTH_SECURE_ENABLED=true
LISTEN_QUEUE_NAME=queue3 queue4
  export ROUTER_URL = https://gw.example.com # the load balancer
AUTH_COOKIE_NAME='allegro_token_x'
TCP_PORT_START=
";
        let vars = parse_alone(text).unwrap();
        assert_eq!(vars["PROXY_TAG"], "");
        assert_eq!(vars["ROUTER_NAME"], "main-router");
        assert_eq!(vars["ROUTER__WEBSERVER__SERVER_PORT"], "8010");
        assert_eq!(vars["LISTEN_QUEUE_NAME"], "queue3 queue4");
        assert_eq!(vars["ROUTER_URL"], "https://gw.example.com");
        assert_eq!(vars["AUTH_COOKIE_NAME"], "allegro_token_x");
        assert_eq!(vars["TCP_PORT_START"], "");
        assert_eq!(vars.len(), 8);
    }

    #[test]
    fn quotes_escapes_and_expansion_follow_compose() {
        let text = "\
A=one
B=\"${A} two\\n#not a comment\" # a comment
C='${A} literal # kept'
D=${MISSING:-fallback}/x
E=$HOME/$$A \\$A
F=\"multi
line\"
G=a#b
H='ends with a tab\t
and goes on'
";
        let vars = parse_alone(text).unwrap();
        assert_eq!(vars["B"], "one two\n#not a comment");
        assert_eq!(vars["C"], "${A} literal # kept");
        assert_eq!(vars["D"], "fallback/x");
        assert_eq!(vars["E"], "/root/$A $A");
        assert_eq!(vars["F"], "multi\nline");
        assert_eq!(vars["G"], "a#b");
        assert_eq!(vars["H"], "ends with a tab\t\nand goes on");
    }

    #[test]
    fn a_bare_key_is_left_to_the_environment() {
        let vars = parse_alone("ROUTER_NAME\nA=1\n").unwrap();
        assert_eq!(vars.len(), 1);
    }

    #[test]
    fn broken_lines_are_named_by_number() {
        assert_eq!(
            parse_alone("A=1\n# ok\nthis is not an assignment\n").unwrap_err(),
            (
                3,
                "\"this is not an assignment\" is not KEY=value".to_owned()
            )
        );
        assert_eq!(
            parse_alone("A=1\nB=\"open\n").unwrap_err(),
            (2, "B: the \" quote is never closed".to_owned())
        );
        assert_eq!(parse_alone("1A=x\n").unwrap_err().0, 1);
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
