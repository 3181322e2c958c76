//! Write-backs against the fake ClearML server, on both kinds of server.

use std::time::Duration;

use gateway_clearml::{ClearmlClient, ClientSettings, Runtime};
use gateway_sync::plan::WriteBack;
use gateway_sync::writeback::{WriteMode, write_back};
use gateway_testkit::clearml::{FakeClearml, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, task};
use serde_json::json;

async fn client(server: &FakeClearml) -> ClearmlClient {
    let client = ClearmlClient::new(ClientSettings {
        api_host: server.url(),
        access_key: GATEWAY_ACCESS_KEY.to_owned(),
        secret_key: GATEWAY_SECRET_KEY.to_owned(),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    client.login().await.unwrap();
    client
}

#[tokio::test]
async fn keys_are_set_and_removed_and_the_rest_kept_in_both_modes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for (version, mode) in [
        ("2.31", WriteMode::ReadModifyWrite),
        ("2.34", WriteMode::EditRuntime),
    ] {
        let server = FakeClearml::builder().api_version(version).start().await;
        let id = server.add_task(task().in_progress().runtime(json!({
            "mine": "kept", "_ROUTER_ERROR": "no port", "external_tcp_port": 22,
        })));
        let clearml = client(&server).await;
        let mut keys = Runtime::new();
        keys.insert("external_tcp_port".into(), json!(10001));
        let write = WriteBack {
            task_id: id.clone(),
            keys,
            remove: vec!["_ROUTER_ERROR".to_owned()],
        };
        write_back(&clearml, &write, mode).await.unwrap();
        let runtime = server.runtime(&id);
        assert_eq!(runtime["mine"], "kept", "{mode:?}");
        assert_eq!(runtime["external_tcp_port"], 10001, "{mode:?}");
        assert!(
            !runtime.contains_key("_ROUTER_ERROR"),
            "{mode:?}: {runtime:?}"
        );

        let remove_only = WriteBack {
            task_id: id.clone(),
            keys: Runtime::new(),
            remove: vec!["mine".to_owned()],
        };
        write_back(&clearml, &remove_only, mode).await.unwrap();
        assert!(!server.runtime(&id).contains_key("mine"), "{mode:?}");
    }
}
