//! The HTTP side of the ClearML API: the `{service}.{action}` call, the meta/data envelope,
//! and the gateway's own session (login with its keys, refresh before expiry and on a 401).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    refresh_after: SystemTime,
}

/// How a call authenticates.
enum Auth<'a> {
    Basic,
    Bearer(&'a str),
}

#[derive(serde::Deserialize)]
struct Envelope {
    meta: Meta,
    #[serde(default)]
    data: Value,
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
            Err(err) if err.is_unauthorized() => {
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
            if SystemTime::now() < current.refresh_after {
                return Ok(Arc::clone(&current.token));
            }
        }
        let fresh = self.new_session().await?;
        let token = Arc::clone(&fresh.token);
        *session = Some(fresh);
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
        let refresh_after = refresh_time(&claims, SystemTime::now());
        Ok(Session {
            token: data.token.into(),
            claims,
            refresh_after,
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
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(transport)?;
        decode(endpoint, status, &bytes)
    }
}

/// When to log in again: once three quarters of the token's life have passed (at least 30 s
/// before it expires); tokens without `exp` are kept until refused.
fn refresh_time(claims: &Claims, now: SystemTime) -> SystemTime {
    let Some(exp) = claims.exp else {
        return now + Duration::from_secs(365 * 24 * 3600);
    };
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let issued = claims.iat.unwrap_or(now_secs).min(exp);
    let life = exp - issued;
    let margin = (life / 4).max(30).min(life);
    UNIX_EPOCH + Duration::from_secs(exp - margin)
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
    serde_json::from_value(envelope.data)
        .map_err(|err| malformed(format!("unexpected data: {err}")))
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
    fn tokens_are_refreshed_with_a_quarter_of_their_life_left() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let claims = Claims {
            iat: Some(1_000_000),
            exp: Some(1_000_000 + 4000),
            ..Claims::default()
        };
        assert_eq!(
            refresh_time(&claims, now),
            UNIX_EPOCH + Duration::from_secs(1_003_000)
        );
        let short = Claims {
            exp: Some(1_000_000 + 20),
            ..Claims::default()
        };
        assert_eq!(
            refresh_time(&short, now),
            now,
            "a token about to expire is renewed at once"
        );
    }
}
