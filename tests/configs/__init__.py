"""Tests of configs/: the papers' recipes, configs/paper.py's rows, the sweep files."""
