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
use gateway_tcp::{PortChoice, Target, Wanted};
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
    port: Spanned<u16>,
    upstream: Spanned<String>,
}

/// What a routes file serves.
#[derive(Debug, Default)]
pub struct Routes {
    /// The HTTP routes.
    pub table: RouteTable,
    /// The TCP ports, each forwarded to its `host:port`.
    pub tcp: Vec<Wanted>,
}

/// Reads the routes file at `path`.
pub fn load(path: &Path) -> Result<Routes, RoutesFileError> {
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
pub(super) fn parse(text: &str) -> Result<Routes, (Range<usize>, String)> {
    let shape: FileShape = toml::from_str(text)
        .map_err(|err| (err.span().unwrap_or(0..0), err.message().trim().to_owned()))?;
    let tcp = tcp_entries(text, shape.tcp)?;
    let table = route_entries(text, shape.route)?;
    Ok(Routes { table, tcp })
}

/// `[[tcp]]`: `port` listens, `upstream` is `host:port`.
fn tcp_entries(
    text: &str,
    entries: Vec<Spanned<TcpEntry>>,
) -> Result<Vec<Wanted>, (Range<usize>, String)> {
    let mut seen: HashMap<u16, Range<usize>> = HashMap::new();
    let mut wanted = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry = entry.into_inner();
        let (port, port_span) = (*entry.port.get_ref(), entry.port.span());
        if port == 0 {
            return Err((port_span, "port must be in 1..=65535".to_owned()));
        }
        if let Some(first) = seen.get(&port) {
            let (first_line, _) = line_and_column(text, first.start);
            return Err((
                port_span,
                format!("port {port} is already used on line {first_line}"),
            ));
        }
        let upstream = entry.upstream.get_ref();
        let bad = |why: String| (entry.upstream.span(), format!("upstream: {why}"));
        let (host, upstream_port) = upstream
            .rsplit_once(':')
            .and_then(|(host, port)| {
                Some((host.trim_matches(['[', ']']), port.parse::<u16>().ok()?))
            })
            .ok_or_else(|| bad(format!("expected host:port, got {upstream:?}")))?;
        Upstream::from_host_port(host, upstream_port).map_err(|err| bad(err.to_string()))?;
        seen.insert(port, port_span);
        wanted.push(Wanted {
            target: Target {
                key: format!("tcp:{port}"),
                host: host.to_owned(),
                port: upstream_port,
            },
            port: PortChoice::Fixed(port),
        });
    }
    Ok(wanted)
}

/// `[[route]]`: `id` is served at `/service/{id}/`, forwarded to `upstream`.
fn route_entries(
    text: &str,
    entries: Vec<Spanned<RouteEntry>>,
) -> Result<RouteTable, (Range<usize>, String)> {
    let shape_route = entries;
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let mut routes = Vec::with_capacity(shape_route.len());
    for entry in shape_route {
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
        let route = Route::new(id, upstream).ok_or_else(|| {
            let why = format!(
                "route id {id:?}: a \"__\" must have a task id before it and a name after it"
            );
            (id_span.clone(), why)
        })?;
        seen.insert(id.clone(), id_span);
        routes.push(route);
    }
    Ok(RouteTable::new(routes))
}

/// The 1-based line and column of byte `offset` in `text`.
pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
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
        let Routes { table, tcp } = parse(
            r#"
[[route]]
id = "demo"                        # served at /service/demo/
upstream = "http://127.0.0.1:8000"

[[route]]
id = "abc__jupyter"
upstream = "http://10.0.0.5:8888/"

[[tcp]]
port = 10022                       # listens here
upstream = "127.0.0.1:22"
"#,
        )
        .unwrap();
        assert_eq!(tcp.len(), 1);
        assert_eq!(tcp[0].port, PortChoice::Fixed(10022));
        assert_eq!(
            (tcp[0].target.host.as_str(), tcp[0].target.port),
            ("127.0.0.1", 22)
        );
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.lookup("demo").unwrap().upstream().to_string(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(table.lookup("abc__jupyter").unwrap().task_id(), "abc");
    }

    #[test]
    fn an_empty_file_is_an_empty_table() {
        assert!(parse("").unwrap().table.is_empty());
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
        assert_eq!(
            error_of("[[route]]\nid = \"abc__\"\nupstream = \"http://x:1\"\n"),
            "2:6: route id \"abc__\": a \"__\" must have a task id before it and a name after it"
        );
        assert!(error_of("[[route]]\nid = \"a\"\n").starts_with("1:1: missing field `upstream`"));
        assert!(
            error_of("[[route]]\nid = \"a\"\nupstream = \"http://x:1\"\nport = 3\n")
                .contains("unknown field `port`")
        );
        assert!(error_of("[[route]\n").starts_with("1:"));
        assert!(
            error_of("[[tcp]]\nport = 10022\nupstream = \"127.0.0.1\"\n")
                .starts_with("3:12: upstream: expected host:port")
        );
        assert!(
            error_of(
                "[[tcp]]\nport = 1\nupstream = \"h:2\"\n[[tcp]]\nport = 1\nupstream = \"h:3\"\n"
            )
            .starts_with("5:8: port 1 is already used on line 2")
        );
    }
}
