"""Utilities: the config system, the one user-error type, safe file reading and writing,
strict JSON, confidence intervals."""
