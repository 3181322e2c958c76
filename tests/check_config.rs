//! `--check-config` asks ClearML, read-only, whether the gateway could work with it.

use gateway_testkit::clearml::FakeClearml;
use gateway_testkit::gateway;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

#[tokio::test]
async fn check_config_logs_in_and_looks_up_the_queues_without_writing() {
    let server = FakeClearml::start().await;
    let gpu = server.add_queue("gpu");
    let (status, output) = gateway(BIN)
        .clearml(&server)
        .env("ROUTER_URL", "https://gw.example.com")
        .env("LISTEN_QUEUE_NAME", "gpu later")
        .run(&["--check-config"])
        .await;
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("the gateway's keys log in as"), "{output}");
    assert!(
        output.contains(&format!("# queue \"gpu\": found ({gpu})")),
        "{output}"
    );
    assert!(
        output.contains("# queue \"later\": ClearML has no such queue"),
        "{output}"
    );
    assert_eq!(server.calls("auth.login"), 1);
    assert_eq!(server.writes(), 0);
    assert_eq!(server.calls("tasks.get_all"), 0, "no task is read either");
}

#[tokio::test]
async fn check_config_fails_when_clearml_refuses_the_keys() {
    let server = FakeClearml::start().await;
    let (status, output) = gateway(BIN)
        .clearml(&server)
        .env("ROUTER_URL", "https://gw.example.com")
        .env("CLEARML_API_SECRET_KEY", "not-the-secret")
        .run(&["--check-config"])
        .await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("# ClearML check failed: "), "{output}");
    assert!(output.contains("CLEARML_API_SECRET_KEY=****"), "{output}");
    assert!(!output.contains("not-the-secret"), "{output}");
}
