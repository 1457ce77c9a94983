"""Simulations of the SignGuard experiments: ServerApp, omniscient adversary, engines and CLI."""
