"""Both ends of genapi RPC: the protocol, the gateway's node pools, the service node runtime and its SDK."""
