"""What the PNG figures show: read back from the Matplotlib figures before they are saved."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from mfef_keras.training.plots import (  # noqa: E402
    confusion_matrix_figure,
    model_color,
    plot_confusion_matrix,
    plot_study,
    plot_training_curves,
    study_figure,
    training_curves_figure,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history(epochs: int) -> list[dict]:
    """Rows as a 2-student MFEF run logs them, epochs numbered from 1."""
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "loss": 3 / epoch, "val_loss": 3.5 / epoch, "test_loss": 3.6 / epoch, "lr": 0.1}
        row["kd_weight"] = 1.0
        for model in ("s0", "s1", "fused"):
            row.update({f"ce_{model}": 1 / epoch, f"kd_{model}": 0.1 / epoch, f"val_acc_{model}": 0.5 + epoch / 100})
            row[f"test_acc_{model}"] = 0.48 + epoch / 100
        row["val_acc_ensemble"] = 0.55 + epoch / 100
        row["test_acc_ensemble"] = 0.53 + epoch / 100
        rows.append(row)
    return rows


def _line(axis, label: str):
    [line] = [line for line in axis.get_lines() if line.get_label() == label]
    return line


def _visible_tick_labels(fig, axis, which: str = "x") -> list:
    fig.canvas.draw()
    low, high = sorted(axis.get_xlim() if which == "x" else axis.get_ylim())
    ticks = axis.get_xticklabels() if which == "x" else axis.get_yticklabels()
    return [label for label in ticks if low <= label.get_position()[0 if which == "x" else 1] <= high]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_training_curves_show_validation_and_test_labelled_panels_and_integer_epochs():
    history = _history(5)
    fig = training_curves_figure(history)
    loss_axis, acc_axis = fig.axes
    assert loss_axis.get_ylabel() and acc_axis.get_ylabel()
    assert list(_line(loss_axis, "total (validation)").get_ydata()) == [row["val_loss"] for row in history]
    assert list(_line(loss_axis, "total (test)").get_ydata()) == [row["test_loss"] for row in history]
    assert list(_line(acc_axis, "s1 (val)").get_ydata()) == [100 * row["val_acc_s1"] for row in history]
    assert list(_line(acc_axis, "s1 (test)").get_ydata()) == [100 * row["test_acc_s1"] for row in history]
    assert [t.get_text() for t in _visible_tick_labels(fig, loss_axis)] == ["1", "2", "3", "4", "5"]
    assert [t.get_text() for t in _visible_tick_labels(fig, acc_axis)] == ["1", "2", "3", "4", "5"]
    assert list(_line(acc_axis, "s0 (val)").get_xdata()) == [1, 2, 3, 4, 5]


def test_training_curves_give_each_model_one_colour_in_both_panels():
    fig = training_curves_figure(_history(5))
    loss_axis, acc_axis = fig.axes
    colours = {}
    for model in ("s0", "s1", "fused"):
        in_loss = {to_hex(_line(loss_axis, f"{model} {term}").get_color()) for term in ("CE", "KD")}
        in_acc = {to_hex(_line(acc_axis, f"{model} ({split})").get_color()) for split in ("val", "test")}
        assert in_loss == in_acc == {to_hex(model_color(model))}
        colours[model] = in_acc.pop()
    colours["ensemble"] = to_hex(_line(acc_axis, "ensemble (val)").get_color())
    assert len(set(colours.values())) == 4


def test_training_curves_legends_stay_off_the_curves():
    fig = training_curves_figure(_history(5))
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    for axis in fig.axes:
        legend = axis.get_legend()
        assert legend is not None and len(legend.get_texts()) == len(axis.get_lines())
        assert not _overlap(legend.get_window_extent(renderer), axis.get_window_extent(renderer))


def test_long_training_curves_have_integer_ticks_within_the_epochs(tmp_path):
    fig = training_curves_figure(_history(200))
    labels = _visible_tick_labels(fig, fig.axes[0])
    assert len(labels) >= 3
    for label in labels:
        assert label.get_text().isdigit() and 1 <= int(label.get_text()) <= 200
    assert plot_training_curves(_history(200), tmp_path / "curves.png").stat().st_size > 10_000


def _confusion(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, (n, n)) + 30 * np.eye(n, dtype=np.int64)


def test_confusion_matrix_title_holds_model_and_accuracy_and_cells_their_counts():
    matrix = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    fig = confusion_matrix_figure(matrix, ["cat", "dog", "eel"], "run-1 (s1) on pets test")
    title = fig.axes[0].get_title()
    assert "run-1 (s1) on pets test" in title and "85.00%" in title and "20 images" in title
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "2", "8", "9"]


def test_normalised_confusion_matrix_rows_sum_to_one(tmp_path):
    matrix = _confusion(10)
    matrix[3] = 0  # a class without test images stays an empty row rather than dividing by zero
    fig = confusion_matrix_figure(matrix, [f"c{i}" for i in range(10)], "m", normalize=True)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    sums = shown.sum(axis=1)
    assert sums[3] == 0 and np.allclose(np.delete(sums, 3), 1.0)
    assert "normalised" in fig.axes[0].get_title()
    assert all(float(t.get_text()) <= 1 for t in fig.axes[0].texts)
    names = [f"c{i}" for i in range(10)]
    assert plot_confusion_matrix(matrix, names, tmp_path / "cm.png", "m", normalize=True).stat().st_size > 10_000


@pytest.mark.parametrize(("classes", "labelled"), [(100, 100), (400, 100)])
def test_many_class_confusion_matrix_has_no_cell_texts_and_readable_labels_apart(classes, labelled):
    names = [f"class_name_{i}" for i in range(classes)]
    fig = confusion_matrix_figure(_confusion(classes), names, "m")
    axis = fig.axes[0]
    assert len(axis.texts) == 0
    renderer = fig.canvas.get_renderer()
    for which in ("x", "y"):
        labels = _visible_tick_labels(fig, axis, which)
        assert len(labels) == labelled
        assert all(label.get_fontsize() >= 6 for label in labels)
        boxes = [label.get_window_extent(renderer) for label in labels]
        assert not any(_overlap(a, b) for a, b in zip(boxes, boxes[1:], strict=False))


def _study_rows() -> list[dict]:
    rows = []
    for variant, models in (
        ("independent", ("students", "s0", "ensemble")),
        ("mfef", ("students", "fused", "ensemble")),
    ):
        for k, model in enumerate(models):
            row = {"variant": variant, "model": model, "test_at_best_mean": 90.0 + k}
            # mfef's students +0.2 ± 0.3 (not significant), fused head +1.5 ± 0.5 (significant), ensemble -0.8 ± 0.6
            diffs = {"students": (0.2, 0.3, False), "fused": (1.5, 0.5, True), "ensemble": (-0.8, 0.6, True)}
            mean, ci95, significant = diffs[model] if variant == "mfef" else (None, None, None)
            paired = {
                "diff_vs_independent_mean": mean,
                "diff_vs_independent_ci95": ci95,
                "diff_vs_independent_significant": significant,
            }
            rows.append(row | {"test_at_best_ci95": 0.5 + k / 10} | paired)
    return rows


def test_study_chart_is_a_dot_plot_with_intervals_and_no_empty_slots(tmp_path):
    setting = "cifar10 · resnet8 · 2 students · 20 epochs · 3 seeds (0, 1, 2)"
    fig = study_figure(_study_rows(), setting)
    axis = fig.axes[0]
    labels = [t.get_text() for t in axis.get_yticklabels()]
    assert labels == [
        "independent · students",
        "independent · ensemble",
        "mfef · students",
        "mfef · fused",
        "mfef · ensemble",
    ]
    assert len(axis.patches) == 0  # no bars: dots with error bars
    points, intervals = {}, {}
    for container in axis.containers:
        dots, _, (xbars,) = container
        for (x, y), segment in zip(dots.get_xydata(), xbars.get_segments(), strict=True):
            points[int(y)] = x
            intervals[int(y)] = (segment[0][0], segment[1][0])
    # every slot has a dot, each at its mean with its interval around it
    assert sorted(points) == list(range(len(labels)))
    assert points[3] == pytest.approx(91.0) and intervals[3] == pytest.approx((90.4, 91.6))
    assert fig.get_suptitle() == setting
    assert "95 % t-interval" in axis.get_xlabel()
    assert plot_study(_study_rows(), tmp_path / "study.png", setting).stat().st_size > 10_000


def test_study_chart_shows_paired_differences_around_zero_with_significant_ones_marked():
    fig = study_figure(_study_rows(), "setting")
    axis, diff_axis = fig.axes
    # same lines as the accuracy panel: mfef's students, fused and ensemble are lines 2, 3 and 4
    assert diff_axis.get_shared_y_axes().joined(axis, diff_axis)
    drawn = {}
    for dots, _, (xbars,) in diff_axis.containers:
        [(x, y)] = dots.get_xydata()
        [segment] = xbars.get_segments()
        drawn[int(y)] = (x, (segment[0][0], segment[1][0]), dots.get_markerfacecolor() != "white")
    assert drawn == {
        2: (0.2, pytest.approx((-0.1, 0.5)), False),
        3: (1.5, pytest.approx((1.0, 2.0)), True),
        4: (-0.8, pytest.approx((-1.4, -0.2)), True),
    }
    labels = sorted(text.get_text() for text in diff_axis.texts)
    assert labels == ["+0.20", "+1.50 *", "-0.80 *"]
    zero = [line for line in diff_axis.get_lines() if list(line.get_xdata()) == [0, 0]]
    assert len(zero) == 1
    low, high = diff_axis.get_xlim()
    assert low < -1.4 and high > 2.0
    assert "independent" in diff_axis.get_title() and "excludes 0" in diff_axis.get_xlabel()


def test_study_chart_without_paired_differences_has_one_panel():
    rows = [dict(row, diff_vs_independent_mean=None) for row in _study_rows()]
    assert len(study_figure(rows, "no baseline").axes) == 1


def test_study_chart_with_one_seed_still_shows_every_dot():
    rows = [dict(row, test_at_best_ci95=None) for row in _study_rows()]
    axis = study_figure(rows, "one seed").axes[0]
    assert sum(len(container[0].get_xdata()) for container in axis.containers) == 5


def test_eval_titles_its_confusion_matrix_with_the_model_and_normalises_on_request(tmp_path, monkeypatch):
    import keras

    from mfef_keras.training import eval_results, evaluation

    inputs = keras.Input((32, 32, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(inputs)))
    model.save(tmp_path / "tiny.keras")
    drawn = []

    def plot(matrix, class_names, path, title, normalize):
        fig = confusion_matrix_figure(matrix, class_names, title, normalize)
        drawn.append((fig.axes[0].get_title(), np.asarray(fig.axes[0].images[0].get_array())))
        return plot_confusion_matrix(matrix, class_names, path, title, normalize)

    monkeypatch.setattr(eval_results, "plot_confusion_matrix", plot)
    source = str(tmp_path / "tiny.keras")
    results = evaluation.evaluate_student(source, "digits", out_dir=str(tmp_path / "eval"), normalize=True)
    [(title, shown)] = drawn
    assert f"tiny.keras on digits test\ntop-1 accuracy {100 * results['top1']:.2f}%" in title
    assert np.allclose(shown.sum(axis=1), 1.0)
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 10_000
    assert np.asarray(results["confusion_matrix"]).sum() == results["examples"]
