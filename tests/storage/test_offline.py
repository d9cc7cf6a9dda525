"""Under ``.ci/run`` the suite runs in a network namespace that holds loopback alone, so every
storage test there (and every other test) shows that nothing leaves 127.0.0.1."""

import os

from tests.support.requires import require


def test_the_suite_runs_with_loopback_only():
    require(os.environ.get("DOG_JAX_LOOPBACK_ONLY") == "1",
            "the loopback-only check runs inside .ci/run's network namespace",
            "run the suite through .ci/run (unshare -n, as root)")
    assert os.listdir("/sys/class/net") == ["lo"], os.listdir("/sys/class/net")
    with open("/sys/class/net/lo/operstate") as f:
        assert f.read().strip() in ("unknown", "up")
