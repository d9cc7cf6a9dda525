"""Helpers shared by test files: plain functions and constants (fixtures are in tests/conftest.py)."""
