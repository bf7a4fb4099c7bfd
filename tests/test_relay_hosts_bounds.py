"""`[relay] max_groups` and `max_members` across two hosts sharing Redis (A with two workers, B
with one): tests/test_relay_bounds.py's tests unchanged, their clients alternating between the
hosts. The bounds are the hosts' together (checked in the group's script): the group past
max_groups and the member past max_members are refused with the same texts wherever they ask."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import test_relay_bounds
from support.gateway_proc import several_hosts
from support.redis_proc import RedisProcess
from test_relay_bounds import (
    test_the_group_past_max_groups_is_refused_and_the_others_go_on,
    test_the_member_past_max_members_is_refused_and_the_members_go_on,
)
from test_relay_hosts import ENGINE, TwoHosts

__all__ = [
    "test_the_group_past_max_groups_is_refused_and_the_others_go_on",
    "test_the_member_past_max_members_is_refused_and_the_members_go_on",
]


@pytest.fixture(scope="module")
def gw() -> Iterator[TwoHosts]:
    with RedisProcess() as redis:
        config = test_relay_bounds.CONFIG + ENGINE.format(url=redis.url, prefix=f"b{os.getpid()}")
        with several_hosts(config, 2, 1) as (a, b):
            yield TwoHosts(a, b)
