"""Helpers for tests only: reading what the lmms-eval CLI wrote."""
