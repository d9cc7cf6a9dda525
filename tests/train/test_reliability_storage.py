"""Storage faults under a local workdir: a vanished workdir, a full disk, a read-only workdir.

The workdir lies on a tmpfs mounted in a private mount namespace (root; CI runs as root), so the
faults are the kernel's own (ENOSPC, EROFS), met by real ``train.py`` runs; the disk is filled by
another file after the first checkpoint, so that the second one finds it full. One chain of runs in
one workdir, each the same command: every fault ends the run with exit 74 and one line (what failed,
where, the last complete checkpoint, the command that resumes, the detail log) in at most 12 console
lines without a traceback, and the next run goes on from what the fault left. The last run ends
bitwise equal to the uninterrupted reference run (``fault_reference``).
"""

import os
import subprocess

import pytest

from dog_jax.train.checkpoint import EXIT_STORAGE_FAILURE
from tests.support import fault_runs
from tests.support.checkpoints import assert_bitwise_equal, load_state
from tests.support.fault_runs import detail_log, one_line_failure
from tests.support.requires import ROOT_PRIVILEGES, requires

pytestmark = requires(fault_runs.mount_namespaces_work, "the local storage-fault tests mount a tmpfs in a private "
                      "mount namespace (unshare -m), which needs root", ROOT_PRIVILEGES)


def _steps(workdir: str) -> list[int]:
    return sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit())


@pytest.mark.slow
def test_vanished_full_and_read_only_workdirs_cost_one_line_each_and_nothing_is_lost(fault_reference, tmp_path):
    config, reference = fault_reference
    disk = tmp_path / "disk"
    disk.mkdir()
    workdir = str(disk / "run")
    same_command = f"python train.py --config={config} --workdir={workdir}"
    # A detail log that neither the workdir nor its disk can take goes to $TMPDIR: this test's folder.
    env = {"TMPDIR": str(tmp_path)}
    with fault_runs.private_mount_namespace() as namespace:
        def inside(*args):
            subprocess.run([*namespace, *args], check=True)

        def seen(path):
            return fault_runs.inside(namespace, path)

        inside("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk))

        # 1. The workdir is removed after the checkpoint of step 2: the run stops before its next write.
        result = fault_runs.run(config, workdir, fault="vanish", after=2, prefix=namespace, **env)
        line = one_line_failure(result, EXIT_STORAGE_FAILURE)
        assert line.startswith(f"error: workdir {workdir} vanished while this run wrote to it: its lease "
                               f"{workdir}/LEASE.json is gone"), line
        assert "(the last complete checkpoint is step 2, if still there)" in line and same_command in line, line
        log = detail_log(line)
        assert log.startswith(f"{disk}/run.storage_failure-"), line  # next to the vanished workdir
        with open(seen(log)) as f:
            assert f.read().startswith(line.split(" (details: ")[0])
        assert not os.path.exists(seen(workdir))  # nothing was written after the removal

        # 2. The same command: it starts over. After its checkpoint of step 2 another file fills the
        # disk, and the checkpoint of step 4 meets it full.
        result = fault_runs.run(config, workdir, fault="fill", after=2, prefix=namespace, **env)
        line = one_line_failure(result, EXIT_STORAGE_FAILURE)
        print(f"\nConsole of the full-disk run:\n{result.stderr}")
        assert "No space left on device [ENOSPC]" in line and "the last complete checkpoint is step 2." in line, line
        assert f"Rerun the same command once the storage works: {same_command} (details: " in line, line
        with open(seen(detail_log(line)) if detail_log(line).startswith(str(disk)) else detail_log(line)) as f:
            detail = f.read()  # in the workdir if the full disk took it, else in $TMPDIR
        assert "Traceback" in detail and "No space left on device" in detail, detail[:3000]
        assert _steps(seen(workdir)) == [2]

        # 3. Space freed: the same command resumes from step 2. After its checkpoint of step 4 the workdir
        # turns read-only.
        os.unlink(seen(str(disk / "ballast")))
        result = fault_runs.run(config, workdir, fault="read_only", after=4, prefix=namespace, **env)
        line = one_line_failure(result, EXIT_STORAGE_FAILURE)
        assert f"Resumed from {workdir}/checkpoints at step 2" in result.stderr, result.stderr[-3000:]
        assert "Read-only file system [EROFS]" in line and "the last complete checkpoint is step 4." in line, line
        assert same_command in line and detail_log(line).startswith(f"{disk}/run.storage_failure-"), line
        assert _steps(seen(workdir)) == [2, 4]

        # 4. Writable again: the same command resumes from step 4 and ends as if nothing had happened.
        inside("umount", workdir)
        result = fault_runs.run(config, workdir, prefix=namespace, **env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"Resumed from {workdir}/checkpoints at step 4" in result.stderr, result.stderr[-3000:]
        assert_bitwise_equal(load_state(seen(workdir), fault_runs.STEPS), load_state(reference, fault_runs.STEPS))
