"""The numbers the tables print, against values computed by hand.

Accuracy (``infbench.metrics``) on hand-built logits and labels, ties and the last partial
batch included; the timing harness (``infbench.timing``) with a fake session on a
controlled clock, so that images/s, the median, the spread and where the clock runs are
exact.
"""

import math
import threading

import numpy as np
import pytest

from infbench import metrics, timing
from infbench.runtimes.base import Session, SessionSpec

SPEC = SessionSpec("fake", "m", "resnet50", "fp32", 4, "cpu", "none", 2)


# --- accuracy ---------------------------------------------------------------------------


def test_score_counts_top1_top5_and_mismatches_against_the_reference():
    # 7 images: top-1 right for 2, above the label for 1, below it for 4; label in the
    # top-5 of 3. Counts chosen so that no other comparison gives the same numbers.
    labels = np.array([10, 20, 30, 40, 50, 60, 70])
    top5 = np.array([
        [10, 11, 12, 13, 14],  # top-1 right
        [20, 30, 31, 32, 33],  # top-1 right
        [99, 30, 97, 96, 95],  # in the top-5 only
        [1, 41, 42, 43, 44],   # not in the top-5
        [2, 3, 4, 5, 6],
        [3, 61, 62, 63, 64],
        [4, 71, 72, 73, 74],
    ])
    # reference top-1: the same for 1 image, below ours for 2, above ours for 4
    reference = np.zeros((7, 5), dtype=int)
    reference[:, 0] = [10, 5, 50, 5, 9, 7, 8]
    logits = np.array([[1.0, 0.0], [0.0, 1.0]])
    ref_logits = np.array([[1.0, 0.0], [1.0, 1.0]])
    got = metrics.score(top5, labels, logits, (reference, ref_logits))
    assert got["images"] == 7 and got["classes"] == 7
    assert got["top1"] == pytest.approx(2 / 7)
    assert got["top5"] == pytest.approx(3 / 7)
    assert got["distinct_predictions"] == 7
    assert got["mismatches"] == 6
    # cosines 1 and 1/sqrt(2); relative error |(0,0),(-1,0)| / |(1,0),(1,1)| = 1/sqrt(3)
    assert got["logit_images"] == 2
    assert got["cosine"] == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert got["rel_error"] == pytest.approx(1 / math.sqrt(3))


def test_score_without_reference_has_no_comparison():
    got = metrics.score(np.array([[0, 1, 2, 3, 4]]), np.array([4]), np.zeros((1, 5)), None)
    assert (got["top1"], got["top5"], got["mismatches"], got["cosine"], got["rel_error"]) == (0.0, 1.0, None, None, None)
    assert got["logit_images"] == 0
    assert got["nonfinite_images"] == 0  # no flags given: every logit finite


def test_distinct_predictions_counts_top1_classes():
    top5 = np.array([[1, 0, 0, 0, 5], [1, 0, 0, 0, 6], [2, 0, 0, 0, 7]])
    assert metrics.score(top5, np.zeros(3, dtype=int), np.zeros((0, 0)), None)["distinct_predictions"] == 2


def test_score_compares_only_the_logits_both_cells_kept():
    top5 = np.zeros((3, 5), dtype=int)
    logits = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0]])
    ref_logits = np.array([[3.0, 4.0], [0.0, 1.0]])  # the reference kept two
    got = metrics.score(top5, np.zeros(3, dtype=int), logits, (top5, ref_logits))
    assert got["logit_images"] == 2
    assert got["cosine"] == pytest.approx(0.5)  # 1 and 0
    assert got["rel_error"] == pytest.approx(math.sqrt(2) / math.sqrt(26))


class LookupSession(Session):
    """Logits of an image are a fixed row chosen by its first pixel (an image id)."""

    def __init__(self, table):
        super().__init__(SPEC)
        self.table = table
        self.staged = []

    def stage(self, images):
        self.staged.append(images.shape)
        return images

    def run(self, staged):
        return self.table[staged[:, 0, 0, 0].astype(int)]

    def sync(self, output):
        pass

    def logits(self, output):
        return output


def images_with_ids(n):
    x = np.zeros((n, 2, 2, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def test_evaluate_ranks_ties_by_class_index_and_pads_the_last_batch():
    classes = 1000
    rng = np.random.default_rng(0)
    table = rng.permutation(np.arange(10 * classes, dtype=np.float32)).reshape(10, classes)
    table[3] = 1.0
    table[3, [900, 10, 500, 20, 700, 300]] = 5.0  # a six-way tie for first place
    session = LookupSession(table)
    top5, kept, nonfinite = metrics.evaluate(session, images_with_ids(10), batch_size=3, keep_logits=5)
    assert session.staged == [(3, 2, 2, 3)] * 4  # 3 + 3 + 3 + 1 padded to 3
    assert top5.shape == (10, 5)
    assert list(top5[3]) == [10, 20, 300, 500, 700]  # ties: the lower class first
    for i in range(10):
        if i != 3:
            assert list(top5[i]) == list(np.argsort(-table[i])[:5])
    np.testing.assert_array_equal(kept, table[:5])  # 3 from the first batch, 2 from the second
    assert not nonfinite.any()


def test_evaluate_lets_go_of_each_batchs_rows_once_used(monkeypatch):
    """The accuracy pass releases exactly the cache rows of each batch after it ran (a pass
    over a 13 GB cache would otherwise end with all of it resident), the last partial one too."""
    released = []
    monkeypatch.setattr(metrics, "release_rows", lambda cache, start, stop: released.append((start, stop)))
    table = np.arange(10 * 1000, dtype=np.float32).reshape(10, 1000)
    metrics.evaluate(LookupSession(table), images_with_ids(10), batch_size=3, keep_logits=0)
    assert released == [(0, 3), (3, 6), (6, 9), (9, 10)]


def test_evaluate_pads_with_copies_of_the_last_image():
    table = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    session = LookupSession(table)
    top5, _, _ = metrics.evaluate(session, images_with_ids(6), batch_size=4, keep_logits=6)
    assert session.staged == [(4, 2, 2, 3)] * 2  # 4 + 2 padded with two copies of image 5
    assert top5.shape == (6, 5) and (top5[:, 0] == 7).all()


def test_evaluate_keeps_no_logits_when_asked_for_none():
    table = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    top5, kept, _ = metrics.evaluate(LookupSession(table), images_with_ids(4), batch_size=4, keep_logits=0)
    assert kept.shape == (0, 0) and list(top5[0]) == [5, 4, 3, 2, 1]


def test_evaluate_flags_each_image_with_a_non_finite_logit():
    table = np.arange(7 * 6, dtype=np.float32).reshape(7, 6)
    table[1, 2] = np.nan
    table[4, 0] = np.inf
    table[6, 5] = -np.inf  # the last image: the last batch is padded with copies of it
    _, _, nonfinite = metrics.evaluate(LookupSession(table), images_with_ids(7), batch_size=4, keep_logits=7)
    assert list(nonfinite) == [False, True, False, False, True, False, True]


def test_score_counts_non_finite_images_and_leaves_out_the_agreement():
    top5 = np.zeros((3, 5), dtype=int)
    finite = np.ones((3, 2))
    broken = np.array([[1.0, np.nan], [1.0, 1.0], [1.0, 1.0]])
    flags = np.array([True, False, False])
    got = metrics.score(top5, np.zeros(3, dtype=int), broken, (top5, finite), flags)
    assert (got["nonfinite_images"], got["mismatches"], got["cosine"], got["rel_error"]) == (1, 0, None, None)
    # a reference with non-finite logits spoils the comparison too
    got = metrics.score(top5, np.zeros(3, dtype=int), finite, (top5, broken), np.zeros(3, dtype=bool))
    assert (got["nonfinite_images"], got["cosine"], got["rel_error"]) == (0, None, None)
    assert metrics.score(top5, np.zeros(3, dtype=int), finite, (top5, finite))["cosine"] == pytest.approx(1.0)


# --- timing -----------------------------------------------------------------------------


class Clock:
    def __init__(self, start=0.0):
        self.now = start

    def perf_counter(self):
        return self.now


class TimedSession(Session):
    """Each call advances the clock by a known amount and is logged."""

    RUN_SECONDS = (1.0, 3.0)  # staged batch 0, staged batch 1

    def __init__(self, clock, sync_seconds):
        super().__init__(SPEC)
        self.clock = clock
        self.sync_seconds = list(sync_seconds)
        self.log = []

    def stage(self, images):
        self.clock.now += 0.5  # staging must stay outside every window
        self.log.append("stage")
        return len([e for e in self.log if e == "stage"]) - 1

    def run(self, staged):
        self.clock.now += self.RUN_SECONDS[staged]
        self.log.append(f"run{staged}")
        return staged

    def sync(self, output):
        self.clock.now += self.sync_seconds.pop(0)
        self.log.append("sync")

    def logits(self, output):
        raise AssertionError("the harness never reads logits")


def test_harness_arithmetic_on_a_controlled_clock(monkeypatch):
    clock = Clock(start=3.0)  # not 0 (a difference of readings must not equal their sum), nor large (nor their remainder)
    monkeypatch.setattr(timing, "time", clock)
    # the warm-up sync takes 0.5 s; the windows' syncs 1.001, 0 and 12 s
    session = TimedSession(clock, [0.5, 1.001, 0.0, 12.0])
    batches = [np.zeros((5, 2, 2, 3), np.uint8)] * 2
    got = timing.measure(session, batches, warmup_batches=5, timed_batches=4, windows=3)

    # each window runs staged batches 0,1,0,1 (8 s) and then its sync
    assert got["window_seconds"] == pytest.approx([9.001, 8.0, 20.0])
    assert got["window_images_per_s"] == pytest.approx([20 / 9.001, 2.5, 1.0])  # 4 x 5 images
    assert got["images_per_s"] == pytest.approx(20 / 9.001)  # the median window
    assert got["spread"] == pytest.approx((2.5 - 1.0) / (20 / 9.001))
    assert got["ms_per_batch"] == pytest.approx(2250.25)  # 9.001 s / 4 batches
    assert (got["batch_size"], got["staged_batches"], got["warmup_batches"]) == (5, 2, 5)
    assert (got["timed_batches"], got["windows"]) == (4, 3)
    # outside the windows: 2 stagings of 0.5 s; warm-up runs 0,1,0,1,0 (9 s) and a 0.5 s sync
    assert (got["staging_seconds"], got["warmup_seconds"]) == pytest.approx((1.0, 9.5))
    # staging first, then warm-up with its own sync, then one sync per window
    assert session.log == (
        ["stage", "stage", "run0", "run1", "run0", "run1", "run0", "sync"]
        + ["run0", "run1", "run0", "run1", "sync"] * 3
    )


def test_harness_without_warmup_does_not_sync_before_timing(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timing, "time", clock)
    session = TimedSession(clock, [0.0])
    got = timing.measure(session, [np.zeros((2, 2, 2, 3), np.uint8)], warmup_batches=0, timed_batches=3, windows=1)
    assert session.log == ["stage", "run0", "run0", "run0", "sync"]
    assert got["images_per_s"] == pytest.approx(6 / 3.0)
    assert got["spread"] == 0.0


def test_phases_account_for_every_second_of_a_step(monkeypatch):
    from infbench import provenance

    clock = Clock()
    clock.now = 100.0
    monkeypatch.setenv("INFBENCH_LAUNCHED", "98.5")  # the launcher started the process 1.5 s earlier
    phases = provenance.Phases(100.0, clock=clock.perf_counter)
    clock.now = 103.0
    phases.mark("imports")
    clock.now = 110.0
    phases.mark("measure")
    phases.split("measure", {"timed_windows": 4.0, "warmup": 1.0})
    clock.now = 110.25
    phases.mark("close")
    assert phases.record() == {"start_up": 1.5, "imports": 3.0, "timed_windows": 4.0, "warmup": 1.0,
                               "measure": 2.0, "close": 0.25, "total_in_script": 10.25}
    monkeypatch.setenv("INFBENCH_LAUNCHED", "%N")  # a date without nanoseconds
    assert provenance.Phases(1.0).record()["start_up"] is None


def test_the_probe_reads_the_gpu_just_outside_the_timed_windows(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timing, "time", clock)
    session = TimedSession(clock, [0.0, 0.0, 0.0, 0.0])

    def probe():
        session.log.append("probe")
        clock.now += 100.0  # a slow reading must not count against any window
        return {"sm_mhz": len(session.log)}

    got = timing.measure(session, [np.zeros((2, 2, 2, 3), np.uint8)], warmup_batches=1, timed_batches=2, windows=2,
                         probe=probe)
    assert session.log == ["stage", "run0", "sync", "probe", "run0", "run0", "sync", "run0", "run0", "sync", "probe"]
    assert got["window_seconds"] == pytest.approx([2.0, 2.0])
    assert got["probe"] == {"before": {"sm_mhz": 4}, "after": {"sm_mhz": 11}}
    assert timing.measure(session, [np.zeros((2, 2, 2, 3), np.uint8)], 0, 1, 1)["probe"] is None


def test_a_clock_that_fell_more_than_ten_percent_while_timed_is_named():
    from infbench.gpu import clock_drop

    before = {"sm_mhz": 1980.0, "temperature_c": 41.0}  # a fall of more than 10 %: below 1782 MHz
    assert clock_drop(before, {"sm_mhz": 1700.0, "temperature_c": 83.0}) == "SM clock 1980 -> 1700 MHz while timed, 41 -> 83 C"
    assert clock_drop(before, {"sm_mhz": 1781.0}) == "SM clock 1980 -> 1781 MHz while timed"
    assert clock_drop(before, {"sm_mhz": 1783.0, "temperature_c": 50.0}) is None
    assert clock_drop(before, {"sm_mhz": 2100.0}) is None
    assert clock_drop(None, {"sm_mhz": 100.0}) is None and clock_drop(before, {"sm_mhz": None}) is None


def test_progress_lines_say_how_far_and_how_long_is_left():
    import io

    from infbench.progress import Progress

    clock, out = Clock(), io.StringIO()
    progress = Progress("evaluate torch resnet50 fp32", 50_000, every=10.0, clock=clock.perf_counter, stream=out)
    clock.now = 5.0
    progress.update(2_000)  # before the first 10 s: nothing
    clock.now = 12.0
    progress.update(4_800)  # 400 images/s, 45,200 left: 113 s
    clock.now = 15.0
    progress.update(6_000)  # 3 s since the last line: nothing
    clock.now = 125.0
    progress.update(50_000)  # done: the end line comes from finish()
    progress.finish()
    assert out.getvalue().splitlines() == [
        "evaluate torch resnet50 fp32: 4,800 of 50,000 images (400.0 images/s, about 1 min 53 s left)",
        "evaluate torch resnet50 fp32: 50,000 of 50,000 images (400.0 images/s, 2 min 5 s in all)",
    ]


class Beats:
    """Stands in for a Heartbeat's stop event, so that the test decides when each beat comes:
    ``wait`` (the beat thread's pause between lines) returns False only when the test lets
    one beat through (``beat``), and True once ``set``, as the real event's wait returns at
    its timeout or when set. ``beat`` returns when the thread has printed its line and is
    waiting again, so nothing depends on how fast the thread runs."""

    def __init__(self):
        self.waits = []  # the timeout of each wait
        self._allowed, self._stopped = 0, False
        self._turn = threading.Condition()

    def wait(self, timeout=None):
        with self._turn:
            self.waits.append(timeout)
            self._turn.notify_all()
            self._turn.wait_for(lambda: self._stopped or self._allowed >= len(self.waits))
            return self._stopped

    def set(self):
        with self._turn:
            self._stopped = True
            self._turn.notify_all()

    def beat(self):
        with self._turn:
            assert self._turn.wait_for(lambda: len(self.waits) == self._allowed + 1, timeout=10), "no wait to end"
            self._allowed += 1
            self._turn.notify_all()
            assert self._turn.wait_for(lambda: len(self.waits) == self._allowed + 1, timeout=10), "no next wait"


def test_a_heartbeat_says_how_long_a_step_without_progress_has_run():
    """TensorRT 8.x builds report no progress: a line every `every` seconds, and one at the end.
    The beats and the clock are the test's: each line is the time run until its beat."""
    import io

    from infbench.progress import Heartbeat

    clock, out, beats = Clock(start=1000.0), io.StringIO(), Beats()
    heartbeat = Heartbeat("build fp16 engine, batch 8", every=30.0, clock=clock.perf_counter, stream=out)
    heartbeat._stop = beats  # its pause between lines
    with heartbeat:
        for now in (1065.0, 1130.0):
            clock.now = now
            beats.beat()
        clock.now = 4725.0
    assert out.getvalue().splitlines() == [
        "build fp16 engine, batch 8: running for 1 min 5 s",
        "build fp16 engine, batch 8: running for 2 min 10 s",
        "build fp16 engine, batch 8: 1 h 2 min in all",
    ]
    assert beats.waits == [30.0, 30.0, 30.0]  # `every` seconds before each line, and the one the end cut short


def test_tensorrt_build_progress_from_its_progress_monitor():
    """TensorRT 10+ calls an IProgressMonitor (phase_start, step_complete, phase_finish): each
    top-level phase becomes Progress lines; nested phases stay quiet; the build goes on."""
    import io
    import types

    from infbench.runtimes.tensorrt import build

    class IProgressMonitor:  # TensorRT's base class: the subclass calls its __init__
        def __init__(self):
            self.base_initialised = True

    assert build.progress_monitor(types.SimpleNamespace(), "build") is None  # TensorRT 8.x
    clock, out = Clock(), io.StringIO()
    trt = types.SimpleNamespace(IProgressMonitor=IProgressMonitor)
    monitor = build.progress_monitor(trt, "build int8 engine, batch 50", every=10.0, clock=clock.perf_counter, stream=out)
    assert isinstance(monitor, IProgressMonitor) and monitor.base_initialised
    monitor.phase_start("Building engine", None, 40)
    monitor.phase_start("Tactic timing", "Building engine", 300)
    clock.now = 12.0
    assert monitor.step_complete("Tactic timing", 150) is True  # nested: no line
    assert monitor.step_complete("Building engine", 9) is True  # 10 of 40 in 12 s: 36 s left
    clock.now = 15.0
    monitor.step_complete("Building engine", 11)  # 3 s after the last line: nothing
    monitor.phase_finish("Tactic timing")
    clock.now = 48.0
    monitor.phase_finish("Building engine")  # may come before every step was reported
    assert out.getvalue().splitlines() == [
        "build int8 engine, batch 50: Building engine: 10 of 40 steps (0.8 steps/s, about 36 s left)",
        "build int8 engine, batch 50: Building engine: 40 of 40 steps (0.8 steps/s, 48 s in all)",
    ]


def test_evaluate_reports_its_progress_in_images():
    class Heard:
        def __init__(self):
            self.done = []

        def update(self, done):
            self.done.append(done)

    heard = Heard()
    metrics.evaluate(LookupSession(np.zeros((7, 6), np.float32)), images_with_ids(7), 3, 0, heard)
    assert heard.done == [3, 6, 7]


def test_the_driver_version_comes_from_the_kernel_module_else_nvidia_smi(tmp_path, monkeypatch):
    from infbench import gpu

    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder)\n")
    assert gpu.driver_version(str(proc)) == "580.159.04"
    monkeypatch.setattr(gpu, "query", lambda fields, index=0: {"driver_version": "590.1"})
    assert gpu.driver_version(str(tmp_path / "absent")) == "590.1"
    monkeypatch.setattr(gpu, "query", lambda fields, index=0: None)  # no NVIDIA driver at all
    assert gpu.driver_version(str(tmp_path / "absent")) is None and gpu.name_and_driver() == (None, None)


def test_a_result_says_which_slurm_job_produced_it_and_nothing_outside_slurm(monkeypatch, tmp_path):
    from infbench import provenance

    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"x")
    for name in provenance.SLURM_VARIABLES.values():
        monkeypatch.delenv(name, raising=False)
    block = provenance.result_block({}, "t0", "t1", str(artifact), provenance.Phases(0.0))
    assert "slurm" not in block
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpu")
    monkeypatch.setenv("SLURMD_NODENAME", "node7")
    block = provenance.result_block({}, "t0", "t1", str(artifact), provenance.Phases(0.0))
    assert block["slurm"] == {"job_id": "42", "partition": "gpu", "node": "node7"}
    assert provenance.slurm_job({"SLURM_JOB_PARTITION": "gpu"}) is None  # no job id: not a job
