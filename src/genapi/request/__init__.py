"""The request path above the compiled core: binding, the general path, registry, hooks, permissions,
calls, discovery."""
