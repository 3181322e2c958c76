use serde_json::json;

use super::*;

fn context() -> PlanContext {
    PlanContext {
        router_url: "https://gw.example.com".to_owned(),
        api_host: "https://api.example.com".to_owned(),
        router_name: "router a".to_owned(),
        browser_endpoint: BrowserEndpoint::Direct,
        queues: None,
        policy: AddressPolicy::default(),
        own: OwnAddresses::default(),
        tcp: None,
    }
}

/// Plans tasks written as the server's JSON, read the way a listing reads them.
fn plan(tasks: Vec<Value>, context: &PlanContext) -> Plan {
    let listed = tasks.into_iter().map(|task| {
        serde_json::from_value::<ListedTask>(task).expect("any JSON value reads as a task")
    });
    super::plan(listed.collect(), context)
}

fn running(id: &str, queue: &str, runtime: Value) -> Value {
    json!({
        "id": id, "status": "in_progress", "user": "u1",
        "execution": {"queue": queue}, "runtime": runtime,
        "system_tags": ["external_service"],
    })
}

#[test]
fn a_new_endpoint_gets_a_route_and_its_keys_written() {
    let tasks = vec![running(
        "t1",
        "q1",
        json!({"_ADDRESS": "10.0.0.5", "_PORT": 8000, "_ADDRESS__lab": "10.0.0.5", "_PORT__lab": 8888}),
    )];
    let plan = plan(tasks, &context());
    assert_eq!(plan.table.len(), 2);
    let route = plan.table.lookup("t1__lab").unwrap();
    assert_eq!(route.upstream().to_string(), "http://10.0.0.5:8888");
    assert_eq!(route.owner(), Some("u1"));
    assert_eq!(plan.writes.len(), 1);
    let keys = &plan.writes[0].keys;
    assert_eq!(keys["endpoint"], "https://gw.example.com/service/t1/");
    assert_eq!(
        keys["browser_endpoint"],
        "https://gw.example.com/service/t1/"
    );
    assert_eq!(
        keys["endpoint__lab"],
        "https://gw.example.com/service/t1__lab/"
    );
    assert_eq!(keys.len(), 4);
}

#[test]
fn keys_already_right_are_not_written_again() {
    let tasks = vec![running(
        "t1",
        "q1",
        json!({
            "_ADDRESS": "10.0.0.5", "_PORT": 8000,
            "endpoint": "https://gw.example.com/service/t1/",
            "browser_endpoint": "https://gw.example.com/service/t1/",
        }),
    )];
    let plan = plan(tasks, &context());
    assert_eq!(plan.table.len(), 1);
    assert!(plan.writes.is_empty(), "{:?}", plan.writes);
}

#[test]
fn the_redirect_form_names_the_router_and_the_task() {
    let mut context = context();
    context.browser_endpoint = BrowserEndpoint::Redirect;
    let tasks = vec![running(
        "t1",
        "q1",
        json!({"_ADDRESS": "10.0.0.5", "_PORT": 8000}),
    )];
    let plan = plan(tasks, &context);
    assert_eq!(
        plan.writes[0].keys["browser_endpoint"],
        "https://api.example.com/auth.redirect_to_router?router=router%20a&task=t1&path=service%2Ft1"
    );
    assert_eq!(
        plan.writes[0].keys["endpoint"],
        "https://gw.example.com/service/t1/"
    );
}

#[test]
fn only_running_tasks_of_this_gateways_queues_are_routed() {
    let mut context = context();
    context.queues = Some(HashSet::from(["q1".to_owned()]));
    let mut stopped = running("t3", "q1", json!({"_ADDRESS": "10.0.0.5", "_PORT": 8000}));
    stopped["status"] = json!("stopped");
    let tasks = vec![
        running("t1", "q1", json!({"_ADDRESS": "10.0.0.5", "_PORT": 8000})),
        running("t2", "q2", json!({"_ADDRESS": "10.0.0.5", "_PORT": 8000})),
        stopped,
    ];
    let plan = plan(tasks, &context);
    assert!(plan.table.lookup("t1").is_some());
    assert!(plan.table.lookup("t2").is_none(), "another gateway's queue");
    assert!(plan.table.lookup("t3").is_none());
    assert_eq!(plan.tasks, 1);
    assert_eq!(plan.writes.len(), 1);
}

#[test]
fn a_broken_entry_is_skipped_without_harming_the_others() {
    let mut odd_fields = running("t4", "q1", json!({"_ADDRESS": "10.0.0.5", "_PORT": 8000}));
    odd_fields["name"] = json!(5);
    odd_fields["project"] = json!({"id": "p"});
    odd_fields["system_tags"] = json!("external_service");
    let tasks = vec![
        json!({"id": "bad", "status": "in_progress", "runtime": "not a map"}),
        json!("not even an object"),
        odd_fields,
        running("t1", "q1", json!({"_ADDRESS": "10.0.0.5", "_PORT": "8000"})),
        running(
            "t2",
            "q1",
            json!({"_ADDRESS": "http://evil/", "_PORT": 8000}),
        ),
        running("t.3", "q1", json!({"_ADDRESS": "10.0.0.5", "_PORT": 8000})),
    ];
    let plan = plan(tasks, &context());
    assert_eq!(plan.table.len(), 2);
    assert!(plan.table.lookup("t1").is_some());
    assert!(
        plan.table.lookup("t4").is_some(),
        "odd values in unused fields cost nothing"
    );
    let skipped: Vec<String> = plan
        .skipped
        .iter()
        .map(|s| format!("{} {:?}: {}", s.task_id, s.key, s.reason))
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:#?}");
    assert!(skipped[0].starts_with("bad None: the runtime is not a map"));
    assert!(skipped[1].starts_with("? None: not a readable task entry"));
    assert!(skipped[2].starts_with("t2 Some(\"_PORT\"): _ADDRESS = \"http://evil/\""));
    assert!(skipped[3].starts_with("t.3 None: the task id cannot be a route key"));
}
