from typing import Any

from genapi._core.ratelimit import Table
from genapi.structs import Response

class Rule:
    limit_id: int
    key: str
    kind: int
    max_requests: int
    window_ms: int
    def __init__(self, limit_id: int, key: str, max_requests: int, window_ms: int) -> None: ...

class RequestLimiter:
    table: Table
    enabled: bool
    fail_open: bool
    refused: int
    cluster: Any  # engine.cluster_limits.ClusterLimiter | None
    def __init__(self, table: Table, fail_open: bool = True) -> None: ...
    def configure(
        self,
        enabled: bool,
        fail_open: bool,
        global_rules: list[tuple[int, str, int, int]],
        api_rules: dict[tuple[str, str], list[tuple[int, str, int, int]]],
    ) -> None: ...
    def check(self, request: Any, identity: Any, record: bool = True) -> Response | None: ...
    def set_cluster(self, cluster: Any) -> None: ...
