//! What is refused before a request is routed: heads over the limit, framing the upstream
//! could not be given faithfully, and a `Host` an HTTP/1.1 server must reject.
//!
//! hyper has already refused what it cannot parse (a broken request line or header line,
//! bare CR, NUL, two different `Content-Length`s); these are the requests it lets through.

use http::header::{HOST, TRANSFER_ENCODING};
use http::{Method, Request, Version};

use crate::error::ProxyError;

/// Refuses a request target longer than `limit` (414) and a head larger than `limit`,
/// counted as on the wire (`name: value\r\n`) (431).
pub(crate) fn check_head_size<B>(req: &Request<B>, limit: usize) -> Result<(), ProxyError> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 8);
    if target > limit {
        return Err(ProxyError::UriTooLong {
            size: target,
            limit,
        });
    }
    let request_line = req.method().as_str().len() + target + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let size = request_line + headers;
    if size > limit {
        return Err(ProxyError::HeadersTooLarge { size, limit });
    }
    Ok(())
}

/// Refuses what cannot be forwarded faithfully: `CONNECT` (a tunnel to anywhere) and
/// `TRACE` (it echoes credentials back), and transfer codings other than one plain
/// `chunked`, which the upstream would receive still encoded. `chunked` twice, in one field
/// or in two, is chunked applied twice (RFC 9112 §6.1 forbids it): hyper removes one layer.
pub(crate) fn check_framing<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed(req.method().clone()));
    }
    let fields = req.headers().get_all(TRANSFER_ENCODING);
    let mut codings = 0;
    let mut only_chunked = true;
    for field in &fields {
        for coding in field.to_str().unwrap_or("\u{0}").split(',') {
            codings += 1;
            only_chunked &= coding.trim().eq_ignore_ascii_case("chunked");
        }
    }
    if codings > 1 || !only_chunked {
        let named: Vec<String> = fields
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        return Err(ProxyError::UnsupportedTransferEncoding(named.join(", ")));
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, any request with more than one, or
/// with a value that is not `host[:port]`, is a 400. The value goes upstream as `Host` and
/// `X-Forwarded-Host`, where apps build URLs from it. HTTP/2 carries `:authority` instead.
pub(crate) fn check_host<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.version() >= Version::HTTP_2 {
        return Ok(());
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == Version::HTTP_11 => Err(ProxyError::BadHost(
            "an HTTP/1.1 request needs a Host header",
        )),
        (Some(_), Some(_)) => Err(ProxyError::BadHost(
            "the request has more than one Host header",
        )),
        (Some(host), None) if !is_host_and_port(host.as_bytes()) => {
            Err(ProxyError::BadHost("the Host header is not host[:port]"))
        }
        _ => Ok(()),
    }
}

/// `uri-host [":" port]` (RFC 3986's reg-name, IPv4 or `[IPv6]`): no userinfo, path, query
/// or spaces. Empty is allowed: RFC 9112 §3.2 has it for a target without an authority.
fn is_host_and_port(value: &[u8]) -> bool {
    value
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/service/abc/").version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn http11_needs_exactly_one_plain_host() {
        let ok = |headers: &[(&str, &str)]| check_host(&request(Version::HTTP_11, headers));
        assert!(ok(&[("host", "gw.example.com:8080")]).is_ok());
        assert!(ok(&[("host", "[::1]:8080")]).is_ok());
        assert!(ok(&[("host", "")]).is_ok());
        for bad in [
            &[][..],
            &[("host", "a"), ("host", "a")],
            &[("host", "user@gw")],
            &[("host", "gw/path")],
            &[("host", "gw?x")],
            &[("host", "gw x")],
        ] {
            let refused = ok(bad).unwrap_err();
            assert_eq!(refused.code(), "invalid_host", "{bad:?}");
        }
        assert!(check_host(&request(Version::HTTP_10, &[])).is_ok());
        assert!(check_host(&request(Version::HTTP_2, &[])).is_ok());
    }

    #[test]
    fn only_one_plain_chunked_is_forwarded() {
        let framing = |values: &[&str]| {
            let headers: Vec<(&str, &str)> =
                values.iter().map(|v| ("transfer-encoding", *v)).collect();
            check_framing(&request(Version::HTTP_11, &headers))
        };
        assert!(framing(&[]).is_ok());
        assert!(framing(&["chunked"]).is_ok());
        assert!(framing(&[" Chunked "]).is_ok());
        for bad in [
            &["gzip, chunked"][..],
            &["chunked, chunked"],
            &["chunked", "chunked"],
            &["identity"],
        ] {
            let refused = framing(bad).unwrap_err();
            assert_eq!(refused.code(), "unsupported_transfer_encoding", "{bad:?}");
        }
    }

    #[test]
    fn a_long_target_is_414_and_a_large_head_431() {
        let long = format!("/service/abc/{}", "a".repeat(2000));
        let req = Request::builder().uri(long).body(()).unwrap();
        assert_eq!(
            check_head_size(&req, 1024).unwrap_err().code(),
            "uri_too_long"
        );
        let req = request(Version::HTTP_11, &[("x-big", &"b".repeat(2000))]);
        assert_eq!(
            check_head_size(&req, 1024).unwrap_err().code(),
            "headers_too_large"
        );
        assert!(check_head_size(&req, 4096).is_ok());
    }
}
