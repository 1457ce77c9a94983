"""Client side of the signguard-flwr Flower app: learning tasks, the honest ClientApp and Byzantine wrappers."""
