"""Relay groups: the operations (`genapi.relay:<op>` in configs, `await relay.join_group(...)` in a
worker, `RelayClient` elsewhere), the rules (`groups`) and a worker's members (`seats`)."""

from genapi.relay.ops import (
    CLIENT_ARGS,
    SEATING,
    RelayCallee,
    RelayClient,
    accept_member,
    create_group,
    delete_group,
    get_group_info,
    handle_relay,
    join_group,
    leave_group,
    mute_member,
    op_of,
    register_worker,
    unmute_member,
)

__all__ = [
    "CLIENT_ARGS",
    "SEATING",
    "RelayCallee",
    "RelayClient",
    "accept_member",
    "create_group",
    "delete_group",
    "get_group_info",
    "handle_relay",
    "join_group",
    "leave_group",
    "mute_member",
    "op_of",
    "register_worker",
    "unmute_member",
]
