"""Helpers for tests and demos: tiny offline vision-language models of real architectures."""
