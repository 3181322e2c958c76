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
use http::header::{AUTHORIZATION, COOKIE, HeaderValue};

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
/// header then passes through untouched), else a Bearer token. Borrowed from the headers:
/// finding it allocates nothing.
pub fn find_token<'h>(headers: &'h HeaderMap, cookie_name: &str) -> Option<(&'h str, TokenSource)> {
    for value in headers.get_all(COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        let found = cookie::Cookie::split_parse(text)
            .filter_map(Result::ok)
            .find(|c| c.name() == cookie_name)
            .and_then(|c| c.value_raw())
            .filter(|value| !value.is_empty());
        if let Some(token) = found {
            return Some((token, TokenSource::Cookie));
        }
    }
    let bearer = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = bearer.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .then_some((token, TokenSource::Bearer))
}

/// Removes the token from where it was found: the auth cookie from `Cookie` (the other
/// cookies stay, as the client wrote them), or the `Authorization` header. The task's code
/// is user code: it never sees the user's ClearML credentials.
pub fn strip_token(headers: &mut HeaderMap, cookie_name: &str, source: TokenSource) {
    match source {
        TokenSource::Bearer => {
            headers.remove(AUTHORIZATION);
        }
        TokenSource::Cookie => {
            let mut kept = String::new();
            for value in headers.get_all(COOKIE) {
                let Ok(text) = value.to_str() else { continue };
                for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    let name = pair.split_once('=').map_or(pair, |(name, _)| name).trim();
                    if name != cookie_name {
                        if !kept.is_empty() {
                            kept.push_str("; ");
                        }
                        kept.push_str(pair);
                    }
                }
            }
            headers.remove(COOKIE);
            if let Ok(value) = HeaderValue::from_str(&kept) {
                if !kept.is_empty() {
                    headers.insert(COOKIE, value);
                }
            }
        }
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
                "theme=dark; clearml_token_basic=COOKIE.TOKEN.X; _xsrf=2|abc",
            ),
            ("authorization", "Bearer app-key"),
        ]);
        let (token, source) = find_token(&map, "clearml_token_basic").unwrap();
        assert_eq!((token, source), ("COOKIE.TOKEN.X", TokenSource::Cookie));
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
            ("authorization", "bearer  TOK.EN.X "),
        ]);
        let (token, source) = find_token(&map, "clearml_token_basic").unwrap();
        assert_eq!((token, source), ("TOK.EN.X", TokenSource::Bearer));
        strip_token(&mut map, "clearml_token_basic", source);
        assert!(map.get("authorization").is_none());
        assert_eq!(map["cookie"], "theme=dark");
    }

    #[test]
    fn split_cookie_headers_and_lone_auth_cookies_are_handled() {
        let mut map = headers(&[("cookie", "a=1"), ("cookie", "clearml_token_basic=T")]);
        let (_, source) = find_token(&map, "clearml_token_basic").unwrap();
        strip_token(&mut map, "clearml_token_basic", source);
        assert_eq!(map["cookie"], "a=1");
        let mut lone = headers(&[("cookie", "clearml_token_basic=T")]);
        strip_token(&mut lone, "clearml_token_basic", TokenSource::Cookie);
        assert!(lone.get("cookie").is_none());
    }

    #[test]
    fn no_token_is_none() {
        assert!(find_token(&headers(&[]), "c").is_none());
        assert!(find_token(&headers(&[("cookie", "c=")]), "c").is_none());
        assert!(find_token(&headers(&[("authorization", "Basic dXNlcjpwdw==")]), "c").is_none());
        assert!(find_token(&headers(&[("authorization", "Bearer ")]), "c").is_none());
    }
}
