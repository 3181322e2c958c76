//! The standalone routes file (CONTRACT §9): a fixed route table in TOML.
//!
//! ```toml
//! [[route]]
//! id = "demo"                        # served at /service/demo/
//! upstream = "http://127.0.0.1:8000"
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use gateway_proxy::{Route, RouteTable, Upstream, routes::is_valid_route_key};
use serde::Deserialize;
use toml::Spanned;

/// A routes file that cannot be used, with the file, line and column at fault.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    /// The file could not be read.
    #[error("routes file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape, or an entry is unusable.
    #[error("routes file {path}, line {line}, column {column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    route: Vec<Spanned<RouteEntry>>,
    #[serde(default)]
    tcp: Vec<Spanned<TcpEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    id: Spanned<String>,
    upstream: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpEntry {
    #[allow(dead_code)]
    port: u16,
    #[allow(dead_code)]
    upstream: String,
}

/// Reads the routes file at `path` into a route table.
pub fn load(path: &Path) -> Result<RouteTable, RoutesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| RoutesFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|(span, message)| {
        let (line, column) = line_and_column(&text, span.start);
        RoutesFileError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })
}

/// Parses routes-file text; on error, where in the text and what.
fn parse(text: &str) -> Result<RouteTable, (Range<usize>, String)> {
    let shape: FileShape = toml::from_str(text)
        .map_err(|err| (err.span().unwrap_or(0..0), err.message().trim().to_owned()))?;
    if let Some(tcp) = shape.tcp.first() {
        return Err((
            tcp.span(),
            "[[tcp]] entries are not served by this version of the gateway".to_owned(),
        ));
    }
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let mut routes = Vec::with_capacity(shape.route.len());
    for entry in shape.route {
        let entry = entry.into_inner();
        let (id, id_span) = (entry.id.get_ref(), entry.id.span());
        if !is_valid_route_key(id) {
            return Err((
                id_span,
                format!("route id {id:?} must be one or more of A-Z a-z 0-9 _ -"),
            ));
        }
        if let Some(first) = seen.get(id) {
            let (first_line, _) = line_and_column(text, first.start);
            return Err((
                id_span,
                format!("route id {id:?} is already used on line {first_line}"),
            ));
        }
        let upstream = Upstream::parse_url(entry.upstream.get_ref())
            .map_err(|err| (entry.upstream.span(), format!("upstream: {err}")))?;
        let route =
            Route::new(id, upstream).ok_or_else(|| (id_span.clone(), "invalid id".into()))?;
        seen.insert(id.clone(), id_span);
        routes.push(route);
    }
    Ok(RouteTable::new(routes))
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        let (span, message) = parse(text).unwrap_err();
        let (line, column) = line_and_column(text, span.start);
        format!("{line}:{column}: {message}")
    }

    #[test]
    fn the_contract_example_parses() {
        let table = parse(
            r#"
[[route]]
id = "demo"                        # served at /service/demo/
upstream = "http://127.0.0.1:8000"

[[route]]
id = "abc__jupyter"
upstream = "http://10.0.0.5:8888/"
"#,
        )
        .unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.lookup("demo").unwrap().upstream().to_string(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(table.lookup("abc__jupyter").unwrap().task_id(), "abc");
    }

    #[test]
    fn an_empty_file_is_an_empty_table() {
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_point_at_the_line_and_say_what_is_wrong() {
        assert_eq!(
            error_of("[[route]]\nid = \"a\"\nupstream = \"https://x:1\"\n"),
            "3:12: upstream: expected http://host:port, got \"https://x:1\""
        );
        assert_eq!(
            error_of("[[route]]\nid = \"a/b\"\nupstream = \"http://x:1\"\n"),
            "2:6: route id \"a/b\" must be one or more of A-Z a-z 0-9 _ -"
        );
        assert_eq!(
            error_of(
                "[[route]]\nid = \"a\"\nupstream = \"http://x:1\"\n\n[[route]]\nid = \"a\"\nupstream = \"http://x:2\"\n"
            ),
            "6:6: route id \"a\" is already used on line 2"
        );
        assert!(error_of("[[route]]\nid = \"a\"\n").starts_with("1:1: missing field `upstream`"));
        assert!(
            error_of("[[route]]\nid = \"a\"\nupstream = \"http://x:1\"\nport = 3\n")
                .contains("unknown field `port`")
        );
        assert!(error_of("[[route]\n").starts_with("1:"));
        assert!(error_of("[[route]]\nid = \"a\"\nupstream = 'http://x:1'\n[[tcp]]\nport = 10022\nupstream = \"127.0.0.1:22\"\n")
            .starts_with("4:1: [[tcp]] entries"));
    }
}
