"""Many workers on one host: the master, the master–worker pipe, the config snapshot, metrics, the control port."""
