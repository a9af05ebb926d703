"""The console display of a training run: one compact bar per epoch on a terminal, with the run's ETA.

Piped to a file the display draws nothing (no ``\\r``, backspaces or escape codes); the runner's
one line per epoch is then the whole record.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping
from typing import TextIO

# Redrawing more often than this only costs time: a person cannot read faster.
_REDRAW_S = 0.1
_BAR_WIDTH = 20


def format_duration(seconds: float) -> str:
    """``seconds`` as ``42s``, ``3m05s`` or ``2h07m``.

    Args:
        seconds: a duration, rounded to whole seconds.
    """
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class RunProgress:
    """Progress of the epochs of one run: a redrawn bar on a terminal and the run's time left.

    Args:
        epochs: the run's last epoch (epochs count from 1).
        steps: training steps per epoch.
        stream: where the bar goes; ``sys.stdout`` by default.
        bar: draw the bar (``--progress``); it is drawn only when ``stream`` is a terminal.
    """

    def __init__(self, epochs: int, steps: int, stream: TextIO | None = None, bar: bool = True):
        self.epochs = epochs
        self.steps = steps
        self.stream = sys.stdout if stream is None else stream
        self.live = bar and self.stream.isatty()
        self._epoch_times: list[float] = []
        self._epoch = self._step = 0
        self._in_epoch = False
        self._started = self._drawn = self._first_step_s = 0.0
        self._bar_text = self._metrics_text = ""

    def begin_epoch(self, epoch: int) -> None:
        """Start timing (and drawing) ``epoch`` (from 1)."""
        self._epoch, self._step, self._in_epoch = epoch, 0, True
        self._started = time.perf_counter()
        self._bar_text, self._metrics_text = self._bar(0), ""
        self._draw(force=True)

    def step(self, step: int, logs: Mapping[str, float]) -> None:
        """Training step ``step`` (from 1) of the epoch is done; ``logs`` may hold ``loss`` and ``acc_ensemble``."""
        if step == 1:
            # The first step includes tracing; the steps after it tell the speed.
            self._first_step_s = time.perf_counter() - self._started
        self._step = step
        self._bar_text = self._bar(step)
        self._metrics_text = f"  loss {logs['loss']:.4f}" if "loss" in logs else ""
        if "acc_ensemble" in logs:
            self._metrics_text += f"  train top-1 {100 * logs['acc_ensemble']:.1f}%"
        self._draw(force=step == self.steps)

    def testing(self, step: int) -> None:
        """Evaluation step ``step`` (from 1) of the epoch is done."""
        self._draw(suffix=f"  testing batch {step}")

    def end_epoch(self) -> None:
        """The epoch is over: its time counts towards the ETA and the bar is cleared for the epoch's line."""
        self._epoch_times.append(time.perf_counter() - self._started)
        self._in_epoch = False
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def seconds_left(self) -> float | None:
        """Time left of the run: from the mean epoch time so far (the step time in a first epoch); None if unknown."""
        after = self.epochs - self._epoch
        elapsed = time.perf_counter() - self._started
        if self._epoch_times:
            mean = sum(self._epoch_times) / len(self._epoch_times)
            return (max(mean - elapsed, 0.0) if self._in_epoch else 0.0) + after * mean
        if self._in_epoch and self._step >= 2:
            per_step = (elapsed - self._first_step_s) / (self._step - 1)
            return per_step * (self.steps - self._step + after * self.steps)
        return None

    def _bar(self, step: int) -> str:
        filled = round(_BAR_WIDTH * step / self.steps) if self.steps else 0
        return f"[{'=' * filled}{' ' * (_BAR_WIDTH - filled)}] {step:>{len(str(self.steps))}}/{self.steps}"

    def _draw(self, suffix: str = "", force: bool = False) -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if not force and now - self._drawn < _REDRAW_S:
            return
        self._drawn = now
        left = self.seconds_left()
        eta = "" if left is None else f"  ETA {format_duration(left)}"
        line = f"epoch {self._epoch}/{self.epochs} {self._bar_text}{eta}{self._metrics_text}{suffix}"
        # A line wider than the terminal wraps, and \r then redraws only its last part; the end is cut, so
        # the ETA goes before the metrics.
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r" + line[:width] + "\x1b[K")
        self.stream.flush()
