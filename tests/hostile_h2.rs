//! Hostile HTTP/2 (h2c prior knowledge), written frame by frame to the built binary: what
//! no HTTP/2 request may carry is refused by the `h2` library (the connection or the stream
//! ends with `PROTOCOL_ERROR`) and never completes at the upstream; what is accepted reaches
//! it — recorded byte for byte — as HTTP/1.1 with one framing and one `Host`.

use gateway_testkit::gateway;
use gateway_testkit::h2frames::{H2Outcome, PROTOCOL_ERROR, h2_frames};
use gateway_testkit::process::GatewayProcess;
use gateway_testkit::recording::{Recording, recording};

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

async fn gateway_to(app: &Recording) -> GatewayProcess {
    gateway(BIN).route("abc", app.url()).start().await
}

/// An HTTP/2 header block, pseudo-headers first.
type H2Fields<'a> = Vec<(&'a str, &'a str)>;

/// A GET header block for `/service/abc/` with `extra` fields.
fn h2_get<'a>(extra: &[(&'a str, &'a str)]) -> H2Fields<'a> {
    let mut fields = vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/service/abc/"),
        (":authority", "gw"),
    ];
    fields.extend_from_slice(extra);
    fields
}

async fn h2_exchange(
    gw: &GatewayProcess,
    fields: &[(&str, &str)],
    body: Option<&[u8]>,
) -> H2Outcome {
    let mut conn = h2_frames(gw.addr()).await;
    conn.headers(1, fields, body.is_none()).await;
    if let Some(body) = body {
        conn.data(1, body, true).await;
    }
    conn.outcome(1).await
}

#[tokio::test]
async fn malformed_requests_are_refused_and_never_reach_the_upstream() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    // Field names and values no HTTP/2 request may carry: the whole connection is an error.
    for extra in [
        [("X-Upper", "1")],
        [("x-a", "a\0b")],
        [("x-a", "a\r\nx-injected: 1")],
    ] {
        let outcome = h2_exchange(&gw, &h2_get(&extra), None).await;
        assert_eq!(
            outcome.goaway,
            Some(PROTOCOL_ERROR),
            "{extra:?}: {outcome:?}"
        );
        assert!(!outcome.answered, "{extra:?}");
    }
    // Connection-specific fields, or a body that disagrees with its content-length: the
    // stream is reset.
    let post = |length: &'static str| {
        let mut fields = h2_get(&[("content-length", length)]);
        fields[0].1 = "POST";
        fields
    };
    let cases: Vec<(H2Fields, Option<&[u8]>)> = vec![
        (h2_get(&[("connection", "keep-alive")]), None),
        (h2_get(&[("transfer-encoding", "chunked")]), None),
        (h2_get(&[("te", "gzip")]), None),
        (h2_get(&[("upgrade", "websocket")]), None),
        (post("10"), Some(b"hello")),
        (post("3"), Some(b"hello")),
        (
            {
                let mut fields = post("5");
                fields.push(("content-length", "6"));
                fields
            },
            Some(b"hello"),
        ),
        (
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "gw"),
            ],
            None,
        ),
    ];
    for (fields, body) in cases {
        let outcome = h2_exchange(&gw, &fields, body).await;
        assert_eq!(
            outcome.reset,
            Some(PROTOCOL_ERROR),
            "{fields:?}: {outcome:?}"
        );
    }
    // Whatever had left for the upstream before a reset never completed there.
    let clean = h2_exchange(&gw, &h2_get(&[]), None).await;
    assert_eq!(clean.body, b"ok");
    let requests = app.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].request_line(), "GET / HTTP/1.1");
}

#[tokio::test]
async fn requests_reach_the_upstream_with_one_framing_and_one_host() {
    let app = recording().await;
    let gw = gateway_to(&app).await;
    let mut with_length = h2_get(&[("content-length", "5")]);
    with_length[0].1 = "POST";
    let mut without_length = h2_get(&[]);
    without_length[0].1 = "POST";
    for (fields, framing) in [(with_length, "content-length"), (without_length, "chunked")] {
        let outcome = h2_exchange(&gw, &fields, Some(b"hello")).await;
        assert_eq!(outcome.body, b"ok", "{outcome:?}");
        let request = app.requests().pop().unwrap();
        assert_eq!(request.framing(), framing, "{}", request.head);
        assert_eq!(request.body, b"hello");
    }
    let outcome = h2_exchange(&gw, &h2_get(&[("host", "evil.example")]), None).await;
    assert_eq!(outcome.body, b"ok");
    let request = app.requests().pop().unwrap();
    assert_eq!(
        request.header_values("host"),
        ["gw"],
        ":authority wins, once"
    );

    let mut bad_segment = h2_get(&[]);
    bad_segment[2].1 = "/service/%zz/";
    let outcome = h2_exchange(&gw, &bad_segment, None).await;
    let answer = outcome.json().expect("a JSON answer");
    assert_eq!(answer["error"], "invalid_percent_encoding");
    assert_eq!(answer["status"], 400);
}
