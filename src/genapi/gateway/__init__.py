"""One worker process: the listener, the upgrade and its authentication, the Phoenix serializers."""
