"""What a task does to get an endpoint, with the real clearml SDK:
Task.get_task(...).request_external_endpoint(port, protocol="http", wait=True).
Prints the SDK's answer as JSON on the last line of stdout."""

import json
import os
import sys

from clearml import Task

task = Task.get_task(task_id=os.environ["TASK_ID"])
name = os.environ.get("ENDPOINT_NAME") or None
result = task.request_external_endpoint(
    port=int(os.environ["APP_PORT"]),
    protocol="http",
    wait=True,
    wait_interval_seconds=0.5,
    wait_timeout_seconds=30,
    endpoint_name=name,
)
print(json.dumps(result))
sys.exit(0 if result else 1)
