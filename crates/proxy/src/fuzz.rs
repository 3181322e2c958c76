//! Property tests of what the proxy parses from clients: the request path and the Cookie
//! header. The number of cases is `PROPTEST_CASES` (256 by default; CI runs many more).

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use crate::auth::{TokenSource, find_token, strip_token};
use crate::routes::is_valid_route_key;
use crate::target::Target;

/// Pieces paths are made of: what routes look like, and what attacks on them use.
fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("/".to_owned()),
        2 => Just("/service/".to_owned()),
        2 => prop::sample::select(vec![
            ".", "..", "%2e", "%2E", "%2e%2E", ".%2e", "%2f", "%2F", "%5c", "%5C", "\\", ";",
            ";x=1", "%", "%2", "%zz", "%00", "%25", "%252e", "?", "#", "__", "__lab", "é",
            "%C3%A9", " ", "%20", "+", "*", "_gateway",
        ])
        .prop_map(str::to_owned),
        3 => "[A-Za-z0-9_-]{1,8}",
        1 => any::<char>().prop_map(String::from),
    ]
}

fn any_path() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.7),
        prop::collection::vec(path_piece(), 0..12),
    )
        .prop_map(|(routed, pieces)| {
            let start = if routed { "/service/" } else { "" };
            format!("{start}{}", pieces.concat())
        })
}

/// Percent-decodes what is well-formed, leaving the rest as it is.
fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether an upstream that drops `;parameters`, then decodes (`%2e` → `.`, `%2f` → `/`)
/// and reads `\` as `/` before resolving dot segments would find one.
fn climbs_for_a_decoding_upstream(forwarded: &str) -> bool {
    forwarded.split('/').any(|segment| {
        let segment = segment.split(';').next().unwrap_or_default();
        decoded(segment)
            .split(['/', '\\'])
            .any(|part| part == "." || part == "..")
    })
}

proptest! {
    #[test]
    fn fuzz_routed_paths_never_panic_and_what_is_forwarded_is_clean(path in any_path()) {
        // As the HTTP parser hands it over, and as it came.
        let parsed = http::Uri::try_from(path.as_str()).ok();
        let candidates = [Some(path.as_str()), parsed.as_ref().map(http::Uri::path)];
        for candidate in candidates.into_iter().flatten() {
            match Target::parse(candidate) {
                Ok(Target::Service { key, forwarded_path }) => {
                    prop_assert!(is_valid_route_key(key), "{candidate}: key {key:?}");
                    prop_assert!(forwarded_path.starts_with('/'));
                    prop_assert_eq!(format!("/service/{key}{forwarded_path}"), candidate);
                    prop_assert!(
                        !climbs_for_a_decoding_upstream(forwarded_path),
                        "{} forwards a dot segment", candidate
                    );
                }
                Ok(Target::ServiceRoot { key }) => {
                    prop_assert!(is_valid_route_key(key));
                    prop_assert_eq!(format!("/service/{key}"), candidate);
                }
                Ok(Target::Gateway(name)) => {
                    prop_assert_eq!(format!("/_gateway/{name}"), candidate);
                }
                Ok(Target::Unrouted) => prop_assert!(!candidate.starts_with("/service/")),
                Err(_) => prop_assert!(candidate.starts_with("/service/")),
            }
        }
    }
}

const AUTH: &str = "clearml_token_basic";

/// One `name=value` pair of a Cookie header, as a browser or an attacker might write it.
fn cookie_pair() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        3 => Just(AUTH.to_owned()),
        1 => Just(format!(" {AUTH}")),
        1 => Just(format!("\t{AUTH} ")),
        1 => Just("Clearml_token_basic".to_owned()),
        1 => Just(format!("{AUTH}x")),
        2 => "[a-z_]{1,6}",
        1 => "[ -~]{0,6}",
    ];
    let value = prop_oneof![
        3 => "[A-Za-z0-9_-]{1,6}\\.[A-Za-z0-9_-]{1,6}\\.[A-Za-z0-9_-]{1,6}",
        1 => Just(String::new()),
        1 => "\"[A-Za-z0-9.]{0,8}\"",
        2 => "[ -~]{0,10}",
    ];
    prop_oneof![
        6 => (name, value).prop_map(|(n, v)| format!("{n}={v}")),
        1 => Just(AUTH.to_owned()),
        1 => Just(String::new()),
    ]
}

/// The Cookie headers of a request: pairs joined with `;`-ish separators, in 1 to 3 headers.
fn cookie_headers() -> impl Strategy<Value = Vec<String>> {
    let separator = prop::sample::select(vec!["; ", ";", " ; ", ";;"]);
    let header = prop::collection::vec((cookie_pair(), separator), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(pair, separator)| format!("{pair}{separator}"))
            .collect::<String>()
    });
    prop::collection::vec(header, 1..4)
}

/// `(name, value)` of each pair, read the way RFC 6265 servers read them; an independent
/// reading to check the proxy's against.
fn pairs_of(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            text.split(';')
                .map(|pair| pair.trim_matches([' ', '\t']).to_owned())
                .filter(|pair| !pair.is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some((n, v)) => (n.trim_matches([' ', '\t']).to_owned(), v.to_owned()),
                    None => (pair, String::new()),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

proptest! {
    #[test]
    fn fuzz_the_auth_cookie_never_survives_stripping_and_other_cookies_stay(
        cookies in cookie_headers(),
        bearer in prop::option::of("[A-Za-z0-9]{1,4}\\.[A-Za-z0-9]{1,4}\\.[A-Za-z0-9]{1,4}"),
    ) {
        let mut headers = HeaderMap::new();
        for value in &cookies {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(COOKIE, value);
            }
        }
        if let Some(token) = &bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            headers.insert(AUTHORIZATION, value);
        }
        let before = pairs_of(&headers);
        let had_auth_cookie = before.iter().any(|(name, _)| name == AUTH);
        let Some((token, source)) = find_token(&headers, AUTH) else {
            return Ok(());
        };
        let token = token.to_owned();
        match source {
            TokenSource::Cookie => prop_assert!(
                before.iter().any(|(name, value)| name == AUTH && value.trim() == token),
                "the token came from an auth cookie: {before:?}"
            ),
            TokenSource::Bearer => prop_assert!(
                !had_auth_cookie,
                "no fall-back to Bearer past an auth cookie: {before:?}"
            ),
        }
        strip_token(&mut headers, AUTH, source);
        let after = pairs_of(&headers);
        prop_assert!(after.iter().all(|(name, _)| name != AUTH), "{after:?}");
        let others: Vec<_> = before.into_iter().filter(|(name, _)| name != AUTH).collect();
        prop_assert_eq!(after, others, "every other cookie stays, in order");
        if source == TokenSource::Bearer {
            prop_assert!(headers.get(AUTHORIZATION).is_none());
        }
    }
}
