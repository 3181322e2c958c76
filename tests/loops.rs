//! Routes that lead back into a gateway: refused where they are made when they name the
//! gateway's own address, and cut short by the gateway's `Via` entry (508) when a request
//! comes back by any other way — never forwarded round and round.

use std::time::Duration;

use gateway_testkit::clearml::{FakeClearml, task};
use gateway_testkit::process::routes_toml;
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, client, gateway};
use http::{Method, StatusCode};

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// Rewrites a gateway's routes file to `routes` and waits until it has reloaded it.
async fn reroute(gw: &gateway_testkit::process::GatewayProcess, routes: &[(&str, String)]) {
    let routes: Vec<(String, String)> = routes
        .iter()
        .map(|(id, url)| ((*id).to_owned(), url.clone()))
        .collect();
    let reloads = gw.logs().matches("routes reloaded").count();
    std::fs::write(gw.routes_path(), routes_toml(&routes)).unwrap();
    gw.signal("HUP");
    let reloaded = eventually(Duration::from_secs(5), || async {
        gw.logs().matches("routes reloaded").count() > reloads
    })
    .await;
    assert!(reloaded, "{}", gw.logs());
}

#[tokio::test]
async fn forwarded_requests_carry_the_gateways_via_entry_after_the_clients() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let port = gw.addr().port();
    let c = client(gw.addr());
    let request = c
        .request(Method::GET, "/service/abc/")
        .header("via", "1.0 fred, 1.1 p.example.net")
        .body(gateway_testkit::client::empty())
        .unwrap();
    let via = c.send(request).await.json()["headers"]["via"].clone();
    let via = via[0].as_str().unwrap().to_owned();
    let (theirs, ours) = via.rsplit_once(", ").unwrap();
    assert_eq!(theirs, "1.0 fred, 1.1 p.example.net", "{via}");
    assert!(
        ours.starts_with("1.1 ") && ours.ends_with(&format!(":{port}")),
        "standalone: the machine's name and the listen port: {via}"
    );
    let h2 = client(gw.addr()).h2c().get("/service/abc/").await;
    let entry = h2.json()["headers"]["via"][0].as_str().unwrap().to_owned();
    assert_eq!(entry, ours.replacen("1.1", "2", 1), "HTTP/2 arrived");

    // A request that already carries that entry came back: it goes no further.
    let seen = app.seen().len();
    let request = c
        .request(Method::GET, "/service/abc/")
        .header("via", format!("1.1 elsewhere, {ours}"))
        .body(gateway_testkit::client::empty())
        .unwrap();
    let reply = c.send(request).await;
    assert_eq!(reply.status, StatusCode::LOOP_DETECTED);
    assert_eq!(reply.json()["error"], "loop_detected");
    assert_eq!(app.seen().len(), seen, "not forwarded");
}

#[tokio::test]
async fn a_chain_of_two_gateways_that_leads_back_is_cut_at_the_second_pass() {
    let app = backend::echo().await;
    let b = gateway(BIN).route("y", app.url()).start().await;
    let a = gateway(BIN)
        .route("x", format!("http://{}", b.addr()))
        .start()
        .await;
    reroute(&b, &[("y", format!("http://{}", a.addr()))]).await;

    // A strips /service/x and hands B /service/y/…; B strips /service/y and hands A
    // /service/x/…, which A has seen before.
    let reply = client(a.addr())
        .get("/service/x/service/y/service/x/service/y/")
        .await;
    assert_eq!(reply.status, StatusCode::LOOP_DETECTED, "{}", reply.text());
    assert_eq!(reply.json()["error"], "loop_detected");
    assert!(app.seen().is_empty(), "nothing reached an app");
    a.wait_for_log("error=\"loop_detected\"", Duration::from_secs(5))
        .await;
    let lines: Vec<String> = a
        .logs()
        .lines()
        .filter(|l| l.contains("path=\"/service/x/"))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 2, "two passes through A, not more: {lines:#?}");
    assert!(lines.iter().all(|l| l.contains("status=508")), "{lines:#?}");
    let cut = lines
        .iter()
        .filter(|l| l.contains("error=\"loop_detected\""));
    assert_eq!(cut.count(), 1, "{lines:#?}");
}

#[tokio::test]
async fn a_routes_file_that_points_at_the_gateway_itself_is_refused_on_reload() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let reloads = gw
        .logs()
        .matches("still serving the previous routes")
        .count();
    let own = format!("http://localhost:{}", gw.addr().port());
    std::fs::write(
        gw.routes_path(),
        routes_toml(&[("abc".to_owned(), own.clone())]),
    )
    .unwrap();
    gw.signal("HUP");
    let refused = eventually(Duration::from_secs(5), || async {
        gw.logs()
            .matches("still serving the previous routes")
            .count()
            > reloads
    })
    .await;
    assert!(refused, "{}", gw.logs());
    let logs = gw.logs();
    assert!(
        logs.contains(&format!(
            "line 3, column 12: upstream {own} points at this gateway"
        )),
        "{logs}"
    );
    let reply = client(gw.addr()).get("/service/abc/").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the previous route still serves"
    );
    assert_eq!(app.seen().len(), 1);
}

#[tokio::test]
async fn a_task_whose_endpoint_is_the_gateway_gets_no_route_and_one_log_line() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    let gw = gateway(BIN).clearml(&server).start().await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let looping = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", gw.addr().port())
            .named_http_endpoint(Some("any"), "0.0.0.0", gw.addr().port()),
    );
    let good = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let served = eventually(Duration::from_secs(10), || async {
        let path = format!("/service/{good}/");
        client(gw.addr()).bearer(&token).get(&path).await.status == StatusCode::OK
    })
    .await;
    assert!(served, "{}", gw.logs());
    gw.wait_for_log(
        &format!("task={looping} key=\"_PORT__any\""),
        Duration::from_secs(5),
    )
    .await;
    let logs = gw.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&format!("task={looping}")))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.contains("points at this gateway")),
        "{lines:#?}"
    );
    let reply = client(gw.addr())
        .bearer(&token)
        .get(&format!("/service/{looping}/"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        !server.runtime(&looping).contains_key("endpoint"),
        "no endpoint is published for it"
    );
}
