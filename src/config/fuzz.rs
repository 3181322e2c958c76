//! Property tests of the files the operator writes: the routes file and `--env-file`. Any
//! text gives a table or an error that points into the text, never a panic; what was
//! written is what is read. The number of cases is `PROPTEST_CASES` (256 by default).

use std::collections::BTreeMap;

use gateway_proxy::Upstream;
use gateway_tcp::PortChoice;
use proptest::prelude::*;

use super::{env_file, routes_file};

/// Text made of what routes files are made of, and of what breaks them.
fn routes_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "[[route]]\n", "[[tcp]]\n", "[route]\n", "id = ", "upstream = ", "port = ",
            "\"demo\"", "\"a b\"", "\"é\"", "\"http://127.0.0.1:8000\"", "\"http://[::1]:80/\"",
            "\"https://x:1\"", "\"127.0.0.1:22\"", "\"h:0\"", "10022", "0", "70000", "-1",
            "\n", " ", "#", "=", "\"", "'", "[", "]", "{", "}", ",", "\\", "\t", "\r\n",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|pieces| pieces.concat())
}

/// An upstream host and port that the file format accepts.
fn upstream() -> impl Strategy<Value = (String, u16)> {
    let host = prop_oneof![
        Just("127.0.0.1".to_owned()),
        Just("10.0.0.5".to_owned()),
        Just("::1".to_owned()),
        "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z][a-z0-9]{0,5}){0,2}",
    ];
    (host, 1u16..)
}

fn url(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("http://[{host}]:{port}"),
        false => format!("http://{host}:{port}"),
    }
}

proptest! {
    #[test]
    fn fuzz_any_routes_file_is_read_or_refused_at_a_place_in_it(text in routes_text()) {
        if let Err((span, message)) = routes_file::parse(&text) {
            prop_assert!(!message.is_empty());
            let (line, column) = routes_file::line_and_column(&text, span.start);
            prop_assert!(line >= 1 && line <= text.split('\n').count(), "line {line}");
            prop_assert!(column >= 1);
        }
    }

    #[test]
    fn fuzz_written_routes_are_read_back(
        routes in prop::collection::btree_map("[A-Za-z0-9_-]{1,20}", upstream(), 0..8),
        sessions in prop::collection::btree_map(1u16.., upstream(), 0..4),
        comment in prop::bool::ANY,
    ) {
        let mut text = String::new();
        for (id, (host, port)) in &routes {
            let note = if comment { "   # a comment \"x\"" } else { "" };
            text.push_str(&format!(
                "[[route]]\nid = \"{id}\"{note}\nupstream = \"{}\"\n\n",
                url(host, *port)
            ));
        }
        for (listen, (host, port)) in &sessions {
            let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            text.push_str(&format!("[[tcp]]\nport = {listen}\nupstream = \"{host}:{port}\"\n"));
        }
        let unusable = routes.iter().find(|(id, (host, port))| {
            let upstream = Upstream::from_host_port(host, *port).unwrap();
            gateway_proxy::Route::new(id, upstream).is_none()
        });
        if let Some((id, _)) = unusable {
            let refused = routes_file::parse(&text).expect_err("an unusable id is refused");
            let (_, message) = refused;
            prop_assert!(message.contains(&format!("{id:?}")), "{message}");
            return Ok(());
        }
        let read = routes_file::parse(&text).map_err(|e| format!("{e:?} in\n{text}"));
        let read = read.map_err(TestCaseError::fail)?;
        prop_assert_eq!(read.table.len(), routes.len());
        for (id, (host, port)) in &routes {
            let route = read.table.lookup(id).expect("the route is there");
            prop_assert_eq!(route.upstream(), &Upstream::from_host_port(host, *port).unwrap());
        }
        prop_assert_eq!(read.tcp.len(), sessions.len());
        for (wanted, (listen, (host, port))) in read.tcp.iter().zip(&sessions) {
            prop_assert_eq!(wanted.port, PortChoice::Fixed(*listen));
            prop_assert_eq!((&wanted.target.host, wanted.target.port), (host, *port));
        }
    }
}

/// Text made of what env files are made of, and of what breaks them.
fn env_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "KEY", "A_1", "export ", "=", "value", " ", "\t", "\n", "\r\n", "#", " #", "'", "\"",
            "\\", "\\n", "\\$", "$", "$$", "${", "}", "${A:-x}", "${A-x}", "$A", "é", "1A",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|pieces| pieces.concat())
}

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,20}"
}

/// A value that needs no quotes: words without quotes, `$`, `#` or `\`, one space apart.
fn plain_value() -> impl Strategy<Value = String> {
    "([A-Za-z0-9_./:,@+=-]{1,12}( [A-Za-z0-9_./:,@+=-]{1,12}){0,2})?"
}

fn environment(_: &str) -> Option<String> {
    None
}

/// Reads `vars` written one per line by `write`, and checks every value comes back.
fn reads_back(
    vars: &BTreeMap<String, String>,
    write: impl Fn(&str) -> String,
) -> Result<(), TestCaseError> {
    let text: String = vars
        .iter()
        .map(|(key, value)| format!("{key}={}\n", write(value)))
        .collect();
    let read = env_file::parse(&text, environment);
    let read = read.map_err(|e| TestCaseError::fail(format!("{e:?} in {text:?}")))?;
    prop_assert_eq!(&read, vars, "read from {:?}", text);
    Ok(())
}

proptest! {
    #[test]
    fn fuzz_any_env_file_is_read_or_refused_at_one_of_its_lines(text in env_text()) {
        if let Err((line, problem)) = env_file::parse(&text, environment) {
            prop_assert!(!problem.is_empty());
            prop_assert!(line >= 1 && line <= text.lines().count(), "line {line} of {text:?}");
        }
    }

    #[test]
    fn fuzz_plain_values_are_read_back(
        vars in prop::collection::btree_map(key(), plain_value(), 0..8),
    ) {
        reads_back(&vars, str::to_owned)?;
    }

    #[test]
    fn fuzz_single_quoted_values_are_read_back_literally(
        vars in prop::collection::btree_map(key(), "[^'\r]{0,30}", 0..6),
    ) {
        reads_back(&vars, |value| format!("'{value}'"))?;
    }

    #[test]
    fn fuzz_double_quoted_values_are_read_back_with_their_escapes(
        vars in prop::collection::btree_map(key(), "[^\r]{0,30}", 0..6),
    ) {
        reads_back(&vars, |value| {
            let mut quoted = String::from("\"");
            for c in value.chars() {
                match c {
                    '\\' | '"' | '$' => {
                        quoted.push('\\');
                        quoted.push(c);
                    }
                    '\n' => quoted.push_str("\\n"),
                    '\t' => quoted.push_str("\\t"),
                    c => quoted.push(c),
                }
            }
            quoted.push('"');
            quoted
        })?;
    }
}
