//! The gateway's own log-in hand-off (CONTRACT §7): `GET /_gateway/login?token=…&next=…`
//! checks the token, sets the auth cookie for this gateway's domain and sends the browser on
//! to `next` — a path on this gateway, never anywhere else.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cookie::{Cookie, SameSite};
use http::header::SET_COOKIE;
use http::{HeaderValue, Response, StatusCode};
use percent_encoding::percent_decode_str;

use crate::answers::redirect;
use crate::auth::AuthSettings;
use crate::error::ProxyError;

/// Answers a log-in hand-off with the query `query`.
pub(crate) async fn hand_off(
    auth: &AuthSettings,
    query: Option<&str>,
) -> Result<Response<Bytes>, ProxyError> {
    let token = query_value(query, "token")
        .ok_or(ProxyError::BadLogin("the token parameter is missing"))?;
    let next = match query_value(query, "next") {
        Some(next) => safe_next(&next)
            .ok_or(ProxyError::BadLogin("next must be a path on this gateway"))?
            .to_owned(),
        None => "/".to_owned(),
    };
    if !crate::auth::is_token_shaped(&token) {
        return Err(ProxyError::Unauthenticated("malformed token"));
    }
    let identity = auth.authorizer.identify(&token).resolve().await?;
    let mut cookie = Cookie::build((auth.cookie_name.as_str(), token.as_str()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(auth.cookie_secure);
    if let Some(expires_at) = identity.expires_at {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let seconds = i64::try_from(expires_at.saturating_sub(now)).unwrap_or(i64::MAX);
        cookie = cookie.max_age(cookie::time::Duration::seconds(seconds));
    }
    let mut response = redirect(StatusCode::SEE_OTHER, &next);
    let value = HeaderValue::from_str(&cookie.build().to_string())
        .map_err(|_| ProxyError::BadLogin("the token cannot be set as a cookie"))?;
    response.headers_mut().insert(SET_COOKIE, value);
    Ok(response)
}

/// The decoded value of `name` in a query string (`+` read as a space).
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            let value = value.replace('+', " ");
            percent_decode_str(&value).decode_utf8_lossy().into_owned()
        })
    })
}

/// `next` if it is a path on this gateway: starts with one `/`, not `//` or `/\` (which
/// browsers read as another host), and holds no control characters (which browsers drop,
/// turning `/\t/evil` into `//evil`) and no backslash.
fn safe_next(next: &str) -> Option<&str> {
    let is_path = next.starts_with('/') && !next.starts_with("//");
    let clean = next.is_ascii() && !next.contains('\\') && !next.chars().any(char::is_control);
    (is_path && clean).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_stay_on_this_gateway() {
        for good in ["/service/abc/", "/service/abc/lab?x=https://a.b", "/"] {
            assert_eq!(safe_next(good), Some(good), "{good}");
        }
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/service/\r\nSet-Cookie: x=1",
            "evil.example",
            "",
            "javascript:alert(1)",
            "/\u{e9}",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_values_are_decoded() {
        let query = Some("token=a.b.c&next=%2Fservice%2Fx%2F%3Fq%3D1&flag");
        assert_eq!(query_value(query, "token").as_deref(), Some("a.b.c"));
        assert_eq!(
            query_value(query, "next").as_deref(),
            Some("/service/x/?q=1")
        );
        assert_eq!(query_value(query, "flag").as_deref(), Some(""));
        assert_eq!(query_value(query, "none"), None);
        assert_eq!(
            query_value(Some("next=%2F%2Fevil"), "next").as_deref(),
            Some("//evil")
        );
    }
}
