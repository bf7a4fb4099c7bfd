"""What more than one process must agree on: the relay authority, the rate-limit store, the config
store; today's single-host implementations behind each."""
