"""CheckpointManager: retention and a SIGKILL while an old checkpoint is being deleted."""

import signal
import subprocess
import sys
import textwrap

from align.checkpoint import META, CheckpointManager


def write_weights(directory):
    (directory / "model.bin").write_bytes(b"w" * 64)


def test_keeps_the_last_n_and_points_latest_at_the_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in range(1, 5):
        manager.save(step, write_weights, {}, blocking=True)
    manager.close()
    assert [p.name for p in manager.list()] == ["step-00000003", "step-00000004"]
    assert manager.latest().name == "step-00000004"


def test_kill_9_while_pruning_leaves_no_half_deleted_checkpoint(tmp_path):
    """The process dies inside the delete of the oldest checkpoint; the next run must carry on."""
    script = textwrap.dedent(
        f"""
        import os, shutil, signal
        import align.checkpoint as checkpoint
        from align.checkpoint import CheckpointManager

        def write(directory):
            (directory / "model.bin").write_bytes(b"w" * 64)

        manager = CheckpointManager({str(tmp_path)!r}, keep=1)
        manager.save(1, write, {{}}, blocking=True)
        real_rmtree = shutil.rmtree

        def dying_rmtree(path, ignore_errors=False):
            if os.path.isdir(path) and not str(path).endswith("step-00000002.tmp"):
                for name in sorted(os.listdir(path)):
                    os.remove(os.path.join(path, name))  # the metadata goes first: worst case
                    os.kill(os.getpid(), signal.SIGKILL)
            real_rmtree(path, ignore_errors=ignore_errors)

        checkpoint.shutil.rmtree = dying_rmtree
        manager.save(2, write, {{}}, blocking=True)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    manager = CheckpointManager(tmp_path, keep=1)
    assert [p.name for p in manager.list()] == ["step-00000002"]
    assert (manager.latest() / META).is_file()
    manager.save(3, write_weights, {}, blocking=True)
    manager.close()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["step-00000003"]
