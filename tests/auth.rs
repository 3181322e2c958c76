//! Authentication of routed requests in ClearML mode: only a ClearML user who may see the
//! task reaches it, and their ClearML token never reaches the task.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway_testkit::clearml::{FakeClearml, Fault, task};
use gateway_testkit::client::{empty, raw_exchange};
use gateway_testkit::process::GatewayProcess;
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, client, gateway};
use http::{Method, StatusCode};

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");
const COOKIE: &str = "clearml_token_basic";

/// A fake server with one routed task (owned by `owner`) led to `app`, and a gateway on it.
struct World {
    server: Arc<FakeClearml>,
    gw: GatewayProcess,
    task: String,
}

async fn world(app_url: &str, extra_env: &[(&str, &str)]) -> World {
    let server = Arc::new(FakeClearml::start().await);
    let owner = server.add_user("owner");
    let port: u16 = app_url.rsplit(':').next().unwrap().parse().unwrap();
    let task = server.add_task(
        task()
            .in_progress()
            .user(&owner)
            .http_endpoint("127.0.0.1", port),
    );
    let mut command = gateway(BIN).clearml(&server);
    for (name, value) in extra_env {
        command = command.env(name, *value);
    }
    let gw = command.start().await;
    gw.wait_ready(Duration::from_secs(10)).await;
    World { server, gw, task }
}

#[tokio::test]
async fn cookie_and_bearer_both_pass_and_neither_reaches_the_task() {
    let app = backend::echo().await;
    let w = world(&app.url(), &[]).await;
    let alice = w.server.add_user("alice");
    let token = w.server.token_for(&alice);
    let c = client(w.gw.addr());
    let path = format!("/service/{}/x", w.task);

    let by_cookie = c
        .request(Method::GET, &path)
        .header("cookie", format!("theme=dark; {COOKIE}={token}; _xsrf=1"))
        .header("authorization", "Bearer the-apps-own-key")
        .header("x-clearml-user", "someone-else")
        .body(empty())
        .unwrap();
    let seen = c.send(by_cookie).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text());
    let headers = &seen.json()["headers"];
    assert_eq!(headers["cookie"][0], "theme=dark; _xsrf=1");
    assert_eq!(
        headers["authorization"][0], "Bearer the-apps-own-key",
        "not the gateway's to touch"
    );
    assert_eq!(
        headers["x-clearml-user"][0],
        alice.as_str(),
        "set by the gateway, not the client"
    );
    assert_eq!(headers["x-clearml-user"].as_array().unwrap().len(), 1);

    let seen = client(w.gw.addr()).bearer(&token).get(&path).await;
    assert_eq!(seen.status, StatusCode::OK);
    let headers = &seen.json()["headers"];
    assert!(
        headers.get("authorization").is_none(),
        "the Bearer token was the credential: {headers}"
    );
    assert_eq!(headers["x-clearml-user"][0], alice.as_str());
    assert!(
        !seen.text().contains(&token),
        "the token never reaches the task"
    );
}

#[tokio::test]
async fn refused_tokens_are_401_and_invisible_tasks_403() {
    let app = backend::echo().await;
    let w = world(&app.url(), &[]).await;
    let path = format!("/service/{}/", w.task);
    let status = |token: Option<String>| {
        let (addr, path) = (w.gw.addr(), path.clone());
        async move {
            let c = match &token {
                Some(token) => client(addr).bearer(token),
                None => client(addr),
            };
            c.get(&path).await
        }
    };
    let other_company = w.server.add_user_in_company("mallory", "another-company");
    let hidden = w.server.add_user("bob");
    w.server.hide_task_from(&w.task, &hidden);
    let cases = [
        ("missing", None, StatusCode::UNAUTHORIZED, "unauthenticated"),
        (
            "malformed",
            Some("not-a-jwt".to_owned()),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "forged",
            Some(forged(&w.server.token_for(&hidden))),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "expired",
            Some(w.server.expired_token_for(&hidden)),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "wrong company",
            Some(w.server.token_for(&other_company)),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "not visible",
            Some(w.server.token_for(&hidden)),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (what, token, expected, code) in cases {
        let reply = status(token).await;
        assert_eq!(reply.status, expected, "{what}: {}", reply.text());
        assert_eq!(reply.json()["error"], code, "{what}");
    }
    assert!(app.seen().is_empty(), "no refused request reached the task");
    let unknown = client(w.gw.addr()).get("/service/0123456789abcdef/").await;
    assert_eq!(
        unknown.status,
        StatusCode::UNAUTHORIZED,
        "no token, no word on which routes exist"
    );
}

/// The token with one character of its signature changed.
fn forged(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn a_revoked_token_is_refused_once_its_cached_yes_expires() {
    let app = backend::echo().await;
    let w = world(&app.url(), &[("ROUTER__AUTH__CACHE_TTL_MS", "500")]).await;
    let token = w.server.token_for(&w.server.add_user("alice"));
    let path = format!("/service/{}/", w.task);
    let c = client(w.gw.addr()).bearer(&token);
    assert_eq!(c.get(&path).await.status, StatusCode::OK);
    w.server.revoke(&token);
    assert_eq!(
        c.get(&path).await.status,
        StatusCode::OK,
        "the yes is still cached"
    );
    let refused = eventually(Duration::from_secs(5), || async {
        client(w.gw.addr()).bearer(&token).get(&path).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        refused,
        "a revoked token must stop working once the cache lets go of it"
    );
}

#[tokio::test]
async fn browsers_get_a_page_and_programs_json() {
    let app = backend::echo().await;
    let w = world(&app.url(), &[]).await;
    let c = client(w.gw.addr());
    let path = format!("/service/{}/", w.task);
    let browser = c
        .request(Method::GET, &path)
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .body(empty())
        .unwrap();
    let page = c.send(browser).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().contains("Log in to ClearML"), "{}", page.text());
    let program = c.get(&path).await;
    assert_eq!(program.header("content-type"), Some("application/json"));
    assert_eq!(program.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn the_login_hand_off_sets_the_cookie_and_stays_on_this_gateway() {
    let app = backend::echo().await;
    for (secure, env) in [(false, "false"), (true, "true")] {
        let w = world(&app.url(), &[("AUTH_SECURE_ENABLED", env)]).await;
        let token = w.server.token_for(&w.server.add_user("alice"));
        let next = format!("/service/{}/lab?x=1", w.task);
        let encoded = next
            .replace('/', "%2F")
            .replace('?', "%3F")
            .replace('=', "%3D");
        let reply = client(w.gw.addr())
            .get(&format!("/_gateway/login?token={token}&next={encoded}"))
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert_eq!(reply.header("location"), Some(next.as_str()));
        let cookie = reply.header("set-cookie").unwrap();
        assert!(cookie.starts_with(&format!("{COOKIE}={token}")), "{cookie}");
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax")
                && cookie.contains("Path=/"),
            "{cookie}"
        );
        assert_eq!(cookie.contains("Secure"), secure, "{cookie}");
        assert!(cookie.contains("Max-Age="), "{cookie}");

        for evil in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "%2F%2Fevil.example",
            "/%09/evil.example",
        ] {
            let request = format!(
                "GET /_gateway/login?token={token}&next={evil} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
            );
            let raw = raw_exchange(w.gw.addr(), request.as_bytes()).await;
            assert!(raw.starts_with("HTTP/1.1 400"), "next={evil}: {raw}");
            assert!(
                !raw.to_ascii_lowercase().contains("set-cookie"),
                "next={evil}: {raw}"
            );
        }
        let bad = client(w.gw.addr())
            .get("/_gateway/login?token=nope&next=%2F")
            .await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_with_one_new_token_make_one_check() {
    let app = backend::echo().await;
    let w = world(&app.url(), &[]).await;
    let token = w.server.token_for(&w.server.add_user("alice"));
    w.server.set_delay(Duration::from_millis(200));
    w.server.reset_calls();
    let path = format!("/service/{}/", w.task);
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            let (c, path) = (client(w.gw.addr()).bearer(&token), path.clone());
            tokio::spawn(async move { c.get(&path).await.status })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(w.server.calls("users.get_current_user"), 1);
    let visibility_checks = w
        .server
        .requests("tasks.get_all")
        .iter()
        .filter(|body| body["only_fields"] == serde_json::json!(["id"]))
        .count();
    assert_eq!(visibility_checks, 1);
}

#[tokio::test]
async fn clearml_down_fails_closed_unless_the_decision_is_cached() {
    let app = backend::echo().await;
    let w = world(&app.url(), &[]).await;
    let known = w.server.token_for(&w.server.add_user("alice"));
    let new = w.server.token_for(&w.server.add_user("bob"));
    let path = format!("/service/{}/", w.task);
    assert_eq!(
        client(w.gw.addr()).bearer(&known).get(&path).await.status,
        StatusCode::OK
    );
    w.server.set_outage(Some(Fault::Status(503)));
    let refused = client(w.gw.addr()).bearer(&new).get(&path).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(refused.json()["error"], "auth_unavailable");
    assert_eq!(
        client(w.gw.addr()).bearer(&known).get(&path).await.status,
        StatusCode::OK
    );
    w.server.recover();
    assert_eq!(
        client(w.gw.addr()).bearer(&new).get(&path).await.status,
        StatusCode::OK,
        "a failure is not cached"
    );
}

#[tokio::test]
async fn a_websocket_upgrade_without_a_token_is_refused_before_any_tunnel() {
    let (app, paths) = backend::websocket_echo().await;
    let w = world(&app.url(), &[]).await;
    let handshake = format!(
        "GET /service/{}/ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        w.task
    );
    let raw = raw_exchange(w.gw.addr(), handshake.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    assert!(
        paths.lock().unwrap().is_empty(),
        "the backend saw no handshake"
    );

    let token = w.server.token_for(&w.server.add_user("alice"));
    let stream = tokio::net::TcpStream::connect(w.gw.addr()).await.unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/service/{}/ws",
            w.gw.addr(),
            w.task
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", format!("{COOKIE}={token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap(), "hi");
}

#[tokio::test]
async fn with_the_servers_token_secret_tokens_are_checked_locally() {
    use base64::Engine as _;
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let secret = base64::engine::general_purpose::STANDARD.encode(server.token_secret());
    let owner = server.add_user("owner");
    let task_id = server.add_task(
        task()
            .in_progress()
            .user(&owner)
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let gw = gateway(BIN)
        .clearml(&server)
        .env("AUTH_BASE64_JWKS_KEY", secret)
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let path = format!("/service/{task_id}/");
    let token = server.token_for(&owner);
    assert_eq!(
        client(gw.addr()).bearer(&token).get(&path).await.status,
        StatusCode::OK
    );
    let forged_token = forged(&token);
    assert_eq!(
        client(gw.addr())
            .bearer(&forged_token)
            .get(&path)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.calls("users.get_current_user"),
        0,
        "no server call to identify"
    );
}

#[tokio::test]
async fn a_cookie_sent_along_with_someone_elses_bearer_token_never_reaches_the_task() {
    let app = backend::echo().await;
    let w = world(&app.url(), &[]).await;
    let victim_user = w.server.add_user("victim");
    let victim = w.server.token_for(&victim_user);
    let attacker = w.server.token_for(&w.server.add_user("attacker"));
    let path = format!("/service/{}/steal", w.task);

    // An empty auth cookie first, then the victim's: the victim's counts, and is stripped.
    let c = client(w.gw.addr()).bearer(&attacker);
    let request = c
        .request(Method::GET, &path)
        .header("cookie", format!("{COOKIE}=; {COOKIE}={victim}"))
        .body(empty())
        .unwrap();
    let seen = c.send(request).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(
        !seen.text().contains(&victim),
        "the victim's token reached the task: {}",
        seen.text()
    );
    assert_eq!(
        seen.json()["headers"]["x-clearml-user"][0],
        victim_user.as_str()
    );

    // A header the gateway cannot read as text, hiding the victim's cookie: no fall-back.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {attacker}\r\nConnection: close\r\nCookie: z="
    );
    let mut raw = request.into_bytes();
    raw.extend_from_slice(b"\xc3\xa9; ");
    raw.extend_from_slice(format!("{COOKIE}={victim}\r\n\r\n").as_bytes());
    let answer = raw_exchange(w.gw.addr(), &raw).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(
        app.seen().len(),
        1,
        "only the first request reached the task"
    );
}

#[tokio::test]
async fn a_task_cannot_set_the_auth_cookie() {
    let app = backend::fixed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: clearml_token_basic=ATTACKER; Path=/\r\n\
          Set-Cookie: app=1; Path=/\r\n\r\nok",
    )
    .await;
    let w = world(&app.url(), &[]).await;
    let token = w.server.token_for(&w.server.add_user("alice"));
    let reply = client(w.gw.addr())
        .bearer(&token)
        .get(&format!("/service/{}/", w.task))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let cookies: Vec<&str> = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies, ["app=1; Path=/"]);
}

#[tokio::test]
async fn a_refusal_other_than_401_is_a_denial_and_cached() {
    let app = backend::echo().await;
    let w = world(&app.url(), &[]).await;
    let token = w.server.token_for(&w.server.add_user("alice"));
    let path = format!("/service/{}/", w.task);
    w.server.fail_next(1, Fault::Refusal(400, 12));
    let first = client(w.gw.addr()).bearer(&token).get(&path).await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED, "{}", first.text());
    let calls = w.server.calls("users.get_current_user");
    let second = client(w.gw.addr()).bearer(&token).get(&path).await;
    assert_eq!(
        second.status,
        StatusCode::UNAUTHORIZED,
        "the no is kept a few seconds"
    );
    assert_eq!(
        w.server.calls("users.get_current_user"),
        calls,
        "and not asked again"
    );
}
