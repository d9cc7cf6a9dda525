"""dog_jax's tests. The tree mirrors the repository (docs/architecture.md, "The test tree"):
``dog_jax/<module>.py`` is tested in ``tests/test_<module>.py``, ``dog_jax/<package>/`` in
``tests/<package>/``, ``configs/`` and ``benchmarks/`` in folders of their names, and checks of the
project as a whole in ``tests/project/``. Helpers that several test files use live in
``tests/support/``, fixtures in ``tests/conftest.py``; no test file imports from another."""
