"""A service node whose push fails with an exception that is not an RPC error the first
FLAKY_FAILS times (`genapi service run nodeflaky:svc`): the node must say so and push again."""

from __future__ import annotations

import os
from typing import Any

from genapi.service import Service


class FlakyService(Service):
    """A Service whose push message cannot be built the first `fails` times (as a bug in a
    user's code, or a failure the node did not foresee, would make it)."""

    def __init__(self, *args: Any, fails: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fails = fails

    def push_config(self, nodes: list[str]) -> dict[str, Any]:
        if self.fails > 0:
            self.fails -= 1
            raise RuntimeError(f"cannot build the push ({self.fails} more failures to come)")
        return super().push_config(nodes)


svc = FlakyService("flaky", config_version="1.0.0", fails=int(os.environ.get("FLAKY_FAILS", "2")))


@svc.api
def hello(name: str) -> str:
    return f"hello {name}"
