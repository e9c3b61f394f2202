"""The numbers the tables print, against values computed by hand.

Accuracy (``infbench.metrics``) on hand-built logits and labels, ties and the last partial
batch included; the timing harness (``infbench.timing``) with a fake session on a
controlled clock, so that images/s, the median, the spread and where the clock runs are
exact.
"""

import math

import numpy as np
import pytest

from infbench import metrics, timing
from infbench.runtimes.base import Session, SessionSpec

SPEC = SessionSpec("fake", "m", "resnet50", "fp32", 4, "cpu", "none", 2)


# --- accuracy ---------------------------------------------------------------------------


def test_score_counts_top1_top5_and_mismatches_against_the_reference():
    labels = np.array([1, 2, 3, 4])
    top5 = np.array([
        [1, 9, 8, 7, 6],  # top-1 right
        [9, 2, 8, 7, 6],  # right in top-5 only
        [3, 9, 8, 7, 6],  # top-1 right
        [9, 8, 7, 6, 5],  # wrong
    ])
    reference = np.array([
        [1, 0, 0, 0, 0],  # same top-1
        [2, 0, 0, 0, 0],  # differs (9 vs 2)
        [3, 0, 0, 0, 0],  # same
        [5, 0, 0, 0, 0],  # differs (9 vs 5)
    ])
    logits = np.array([[1.0, 0.0], [0.0, 1.0]])
    ref_logits = np.array([[1.0, 0.0], [1.0, 1.0]])
    got = metrics.score(top5, labels, logits, (reference, ref_logits))
    assert got["images"] == 4
    assert got["top1"] == 0.5
    assert got["top5"] == 0.75
    assert got["distinct_predictions"] == 3  # 1, 9, 3
    assert got["mismatches"] == 2
    # cosines 1 and 1/sqrt(2); relative error |(0,0),(-1,0)| / |(1,0),(1,1)| = 1/sqrt(3)
    assert got["logit_images"] == 2
    assert got["cosine"] == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert got["rel_error"] == pytest.approx(1 / math.sqrt(3))


def test_score_without_reference_has_no_comparison():
    got = metrics.score(np.array([[0, 1, 2, 3, 4]]), np.array([4]), np.zeros((1, 5)), None)
    assert (got["top1"], got["top5"], got["mismatches"], got["cosine"], got["rel_error"]) == (0.0, 1.0, None, None, None)


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
    top5, kept = metrics.evaluate(session, images_with_ids(10), batch_size=4, keep_logits=6)
    assert session.staged == [(4, 2, 2, 3)] * 3  # 4 + 4 + 2 padded to 4
    assert top5.shape == (10, 5)
    assert list(top5[3]) == [10, 20, 300, 500, 700]  # ties: the lower class first
    for i in range(10):
        if i != 3:
            assert list(top5[i]) == list(np.argsort(-table[i])[:5])
    np.testing.assert_array_equal(kept, table[:6])


# --- timing -----------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class TimedSession(Session):
    """Each call advances the clock by a known amount and is logged."""

    RUN_SECONDS = (0.01, 0.03)  # staged batch 0, staged batch 1

    def __init__(self, clock, sync_seconds):
        super().__init__(SPEC)
        self.clock = clock
        self.sync_seconds = list(sync_seconds)
        self.log = []

    def stage(self, images):
        self.clock.now += 100.0  # staging is slow: it must stay outside every window
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
    clock = Clock()
    monkeypatch.setattr(timing, "time", clock)
    # the warm-up sync takes 5 s; the windows' syncs 0.02, 0, 0.12 s
    session = TimedSession(clock, [5.0, 0.02, 0.0, 0.12])
    batches = [np.zeros((5, 2, 2, 3), np.uint8)] * 2
    got = timing.measure(session, batches, warmup_batches=3, timed_batches=4, windows=3)

    # each window runs staged batches 0,1,0,1 (0.08 s) and then its sync
    assert got["window_seconds"] == pytest.approx([0.10, 0.08, 0.20])
    assert got["window_images_per_s"] == pytest.approx([200.0, 250.0, 100.0])  # 4 x 5 images
    assert got["images_per_s"] == pytest.approx(200.0)  # the median window
    assert got["spread"] == pytest.approx((250 - 100) / 200)
    assert got["ms_per_batch"] == pytest.approx(25.0)  # 5 images at 200 images/s
    assert (got["batch_size"], got["staged_batches"], got["warmup_batches"]) == (5, 2, 3)
    assert (got["timed_batches"], got["windows"]) == (4, 3)
    # staging first, then warm-up with its own sync, then one sync per window
    assert session.log == (
        ["stage", "stage", "run0", "run1", "run0", "sync"]
        + ["run0", "run1", "run0", "run1", "sync"] * 3
    )


def test_harness_without_warmup_does_not_sync_before_timing(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timing, "time", clock)
    session = TimedSession(clock, [0.0])
    got = timing.measure(session, [np.zeros((2, 2, 2, 3), np.uint8)], warmup_batches=0, timed_batches=3, windows=1)
    assert session.log == ["stage", "run0", "run0", "run0", "sync"]
    assert got["images_per_s"] == pytest.approx(6 / 0.03)
    assert got["spread"] == 0.0
