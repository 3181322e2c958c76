//! What the criterion benches share.

use http::{HeaderMap, HeaderValue};

/// The auth cookie's name in the benches (the original's default).
pub const COOKIE: &str = "clearml_token_basic";

/// What a browser logged in to ClearML sends: `token` in the auth cookie among others.
pub fn browser_headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let pairs = [
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0".to_owned(),
        ),
        ("accept", "application/json".to_owned()),
        (
            "cookie",
            format!("_xsrf=2|a1b2c3; {COOKIE}={token}; theme=dark"),
        ),
    ];
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_str(&value).expect("a header value"));
    }
    headers
}
