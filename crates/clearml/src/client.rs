//! The HTTP side of the ClearML API: the `{service}.{action}` call, the meta/data envelope,
//! and the gateway's own session (login with its keys, refresh before expiry and on a 401).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::ClearmlError;
use crate::token::{ApiVersion, Claims};

/// Where the ClearML server is and how the gateway logs in to it.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `CLEARML_API_HOST`, without a trailing `/`.
    pub api_host: String,
    /// `CLEARML_API_ACCESS_KEY`.
    pub access_key: String,
    /// `CLEARML_API_SECRET_KEY`.
    pub secret_key: String,
    /// Longest wait for one call's answer.
    pub request_timeout: Duration,
}

/// A ClearML API client holding the gateway's session.
pub struct ClearmlClient {
    http: reqwest::Client,
    settings: ClientSettings,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for ClearmlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClearmlClient")
            .field("api_host", &self.settings.api_host)
            .field("access_key", &self.settings.access_key)
            .finish_non_exhaustive()
    }
}

struct Session {
    token: Arc<str>,
    claims: Claims,
    refresh_after: Instant,
}

/// The largest answer read from the server.
const MAX_ANSWER: usize = 64 << 20;

/// How a call authenticates.
enum Auth<'a> {
    Basic,
    Bearer(&'a str),
}

/// The envelope's status, read first: an error answer's `data` need not have the shape
/// the call expects.
#[derive(serde::Deserialize)]
struct Envelope {
    meta: Meta,
}

/// The envelope's `data`, read straight into the call's type: a listing of thousands of
/// tasks is parsed once, not into a `Value` tree and then copied.
#[derive(serde::Deserialize)]
struct Data<T> {
    #[serde(default = "Option::default")]
    data: Option<T>,
}

#[derive(serde::Deserialize)]
struct Meta {
    result_code: u16,
    #[serde(default)]
    result_subcode: u32,
    #[serde(default)]
    result_msg: String,
}

#[derive(serde::Deserialize)]
struct LoginData {
    token: String,
}

impl ClearmlClient {
    /// A client for the server of `settings`; nothing is sent until the first call.
    pub fn new(settings: ClientSettings) -> Result<Self, ClearmlError> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("clearml-gateway/", env!("CARGO_PKG_VERSION")))
            // A redirect would turn a POST into a GET without its body (or drop the
            // credentials): the API never redirects, so one means the URL is wrong.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClearmlError::Setup)?;
        Ok(Self {
            http,
            settings,
            session: Mutex::new(None),
        })
    }

    /// Logs in with the gateway's keys (`auth.login`), replacing any session, and returns
    /// the new token's claims.
    pub async fn login(&self) -> Result<Claims, ClearmlError> {
        let mut session = self.session.lock().await;
        let fresh = self.new_session().await?;
        let claims = fresh.claims.clone();
        *session = Some(fresh);
        Ok(claims)
    }

    /// The API version of the server, from the current session's token.
    pub async fn api_version(&self) -> Option<ApiVersion> {
        let session = self.session.lock().await;
        session.as_ref().and_then(|s| s.claims.api())
    }

    /// Calls `endpoint` (e.g. `tasks.get_all`) as the gateway: logs in or refreshes the token
    /// when due, and once more after a 401.
    pub async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &impl Serialize,
    ) -> Result<T, ClearmlError> {
        let token = self.token().await?;
        match self.send(endpoint, body, Auth::Bearer(&token)).await {
            Err(err) if err.is_unauthorized() && !refuses_permission(&err) => {
                tracing::debug!(
                    endpoint,
                    "ClearML refused the gateway's token; logging in again"
                );
                self.forget(&token).await;
                let token = self.token().await?;
                self.send(endpoint, body, Auth::Bearer(&token)).await
            }
            other => other,
        }
    }

    /// Calls `endpoint` with somebody else's token (a user's), once, without retrying.
    pub async fn call_with_token<T: DeserializeOwned>(
        &self,
        token: &str,
        endpoint: &str,
        body: &impl Serialize,
    ) -> Result<T, ClearmlError> {
        self.send(endpoint, body, Auth::Bearer(token)).await
    }

    async fn token(&self) -> Result<Arc<str>, ClearmlError> {
        let mut session = self.session.lock().await;
        if let Some(current) = session.as_ref() {
            if Instant::now() < current.refresh_after {
                return Ok(Arc::clone(&current.token));
            }
        }
        let new = self.new_session().await?;
        let token = Arc::clone(&new.token);
        *session = Some(new);
        Ok(token)
    }

    async fn forget(&self, token: &str) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| &*s.token == token) {
            *session = None;
        }
    }

    async fn new_session(&self) -> Result<Session, ClearmlError> {
        let data: LoginData = self
            .send("auth.login", &serde_json::json!({}), Auth::Basic)
            .await?;
        let claims =
            Claims::decode_unverified(&data.token).map_err(|err| ClearmlError::Malformed {
                endpoint: "auth.login".to_owned(),
                status: 200,
                detail: format!("the token cannot be read: {err}"),
            })?;
        let obtained = Instant::now();
        Ok(Session {
            token: data.token.into(),
            refresh_after: obtained + renew_after(&claims, SystemTime::now()),
            claims,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &impl Serialize,
        auth: Auth<'_>,
    ) -> Result<T, ClearmlError> {
        let url = format!("{}/{endpoint}", self.settings.api_host);
        let request = self.http.post(url).json(body);
        let request = match auth {
            Auth::Basic => {
                request.basic_auth(&self.settings.access_key, Some(&self.settings.secret_key))
            }
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        let transport = |source| ClearmlError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_ANSWER {
                return Err(ClearmlError::Malformed {
                    endpoint: endpoint.to_owned(),
                    status,
                    detail: format!("the answer is larger than {MAX_ANSWER} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        decode(endpoint, status, &bytes)
    }
}

/// 401/1 (not authorized for the endpoint) and 401/2 (entity not allowed) refuse the call,
/// not the token: logging in again would not help, and would happen on every such call.
fn refuses_permission(err: &ClearmlError) -> bool {
    matches!(err.result(), Some((401, 1 | 2)))
}

/// How long a token is used before logging in again: three quarters of its life, counted on
/// the local clock from now (the server's clock may differ). Tokens without `exp` are kept
/// until refused.
fn renew_after(claims: &Claims, now: SystemTime) -> Duration {
    let Some(exp) = claims.exp else {
        return Duration::from_secs(365 * 24 * 3600);
    };
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let issued = claims.iat.unwrap_or(now_secs).min(exp);
    Duration::from_secs(exp - issued) * 3 / 4
}

/// Reads the envelope; an error envelope becomes [`ClearmlError::Api`].
fn decode<T: DeserializeOwned>(
    endpoint: &str,
    status: u16,
    bytes: &[u8],
) -> Result<T, ClearmlError> {
    let malformed = |detail: String| ClearmlError::Malformed {
        endpoint: endpoint.to_owned(),
        status,
        detail: format!("{detail} (body starts {:?})", snippet(bytes)),
    };
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|err| malformed(err.to_string()))?;
    let meta = envelope.meta;
    if meta.result_code != 200 || !(200..300).contains(&status) {
        return Err(ClearmlError::Api {
            endpoint: endpoint.to_owned(),
            result_code: if meta.result_code == 200 {
                status
            } else {
                meta.result_code
            },
            result_subcode: meta.result_subcode,
            result_msg: meta.result_msg,
        });
    }
    let unexpected = |err: serde_json::Error| malformed(format!("unexpected data: {err}"));
    let data: Data<T> = serde_json::from_slice(bytes).map_err(unexpected)?;
    match data.data {
        Some(data) => Ok(data),
        None => T::deserialize(Value::Null).map_err(unexpected),
    }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    text.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_decode_to_data_or_errors() {
        let ok = br#"{"meta":{"id":"1","trx":"1","endpoint":{"name":"x.y"},"result_code":200,"result_subcode":0,"result_msg":"OK"},"data":{"n":3}}"#;
        let value: Value = decode("x.y", 200, ok).unwrap();
        assert_eq!(value["n"], 3);

        let refused = br#"{"meta":{"result_code":401,"result_subcode":30,"result_msg":"invalid token"},"data":{}}"#;
        let err = decode::<Value>("tasks.get_all", 401, refused).unwrap_err();
        assert!(err.is_unauthorized());
        assert_eq!(err.result(), Some((401, 30)));
        assert_eq!(
            err.to_string(),
            "ClearML tasks.get_all failed with 401/30: invalid token"
        );

        let garbage =
            decode::<Value>("tasks.get_all", 502, b"<html>bad gateway</html>").unwrap_err();
        assert!(garbage.is_outage());
        assert!(garbage.to_string().contains("HTTP 502"), "{garbage}");
    }

    #[test]
    fn tokens_are_renewed_after_three_quarters_of_their_life() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let claims = Claims {
            iat: Some(5_000_000),
            exp: Some(5_000_000 + 4000),
            ..Claims::default()
        };
        assert_eq!(
            renew_after(&claims, now),
            Duration::from_secs(3000),
            "the server's clock being ahead changes nothing"
        );
        let no_iat = Claims {
            exp: Some(1_000_000 + 20),
            ..Claims::default()
        };
        assert_eq!(renew_after(&no_iat, now), Duration::from_secs(15));
    }
}
