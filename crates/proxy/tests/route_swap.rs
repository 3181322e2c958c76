//! Replacing the route table under live traffic: requests in flight keep their route,
//! requests during the swaps never miss one that stays.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gateway_proxy::{Gateway, Route, RouteStore, RouteTable, Server, Upstream};
use gateway_testkit::backend::{self, Backend, reply};
use gateway_testkit::client;
use gateway_testkit::wait::eventually;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::watch;

fn route(key: &str, backend: &Backend) -> Route {
    let upstream = Upstream::parse_url(&backend.url()).unwrap();
    Route::new(key, upstream).unwrap()
}

/// A table of `size` routes, `svc` among them, all led to `backend`.
fn table(size: usize, backend: &Backend, generation: usize) -> RouteTable {
    let others = (1..size).map(|i| route(&format!("task{generation}x{i}"), backend));
    RouteTable::new(std::iter::once(route("svc", backend)).chain(others))
}

async fn serve(routes: Arc<RouteStore>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(Gateway::builder(routes).build());
    tokio::spawn(async move { server.serve(listener, pending()).await });
    addr
}

/// A backend that holds every request until the gate opens.
async fn gated() -> (Backend, watch::Sender<bool>) {
    let (open, gate) = watch::channel(false);
    let app = Backend::start(move |_req| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            reply(StatusCode::OK, "done")
        }
    })
    .await;
    (app, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_of_10_000_routes_loses_none_of_100_requests_in_flight() {
    let (app, gate) = gated().await;
    let routes = Arc::new(RouteStore::new(RouteTable::new([route("svc", &app)])));
    let addr = serve(Arc::clone(&routes)).await;

    let in_flight: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { client(addr).get("/service/svc/work").await }))
        .collect();
    let all_arrived = eventually(Duration::from_secs(10), || async {
        app.seen().len() == 100
    })
    .await;
    assert!(
        all_arrived,
        "{} of 100 requests reached the backend",
        app.seen().len()
    );

    routes.replace(table(10_000, &app, 0)).await;
    assert_eq!(routes.snapshot().len(), 10_000);
    gate.send_replace(true);

    for request in in_flight {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "done");
    }
    let added = client(addr).get("/service/task0x9999/").await;
    assert_eq!(added.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_repeated_swaps_never_miss_a_route_that_stays() {
    let app = backend::echo().await;
    let routes = Arc::new(RouteStore::new(table(10_000, &app, 0)));
    let addr = serve(Arc::clone(&routes)).await;

    let swapping = Arc::new(AtomicBool::new(true));
    let still_swapping = Arc::clone(&swapping);
    let traffic = tokio::spawn(async move {
        let mut statuses = Vec::new();
        // Keep requesting for as long as tables are being replaced, and a little longer.
        while still_swapping.load(Ordering::Acquire) || statuses.len() < 50 {
            statuses.push(client(addr).get("/service/svc/").await.status);
        }
        statuses
    });
    for generation in 1..=20 {
        routes.replace(table(10_000, &app, generation)).await;
    }
    swapping.store(false, Ordering::Release);
    let statuses = traffic.await.unwrap();
    let failed: Vec<_> = statuses.iter().filter(|s| **s != StatusCode::OK).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    assert!(
        app.seen().len() >= statuses.len(),
        "every request reached the backend"
    );
    let gone = client(addr).get("/service/task0x1/").await;
    assert_eq!(
        gone.status,
        StatusCode::NOT_FOUND,
        "routes of old tables are gone"
    );
}
