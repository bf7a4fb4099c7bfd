"""What the tests and benchmarks share: process helpers, clients, and the app modules configs name.

Process helpers: `gateway_proc` (a real `genapi serve`), `node_proc` (a real `genapi service run`,
and the control-port client the tests use). Clients: `rawclient` (picows, frame by frame),
`sockclient` (a plain socket, for hostile byte streams), `fuzzgen` (the fuzz campaign). Shared
config tables: `configs`.

App modules (`testapi`, `nodeapp`, `nodepick`, `telemetry_counter`, `telemetry_probe`) are named by
configs as top-level modules (`mfa = "testapi:pid"`, `nodeapp:svc`), as configs written for a
deployment name theirs: the process helpers put this directory on their children's PYTHONPATH,
and pyproject's pytest `pythonpath` puts it on the test process's own path (`genapi check` and
config loading in-process import them too). Import the helpers as `from support.gateway_proc import
GatewayProcess`; never import an app module as `support.testapi` (it would be a second copy).
"""
