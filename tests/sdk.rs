//! The real client: the `clearml` Python SDK from PyPI asks for an endpoint, against the
//! fake ClearML server and the gateway, and the endpoint it gets back reaches the app.
//!
//! The SDK runs from a virtualenv: `CLEARML_SDK_PYTHON` names its interpreter, else
//! `target/clearml-sdk-venv` is used (and made, with `pip install clearml==2.1.12`, if absent;
//! `.ci/run` makes it beforehand).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gateway_testkit::clearml::{FakeClearml, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, task};
use gateway_testkit::tempdir::TempDir;
use gateway_testkit::{backend, client, gateway};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");
const SDK_VERSION: &str = "2.1.12";

fn sdk_python() -> PathBuf {
    if let Some(python) = std::env::var_os("CLEARML_SDK_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/clearml-sdk-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv {}",
            venv.display()
        );
        let installed = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                &format!("clearml=={SDK_VERSION}"),
            ])
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "pip install clearml=={SDK_VERSION}"
        );
    }
    python
}

/// Runs the SDK script for `task_id`; returns its JSON answer, with its output on failure.
async fn request_endpoint(
    server: &FakeClearml,
    task_id: &str,
    port: u16,
    name: Option<&str>,
) -> serde_json::Value {
    let home = TempDir::new("sdk-home");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/request_endpoint.py");
    let mut command = tokio::process::Command::new(sdk_python());
    command
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CLEARML_API_HOST", server.url())
        .env("CLEARML_WEB_HOST", server.url())
        .env("CLEARML_FILES_HOST", server.url())
        .env("CLEARML_API_ACCESS_KEY", GATEWAY_ACCESS_KEY)
        .env("CLEARML_API_SECRET_KEY", GATEWAY_SECRET_KEY)
        .env("CLEARML_AGENT_HOST_IP", "127.0.0.1")
        .env("CLEARML_LOG_LEVEL", "WARNING")
        .env("TASK_ID", task_id)
        .env("APP_PORT", port.to_string())
        .env("ENDPOINT_NAME", name.unwrap_or_default());
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the SDK finishes")
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_gets_an_endpoint_that_reaches_the_app() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    let id = server.add_task(task().in_progress().name("vllm"));
    let gw = gateway(BIN).clearml(&server).start().await;

    let answer = request_endpoint(&server, &id, app.addr().port(), None).await;
    let endpoint = answer["endpoint"].as_str().expect("an endpoint").to_owned();
    assert_eq!(endpoint, format!("http://{}/service/{id}/", gw.addr()));
    assert_eq!(answer["browser_endpoint"], endpoint.as_str());
    assert_eq!(answer["protocol"], "http");
    assert_eq!(answer["port"], app.addr().port());

    let path = endpoint.trim_start_matches(&format!("http://{}", gw.addr()));
    let reply = client(gw.addr())
        .bearer(&token)
        .get(&format!("{path}v1/models"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["uri"], "/v1/models");

    let lab = backend::echo().await;
    let named = request_endpoint(&server, &id, lab.addr().port(), Some("lab")).await;
    assert_eq!(
        named["endpoint"],
        format!("http://{}/service/{id}__lab/", gw.addr()).as_str()
    );
    assert_eq!(named["name"], "lab");
    let reply = client(gw.addr())
        .bearer(&token)
        .get(&format!("/service/{id}__lab/"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(lab.seen().len(), 1);
}
