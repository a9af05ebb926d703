"""What the benchmarks report: the throughput tables, the GPU check's plan, training report and table.

The measuring itself needs minutes and (for the GPU check) a GPU; these tests feed the reporting code the
results that the measuring parts emit, and check that the figures land in the right cells.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import device_check  # noqa: E402
import train_throughput  # noqa: E402

from mfef_keras.training.run_directory import write_metrics  # noqa: E402


def _timing(img_s: float, rss_mb: float = 1000.0, gflop: float = 0.845) -> dict:
    return dict(img_s=img_s, rss_mb=rss_mb, train_gflop_per_image=gflop, step_s=0.1, first_step_s=1.0, build_s=1.0)


def _cells(markdown_row: str) -> list[str]:
    return [cell.strip() for cell in markdown_row.strip().strip("|").split("|")]


def test_throughput_rows_take_medians_and_divide_by_pytorch_channels_last():
    runs = {
        ("mfef/independent", "float32", "tensorflow"): [_timing(300), _timing(330), _timing(310)],
        ("mfef/independent", "float32", "jax"): [_timing(150, rss_mb=2000)],
        ("mfef/independent", "float32", "torch"): [_timing(200)],
        ("mfef/independent", "float32", "torch-nchw"): [_timing(100)],
        ("mfef/independent", "mixed_bfloat16", "tensorflow"): [_timing(400)],
    }
    rows = train_throughput.summarise(runs, {"float32": 200.0, "mixed_bfloat16": 400.0})
    frameworks = list(train_throughput.FRAMEWORKS)
    table = train_throughput.throughput_table(rows, frameworks).splitlines()
    header = _cells(table[0])
    assert header[-3:-1] == ["TF / torch CL", "JAX / torch CL"]
    fp32 = dict(zip(header, _cells(table[2])))
    assert fp32["TF img/s"] == "310.0"  # the median of three processes
    assert fp32["TF / torch CL"] == "1.55" and fp32["JAX / torch CL"] == "0.75"
    assert fp32["peak RSS MB (TF / JAX / torch CL / torch NCHW)"] == "1000 / 2000 / 1000 / 1000"
    # A precision where PyTorch did not run has no ratio rather than a wrong one.
    bf16 = dict(zip(header, _cells(table[3])))
    assert bf16["precision"] == "mixed_bfloat16" and bf16["TF / torch CL"] == "-" and bf16["JAX img/s"] == "-"


def test_peak_fractions_above_one_hundred_percent_print_as_not_applicable():
    runs = {
        ("ffl/independent", "float32", "tensorflow"): [_timing(300)],  # 300 x 0.845 = 253.5 GFLOP/s
        ("ffl/independent", "float32", "torch"): [_timing(100, gflop=0.9)],
    }
    rows = train_throughput.summarise(runs, {"float32": 200.0})
    table = train_throughput.peak_table(rows, ["tensorflow", "torch"]).splitlines()
    assert _cells(table[2]) == ["ffl/independent", "float32", "0.845", "n/a", "45.0"]
    # Counts more than 1 % apart point at a graph that differs between the frameworks.
    (note,) = train_throughput.flop_count_notes(rows)
    assert "TF 0.8450" in note and "torch CL 0.9000" in note


def test_unknown_frameworks_and_precisions_are_refused():
    with pytest.raises(SystemExit):
        train_throughput.parse_args(["--frameworks", "tensorflow,keras"])
    with pytest.raises(SystemExit):
        train_throughput.parse_args(["--precisions", "float16"])
    args = train_throughput.parse_args(["--quick", "--frameworks", "jax,torch", "--precisions", "mixed_bfloat16"])
    assert (args.frameworks, args.precisions, args.steps, args.repeats) == (["jax", "torch"], ["mixed_bfloat16"], 10, 1)


@pytest.mark.needs_jax
def test_jaxpr_flop_count_covers_convolutions_depthwise_and_matmuls_in_nested_jits():
    import jax
    from jax_step import _jaxpr_flops

    dimensions = ("NHWC", "HWIO", "NHWC")

    def forward(x, kernel, depthwise, dense):
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=dimensions)
        y = jax.jit(
            lambda y: jax.lax.conv_general_dilated(
                y, depthwise, (1, 1), "SAME", dimension_numbers=dimensions, feature_group_count=8
            )
        )(y)
        return y.mean(axis=(1, 2)) @ dense

    shapes = [(2, 8, 8, 4), (3, 3, 4, 8), (3, 3, 1, 8), (8, 10)]
    jaxpr = jax.make_jaxpr(forward)(*(np.zeros(s, "float32") for s in shapes))
    conv = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 4)
    depthwise = 2 * (2 * 8 * 8 * 8) * (3 * 3)
    dense = 2 * (2 * 10) * 8
    assert _jaxpr_flops(jaxpr.jaxpr) == conv + depthwise + dense


# ------------------------------------------------------------------ GPU check
def _step(batch: int, precision: str, img_s: float, pipeline_img_s: float, **extra) -> dict:
    return dict(
        kind="step",
        backbone="resnet32",
        batch_size=batch,
        precision=precision,
        img_s=img_s,
        step_p50_ms=1000 * batch / img_s,
        compile_s=30.0,
        peak_bytes=3 * 2**30,
        pipeline_img_s=pipeline_img_s,
        **extra,
    )


def test_result_lines_are_read_among_other_output():
    log = "JAX warning\nRESULT " + json.dumps({"kind": "env", "jax": "0.11"}) + "\ntrailing\n"
    assert device_check.read_results(log) == [{"kind": "env", "jax": "0.11"}]


def test_the_plan_counts_epochs_from_the_slower_of_the_step_and_the_pipeline():
    steps = [
        _step(512, "float32", 40000, 20000),
        _step(128, "float32", 10000, 5000),
        _step(128, "mixed_bfloat16", 1, 1),
    ]
    # Batch 128 float32 is the reference; its pipeline (5,000 img/s) is the slower: 55,000 / 5,000 + 15,000 / 15,000.
    plan = device_check.plan_epochs(steps, seconds=60 + 5 * 12.0 + 1)
    assert plan["epoch_s_estimate"] == pytest.approx(12.0)
    assert plan["epochs"] == 5
    assert device_check.plan_epochs(steps, seconds=60 + 1000 * 12.0, max_epochs=30)["epochs"] == 30
    assert device_check.plan_epochs(steps, seconds=65)["epochs"] == 0
    # No float32 figure (every step failed): one epoch, the time guard bounds it.
    assert device_check.plan_epochs([dict(kind="step", error="timed out")], seconds=300)["epochs"] == 1


def test_training_report_reads_what_mfef_train_writes(tmp_path):
    history = []
    for epoch, (seconds, s0, s1) in enumerate([(50.0, 0.80, 0.82), (10.0, 0.86, 0.85), (12.0, 0.88, 0.89)], 1):
        history.append(
            dict(
                epoch=epoch,
                lr=0.1,
                time_s=seconds,
                loss=1.0,
                test_acc_s0=s0,
                test_acc_s1=s1,
                test_acc_fused=0.9,
                test_acc_ensemble=0.895,
                test_ce_s0=0.3,
            )
        )
    write_metrics(tmp_path, history)
    report = device_check.training_report(tmp_path, planned_epochs=5)
    assert report["epochs"] == 3 and report["planned_epochs"] == 5
    assert report["first_epoch_s"] == 50.0 and report["epoch_s"] == 11.0  # the compiling first epoch apart
    assert report["test_top1_best_student"] == pytest.approx(89.0)
    assert report["test_top1_fused"] == pytest.approx(90.0)
    assert device_check.training_report(tmp_path / "never-ran")["epochs"] == 0


def test_the_table_has_a_row_per_measurement_and_says_why_one_is_missing():
    results = [
        dict(kind="env", python="3.12.3", jax="0.11.2", keras="3.15.1", keras_backend="jax", numpy="2.5.2")
        | dict(mfef_keras="0.1.0", jax_backend="gpu", devices=["cuda:0 NVIDIA H200"], device_kind="NVIDIA H200"),
        _step(128, "float32", 12000, 30000),
        _step(512, "float32", 40000, 30000),
        dict(kind="step", backbone="resnet32", batch_size=512, precision="mixed_bfloat16", error="timed out"),
        dict(kind="train", epochs=7, planned_epochs=9, first_epoch_s=40.0, epoch_s=9.5)
        | dict(test_top1_best_student=91.5, test_top1_fused=92.0, error="stopped by the time guard"),
    ]
    lines = device_check.render_table(results).splitlines()
    rows = [dict(zip(_cells(lines[0]), _cells(line))) for line in lines[2:]]
    assert len(rows) == 4 and all(len(_cells(line)) == len(device_check.TABLE_HEADER) for line in lines)
    assert rows[0]["img/s"] == "12000" and rows[0]["peak GPU memory"] == "3.00 GiB"
    assert rows[0]["pipeline img/s (keeps up)"] == "30000 (yes)"
    assert rows[1]["pipeline img/s (keeps up)"] == "30000 (no)"  # the GPU would wait for the host
    assert rows[2]["notes"] == "timed out" and rows[2]["img/s"] == "-"
    assert rows[3]["notes"].startswith("9.5 s/epoch (first 40 s), 7 of 9 epochs, test top-1 91.50 % (best student)")
    assert "stopped by the time guard" in rows[3]["notes"]
    assert device_check.header_lines(results)[0].startswith("device: NVIDIA H200 (gpu")
