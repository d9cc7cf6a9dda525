"""Under ``.ci/run`` the suite runs in a network namespace that holds loopback alone, so every
storage test there (and every other test) shows that nothing leaves 127.0.0.1."""

import os
import socket

from tests.support.requires import require


def test_the_suite_runs_with_loopback_only():
    require(os.environ.get("DOG_JAX_LOOPBACK_ONLY") == "1",
            "the loopback-only check runs inside .ci/run's network namespace",
            "run the suite through .ci/run (unshare -n, as root)")
    # The interfaces of this process's network namespace (/sys/class/net shows the host's).
    assert [name for _, name in socket.if_nameindex()] == ["lo"], socket.if_nameindex()
