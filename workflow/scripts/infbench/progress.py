"""Progress lines for long steps, written to the step's log (stderr), so that `tail -f` on
the log says how far a step is and how long is left:

    evaluate: 12,000 of 50,000 images (410.2 images/s, about 1 min 33 s left)

At most one line every ``every`` seconds, and one at the end. Standard library only.
"""

import sys
import threading
import time


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Progress:
    def __init__(self, what, total, unit="images", every=10.0, clock=time.monotonic, stream=None):
        self.what, self.total, self.unit, self.every = what, int(total), unit, every
        self.clock, self.stream = clock, stream
        self.started = self.last = clock()
        self.done = 0

    def line(self, done):
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        text = f"{self.what}: {done:,} of {self.total:,} {self.unit} ({rate:.1f} {self.unit}/s"
        if done < self.total and rate > 0:
            text += f", about {_duration((self.total - done) / rate)} left"
        elif done >= self.total:
            text += f", {_duration(elapsed)} in all"
        return text + ")"

    def update(self, done):
        """``done`` items are finished; print a line if ``every`` seconds have passed."""
        self.done = done
        now = self.clock()
        if now - self.last >= self.every and done < self.total:
            self.last = now
            print(self.line(done), file=self.stream or sys.stderr, flush=True)

    def finish(self):
        print(self.line(self.done), file=self.stream or sys.stderr, flush=True)


class Heartbeat:
    """For a step that cannot say how far it is (a TensorRT 8.x engine build): from a
    background thread, a line every ``every`` seconds saying how long it has run so far.

        with Heartbeat("build fp16 engine, batch 8"):
            plan = builder.build_serialized_network(network, config)
    """

    def __init__(self, what, every=30.0, clock=time.monotonic, stream=None):
        self.what, self.every, self.clock, self.stream = what, every, clock, stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self._stop.wait(self.every):
            print(
                f"{self.what}: running for {_duration(self.clock() - self.started)}",
                file=self.stream or sys.stderr,
                flush=True,
            )

    def __enter__(self):
        self.started = self.clock()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        elapsed = _duration(self.clock() - self.started)
        print(f"{self.what}: {elapsed} in all", file=self.stream or sys.stderr, flush=True)
        return False
