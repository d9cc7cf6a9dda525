"""Tests of scripts/: the TPU VM setup script, run against stub commands."""
