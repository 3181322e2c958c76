//! `AUTH_BASE64_JWKS_KEY`: checking a token's HS256 signature with the server's token secret,
//! without asking the server.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Whether `token` is an HS256 JWT signed with `secret`. Expiry is checked by the caller.
pub fn signature_valid(token: &str, secret: &[u8]) -> bool {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let header_ok = signing_input
        .split_once('.')
        .and_then(|(header, _)| URL_SAFE_NO_PAD.decode(header).ok())
        .is_some_and(|header| is_hs256(&header));
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(signing_input.as_bytes());
    header_ok && mac.verify_slice(&signature).is_ok()
}

/// The header's `alg` is HS256: a token claiming `none` or another algorithm is refused.
fn is_hs256(header: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
    }
    serde_json::from_slice::<Header>(header).is_ok_and(|h| h.alg == "HS256")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(header: &str, payload: &str, secret: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn only_hs256_tokens_signed_with_the_secret_pass() {
        let token = sign(r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"exp":1}"#, b"secret");
        assert!(signature_valid(&token, b"secret"));
        assert!(!signature_valid(&token, b"other"));
        let none = sign(r#"{"alg":"none"}"#, r#"{"exp":1}"#, b"secret");
        assert!(!signature_valid(&none, b"secret"));
        let nested = sign(
            r#"{"alg":"RS256","x":{"alg":"HS256"}}"#,
            r#"{"exp":1}"#,
            b"secret",
        );
        assert!(!signature_valid(&nested, b"secret"));
        let tampered = token.replacen('.', ".e30", 1);
        assert!(!signature_valid(&tampered, b"secret"));
        assert!(!signature_valid("garbage", b"secret"));
    }
}
