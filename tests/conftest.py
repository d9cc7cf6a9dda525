"""Shared test setup.

Every pytest(-xdist) worker collects every test module, so PyTorch/timm (model parity tests) and
TensorFlow (input pipeline tests) end up in one process. With the pinned versions, importing
torchvision *after* tensorflow segfaults (tensorflow-cpu 2.21 + torchvision 0.29.1, measured
here); the other order works. So torchvision, when installed, is imported first.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import torchvision  # noqa: F401
except ImportError:  # torch is a test-only dependency; tests that need it skip or import it themselves
    pass

# libtpu (installed for the TPU compile tests) makes every JAX start probe for TPU chips and take a
# per-host lock file; the tests run on CPU and reach TPU devices only through topology descriptions.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
