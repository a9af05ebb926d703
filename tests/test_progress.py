"""The console display of a run: a redrawn bar with `epoch k/N` and the run's ETA on a terminal, nothing in a file."""

import io

import pytest

from mfef_keras.training import progress
from mfef_keras.training.progress import RunProgress, format_duration


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    return now


def _epoch(display, epoch, clock, step_s=1.0):
    display.begin_epoch(epoch)
    for step in range(1, display.steps + 1):
        clock[0] += step_s
        display.step(step, {"loss": 2.0 / step, "acc_ensemble": 0.25 * step})
    display.testing(1)
    clock[0] += step_s
    display.end_epoch()


def test_terminal_bar_shows_the_epoch_of_the_run_its_metrics_and_the_run_eta(clock):
    terminal = FakeTerminal()
    display = RunProgress(epochs=5, steps=4, stream=terminal)
    _epoch(display, 1, clock)  # 4 steps and testing: 5 s
    terminal.truncate(0)
    terminal.seek(0)

    display.begin_epoch(2)
    clock[0] += 1.0
    display.step(1, {"loss": 1.234, "acc_ensemble": 0.5})
    drawn = terminal.getvalue()
    # Redrawn in place: \r and erase-to-end-of-line, never a new line.
    assert drawn.startswith("\r") and "\n" not in drawn
    last = drawn.split("\r")[-1]
    assert last.startswith("epoch 2/5 [=====") and " 1/4" in last
    assert "loss 1.2340" in last and "train top-1 50.0%" in last
    # 4 s left of this epoch at the 5 s mean, then 3 more epochs.
    assert "ETA 19s" in last

    clock[0] += 4.0
    display.end_epoch()
    assert terminal.getvalue().endswith("\r\x1b[K")
    assert display.seconds_left() == pytest.approx(3 * 5.0)


def test_first_epoch_eta_comes_from_the_step_time_after_the_traced_first_step(clock):
    terminal = FakeTerminal()
    display = RunProgress(epochs=2, steps=10, stream=terminal)
    display.begin_epoch(1)
    assert display.seconds_left() is None
    clock[0] += 30.0  # tracing
    display.step(1, {})
    clock[0] += 1.0
    display.step(2, {})
    assert display.seconds_left() == pytest.approx(8 * 1.0 + 10 * 1.0)
    assert terminal.getvalue().split("\r")[-1] == "epoch 1/2 [====                ]  2/10  ETA 18s\x1b[K"


def test_a_file_or_no_progress_gets_nothing_but_the_eta_is_still_kept(clock):
    for stream, bar in ((io.StringIO(), True), (FakeTerminal(), False)):
        display = RunProgress(epochs=3, steps=2, stream=stream, bar=bar)
        _epoch(display, 1, clock)
        assert stream.getvalue() == "" and not display.live
        assert display.seconds_left() == pytest.approx(2 * 3.0)


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (59, "59s"), (61, "1m01s"), (3600 * 2 + 7 * 60 + 20, "2h07m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
