//! The gateway process from start to exit: configuration checked before binding, the
//! routes file reloaded on SIGHUP, and a drain on SIGTERM.

use std::time::Duration;

use gateway_testkit::process::routes_toml;
use gateway_testkit::tempdir::TempDir;
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, client, gateway};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    drains_on("TERM").await;
}

#[tokio::test]
async fn sigint_drains_the_same_way() {
    drains_on("INT").await;
}

async fn drains_on(signal: &str) {
    let app = backend::slow(Duration::from_millis(1500)).await;
    let mut gw = gateway(BIN).route("slow", app.url()).start().await;
    let addr = gw.addr();
    let in_flight = tokio::spawn(async move { client(addr).get("/service/slow/").await });
    let arrived = eventually(Duration::from_secs(5), || async { !app.seen().is_empty() }).await;
    assert!(arrived, "the request reached the backend");

    gw.signal(signal);
    gw.wait_for_log("shutting down", Duration::from_secs(5))
        .await;
    let refused = eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "the listener closes at once");

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "slow");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", gw.logs());
    assert!(gw.logs().contains("drained"), "{}", gw.logs());
    assert!(
        gw.logs().contains(&format!("signal=\"SIG{signal}\"")),
        "{}",
        gw.logs()
    );
}

#[tokio::test]
async fn sigterm_gives_up_on_requests_after_the_grace_period() {
    let app = backend::silent().await;
    let mut gw = gateway(BIN)
        .route("stuck", app.url())
        .env("ROUTER__HTTP__SHUTDOWN_GRACE_MS", "300")
        .start()
        .await;
    let addr = gw.addr();
    let in_flight = tokio::spawn(async move {
        let c = client(addr);
        let request = c.request(http::Method::GET, "/service/stuck/");
        c.try_open(request.body(gateway_testkit::client::empty()).unwrap())
            .await
    });
    let arrived = eventually(Duration::from_secs(5), || async {
        !app.received().is_empty()
    })
    .await;
    assert!(arrived);
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert!(gw.logs().contains("grace period over"), "{}", gw.logs());
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut request ends in an error"
    );
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let app = backend::silent().await;
    let mut gw = gateway(BIN).route("stuck", app.url()).start().await;
    let addr = gw.addr();
    let _in_flight = tokio::spawn(async move {
        let c = client(addr);
        let request = c.request(http::Method::GET, "/service/stuck/");
        c.try_open(request.body(gateway_testkit::client::empty()).unwrap())
            .await
    });
    let arrived = eventually(Duration::from_secs(5), || async {
        !app.received().is_empty()
    })
    .await;
    assert!(arrived);
    gw.signal("TERM");
    gw.wait_for_log("shutting down", Duration::from_secs(5))
        .await;
    gw.signal("INT");
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(1), "{status:?}\n{}", gw.logs());
    assert!(gw.logs().contains("second signal"), "{}", gw.logs());
}

#[tokio::test]
async fn sighup_reloads_the_routes_file_and_keeps_it_when_broken() {
    let first = backend::echo().await;
    let second = backend::echo().await;
    let gw = gateway(BIN).route("one", first.url()).start().await;
    let routes = [
        ("one".to_owned(), first.url()),
        ("two".to_owned(), second.url()),
    ];
    std::fs::write(gw.routes_path(), routes_toml(&routes)).unwrap();
    gw.signal("HUP");
    let addr = gw.addr();
    let served = eventually(Duration::from_secs(5), || async {
        client(addr).get("/service/two/").await.status == StatusCode::OK
    })
    .await;
    assert!(served, "{}", gw.logs());

    std::fs::write(
        gw.routes_path(),
        "[[route]]\nid = \"bad id\"\nupstream = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_for_log("still serving the previous routes", Duration::from_secs(5))
        .await;
    assert_eq!(
        client(addr).get("/service/two/").await.status,
        StatusCode::OK
    );
    assert!(gw.logs().contains("line 2"), "{}", gw.logs());
}

#[tokio::test]
async fn bad_configuration_exits_non_zero_naming_the_variable() {
    let cases = [
        (
            "TCP_PORT_START",
            "10100",
            "TCP_PORT_START=10100 is greater than TCP_PORT_END=10000",
        ),
        (
            "ROUTER__WEBSERVER__SERVER_PORT",
            "http",
            "ROUTER__WEBSERVER__SERVER_PORT=\"http\"",
        ),
        (
            "ROUTER_URL",
            "ftp://gw",
            "ROUTER_URL=\"ftp://gw\": expected an http:// or https:// URL",
        ),
        (
            "AUTH_SECURE_ENABLED",
            "maybe",
            "AUTH_SECURE_ENABLED=\"maybe\": expected true or false",
        ),
    ];
    let dir = TempDir::new("config");
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, "").unwrap();
    let routes = routes.to_str().unwrap();
    for (name, value, message) in cases {
        let (status, output) = gateway(BIN)
            .env("TCP_PORT_END", "10000")
            .env("TCP_PORT_START", "10000")
            .env(name, value)
            .run(&["--routes", routes])
            .await;
        assert_eq!(status.code(), Some(2), "{name}: {output}");
        assert!(output.contains(message), "{name}: {output}");
        assert!(!output.contains("listening"), "nothing was bound: {output}");
    }
}

#[tokio::test]
async fn a_broken_routes_file_is_named_with_its_line() {
    let dir = TempDir::new("routes");
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        "[[route]]\nid = \"demo\"\nupstream = \"http://127.0.0.1:8000\"\n\n[[route]]\nid = \"x\"\nupstream = \"tcp://h:1\"\n",
    )
    .unwrap();
    let (status, output) = gateway(BIN)
        .run(&["--routes", routes.to_str().unwrap()])
        .await;
    assert_eq!(status.code(), Some(2));
    let expected = format!(
        "routes file {}, line 7, column 12: upstream:",
        routes.display()
    );
    assert!(output.contains(&expected), "{output}");
}

#[tokio::test]
async fn env_file_and_check_config_show_the_effective_settings_with_secrets_masked() {
    let dir = TempDir::new("envfile");
    let env_file = dir.path().join("runtime.env");
    // A port nothing listens on: the check of ClearML fails at once, without the network.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api_host = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    std::fs::write(
        &env_file,
        format!(
            "# as for the original gateway\nPROXY_TAG=\nROUTER_NAME=router-a\n\
         ROUTER__WEBSERVER__SERVER_PORT=8010\nROUTER_URL=https://gw.example.com\n\
         CLEARML_API_HOST={api_host}\nCLEARML_API_ACCESS_KEY=AKEY\n\
         CLEARML_API_SECRET_KEY=s3cr3t-value\nAUTH_COOKIE_NAME=allegro_token_x\n\
         AUTH_SECURE_ENABLED=true\nTCP_ROUTER_ADDRESS=\nTCP_PORT_START=\nTCP_PORT_END=\n\
         LISTEN_QUEUE_NAME=queue1 queue2\n"
        ),
    )
    .unwrap();
    let (status, output) = gateway(BIN)
        .env("ROUTER_NAME", "from-the-environment")
        .run(&["--env-file", env_file.to_str().unwrap(), "--check-config"])
        .await;
    assert!(
        output.contains("ROUTER_NAME=from-the-environment\n"),
        "the environment wins: {output}"
    );
    assert!(
        output.contains("ROUTER__WEBSERVER__SERVER_PORT=8010\n"),
        "{output}"
    );
    assert!(output.contains("CLEARML_API_SECRET_KEY=****\n"), "{output}");
    assert!(!output.contains("s3cr3t-value"), "{output}");
    assert!(
        output.contains("LISTEN_QUEUE_NAME=queue1,queue2\n"),
        "{output}"
    );
    assert!(output.contains("TCP_PORT_START=\n"), "{output}");
    assert!(
        output.contains("# ClearML check failed: ") && output.contains(&api_host),
        "{output}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "ClearML could not be asked: {output}"
    );
}

#[tokio::test]
async fn a_missing_env_file_is_a_clear_error() {
    let (status, output) = gateway(BIN)
        .run(&["--env-file", "/nonexistent/runtime.env", "--check-config"])
        .await;
    assert_eq!(status.code(), Some(2));
    assert!(
        output.contains("env file /nonexistent/runtime.env"),
        "{output}"
    );
}

#[tokio::test]
async fn logs_are_json_lines_at_the_configured_level() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("abc", app.url())
        .env("ROUTER__LOG_FORMAT", "json")
        .start()
        .await;
    client(gw.addr()).get("/service/abc/x?secret=1").await;
    gw.wait_for_log("\"route\":\"abc\"", Duration::from_secs(5))
        .await;
    let logs = gw.logs();
    let access = logs
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .find(|line| line["route"] == "abc")
        .unwrap();
    assert_eq!(access["target"], "access");
    assert_eq!(access["status"], 200);
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/service/abc/x");
    assert!(access["upstream_ms"].as_f64().is_some());
    assert!(
        !logs.contains("secret=1"),
        "query strings stay out of the log"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let quiet = gateway(BIN)
        .route("abc", app.url())
        .route("dead", dead)
        .env("LOGGER_LEVEL", "warning")
        .start()
        .await;
    client(quiet.addr()).get("/service/abc/").await;
    client(quiet.addr()).get("/service/dead/").await;
    // Lines arrive in order: once the 502 warning is in, an info line before it would be too.
    quiet
        .wait_for_log("status=502", Duration::from_secs(5))
        .await;
    assert!(!quiet.logs().contains("status=200"), "{}", quiet.logs());
}

#[tokio::test]
async fn the_health_check_flag_asks_the_running_gateway() {
    let mut gw = gateway(BIN).start().await;
    let port = gw.addr().port().to_string();
    let probe = || {
        gateway(BIN)
            .env("ROUTER__WEBSERVER__SERVER_PORT", port.clone())
            .run(&["--health-check"])
    };
    let (status, output) = probe().await;
    assert!(status.success(), "{output}");
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10)).await;
    let (status, output) = probe().await;
    assert_eq!(status.code(), Some(1));
    assert!(
        output.contains("/_gateway/health at 127.0.0.1:"),
        "{output}"
    );
}

#[tokio::test]
async fn an_unusable_tls_certificate_stops_the_start() {
    let dir = TempDir::new("badtls");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, "").unwrap();
    let (status, output) = gateway(BIN)
        .env("ROUTER__WEBSERVER__TLS_CERT", cert.to_str().unwrap())
        .env("ROUTER__WEBSERVER__TLS_KEY", key.to_str().unwrap())
        .run(&["--routes", routes.to_str().unwrap()])
        .await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains(&format!("TLS: {}", cert.display())),
        "{output}"
    );
}

#[tokio::test]
async fn runtime_threads_sets_how_many_threads_serve() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("app", app.url())
        .env("ROUTER__RUNTIME__THREADS", "3")
        .start()
        .await;
    let workers = std::fs::read_dir(format!("/proc/{}/task", gw.pid()))
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("tokio-rt-worker"))
        .count();
    assert_eq!(workers, 3);
}
