//! The narrow interface through which the request path asks who a request comes from and
//! whether they may reach a route (CONTRACT §7). The proxy finds the token and strips it;
//! an [`Authorizer`] (ClearML's, in `gateway-auth`) decides.
//!
//! Decisions a cache already holds come back at once ([`Verdict::Ready`]), with no
//! allocation and no await; only a miss returns a future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderValue, SET_COOKIE};

/// Who a token belongs to, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The ClearML user id, sent upstream as `X-ClearML-User`.
    pub user: Arc<str>,
    /// When the token expires (seconds since the epoch), where it says.
    pub expires_at: Option<u64>,
    /// The authorizer's own key for the token (a keyed hash), so that it need not hash the
    /// token again for the next question; opaque to the proxy.
    pub token_key: u64,
}

/// A request that passed: who made it, and where its token was (to be stripped).
#[derive(Debug, Clone)]
pub struct Admission {
    /// The user.
    pub identity: Identity,
    /// Where the token was found.
    pub source: TokenSource,
}

/// Why a request may not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No token, or not one the server accepts (malformed, expired, revoked): 401.
    Unauthenticated(&'static str),
    /// A valid token whose user may not see the task: 403.
    Forbidden,
    /// The server could not be asked and nothing is cached: 503, never a pass.
    Unavailable,
}

/// An answer now, or one to wait for.
pub enum Verdict<T> {
    /// Decided (from a cache, or locally).
    Ready(Result<T, Denial>),
    /// To be decided by asking the server.
    Pending(Pin<Box<dyn Future<Output = Result<T, Denial>> + Send>>),
}

impl<T> Verdict<T> {
    /// The decision, waiting for it if need be.
    pub async fn resolve(self) -> Result<T, Denial> {
        match self {
            Verdict::Ready(decision) => decision,
            Verdict::Pending(future) => future.await,
        }
    }
}

/// Decides who a token belongs to and which tasks they may reach.
pub trait Authorizer: Send + Sync + 'static {
    /// The identity behind `token`.
    fn identify(&self, token: &str) -> Verdict<Identity>;

    /// Whether the holder of `token` (known to be `identity`) may see `task_id`, whose owner
    /// is `owner` where known.
    fn may_see(
        &self,
        token: &str,
        identity: &Identity,
        task_id: &str,
        owner: Option<&str>,
    ) -> Verdict<()>;
}

/// How the proxy finds tokens and sets its cookie.
#[derive(Clone)]
pub struct AuthSettings {
    /// Decides.
    pub authorizer: Arc<dyn Authorizer>,
    /// `AUTH_COOKIE_NAME`.
    pub cookie_name: String,
    /// `AUTH_SECURE_ENABLED`: the `Secure` flag on the cookie the login hand-off sets.
    pub cookie_secure: bool,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("cookie_name", &self.cookie_name)
            .field("cookie_secure", &self.cookie_secure)
            .finish_non_exhaustive()
    }
}

/// Where a request's token was found; that is the one place it is removed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The `AUTH_COOKIE_NAME` cookie.
    Cookie,
    /// `Authorization: Bearer`.
    Bearer,
}

/// The request's ClearML token: the auth cookie if present (an app's own `Authorization`
/// header then passes through untouched), else a Bearer token. Only a JWT-shaped value
/// counts. When the request carries an auth cookie, however empty or malformed, there is no
/// fall-back to Bearer: otherwise a page could send someone's cookie along with its own
/// Bearer token and have the cookie forwarded. Borrowed from the headers: finding it
/// allocates nothing.
pub fn find_token<'h>(headers: &'h HeaderMap, cookie_name: &str) -> Option<(&'h str, TokenSource)> {
    let mut auth_cookie_seen = false;
    for value in headers.get_all(COOKIE) {
        auth_cookie_seen |=
            cookie_pairs(value.as_bytes()).any(|(name, _)| name == cookie_name.as_bytes());
        let Ok(text) = value.to_str() else { continue };
        let found = cookie::Cookie::split_parse(text)
            .filter_map(Result::ok)
            .filter(|c| c.name() == cookie_name)
            .filter_map(|c| c.value_raw())
            .find(|value| is_token_shaped(value));
        if let Some(token) = found {
            return Some((token, TokenSource::Cookie));
        }
    }
    if auth_cookie_seen {
        return None;
    }
    let bearer = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = bearer.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && is_token_shaped(token))
        .then_some((token, TokenSource::Bearer))
}

/// `header.payload.signature`, each part base64url: what a ClearML token looks like, and
/// nothing that could smuggle cookie attributes or header syntax.
pub(crate) fn is_token_shaped(value: &str) -> bool {
    let mut parts = 0;
    for part in value.split('.') {
        let ok = !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return false;
        }
        parts += 1;
    }
    parts == 3
}

/// The `name=value` pairs of a `Cookie` header, as raw bytes, names and values trimmed.
fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|b| *b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            return None;
        }
        match pair.iter().position(|b| *b == b'=') {
            Some(at) => Some((pair[..at].trim_ascii(), pair[at + 1..].trim_ascii())),
            None => Some((pair, &pair[..0])),
        }
    })
}

/// Removes the user's ClearML credentials before forwarding: every auth cookie from every
/// `Cookie` header (whatever carried the token; the other cookies stay as the client wrote
/// them), and the `Authorization` header when it was the one that carried it. The task's
/// code is user code: it never sees the user's ClearML credentials.
pub fn strip_token(headers: &mut HeaderMap, cookie_name: &str, source: TokenSource) {
    if source == TokenSource::Bearer {
        headers.remove(AUTHORIZATION);
    }
    let needs_rewrite = headers.get_all(COOKIE).iter().any(|value| {
        cookie_pairs(value.as_bytes()).any(|(name, _)| name == cookie_name.as_bytes())
    });
    if !needs_rewrite {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            let name = pair
                .split(|b| *b == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if pair.is_empty() || name == cookie_name.as_bytes() {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(COOKIE);
    if let Ok(value) = HeaderValue::from_bytes(&kept) {
        if !kept.is_empty() {
            headers.insert(COOKIE, value);
        }
    }
}

/// Drops an upstream's `Set-Cookie` for the auth cookie: a task must not log its visitors
/// into another account, log them out, or plant the cookie.
pub fn drop_auth_set_cookies(headers: &mut HeaderMap, cookie_name: &str) {
    let setting_auth = |value: &HeaderValue| {
        let first = value
            .as_bytes()
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default();
        let name = first
            .split(|b| *b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        name == cookie_name.as_bytes()
    };
    if !headers.get_all(SET_COOKIE).iter().any(setting_auth) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|value| !setting_auth(value))
        .cloned()
        .collect();
    headers.remove(SET_COOKIE);
    for value in kept {
        headers.append(SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_cookie_wins_over_bearer_and_other_cookies_stay() {
        let mut map = headers(&[
            (
                "cookie",
                "theme=dark; clearml_token_basic=aGVhZA.Y29va2ll.c2ln; _xsrf=2|abc",
            ),
            ("authorization", "Bearer app-key"),
        ]);
        let (token, source) = find_token(&map, "clearml_token_basic").unwrap();
        assert_eq!(
            (token, source),
            ("aGVhZA.Y29va2ll.c2ln", TokenSource::Cookie)
        );
        strip_token(&mut map, "clearml_token_basic", source);
        assert_eq!(map["cookie"], "theme=dark; _xsrf=2|abc");
        assert_eq!(
            map["authorization"], "Bearer app-key",
            "the app's own header stays"
        );
    }

    #[test]
    fn a_bearer_token_is_used_and_removed_when_there_is_no_cookie() {
        let mut map = headers(&[
            ("cookie", "theme=dark"),
            ("authorization", "bearer  aGVhZA.YmVhcmVy.c2ln "),
        ]);
        let (token, source) = find_token(&map, "clearml_token_basic").unwrap();
        assert_eq!(
            (token, source),
            ("aGVhZA.YmVhcmVy.c2ln", TokenSource::Bearer)
        );
        strip_token(&mut map, "clearml_token_basic", source);
        assert!(map.get("authorization").is_none());
        assert_eq!(map["cookie"], "theme=dark");
    }

    #[test]
    fn split_cookie_headers_and_lone_auth_cookies_are_handled() {
        let mut map = headers(&[("cookie", "a=1"), ("cookie", "clearml_token_basic=a.b.c")]);
        let (_, source) = find_token(&map, "clearml_token_basic").unwrap();
        strip_token(&mut map, "clearml_token_basic", source);
        assert_eq!(map["cookie"], "a=1");
        let mut lone = headers(&[("cookie", "clearml_token_basic=a.b.c")]);
        strip_token(&mut lone, "clearml_token_basic", TokenSource::Cookie);
        assert!(lone.get("cookie").is_none());
    }

    #[test]
    fn an_auth_cookie_of_any_kind_stops_the_fall_back_to_bearer_and_is_always_stripped() {
        for cookies in [
            "clearml_token_basic=; clearml_token_basic=aGVhZA.dmljdGlt.c2ln",
            "clearml_token_basic=not-a-jwt",
        ] {
            let mut map = headers(&[
                ("cookie", cookies),
                ("authorization", "Bearer aGVhZA.YXR0YWNrZXI.c2ln"),
            ]);
            let found = find_token(&map, "clearml_token_basic");
            if cookies.starts_with("clearml_token_basic=;") {
                assert_eq!(
                    found,
                    Some(("aGVhZA.dmljdGlt.c2ln", TokenSource::Cookie)),
                    "the non-empty one counts"
                );
            } else {
                assert_eq!(found, None, "{cookies}");
            }
            strip_token(&mut map, "clearml_token_basic", TokenSource::Bearer);
            assert!(
                map.get("cookie").is_none(),
                "{cookies}: every auth cookie goes"
            );
        }
        let mut odd = HeaderMap::new();
        odd.insert(
            "cookie",
            HeaderValue::from_bytes(b"z=\xc3\xa9; clearml_token_basic=a.b.c; y=1").unwrap(),
        );
        odd.insert(
            "authorization",
            HeaderValue::from_static("Bearer aGVhZA.YXR0YWNrZXI.c2ln"),
        );
        assert_eq!(
            find_token(&odd, "clearml_token_basic"),
            None,
            "no fall-back past an auth cookie"
        );
        strip_token(&mut odd, "clearml_token_basic", TokenSource::Bearer);
        assert_eq!(odd["cookie"].as_bytes(), b"z=\xc3\xa9; y=1");
    }

    #[test]
    fn upstreams_cannot_set_the_auth_cookie() {
        let mut map = headers(&[
            ("set-cookie", "clearml_token_basic=ATTACKER; Path=/"),
            ("set-cookie", "_xsrf=1; Path=/"),
            ("set-cookie", " clearml_token_basic=; Max-Age=0"),
        ]);
        drop_auth_set_cookies(&mut map, "clearml_token_basic");
        let left: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(left, ["_xsrf=1; Path=/"]);
    }

    #[test]
    fn no_token_is_none() {
        assert!(find_token(&headers(&[]), "c").is_none());
        assert!(find_token(&headers(&[("cookie", "c=")]), "c").is_none());
        assert!(find_token(&headers(&[("authorization", "Basic dXNlcjpwdw==")]), "c").is_none());
        assert!(find_token(&headers(&[("authorization", "Bearer ")]), "c").is_none());
        assert!(
            find_token(
                &headers(&[("authorization", "Bearer a.b.c; Domain=evil")]),
                "c"
            )
            .is_none()
        );
    }
}
