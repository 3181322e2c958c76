//! What authentication adds to a request whose decision is cached: finding the token in the
//! `Cookie` header, the two cache lookups (who is it, may they see the task), and stripping
//! the token before forwarding — against the same request with authentication off.
//!
//! The caches are primed through a real round trip to the fake ClearML server first.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway_auth::{AuthSettings, ClearmlAuthorizer};
use gateway_clearml::{ClearmlClient, ClientSettings};
use gateway_proxy::auth::{find_token, strip_token};
use gateway_proxy::{Authorizer, Verdict};
use gateway_testkit::clearml::{FakeClearml, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, task};
use http::{HeaderMap, HeaderValue};

mod support;
use support::{COOKIE, browser_headers};

fn request_headers(token: &str) -> HeaderMap {
    let mut headers = browser_headers(token);
    headers.insert("host", HeaderValue::from_static("gateway.example.com"));
    headers
}

fn auth_decision(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (authorizer, token, task_id, _server) = runtime.block_on(async {
        let server = FakeClearml::start().await;
        let owner = server.add_user("owner");
        let task_id = server.add_task(task().in_progress().user(&owner));
        let token = server.token_for(&server.add_user("alice"));
        let client = ClearmlClient::new(ClientSettings {
            api_host: server.url(),
            access_key: GATEWAY_ACCESS_KEY.to_owned(),
            secret_key: GATEWAY_SECRET_KEY.to_owned(),
            request_timeout: Duration::from_secs(5),
        })
        .expect("a client");
        let authorizer = ClearmlAuthorizer::new(Arc::new(client), AuthSettings::default());
        let identity = authorizer
            .identify(&token)
            .resolve()
            .await
            .expect("a valid token");
        authorizer
            .may_see(&token, &identity, &task_id, Some(&owner))
            .resolve()
            .await
            .expect("a visible task");
        (authorizer, token, task_id, server)
    });
    let owner = "someone-else";
    let headers = request_headers(&token);

    let mut group = c.benchmark_group("auth_decision");
    group.bench_function("unauthenticated", |b| {
        b.iter(|| black_box(headers.clone()));
    });
    group.bench_function("cached_decision", |b| {
        b.iter(|| {
            let mut headers = headers.clone();
            let (token, source) = find_token(&headers, COOKIE).expect("a token");
            let Verdict::Ready(Ok(identity)) = authorizer.identify(token) else {
                panic!("the identity is cached");
            };
            let Verdict::Ready(Ok(())) =
                authorizer.may_see(token, &identity, &task_id, Some(owner))
            else {
                panic!("the visibility is cached");
            };
            strip_token(&mut headers, COOKIE, source);
            black_box((headers, identity))
        });
    });
    group.finish();
}

criterion_group!(benches, auth_decision);
criterion_main!(benches);
