"""Tests of benchmarks/: the scripts' helpers and a smoke run on CPU."""
