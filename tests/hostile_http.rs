//! Hostile HTTP input, sent byte for byte to the built binary: each shape gets its status
//! (the gateway's JSON answer, or hyper's bare one for what cannot be parsed at all), the
//! connection is closed where the request's framing is in doubt, and what reaches the
//! upstream — recorded byte for byte — carries exactly one framing and the body the gateway
//! read. (`refusals.rs` has the first malformed-request, method and transfer-coding cases;
//! `hostile_h2.rs` the HTTP/2 ones.)

use gateway_testkit::client::{RawReply, raw_session};
use gateway_testkit::gateway;
use gateway_testkit::process::GatewayProcess;
use gateway_testkit::recording::{Recording, recording};

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

async fn gateway_to(app: &Recording) -> GatewayProcess {
    gateway(BIN).route("abc", app.url()).start().await
}

/// hyper's own answer to a head it cannot parse: the status, no body, connection closed.
fn assert_bare(reply: &RawReply, status: &str, case: &str) {
    assert!(
        reply.text.starts_with(&format!("HTTP/1.1 {status}")),
        "{case}: {}",
        reply.text
    );
    assert!(reply.text.contains("content-length: 0\r\n"), "{case}");
    assert!(reply.closed, "{case}: the connection stays open");
    assert_eq!(reply.responses(), 1, "{case}: {}", reply.text);
}

/// The gateway's own answer: the status and the short JSON body with its error code.
fn assert_json(reply: &RawReply, status: u16, code: &str, case: &str) {
    assert!(
        reply.text.starts_with(&format!("HTTP/1.1 {status} ")),
        "{case}: {}",
        reply.text
    );
    assert!(
        reply.text.contains("content-type: application/json"),
        "{case}"
    );
    assert!(
        reply.text.contains(&format!("{{\"error\":\"{code}\",")),
        "{case}: {}",
        reply.text
    );
}

#[tokio::test]
async fn heads_hyper_cannot_parse_get_a_bare_400_and_the_connection_closes() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    let cases: [(&str, &[u8]); 18] = [
        ("method with a (", b"G(T /service/abc/ HTTP/1.1\r\nHost: gw\r\n\r\n"),
        ("unknown version", b"GET /service/abc/ HTTP/9.9\r\nHost: gw\r\n\r\n"),
        ("NUL in the path", b"GET /service/abc/\0x HTTP/1.1\r\nHost: gw\r\n\r\n"),
        ("0xFF in the path", b"GET /service/abc/\xff HTTP/1.1\r\nHost: gw\r\n\r\n"),
        ("NUL in a value", b"GET /service/abc/ HTTP/1.1\r\nHost: gw\r\nX-A: a\0b\r\n\r\n"),
        ("DEL in a value", b"GET /service/abc/ HTTP/1.1\r\nHost: gw\r\nX-A: a\x7fb\r\n\r\n"),
        ("bare CR", b"GET /service/abc/ HTTP/1.1\r\nHost: gw\rX-A: 1\r\n\r\n"),
        ("obs-fold", b"GET /service/abc/ HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n\tmore\r\n\r\n"),
        (
            "Transfer-Encoding obs-fold",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "space before the colon",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "a Content-Length list",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 5, 5\r\n\r\nhello",
        ),
        (
            "a signed Content-Length",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nContent-Length: +5\r\n\r\nhello",
        ),
        (
            "a negative Content-Length",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\nhello",
        ),
        (
            "a Content-Length past u64",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
        ),
        (
            "a coding that is not chunked",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\n\r\nhello",
        ),
        (
            "identity",
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: identity\r\n\r\nhello",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST /service/abc/ HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (case, bytes) in cases {
        let reply = raw_session(gw.addr(), bytes).await;
        assert_bare(&reply, "400", case);
    }
    assert_eq!(app.connections(), 0, "nothing reached the upstream");
    gw.wait_for_log(
        "invalid content-length parsed",
        std::time::Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_then_the_connection_closes() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    // The classic CL.TE and TE.CL shapes, each followed by a request hidden after the
    // body one of the two framings would read.
    let smuggled = "GET /service/abc/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    for heads in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ] {
        let request = format!(
            "POST /service/abc/ HTTP/1.1\r\nHost: gw\r\n{heads}\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
        );
        let reply = raw_session(gw.addr(), request.as_bytes()).await;
        assert!(
            reply.text.starts_with("HTTP/1.1 200"),
            "{heads}: {}",
            reply.text
        );
        assert!(reply.text.contains("connection: close\r\n"), "{heads}");
        assert!(
            reply.closed && reply.responses() == 1,
            "{heads}: {}",
            reply.text
        );
    }
    let requests = app.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for request in requests {
        assert_eq!(request.request_line(), "POST / HTTP/1.1");
        assert_eq!(request.framing(), "chunked", "{}", request.head);
        assert_eq!(request.body, b"hello");
    }
}

#[tokio::test]
async fn accepted_framings_reach_the_upstream_as_exactly_one_with_the_body_read() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    // Each is followed by a second request on the same connection: a request whose framing
    // is clear leaves the connection usable, and the next request is a request of its own.
    let cases: [(&str, &str, &str, &[u8]); 6] = [
        ("Content-Length", "Content-Length: 5", "hello", b"hello"),
        (
            "the same Content-Length twice",
            "Content-Length: 5\r\nContent-Length: 5",
            "hello",
            b"hello",
        ),
        (
            "chunked with an extension and a trailer",
            "Transfer-Encoding: chunked",
            "5;name=value\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
            b"hello",
        ),
        ("an empty body", "Content-Length: 0", "", b""),
        (
            "chunked in several chunks",
            "Transfer-Encoding: chunked",
            "2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
            b"hello",
        ),
        ("LF line ends", "Content-Length: 5", "hello", b"hello"),
    ];
    for (case, framing, body, expected) in cases {
        let mut request =
            format!("POST /service/abc/ HTTP/1.1\r\nHost: gw\r\n{framing}\r\n\r\n{body}");
        if case == "LF line ends" {
            request = request.replace("\r\n", "\n");
        }
        request.push_str("GET /service/abc/next HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let before = app.requests().len();
        let reply = raw_session(gw.addr(), request.as_bytes()).await;
        assert_eq!(reply.responses(), 2, "{case}: {}", reply.text);
        assert!(reply.closed, "{case}");
        let requests = app.requests();
        let [first, second] = &requests[before..] else {
            panic!("{case}: {requests:#?}");
        };
        let expected_framing = if framing.contains("chunked") {
            "chunked"
        } else {
            "content-length"
        };
        assert_eq!(first.framing(), expected_framing, "{case}: {}", first.head);
        assert_eq!(first.body, expected, "{case}");
        assert_eq!(second.request_line(), "GET /next HTTP/1.1", "{case}");
        assert_eq!(second.framing(), "none", "{case}");
    }
    // Bytes past the declared length are read as the next request: here, not one.
    let reply = raw_session(
        gw.addr(),
        b"POST /service/abc/short HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhelloGARBAGE\r\n\r\n",
    )
    .await;
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{}", reply.text);
    assert!(
        reply.text.contains("HTTP/1.1 400 Bad Request"),
        "{}",
        reply.text
    );
    assert!(reply.closed);
    let last = app.requests().pop().unwrap();
    assert_eq!(
        (last.request_line(), &last.body[..]),
        ("POST /short HTTP/1.1", &b"hello"[..])
    );
    assert!(app.unreadable().is_empty(), "{:?}", app.unreadable());
}

#[tokio::test]
async fn a_refused_request_never_passes_its_body_on_as_a_request() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    let hidden = "GET /service/abc/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let chunk = format!("{:x}\r\n{hidden}\r\n0\r\n\r\n", hidden.len());
    let refusals = [
        (
            format!(
                "POST /service/none/ HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
            404,
            "no_route",
        ),
        (
            format!(
                "TRACE /service/abc/ HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
            405,
            "method_not_allowed",
        ),
        (
            format!(
                "POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{chunk}"
            ),
            501,
            "unsupported_transfer_encoding",
        ),
        (
            format!(
                "POST /service/abc/ HTTP/1.1\r\nContent-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
            400,
            "invalid_host",
        ),
        (
            format!(
                "POST /service/%zz/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
            ),
            400,
            "invalid_percent_encoding",
        ),
    ];
    for (request, status, code) in refusals {
        let request = format!(
            "{request}GET /service/abc/after HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        );
        let reply = raw_session(gw.addr(), request.as_bytes()).await;
        assert_json(&reply, status, code, code);
        assert_eq!(reply.responses(), 2, "{code}: {}", reply.text);
    }
    let seen: Vec<String> = app
        .requests()
        .iter()
        .map(|r| r.request_line().to_owned())
        .collect();
    assert_eq!(
        seen, ["GET /after HTTP/1.1"; 5],
        "each refused body was read off, and only the request after it reached the upstream"
    );
}

#[tokio::test]
async fn chunked_twice_and_a_host_that_is_not_one_are_refused_by_the_gateway() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    let cases: [(&[u8], u16, &str); 6] = [
        (
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
            "unsupported_transfer_encoding",
        ),
        (
            b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
            "unsupported_transfer_encoding",
        ),
        (
            b"GET /service/abc/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
            "invalid_host",
        ),
        (
            b"GET /service/abc/ HTTP/1.1\r\nHost: gw\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            400,
            "invalid_host",
        ),
        (
            b"GET /service/abc/ HTTP/1.1\r\nHost: user@evil.example\r\nConnection: close\r\n\r\n",
            400,
            "invalid_host",
        ),
        (
            b"GET /service/abc/ HTTP/1.1\r\nHost: gw/../x\r\nConnection: close\r\n\r\n",
            400,
            "invalid_host",
        ),
    ];
    for (request, status, code) in cases {
        let reply = raw_session(gw.addr(), request).await;
        assert_json(&reply, status, code, &String::from_utf8_lossy(request));
    }
    assert!(app.requests().is_empty(), "{:#?}", app.requests());
    let reply = raw_session(gw.addr(), b"GET /service/abc/old HTTP/1.0\r\n\r\n").await;
    assert!(
        reply.text.starts_with("HTTP/1.0 200"),
        "HTTP/1.0 needs no Host: {}",
        reply.text
    );
    assert_eq!(app.requests().len(), 1);
}

#[tokio::test]
async fn oversized_heads_and_long_targets_get_431_and_414() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    let get = |target: String, headers: String| {
        format!("GET {target} HTTP/1.1\r\nHost: gw\r\n{headers}Connection: close\r\n\r\n")
    };
    let path = |len: usize| format!("/service/abc/{}", "a".repeat(len));

    // Over the 64 KiB limit, within hyper's buffer (twice the limit): the gateway answers.
    let reply = raw_session(
        gw.addr(),
        get(path(10), format!("X-Big: {}\r\n", "b".repeat(70_000))).as_bytes(),
    )
    .await;
    assert_json(&reply, 431, "headers_too_large", "one huge header");
    let many: String = (0..60)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1200)))
        .collect();
    let reply = raw_session(gw.addr(), get(path(10), many).as_bytes()).await;
    assert_json(&reply, 431, "headers_too_large", "many large headers");

    // Past what hyper reads at all: its own bare answers, and the connection closed.
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = raw_session(gw.addr(), get(path(10), many).as_bytes()).await;
    assert_bare(&reply, "431", "more than 100 headers");
    let reply = raw_session(gw.addr(), get(path(70_000), String::new()).as_bytes()).await;
    assert_bare(&reply, "414", "a target over 65534 bytes");
    let reply = raw_session(
        gw.addr(),
        get(path(10), format!("X-Big: {}\r\n", "b".repeat(200_000))).as_bytes(),
    )
    .await;
    assert_bare(&reply, "431", "a head past twice the limit");
    assert!(app.requests().is_empty(), "nothing was forwarded");

    // A long target within the limit is the app's business, passed on whole.
    let reply = raw_session(gw.addr(), get(path(40_000), String::new()).as_bytes()).await;
    assert!(
        reply.text.starts_with("HTTP/1.1 200"),
        "{}",
        &reply.text[..100]
    );
    assert_eq!(
        app.requests()[0].request_line().len(),
        "GET / HTTP/1.1".len() + 40_000
    );

    // hyper refuses targets over 65534 bytes itself; under a smaller limit, the gateway's
    // own 414 says the target is what is too long.
    let strict = gateway(BIN)
        .route("abc", app.url())
        .env("ROUTER__HTTP__MAX_HEADER_BYTES", "16384")
        .start()
        .await;
    let reply = raw_session(strict.addr(), get(path(20_000), String::new()).as_bytes()).await;
    assert_json(&reply, 414, "uri_too_long", "a target over the limit");
    assert_eq!(app.requests().len(), 1);
}

#[tokio::test]
async fn invalid_percent_encoding_in_the_routed_segment_is_400() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    for path in [
        "/service/%zz/",
        "/service/abc%",
        "/service/abc%/x",
        "/service/%C0%AF/",
        "/service/%E0%80%AE/x",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let reply = raw_session(gw.addr(), request.as_bytes()).await;
        assert_json(&reply, 400, "invalid_percent_encoding", path);
    }
    for (path, status, code) in [
        ("/service/a%2Fb/", 400, "encoded_slash_in_route"),
        ("/service/%61bc/", 404, "no_route"),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let reply = raw_session(gw.addr(), request.as_bytes()).await;
        assert_json(&reply, status, code, path);
    }
    assert!(app.requests().is_empty());
    gw.wait_for_log(
        "error=\"invalid_percent_encoding\"",
        std::time::Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn a_body_that_breaks_its_framing_never_completes_upstream() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    for bad_chunk in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
    ] {
        let request = format!(
            "POST /service/abc/broken HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{bad_chunk}"
        );
        let reply = raw_session(gw.addr(), request.as_bytes()).await;
        assert_json(&reply, 400, "client_body_failed", bad_chunk);
        assert!(reply.closed, "{bad_chunk}");
    }
    // The upstream connection that carried the head is closed, never reused: the next
    // request arrives as exactly itself.
    let reply = raw_session(
        gw.addr(),
        b"GET /service/abc/after HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{}", reply.text);
    let requests = app.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].request_line(), "GET /after HTTP/1.1");
}
