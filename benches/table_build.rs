//! The CPU work of one ClearML poll: `plan::plan` turning 10 000 listed tasks into the route
//! table and the write-backs still missing. Measured in the steady state, where every task
//! already carries its `endpoint` / `browser_endpoint` keys, and on the first poll after a
//! start, where none does and every task gets a write-back.
//!
//! The listing is cloned outside the measurement; dropping it is inside, as in the sync.

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gateway_clearml::ListedTask;
use gateway_proxy::{AddressPolicy, OwnAddresses};
use gateway_sync::BrowserEndpoint;
use gateway_sync::plan::{PlanContext, plan};
use serde_json::{Map, Value, json};

const TASKS: usize = 10_000;
const ROUTER_URL: &str = "https://gw.example.com";
const QUEUE: &str = "2c4e8a1f0b9d4e7c8a6f3b2d1e0c9a8b";

fn context() -> PlanContext {
    PlanContext {
        router_url: ROUTER_URL.to_owned(),
        api_host: "https://api.example.com".to_owned(),
        router_name: "gpu-cluster".to_owned(),
        browser_endpoint: BrowserEndpoint::Direct,
        // A gateway that listens on named queues checks every task's queue.
        queues: Some(HashSet::from([QUEUE.to_owned()])),
        policy: AddressPolicy::default(),
        // A gateway on every interface, as deployed: an endpoint on its port is checked.
        own: OwnAddresses::listening_on(([0, 0, 0, 0], 8080).into())
            .with_name("gw.example.com", 443),
        tcp: None,
    }
}

/// The keys the SDK's resource monitor writes into every task's runtime, besides the
/// endpoint keys: the plan has to walk past them.
fn machine_specs(runtime: &mut Map<String, Value>, i: usize) {
    let specs = json!({
        "platform": "linux",
        "python_version": "3.11.9",
        "python_exec": "/root/.clearml/venvs-builds/3.11/bin/python",
        "OS": "Linux-5.15.0-119-generic-x86_64-with-glibc2.35",
        "processor": "x86_64",
        "cpu_cores": 32,
        "memory_gb": 251.5,
        "hostname": format!("gpu-node-{:03}", i % 200),
        "gpu_count": 1,
        "gpu_type": "NVIDIA A100-SXM4-80GB",
        "gpu_memory": "80GB",
        "gpu_driver_version": "550.90.07",
        "gpu_driver_cuda_version": "12.4",
        "progress": "0",
        "ide": "vscode",
    });
    if let Value::Object(specs) = specs {
        runtime.extend(specs);
    }
}

/// One task as `tasks.get_all` lists it. Every task has the default HTTP endpoint (a model
/// server, say); every fourth also a named one (a notebook beside it). With `published`,
/// the keys this gateway writes back are already there, with the values it would write.
fn task(i: usize, published: bool) -> Value {
    let id = format!("{i:032x}");
    let address = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    let mut runtime = Map::new();
    machine_specs(&mut runtime, i);
    let mut endpoints = vec![("", 8000)];
    if i % 4 == 0 {
        endpoints.push(("__lab", 8888));
    }
    for (suffix, port) in endpoints {
        runtime.insert(format!("_SERVICE{suffix}"), json!("EXTERNAL"));
        runtime.insert(format!("_ADDRESS{suffix}"), json!(address));
        runtime.insert(format!("_PORT{suffix}"), json!(port));
        if published {
            let url = format!("{ROUTER_URL}/service/{id}{suffix}/");
            runtime.insert(format!("endpoint{suffix}"), json!(url));
            runtime.insert(format!("browser_endpoint{suffix}"), json!(url));
        }
    }
    json!({
        "id": id,
        "name": format!("vllm serve {i}"),
        "status": "in_progress",
        "user": format!("{:032x}", i % 50 + 1),
        "project": format!("{:032x}", i % 20 + 1),
        "runtime": runtime,
        "execution": {"queue": QUEUE},
        "system_tags": ["external_service"],
    })
}

fn table_build(c: &mut Criterion) {
    let context = context();
    let routes = TASKS + TASKS.div_ceil(4);
    let mut group = c.benchmark_group("table_build");
    // One plan takes milliseconds; the default 100 samples would take minutes.
    group.sample_size(20);
    for (name, published, writes) in [("steady_state", true, 0), ("first_poll", false, TASKS)] {
        let tasks: Vec<ListedTask> = (0..TASKS)
            .map(|i| serde_json::from_value(task(i, published)).expect("a task reads"))
            .collect();
        // A bench of the wrong case would measure nothing useful: check it once.
        let checked = plan(tasks.clone(), &context);
        assert_eq!(checked.table.len(), routes, "{name}: every endpoint routed");
        assert_eq!(checked.writes.len(), writes, "{name}: write-backs");
        assert!(checked.skipped.is_empty(), "{name}: {:?}", checked.skipped);
        group.bench_function(format!("{TASKS}_tasks/{name}"), |b| {
            b.iter_batched(
                || tasks.clone(),
                |tasks| plan(tasks, black_box(&context)),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, table_build);
criterion_main!(benches);
