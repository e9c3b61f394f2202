"""Atomic writes: the user's umask, nothing half-written, nothing left after a killed step."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infbench import files

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        files.atomic_write(tmp_path / "a.json", "{}\n")
        with files.atomic_output(tmp_path / "folder") as tmp:
            os.mkdir(tmp)
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "folder").stat().st_mode & 0o777 == mode | (0o111 & ~umask)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "result.json"
    files.atomic_write(out, "old\n")
    with pytest.raises(RuntimeError):
        with files.atomic_output(out) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("the step failed")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_folder_output_is_replaced_as_a_whole(tmp_path):
    out = tmp_path / "images"
    for names in (["a.jpg", "b.jpg"], ["c.jpg"]):
        with files.atomic_output(out) as tmp:
            os.mkdir(tmp)
            for name in names:
                Path(tmp, name).write_bytes(b"x")
    assert sorted(p.name for p in out.iterdir()) == ["c.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


WRITER = """
import sys, time
sys.path.insert(0, {scripts!r})
from infbench import files
with files.atomic_output({out!r}) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"partial"); f.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def test_a_step_killed_mid_write_then_rerun_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "cache.npy"
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(scripts=str(SCRIPTS), out=str(out))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs
    proc.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache.npy.tmp"]  # what a kill leaves
    files.atomic_write(out, b"complete")  # the rerun
    assert out.read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npy"]


def test_sha256_of_a_file_read_in_chunks(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert files.sha256(path, chunk=1) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


LAUNCH = SCRIPTS / "launch.sh"


def test_the_launcher_shows_a_steps_notes_on_success_and_only_its_error_on_failure(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(
        "import sys\nprint('progress 1 of 2')\nprint('infbench note: pin the sha256 abc')\n"
        "if sys.argv[1] == 'fail':\n    print('infbench: the step failed; fix it', file=sys.stderr)\n    sys.exit(1)\n"
    )
    for how, code in (("ok", 0), ("fail", 1)):
        log = tmp_path / f"{how}.log"
        proc = subprocess.run(["bash", str(LAUNCH), sys.executable, "gone", str(script), str(log), how],
                              capture_output=True, text=True)
        assert proc.returncode == code
        assert "progress 1 of 2" in log.read_text() and proc.stdout == ""
        expected = "infbench note: pin the sha256 abc\n" if code == 0 else "infbench: the step failed; fix it\n"
        assert proc.stderr == expected


EVALUATE = """
import sys
sys.path.insert(0, {scripts!r})
import numpy as np
from infbench import metrics
from infbench.runtimes.base import Session, SessionSpec

class Fake(Session):
    def stage(self, images): return images
    def run(self, staged): return np.ones((staged.shape[0], 10), np.float32) * staged.reshape(len(staged), -1).mean()
    def sync(self, output): pass
    def logits(self, output): return output

if {control!r}:
    metrics.release_rows = lambda *args: None  # the control: pages are never let go
cache = np.load({path!r}, mmap_mode="r")
def peak_kib():  # this process's own peak (ru_maxrss would include the forking parent's)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])

before = peak_kib()
metrics.evaluate(Fake(SessionSpec("fake", "m", "resnet50", "fp32", 50, "cpu", "x", 64)), cache, 50, 0)
print((peak_kib() - before) // 1024)
"""


def test_a_pass_over_a_cache_keeps_about_one_batch_resident(tmp_path):
    import numpy as np

    path = tmp_path / "cache.npy"
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(8000, 64, 64, 3))  # 94 MiB
    cache[:] = 7
    cache.flush()
    del cache
    growth = {}
    for control in (False, True):
        proc = subprocess.run([sys.executable, "-c", EVALUATE.format(scripts=str(SCRIPTS), path=str(path), control=control)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        growth[control] = int(proc.stdout)
    assert growth[True] > 64, f"the control should hold most of the 94 MiB cache resident: {growth}"
    assert growth[False] < 24, f"peak RSS grew by {growth[False]} MiB over a 94 MiB cache"


def test_publish_gives_a_kept_temporary_file_the_users_permissions(tmp_path):
    part = tmp_path / ".x.pth.part"
    part.write_bytes(b"done")
    os.chmod(part, 0o600)  # as a download opened it
    old = os.umask(0o002)
    try:
        files.publish(part, tmp_path / "x.pth")
    finally:
        os.umask(old)
    assert (tmp_path / "x.pth").stat().st_mode & 0o777 == 0o664 and not part.exists()


def test_an_interrupt_that_python_swallowed_still_publishes_nothing(tmp_path):
    """Ctrl-C landing in an at-fork callback (a worker pool starting) is swallowed by Python;
    the step goes on, but its output is not put in place: the interrupt is raised again."""
    from infbench import errors

    try:
        errors._interrupted(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass  # swallowed, as an at-fork callback does
    try:
        with pytest.raises(KeyboardInterrupt):
            with files.atomic_output(tmp_path / "cache.npy") as tmp:
                Path(tmp).write_bytes(b"all rows written")
        assert list(tmp_path.iterdir()) == []
    finally:
        errors.INTERRUPTED.clear()
