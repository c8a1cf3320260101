"""The simulated-network driver."""
