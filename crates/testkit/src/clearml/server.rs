//! The fake server's HTTP side: path parsing, authentication, faults and the envelope.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::handlers::{self, ApiError, Caller};
use super::jwt;
use super::state::{Fault, State};

/// Starts serving on `addr` (port 0 for a fresh one). Aborting the returned task closes
/// the port and every connection it accepted, as a server that went down.
pub async fn serve(
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // Owned here, so that the connections end with the server.
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            while connections.try_join_next().is_some() {}
            let state = Arc::clone(&state);
            connections.spawn(async move {
                let service = service_fn(move |req| answer(Arc::clone(&state), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// What the server answers with: a whole body, or one cut off on purpose.
type AnswerBody = Either<Full<Bytes>, Channel<Bytes, Dropped>>;

/// The first bytes of a real envelope, and nothing after them.
const ENVELOPE_START: &str = r#"{"meta":{"id":"0","trx":"0","result_code":200,"result_subcode":0,"result_msg":"OK"},"data":{"tasks":[{"id":"#;

/// [`ENVELOPE_START`] announced as 4 KiB of JSON, then the connection closes: the body
/// ends in an error once its first part has been sent, so hyper drops the connection
/// short of the `Content-Length` it announced.
fn cut_short() -> Response<AnswerBody> {
    let (mut sender, body) = Channel::new(1);
    tokio::spawn(async move {
        let _ = sender
            .send_data(Bytes::from_static(ENVELOPE_START.as_bytes()))
            .await;
        // Long enough for the head and the first part to be written out.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        sender.abort(Dropped);
    });
    let mut response = Response::new(Either::Right(body));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("4096"),
    );
    response
}

/// A refusal to answer at all: hyper closes the connection without a response.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<AnswerBody>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Some((version, endpoint)) = parse_path(parts.uri.path()) else {
        let error = ApiError::new(400, 0, format!("Invalid request path {}", parts.uri.path()));
        return Ok(envelope("", None, Err(error), "2.31").map(Either::Left));
    };
    let (delay, fault, api_version) = {
        let mut state = state.lock().expect("fake ClearML state");
        *state.calls.entry(endpoint.clone()).or_default() += 1;
        (state.delay, state.take_fault(), state.api_version.clone())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let call = Call {
        endpoint,
        version,
        api_version,
    };
    let whole = match fault {
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::CutMidAnswer) => return Ok(cut_short()),
        Some(Fault::Garbage) => raw("text/html", "<html>not the API</html>"),
        Some(Fault::InvalidJson) => raw("application/json", ENVELOPE_START),
        Some(Fault::Refusal(code, subcode)) => {
            let error = ApiError::new(
                code,
                subcode,
                "unauthorized (not authorized for endpoint)".to_owned(),
            );
            call.envelope(Err(error))
        }
        Some(Fault::Status(code)) => {
            let error = ApiError::new(code, 0, "general server error".to_owned());
            call.envelope(Err(error))
        }
        None => handle(&state, call, &parts.headers, &body),
    };
    Ok(whole.map(Either::Left))
}

/// The endpoint a call named, and the API versions it asked for and the server has.
struct Call {
    endpoint: String,
    version: Option<String>,
    api_version: String,
}

impl Call {
    fn envelope(self, result: Result<Value, ApiError>) -> Response<Full<Bytes>> {
        envelope(&self.endpoint, self.version, result, &self.api_version)
    }
}

/// A call without a fault: recorded, authenticated and handled.
fn handle(
    state: &Mutex<State>,
    call: Call,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(json!({}))
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::new(400, 12, format!("validation error: invalid JSON: {e}")))
    };
    let mut state = state.lock().expect("fake ClearML state");
    let endpoint = call.endpoint.clone();
    if !handlers::exists(&state, &endpoint) {
        let requested = call.version.as_ref().unwrap_or(&call.api_version);
        let msg = format!("Unable to find endpoint for name {endpoint} and version {requested}");
        return call.envelope(Err(ApiError::new(404, 0, msg)));
    }
    if let Ok(body) = &data {
        if state.requests.len() == 10_000 {
            state.requests.pop_front();
        }
        state.requests.push_back((endpoint.clone(), body.clone()));
    }
    let result = data.and_then(|data| {
        let caller = authenticate(&state, &endpoint, headers.get("authorization"))?;
        handlers::handle(&mut state, &endpoint, &caller, &data)
    });
    call.envelope(result)
}

/// `[/][vX.Y/]service.action[/]`, as the real server's path expression.
fn parse_path(path: &str) -> Option<(Option<String>, String)> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let (version, name) = match path.split_once('/') {
        Some((version, name)) => {
            let number = version.strip_prefix('v')?;
            let valid =
                !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == '.');
            valid.then_some((Some(number.to_owned()), name))?
        }
        None => (None, path),
    };
    let (service, action) = name.split_once('.')?;
    let word = |w: &str| {
        w.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (word(service) && word(action)).then(|| (version, name.to_owned()))
}

/// Who is calling: Basic credentials or a valid Bearer token (`auth.login` takes Basic only).
fn authenticate(
    state: &State,
    endpoint: &str,
    header: Option<&http::HeaderValue>,
) -> Result<Caller, ApiError> {
    let missing = || ApiError::new(401, 20, "unauthorized (missing credentials)".to_owned());
    let header = header.and_then(|h| h.to_str().ok()).ok_or_else(missing)?;
    if let Some(encoded) = header.strip_prefix("Basic ") {
        return basic(state, encoded);
    }
    if endpoint == "auth.login" {
        return Err(ApiError::new(
            401,
            10,
            "unauthorized (bad authentication header type)".to_owned(),
        ));
    }
    let token = header.strip_prefix("Bearer ").ok_or_else(missing)?;
    let invalid = |why: &str| ApiError::new(401, 30, format!("invalid token: {why}"));
    let payload = jwt::verify(token, &state.secret)
        .ok_or_else(|| invalid("signature verification failed"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if payload["exp"].as_u64().is_some_and(|exp| exp <= now) {
        return Err(invalid("signature has expired"));
    }
    if state.revoked.contains(token) {
        return Err(ApiError::new(401, 31, "token is blocked".to_owned()));
    }
    let identity = &payload["identity"];
    Ok(Caller {
        user: identity["user"].as_str().unwrap_or_default().to_owned(),
        company: identity["company"].as_str().unwrap_or_default().to_owned(),
    })
}

fn basic(state: &State, encoded: &str) -> Result<Caller, ApiError> {
    let malformed = || ApiError::new(401, 21, "unauthorized (malformed credentials)".to_owned());
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (key, secret) = text.split_once(':').ok_or_else(malformed)?;
    let invalid = || {
        ApiError::new(
            401,
            22,
            "unauthorized (invalid credentials): failed to locate provided credentials".to_owned(),
        )
    };
    let (expected, user) = state.credentials.get(key).ok_or_else(invalid)?;
    if expected != secret {
        return Err(invalid());
    }
    let company = state
        .users
        .get(user)
        .map(|u| u.company.clone())
        .unwrap_or_default();
    Ok(Caller {
        user: user.clone(),
        company,
    })
}

/// The real server's envelope, with the HTTP status equal to `result_code`.
fn envelope(
    endpoint: &str,
    requested: Option<String>,
    result: Result<Value, ApiError>,
    api_version: &str,
) -> Response<Full<Bytes>> {
    let version_number = |v: &str| v.parse::<f64>().map_or(json!(v), |n| json!(n));
    let requested = requested.as_deref().unwrap_or(api_version);
    let (code, subcode, msg, data) = match result {
        Ok(data) => (200, 0, "OK".to_owned(), data),
        Err(error) => (error.code, error.subcode, error.msg, json!({})),
    };
    let trx = format!("{:032x}", rand_u128());
    let body = json!({
        "meta": {
            "id": trx,
            "trx": trx,
            "endpoint": {
                "name": endpoint,
                "requested_version": version_number(requested),
                "actual_version": "1.0",
            },
            "result_code": code,
            "result_subcode": subcode,
            "result_msg": msg,
            "error_stack": null,
            "error_data": {},
        },
        "data": data,
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 with `text` as it is, not in an envelope.
fn raw(content_type: &'static str, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn rand_u128() -> u128 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos ^ (u128::from(std::process::id()) << 64)
}

#[cfg(test)]
mod tests {
    use super::parse_path;

    #[test]
    fn paths_follow_the_real_servers_expression() {
        assert_eq!(
            parse_path("/tasks.get_all"),
            Some((None, "tasks.get_all".into()))
        );
        assert_eq!(
            parse_path("/v2.23/tasks.get_all/"),
            Some((Some("2.23".into()), "tasks.get_all".into()))
        );
        assert_eq!(parse_path("/tasks"), None);
        assert_eq!(parse_path("/x/tasks.get_all"), None);
        assert_eq!(parse_path("/1tasks.get_all"), None);
    }
}
