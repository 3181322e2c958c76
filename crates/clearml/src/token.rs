//! What the gateway reads from a ClearML token: its expiry, the server's API version, the
//! identity it stands for. The payload is read without checking the signature; the server
//! checks that on every call.

use std::cmp::Ordering;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Why a token's payload cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three dot-separated parts.
    #[error("not a JWT (expected three dot-separated parts)")]
    NotJwt,
    /// The payload is not base64url.
    #[error("the payload is not base64url")]
    Encoding,
    /// The payload is not the JSON object expected.
    #[error("the payload is not a ClearML token payload: {0}")]
    Payload(String),
}

/// The identity a ClearML token stands for.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    #[serde(default)]
    pub user: String,
    /// Company (tenant) id.
    #[serde(default)]
    pub company: String,
    /// Role, e.g. `user`, `admin`.
    #[serde(default)]
    pub role: String,
    /// Display name of the user.
    #[serde(default)]
    pub user_name: String,
    /// Display name of the company.
    #[serde(default)]
    pub company_name: String,
}

/// The claims of a ClearML token that the gateway uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// The API version the server speaks, e.g. `"2.31"`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The server's version.
    #[serde(default)]
    pub server_version: Option<String>,
    /// `basic` or `advanced` (enterprise features).
    #[serde(default)]
    pub feature_set: Option<String>,
    /// Who the token stands for.
    #[serde(default)]
    pub identity: Option<Identity>,
}

impl Claims {
    /// Reads the payload of `token` without checking its signature.
    pub fn decode_unverified(token: &str) -> Result<Self, TokenError> {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotJwt);
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| TokenError::Encoding)?;
        serde_json::from_slice(&bytes).map_err(|e| TokenError::Payload(e.to_string()))
    }

    /// The server's API version, if the token says.
    pub fn api(&self) -> Option<ApiVersion> {
        self.api_version.as_deref().and_then(ApiVersion::parse)
    }
}

/// A ClearML API version such as 2.31, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    /// Major part.
    pub major: u32,
    /// Minor part.
    pub minor: u32,
}

impl ApiVersion {
    /// The first version with `tasks.edit_runtime`.
    pub const EDIT_RUNTIME: ApiVersion = ApiVersion {
        major: 2,
        minor: 34,
    };

    /// Parses `"2.31"` (a bare `"2"` is 2.0).
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.trim().split_once('.').unwrap_or((text.trim(), "0"));
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl PartialOrd for ApiVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ApiVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor).cmp(&(other.major, other.minor))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(payload: &str) -> String {
        format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let claims = Claims::decode_unverified(&token(
            r#"{"identity":{"user":"u1","company":"c1","role":"user","user_name":"Ann","company_name":"Acme"},
               "exp":1900000000,"api_version":"2.31","server_version":"2.0.0","feature_set":"advanced"}"#,
        ))
        .unwrap();
        assert_eq!(claims.exp, Some(1_900_000_000));
        assert_eq!(
            claims.api(),
            Some(ApiVersion {
                major: 2,
                minor: 31
            })
        );
        assert_eq!(claims.identity.unwrap().user, "u1");
        assert_eq!(claims.feature_set.as_deref(), Some("advanced"));
    }

    #[test]
    fn broken_tokens_say_why() {
        assert_eq!(
            Claims::decode_unverified("abc").unwrap_err(),
            TokenError::NotJwt
        );
        assert_eq!(
            Claims::decode_unverified("a.b.c.d").unwrap_err(),
            TokenError::NotJwt
        );
        assert_eq!(
            Claims::decode_unverified("a.!!.c").unwrap_err(),
            TokenError::Encoding
        );
        assert!(matches!(
            Claims::decode_unverified(&token("\"text\"")),
            Err(TokenError::Payload(_))
        ));
    }

    #[test]
    fn versions_compare_numerically() {
        let v = |s| ApiVersion::parse(s).unwrap();
        assert!(v("2.34") >= ApiVersion::EDIT_RUNTIME);
        assert!(v("2.9") < v("2.13"));
        assert!(v("3") > v("2.99"));
        assert!(ApiVersion::parse("two").is_none());
    }
}
