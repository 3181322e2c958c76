//! The client against the fake ClearML server: login, refresh, the 401 retry, errors.

use std::time::Duration;

use gateway_clearml::{ClearmlClient, ClientSettings, GetAllTasks};
use gateway_testkit::clearml::{FakeClearml, Fault, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, task};

fn client(server: &FakeClearml, secret: &str) -> ClearmlClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    ClearmlClient::new(ClientSettings {
        api_host: server.url(),
        access_key: GATEWAY_ACCESS_KEY.to_owned(),
        secret_key: secret.to_owned(),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn routable() -> GetAllTasks<'static> {
    GetAllTasks {
        system_tags: Some(&["external_service"]),
        status: Some(&["in_progress"]),
        only_fields: &["id", "runtime"],
        ..GetAllTasks::default()
    }
}

#[tokio::test]
async fn it_logs_in_once_and_reads_the_servers_api_version() {
    let server = FakeClearml::start().await;
    let running = server.add_task(task().in_progress().http_endpoint("10.0.0.5", 8000));
    server.add_task(task().status("stopped").http_endpoint("10.0.0.6", 8000));
    server.add_task(task().in_progress());
    let clearml = client(&server, GATEWAY_SECRET_KEY);

    let tasks = clearml.tasks_get_all(&routable()).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id.as_deref(), Some(running.as_str()));
    assert_eq!(tasks[0].runtime["_PORT"], 8000);
    clearml.tasks_get_all(&routable()).await.unwrap();
    assert_eq!(server.calls("auth.login"), 1);
    assert_eq!(server.calls("tasks.get_all"), 2);
    assert_eq!(clearml.api_version().await.unwrap().to_string(), "2.31");
}

#[tokio::test]
async fn a_refused_token_is_replaced_once() {
    let server = FakeClearml::start().await;
    let clearml = client(&server, GATEWAY_SECRET_KEY);
    clearml.tasks_get_all(&routable()).await.unwrap();
    server.invalidate_tokens();
    clearml.tasks_get_all(&routable()).await.unwrap();
    assert_eq!(server.calls("auth.login"), 2);
    assert_eq!(
        server.calls("tasks.get_all"),
        3,
        "the refused call and its retry"
    );
}

#[tokio::test]
async fn a_token_is_renewed_once_three_quarters_of_its_life_are_gone() {
    let server = FakeClearml::builder()
        .token_lifetime(Duration::from_secs(1))
        .start()
        .await;
    let clearml = client(&server, GATEWAY_SECRET_KEY);
    clearml.tasks_get_all(&routable()).await.unwrap();
    clearml.tasks_get_all(&routable()).await.unwrap();
    assert_eq!(server.calls("auth.login"), 1, "a fresh token is used again");
    tokio::time::sleep(Duration::from_millis(800)).await;
    clearml.tasks_get_all(&routable()).await.unwrap();
    assert_eq!(
        server.calls("auth.login"),
        2,
        "past 750 ms of its 1 s, it is renewed first"
    );
    assert_eq!(server.calls("tasks.get_all"), 3, "and no call is refused");
}

#[tokio::test]
async fn a_refusal_of_the_call_rather_than_the_token_is_not_retried() {
    let server = FakeClearml::start().await;
    let clearml = client(&server, GATEWAY_SECRET_KEY);
    clearml.login().await.unwrap();
    server.fail_next(1, Fault::Refusal(401, 1));
    let err = clearml.tasks_get_all(&routable()).await.unwrap_err();
    assert_eq!(err.result(), Some((401, 1)));
    assert_eq!(server.calls("auth.login"), 1, "no login storm");
}

#[tokio::test]
async fn wrong_credentials_are_an_api_error_naming_the_subcode() {
    let server = FakeClearml::start().await;
    let clearml = client(&server, "not-the-secret");
    let err = clearml.login().await.unwrap_err();
    assert_eq!(err.result(), Some((401, 22)));
    assert!(!err.is_outage());
    assert!(
        err.to_string()
            .starts_with("ClearML auth.login failed with 401/22"),
        "{err}"
    );
}

#[tokio::test]
async fn outages_are_told_apart_from_refusals() {
    let server = FakeClearml::start().await;
    let clearml = client(&server, GATEWAY_SECRET_KEY);
    clearml.login().await.unwrap();
    for fault in [Fault::Status(503), Fault::Garbage, Fault::Drop] {
        server.fail_next(1, fault);
        let err = clearml.tasks_get_all(&routable()).await.unwrap_err();
        assert!(err.is_outage(), "{fault:?}: {err}");
    }
    server.set_delay(Duration::from_millis(300));
    let slow = ClearmlClient::new(ClientSettings {
        api_host: server.url(),
        access_key: GATEWAY_ACCESS_KEY.to_owned(),
        secret_key: GATEWAY_SECRET_KEY.to_owned(),
        request_timeout: Duration::from_millis(100),
    })
    .unwrap();
    let err = slow.login().await.unwrap_err();
    assert!(err.is_outage(), "a timeout is an outage: {err}");
}

#[tokio::test]
async fn runtime_edits_merge_or_replace() {
    let server = FakeClearml::builder().api_version("2.34").start().await;
    let id = server.add_task(
        task()
            .in_progress()
            .runtime(serde_json::json!({"mine": "1", "old": "x"})),
    );
    let clearml = client(&server, GATEWAY_SECRET_KEY);
    clearml.login().await.unwrap();
    let mut add = gateway_clearml::Runtime::new();
    add.insert("endpoint".into(), "http://gw/service/x/".into());
    clearml
        .tasks_edit_runtime(&id, &add, &["old".to_owned()])
        .await
        .unwrap();
    let runtime = server.runtime(&id);
    assert_eq!(runtime["mine"], "1");
    assert_eq!(runtime["endpoint"], "http://gw/service/x/");
    assert!(!runtime.contains_key("old"));

    clearml.tasks_replace_runtime(&id, &add).await.unwrap();
    assert_eq!(
        server.runtime(&id).len(),
        1,
        "tasks.edit replaces the whole map"
    );
    assert_eq!(clearml.task_runtime(&id).await.unwrap(), add);
}
