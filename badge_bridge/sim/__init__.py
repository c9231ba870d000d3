"""Simulated devices for tests and `make demo`: they speak the real protocols over real transports."""
