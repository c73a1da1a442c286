"""Simulated environments (MuJoCo): the SafeReach twin of the paper's real-robot task."""
