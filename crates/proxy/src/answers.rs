//! The responses the gateway makes itself: its JSON errors, the log-in page for browsers,
//! redirects and the small JSON bodies of its own paths.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::error::ProxyError;

/// How the client wants to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// A browser navigating (`Accept` names `text/html`).
    Browser,
    /// Anything else: an API client, a script.
    Program,
}

impl Audience {
    /// Reads `Accept`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let html = headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"));
        if html {
            Audience::Browser
        } else {
            Audience::Program
        }
    }
}

const LOGIN_PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Log in to ClearML</title></head>\n<body><h1>Log in to ClearML</h1>\n<p>This service is served through the ClearML application gateway. Log in to the ClearML\nweb app, then open it again from there (its link on the task's page).</p></body></html>\n";

/// The gateway's answer for `err`: a short JSON body, or for a browser that lacks a login,
/// a short page saying to log in to ClearML.
pub(crate) fn error_response(err: &ProxyError, audience: Audience) -> Response<Bytes> {
    let mut response = match (err, audience) {
        (ProxyError::Unauthenticated(_), Audience::Browser) => {
            let mut page = Response::new(Bytes::from_static(LOGIN_PAGE.as_bytes()));
            *page.status_mut() = err.status();
            page.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            page.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            page
        }
        _ => {
            let body = serde_json::json!({
                "error": err.code(),
                "message": err.public_message(),
                "status": err.status().as_u16(),
            });
            json_response(err.status(), Bytes::from(body.to_string()))
        }
    };
    let headers = response.headers_mut();
    match err {
        ProxyError::Unauthenticated(_) => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        ProxyError::AuthUnavailable => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        // Connections come and go within seconds; a short wait is enough.
        ProxyError::TooManyConnections => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

/// A JSON response that no cache keeps.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A redirect to `location` (a path on this gateway), with a small JSON body.
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "location": location }).to_string();
    let mut response = json_response(status, Bytes::from(body));
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// `/service/{key}` → `308 /service/{key}/`: apps resolve relative links against their root.
pub(crate) fn add_trailing_slash(key: &str, query: Option<&str>) -> Response<Bytes> {
    let location = match query {
        Some(query) => format!("/service/{key}/?{query}"),
        None => format!("/service/{key}/"),
    };
    redirect(StatusCode::PERMANENT_REDIRECT, &location)
}
