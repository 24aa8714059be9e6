"""Nothing lost at scale: one run per output directory (a lock naming the running one), and a full
disk that stops a run with one line while the previous checkpoint stays intact."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamight import cli
from dynamight.data.files import atomic_path
from dynamight.errors import InputError, OutputDirectoryBusy
from dynamight.lock import LOCK_NAME, output_lock
from dynamight.runtime import EXIT_FAILURE, EXIT_SUCCESS, format_error
from dynamight.training.checkpoint import load_checkpoint, save_checkpoint
from relion_external import reconstruct as relion_reconstruct

HOLD = "import sys, time; from dynamight.lock import output_lock\nwith output_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True); sys.stdin.read()"


@pytest.fixture
def held(tmp_path):
    """A directory whose lock another process holds; yields (directory, that process)."""
    directory = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield directory, holder
    holder.stdin.close()
    holder.wait(timeout=30)


def test_a_second_run_is_refused_naming_the_first(held, tiny_project, caplog):
    directory, holder = held
    (directory / "job.star").write_text("data_job\n")  # as under RELION: the exit files there are the running job's
    argv = ["reconstruct", "--refinement-star-file", str(tiny_project / "particles.star"),
            "--output-directory", str(directory), "--gpu-id", "-1"]
    with caplog.at_level(logging.ERROR):
        assert cli.main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert f"process {holder.pid}" in errors[0] and "another dynamight run" in errors[0] and str(directory) in errors[0]
    assert not list(directory.glob("RELION_JOB_EXIT_*")) and not (directory / "config.json").exists()

    holder.stdin.close()
    holder.wait(timeout=30)
    assert not (directory / LOCK_NAME).exists()  # released at exit
    assert cli.main(argv) == 0 and (directory / EXIT_SUCCESS).is_file()
    assert not (directory / LOCK_NAME).exists()


def test_relion_external_job_in_a_busy_directory_is_refused(held, tiny_project, monkeypatch, capsys):
    directory, holder = held
    monkeypatch.chdir(directory.parent)
    argv = ["--o", "run/", "--in_parts", str(tiny_project / "particles.star"), "--gpu_id", "-1", "--j", "1",
            "--pipeline_control", "run/"]
    assert relion_reconstruct.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ERROR: run: another dynamight run") and f"process {holder.pid}" in err[-1]
    assert not list(directory.glob("RELION_JOB_EXIT_*"))  # the running job's status is left alone


def test_refused_run_with_its_own_control_directory_fails_there(held, tmp_path):
    directory, _ = held
    control = tmp_path / "Other" / "job002"
    from dynamight.runtime import JobControl

    with pytest.raises(OutputDirectoryBusy):
        with JobControl(control).lifecycle(), output_lock(directory):
            pass
    assert (control / EXIT_FAILURE).is_file() and not list(directory.glob("RELION_JOB_EXIT_*"))


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    (tmp_path / LOCK_NAME).write_text("host gone, process 4194999, started 2020-01-01T00:00:00: dynamight ...")
    with caplog.at_level(logging.WARNING), output_lock(tmp_path):
        assert f"process {os.getpid()}" in (tmp_path / LOCK_NAME).read_text()
    assert "taking over the lock" in caplog.text and "process 4194999" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_only_rank_0_takes_the_lock(held, monkeypatch):
    directory, _ = held
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with output_lock(directory):  # no error: rank 0 holds the lock for the run
        pass
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(OutputDirectoryBusy):
        with output_lock(directory):
            pass


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint_final.pth"
    save_checkpoint(target, {"epoch": 1, "weights": torch.arange(5.0)})
    monkeypatch.setattr(torch, "save", _enospc)
    with pytest.raises(InputError) as info:
        save_checkpoint(target, {"epoch": 2, "weights": torch.zeros(5)})
    message = str(info.value)
    assert message.startswith(f"{target}: cannot write it: No space left on device") and "\n" not in message
    assert load_checkpoint(target)["epoch"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_full_disk_error_that_escaped_is_one_line():
    line = format_error(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/data/run/events.out"))
    assert line.startswith("ERROR: /data/run/events.out: cannot write it: Disk quota exceeded") and "\n" not in line


def test_training_stops_with_one_line_when_a_checkpoint_does_not_fit(tiny_project, tmp_path, monkeypatch, caplog):
    from dynamight.training import checkpoint

    real_save = checkpoint.torch.save
    out = tmp_path / "run"

    def save(obj, file):  # epoch 0's checkpoint fits, then the disk is full
        if obj["epoch"] >= 1:
            file.write(b"partial")
            _enospc()
        real_save(obj, file)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    argv = ["optimize-deformations", "--refinement-star-file", str(tiny_project / "particles.star"),
            "--initial-model", str(tiny_project / "map.mrc"), "--output-directory", str(out), "--n-gaussians", "60",
            "--n-latent-dimensions", "2", "--n-epochs", "2", "--batch-size", "64", "--latent-refinement-steps", "0",
            "--gpu-id", "-1", "--pipeline-control", str(out)]
    with caplog.at_level(logging.ERROR):
        assert cli.main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "checkpoints/001.pth: cannot write it: No space left on device" in errors[0]
    checkpoints = out / "forward_deformations" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["000.pth"]  # no temporary file left
    assert load_checkpoint(checkpoints / "000.pth")["epoch"] == 0
    assert (out / EXIT_FAILURE).is_file() and not (out / LOCK_NAME).exists()


@pytest.fixture
def small_filesystem(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip() or result.returncode}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_filesystem(small_filesystem):
    target = small_filesystem / "001.pth"
    save_checkpoint(target, {"epoch": 1, "weights": torch.zeros(1000)})
    with pytest.raises(InputError, match="001.pth: cannot write it: No space left on device"):
        save_checkpoint(target, {"epoch": 2, "weights": torch.zeros(1_000_000)})  # 4 MB
    assert load_checkpoint(target)["epoch"] == 1
    with pytest.raises(InputError, match="big.npy: cannot write it"):  # numpy reports no errno
        with atomic_path(small_filesystem / "big.npy") as tmp:
            np.zeros(1_000_000).tofile(tmp)
    assert sorted(p.name for p in small_filesystem.iterdir()) == ["001.pth"]
