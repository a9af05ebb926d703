"""The model zoo: publishing, presets, the verified cache, downloads from a local server, safe archives and the CLI.

Nothing here reaches any address but 127.0.0.1; the cache, home and manifests live in temp folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from mfef_keras.data.info import DatasetInfo
from mfef_keras.file_hashing import sha256_file
from mfef_keras.models import get_backbone
from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import load_student_dir, save_student_dir
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.run_directory import (
    data_fingerprint,
    summarize,
    write_config,
    write_data_fingerprint,
    write_metrics,
)
from mfef_keras.zoo import (
    DownloadError,
    IntegrityError,
    OfflineError,
    UnsafeArchiveError,
    ZooError,
    cache_dir,
    list_models,
    load_student,
    model_info,
    publish,
    pull,
    resolve_preset,
    verify_preset,
)
from mfef_keras.zoo.archive import extract_archive, pack_preset
from mfef_keras.zoo.commands import zoo_group
from mfef_keras.zoo.manifest import MANIFEST_FORMAT, entry_url, parse_name, read_manifest, shipped_manifest_path
from mfef_keras.zoo.model_card import render_model_card, reproduce_command
from tests.helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
NAME = "resnet8_mfef.digits_test0"
SHIPPED = sorted(read_manifest(shipped_manifest_path()))
DIGITS = DatasetInfo(
    name="digits",
    num_classes=10,
    class_names=tuple(str(i) for i in range(10)),
    image_shape=(32, 32, 1),
    mean=(0.3,),
    std=(0.4,),
    splits={"train": 1293, "val": 144, "test": 360},
)


# ---------------------------------------------------------------- fixtures and helpers


def _fake_run(run: Path) -> Path:
    """A run directory as `mfef train` writes it, with two tiny untrained students."""
    config = TrainConfig(base_width=4, epochs=2, run_dir=str(run))
    run.mkdir(parents=True)
    write_config(run, config)
    write_data_fingerprint(run, data_fingerprint(DIGITS, 1293))
    (run / "environment.json").write_text(
        json.dumps({"packages": {"keras": keras.__version__}, "python": "3.11", "platform": "test", "seed": 0})
    )
    history = [
        {"epoch": e, "loss": 2.0 - e, "val_loss": 2.1 - e, "test_loss": 2.2 - e, "lr": 0.1, "time_s": 1.0}
        | {"val_acc_s0": 0.2 + 0.3 * e, "val_acc_s1": 0.15 + 0.3 * e, "val_acc_fused": 0.55, "val_acc_ensemble": 0.6}
        | {"test_acc_s0": 0.2 + 0.3 * e, "test_acc_s1": 0.15 + 0.3 * e, "test_acc_fused": 0.55}
        | {"test_acc_ensemble": 0.6}
        for e in range(1, 3)
    ]
    write_metrics(run, history)
    (run / "summary.json").write_text(json.dumps(summarize(history, 2, True)))

    def metadata(index: int, accuracy: float) -> StudentCard:
        return StudentCard.from_dict(
            {
                "dataset": DIGITS.to_dict(),
                "backbone": "resnet8",
                "base_width": 4,
                "method": "mfef",
                "topology": "independent",
                "num_students": 2,
                "student_index": index,
                "epoch": 2,
                "test_accuracy": accuracy,
                "validation_accuracy": accuracy,
                "selection": "validation",
                "seed": 0,
                "experiment_hash": config.experiment_hash(),
                "config": config.to_dict(),
            }
        )

    for index in range(2):
        model = get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4)
        save_student_dir(run / "students" / f"s{index}", model, metadata(index, history[-1][f"test_acc_s{index}"]))
        if index == 0:
            save_student_dir(run / "best_student", model, metadata(0, 0.8))
    return run


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A fake run, and its best student published as NAME into a folder of its own."""
    root = tmp_path_factory.mktemp("zoo")
    run = _fake_run(root / "run")
    out = root / "out"
    preset = publish(run, NAME, out)
    entry = read_manifest(out / "manifest.json")[NAME]
    return {"run": run, "out": out, "preset": preset, "archive": out / f"{NAME}.tar.gz", "entry": entry}


@pytest.fixture(autouse=True)
def _zoo_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MFEF_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MFEF_ZOO_TIMEOUT", "5")
    for name in ("MFEF_ZOO_OFFLINE", "MFEF_ZOO_MANIFEST", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _use_manifest(monkeypatch, path: Path, entries: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "presets": entries}))
    monkeypatch.setenv("MFEF_ZOO_MANIFEST", str(path))
    return path


def _url_entry(published, base_url: str, **changes) -> dict:
    entry = {k: v for k, v in published["entry"].items() if k != "path"}
    return {**entry, "url": f"{base_url}/{NAME}.tar.gz", **changes}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _http_server(directory: Path, log: Path):
    """`python -m http.server` on 127.0.0.1 serving ``directory``; its request log goes to ``log``."""
    port = _free_port()
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"http.server did not start: {log.read_text()}") from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _downloads(log: Path) -> int:
    return log.read_text().count(f"GET /{NAME}.tar.gz")


def _cache_files(name: str = NAME) -> set[str]:
    folder = cache_dir() / name
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _images(count: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(count, 32, 32, 1)).astype("uint8")


def _normalised(images: np.ndarray) -> np.ndarray:
    return ((images.astype("float32") / 255.0 - 0.3) / 0.4).astype("float32")


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any attempt to open a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- publishing and presets


def test_publish_writes_a_verified_preset_with_a_model_card(published):
    preset, archive, entry = published["preset"], published["archive"], published["entry"]
    index = verify_preset(preset)
    assert set(index["files"]) == {"model.keras", "metadata.json", "README.md", "metrics.csv"}
    assert index["files"]["model.keras"]["sha256"] == sha256_file(preset / "model.keras")
    # The training log travels as the run wrote it, hashed like the weights.
    assert (preset / "metrics.csv").read_bytes() == (published["run"] / "metrics.csv").read_bytes()
    assert index["files"]["metrics.csv"]["sha256"] == sha256_file(published["run"] / "metrics.csv")
    assert entry["sha256"] == sha256_file(archive) and entry["size"] == archive.stat().st_size
    assert entry["path"] == archive.name and entry["dataset"] == "digits" and entry["test_accuracy"] == 0.8
    # The figures `mfef zoo list` shows, and how the epoch was chosen, need no download.
    assert (entry["selection"], entry["epoch"], entry["num_students"]) == ("validation", 2, 2)
    assert entry["test_accuracy_last"] == pytest.approx(0.8) and entry["validation_accuracy"] == 0.8

    metadata = json.loads((preset / "metadata.json").read_text())
    assert metadata["dataset"]["class_names"] == [str(i) for i in range(10)]
    assert metadata["input"]["mean"] == [0.3] and metadata["input"]["shape"] == [32, 32, 1]
    assert metadata["backbone"] == "resnet8" and metadata["method"] == "mfef" and metadata["seed"] == 0
    assert set(metadata["metrics"]) >= {"s0", "s1", "fused", "ensemble"}
    assert metadata["metrics"]["s1"]["test_last"] == pytest.approx(0.75)
    assert metadata["environment"]["packages"]["keras"] == keras.__version__
    assert metadata["params"] == get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4).count_params()
    assert metadata["license"] == "Apache-2.0" and metadata["created"] and metadata["published_from"] == "best_student"
    assert metadata["experiment_hash"] == json.loads((published["run"] / "config.json").read_text())["experiment_hash"]
    assert metadata["selection"] == "validation" and metadata["epoch"] == 2
    assert metadata["test_accuracy_last"] == pytest.approx(0.8)
    assert metadata["data"] == {"splits": {"train": 1293, "val": 144, "test": 360}, "train_examples": 1293}

    card = (preset / "README.md").read_text()
    assert card.startswith(f"# {NAME}")
    assert "**Test top-1 accuracy: 80.00%** on the 360-image test split (weights of epoch 2 of 2; 80.00% after " in card
    assert (
        "Epoch and student selected on the 144-image validation split held out from the 1,437 training images; "
        "the 360-image test split was used only for reporting." in card
    )
    assert "| fused | 2 | 55.00% | 55.00% | 55.00% |" in card
    assert "validation top-1 | test top-1 | test top-1, last epoch" in card
    # The training log of the published student, the selected epoch marked.
    assert "| epoch | learning rate | train top-1 | validation top-1 | test top-1 |" in card
    assert "| 1 | 0.1 | – | 50.00% | 50.00% |" in card and "| **2** (selected) | 0.1 | – | 80.00% | 80.00% |" in card
    assert "`metrics.csv`, in this preset, holds every loss and accuracy of every epoch." in card
    assert f'load_student("{NAME}", include_preprocessing=True)' in card
    assert "mfef train --dataset digits --backbone resnet8 --base-width 4" in card
    assert "Apache-2.0" in card


@pytest.mark.parametrize(
    "name", sorted(name for name, entry in read_manifest(shipped_manifest_path()).items() if "selection" not in entry)
)
def test_model_cards_of_presets_trained_before_the_validation_split_still_render(name):
    # Presets published before the validation split were selected on the test split; their metadata says
    # neither how nor on what, and their training log has no test_ columns (its val_ ones were the test split).
    metadata = json.loads((resolve_preset(name, offline=True) / "metadata.json").read_text())
    assert "selection" not in metadata and "best" in metadata["metrics"]["s0"]
    card = render_model_card(name, StudentCard.from_dict(metadata))
    assert "selected on the 360-image test split (trained before the package held out a validation split" in card
    row = metadata["metrics"]["s0"]
    assert f"| {100 * row['best']:.2f}% | {row['best_epoch']} | {100 * row['last']:.2f}% |" in card
    assert "| epoch | learning rate | train top-1 | test top-1 |" in card


def test_a_long_training_log_is_summarised_around_the_selected_epoch(published):
    metadata = json.loads((published["preset"] / "metadata.json").read_text())
    metadata["training_log"] = [{"epoch": e, "lr": 0.1, "val_acc_s0": 0.5, "test_acc_s0": 0.4} for e in range(1, 201)]
    metadata["epoch"] = 137
    card = render_model_card(NAME, StudentCard.from_dict(metadata))
    epochs = [int(match.group(1)) for match in re.finditer(r"^\| \**(\d+)", card, re.MULTILINE)]
    assert epochs[0] == 1 and epochs[-1] == 200 and 137 in epochs and len(epochs) <= 32
    assert epochs == sorted(epochs) and f"{len(epochs)} of the 200 epochs" in card


def _parsed_by_mfef_train(command: str) -> TrainConfig:
    """The config `mfef train` resolves from ``command``, as its command line parses it."""
    from mfef_keras.cli import _resolve, main

    words = shlex.split(command)
    assert words[:2] == ["mfef", "train"]
    options = dict(main.commands["train"].make_context("train", words[2:]).params)
    options.pop("config_file")
    return _resolve(None, options.pop("ablate"), options)


def test_reproduce_command_trains_the_same_experiment(published):
    card = (published["preset"] / "README.md").read_text()
    command = next(line for line in card.splitlines() if line.startswith("mfef train "))
    stored = json.loads((published["run"] / "config.json").read_text())
    assert _parsed_by_mfef_train(command).experiment_hash() == stored["experiment_hash"]


@pytest.mark.parametrize(
    "settings",
    [
        # A single student trained alone on a reduced split, its epoch chosen on the test split, the rate's
        # milestones and ramp-up given: every value away from its default.
        dict(
            dataset="fashion_mnist",
            backbone="resnet20",
            base_width=8,
            method="independent",
            num_students=1,
            epochs=12,
            batch_size=128,
            eval_batch_size=50,
            learning_rate=0.05,
            lr_milestones=[4, 9],
            lr_decay=0.2,
            student_weight_decay=5e-4,
            fusion_weight_decay=0.0,
            temperature=4.0,
            rampup_epochs=2.5,
            train_limit=10_000,
            selection="test",
            seed=3,
            precision="mixed_bfloat16",
            jit=True,
        ),
        dict(method="mfef", num_students=3, topology="shared_trunk", ablate=["multi_scale", "attention"]),
        dict(method="pcl", num_students=3, method_options={"ema_decay": 0.99}),
    ],
)
def test_reproduce_command_sets_every_field_of_the_config(settings):
    config = TrainConfig(**settings, run_dir="runs/x", data_dir="/data", strategy="mirrored", progress=False)
    command = reproduce_command(config.to_dict())
    for flag in ("--students", "--selection", "--dataset"):
        assert flag in shlex.split(command)
    parsed = _parsed_by_mfef_train(command)
    execution = ("run_dir", "data_dir", "strategy", "cpu_devices", "progress")
    assert {k: v for k, v in parsed.to_dict().items() if k not in execution} == {
        k: v for k, v in config.to_dict().items() if k not in execution
    }


@pytest.mark.parametrize(
    "name, parts",
    [
        ("resnet8_mfef.digits_s0", ("resnet8", "mfef", "digits", "s0")),
        ("wrn16_2_dml.cifar100_seed1", ("wrn16_2", "dml", "cifar100", "seed1")),
        # Registry names with an underscore: the tag is what follows the last one.
        ("resnet20_independent.fashion_mnist_s0", ("resnet20", "independent", "fashion_mnist", "s0")),
    ],
)
def test_zoo_names_split_into_architecture_method_dataset_and_tag(name, parts):
    assert tuple(parse_name(name).values()) == parts


def test_publish_refuses_bad_names_existing_presets_and_outside_archives(published, tmp_path):
    run = published["run"]
    with pytest.raises(ValueError, match="arch_method.dataset_tag"):
        publish(run, "ResNet8-digits", tmp_path)
    with pytest.raises(ValueError, match="arch 'resnet20'.*'resnet8'"):
        publish(run, "resnet20_mfef.digits_s0", tmp_path)
    with pytest.raises(ValueError, match="dataset 'cifar10'"):
        publish(run, "resnet8_mfef.cifar10_s0", tmp_path)
    with pytest.raises(ValueError, match="dataset 'fashion_mnist' \\(the student's is 'digits'\\)"):
        publish(run, "resnet8_mfef.fashion_mnist_s0", tmp_path)
    with pytest.raises(FileExistsError, match="exists already"):
        publish(run, NAME, published["out"])
    shipped = shipped_manifest_path().read_text()
    with pytest.raises(ValueError, match="must lie inside"):
        publish(run, "resnet8_mfef.digits_s9", tmp_path / "elsewhere", update_shipped_manifest=True)
    assert shipped_manifest_path().read_text() == shipped and not (tmp_path / "elsewhere").exists()

    out = tmp_path / "out"
    first = publish(run, "resnet8_mfef.digits_s1", out, student=1, license="MIT")
    second = publish(run, "resnet8_mfef.digits_s1", out, student=1, license="MIT", overwrite=True)
    assert first == second
    metadata = json.loads((second / "metadata.json").read_text())
    assert metadata["student_index"] == 1 and metadata["published_from"] == "students/s1"
    assert metadata["license"] == "MIT" and metadata["test_accuracy"] == pytest.approx(0.75)
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "resnet8_mfef.digits_s1",
        "resnet8_mfef.digits_s1.tar.gz",
    ]


def test_archives_are_reproducible(published, tmp_path):
    again = pack_preset(published["preset"], tmp_path / "again.tar.gz")
    assert sha256_file(again) == sha256_file(published["archive"])


def test_a_local_preset_folder_is_verified_before_loading(published, tmp_path):
    copy = Path(shutil.copytree(published["preset"], tmp_path / NAME))
    assert load_student(copy).mfef_metadata["name"] == NAME
    expected = json.loads((copy / "preset.json").read_text())["files"]["model.keras"]["sha256"]
    with open(copy / "model.keras", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\0corrupt\0")
    with pytest.raises(IntegrityError) as caught:
        load_student(copy)
    actual = sha256_file(copy / "model.keras")
    assert caught.value.file.startswith("model.keras") and (caught.value.expected, caught.value.actual) == (
        expected,
        actual,
    )
    assert expected in str(caught.value) and actual in str(caught.value)

    shutil.copyfile(published["preset"] / "model.keras", copy / "model.keras")
    (copy / "extra.py").write_text("print('hi')")
    with pytest.raises(IntegrityError, match="does not list: extra.py"):
        resolve_preset(copy)
    with pytest.raises(IntegrityError, match="load_student_dir"):
        resolve_preset(published["run"] / "best_student")


def test_include_preprocessing_takes_raw_uint8_images(published):
    bare = load_student(published["preset"])
    raw = load_student(published["preset"], include_preprocessing=True)
    assert raw.inputs[0].dtype == "uint8"
    assert raw.mfef_metadata == bare.mfef_metadata and type(raw.mfef_metadata) is dict
    images = _images()
    np.testing.assert_allclose(
        raw.predict(images, verbose=0), bare.predict(_normalised(images), verbose=0), rtol=1e-5, atol=1e-5
    )


def test_a_run_saved_with_the_package_layers_is_published_as_a_plain_keras_network(published):
    # The fake run's students are raw backbones with the package's BatchNorm, as runs were saved before.
    trained, _ = load_student_dir(published["run"] / "best_student")
    preset, _ = load_student_dir(published["preset"])
    assert any(type(layer).__module__.startswith("mfef_keras") for layer in trained.layers)
    assert all(type(layer).__module__.startswith("keras.") for layer in [preset, *preset.layers])
    assert [layer.name for layer in preset.layers] == [layer.name for layer in trained.layers]
    images = _normalised(_images())
    np.testing.assert_array_equal(preset.predict(images, verbose=0), trained.predict(images, verbose=0))


# ---------------------------------------------------------------- pulling over HTTP, the cache


def test_pull_load_then_offline_from_cache_then_corruption_is_reported(published, tmp_path, monkeypatch):
    log = tmp_path / "server.log"
    expected = load_student(published["preset"]).predict(_normalised(_images()), verbose=0)
    with _http_server(published["out"], log) as base_url:
        _use_manifest(monkeypatch, tmp_path / "m.json", {NAME: _url_entry(published, base_url)})
        assert list_models("*_test0") == [NAME] and not model_info(NAME)["cached"]
        model = load_student(NAME)
        np.testing.assert_allclose(model.predict(_normalised(_images()), verbose=0), expected, atol=1e-6)
        assert model.mfef_metadata["name"] == NAME
        # A URL pinned by its fragment is the same archive: served from the cache, not downloaded again.
        sha = published["entry"]["sha256"]
        assert resolve_preset(f"{base_url}/{NAME}.tar.gz#sha256={sha}").name == sha
        assert _downloads(log) == 1
    info = model_info(NAME)
    assert info["cached"] and Path(info["cached_path"]).parent == cache_dir() / NAME

    # The server is gone: loading works from the cache, and offline mode is content with it.
    np.testing.assert_allclose(load_student(NAME).predict(_normalised(_images()), verbose=0), expected, atol=1e-6)
    assert load_student(NAME, offline=True).mfef_metadata["name"] == NAME

    cached_model = Path(info["cached_path"]) / "model.keras"
    good = sha256_file(cached_model)
    cached_model.write_bytes(cached_model.read_bytes()[:-10] + b"0123456789")
    bad = sha256_file(cached_model)
    with pytest.raises(IntegrityError) as caught:
        load_student(NAME)
    assert good in str(caught.value) and bad in str(caught.value) and "removed" in str(caught.value)
    assert _cache_files() == {".lock"}
    with pytest.raises(OfflineError, match=re.escape(NAME)):
        load_student(NAME, offline=True)


def test_wrong_hash_or_size_leaves_nothing_in_the_cache(published, tmp_path, monkeypatch):
    wrong = "0" * 64
    log = tmp_path / "server.log"
    with _http_server(published["out"], log) as base_url:
        _use_manifest(monkeypatch, tmp_path / "m.json", {NAME: _url_entry(published, base_url, sha256=wrong)})
        with pytest.raises(IntegrityError) as caught:
            pull(NAME, progress=False)
        assert wrong in str(caught.value) and published["entry"]["sha256"] in str(caught.value)
        assert _cache_files() == {".lock"}

        size = published["entry"]["size"]
        _use_manifest(monkeypatch, tmp_path / "m.json", {NAME: _url_entry(published, base_url, size=size + 1)})
        with pytest.raises(IntegrityError, match=f"expected {size + 1} bytes, got {size}"):
            pull(NAME, progress=False)
        assert _cache_files() == {".lock"}

        with pytest.raises(DownloadError, match="HTTP 404"):
            resolve_preset(f"{base_url}/missing.tar.gz#sha256={wrong}")


def test_concurrent_pulls_leave_one_good_copy(published, tmp_path, monkeypatch):
    log = tmp_path / "server.log"
    go = tmp_path / "go"
    script = (
        "import pathlib, sys, time\n"
        "from mfef_keras.zoo import pull\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)\n"
        f"print(pull({NAME!r}, progress=False))\n"
    )
    with _http_server(published["out"], log) as base_url:
        _use_manifest(monkeypatch, tmp_path / "m.json", {NAME: _url_entry(published, base_url)})
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        processes = [
            subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(2)
        ]
        go.touch()
        results = [process.communicate(timeout=60) for process in processes]
        assert [process.returncode for process in processes] == [0, 0], [err.decode() for _, err in results]
        paths = {out.decode().strip() for out, _ in results}

        # Threads of one process exclude each other through the same lock.
        found, errors = [], []

        def worker():
            try:
                found.append(str(pull(NAME, progress=False)))
            except Exception as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        assert _downloads(log) == 1
    sha = published["entry"]["sha256"]
    assert paths | set(found) == {str(cache_dir() / NAME / sha)}
    assert _cache_files() == {".lock", sha, f"{sha}.tar.gz"}
    verify_preset(cache_dir() / NAME / sha)


def test_offline_mode_names_the_missing_student_without_touching_the_network(
    published, tmp_path, monkeypatch, no_network
):
    _use_manifest(monkeypatch, tmp_path / "m.json", {NAME: _url_entry(published, "http://127.0.0.1:9")})
    monkeypatch.setenv("MFEF_ZOO_OFFLINE", "1")
    with pytest.raises(OfflineError, match=re.escape(NAME) + " is not in the zoo cache"):
        load_student(NAME)
    monkeypatch.delenv("MFEF_ZOO_OFFLINE")
    with pytest.raises(OfflineError):
        pull(NAME, offline=True)
    # A shipped-style entry (an archive beside its manifest) needs no network, so offline mode allows it.
    monkeypatch.setenv("MFEF_ZOO_MANIFEST", str(published["out"] / "manifest.json"))
    assert pull(NAME, offline=True).name == published["entry"]["sha256"]


def test_network_failures_fail_fast_with_a_clear_message(tmp_path, monkeypatch):
    sha = "0" * 64
    started = time.monotonic()
    with pytest.raises(DownloadError, match="Cannot fetch .*MFEF_ZOO_OFFLINE=1"):
        pull(f"http://127.0.0.1:{_free_port()}/x.tar.gz#sha256={sha}", progress=False)
    # A server that accepts the connection and never answers: the timeout ends the wait.
    monkeypatch.setenv("MFEF_ZOO_TIMEOUT", "0.5")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(DownloadError, match="timed out"):
            pull(f"http://127.0.0.1:{port}/x.tar.gz#sha256={sha}", progress=False)
    assert time.monotonic() - started < 10
    assert _cache_files("x") == {".lock"}


@contextlib.contextmanager
def _endless_server(trickle: bool):
    """An HTTP server on 127.0.0.1 whose body never ends: one byte per 0.2 s, or 64 kB blocks as fast as it can.

    Yields its URL and a list whose single item counts the body bytes sent.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    sent, stop = [0], threading.Event()

    def serve():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/gzip\r\n\r\n")
            block = b"\0" if trickle else b"\0" * (1 << 16)
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    connection.sendall(block)
                    sent[0] += len(block)
                    if trickle:
                        time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/endless.tar.gz#sha256={'0' * 64}", sent
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def test_a_trickling_download_ends_at_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setenv("MFEF_ZOO_DEADLINE", "1")
    started = time.monotonic()
    with _endless_server(trickle=True) as (url, sent):
        with pytest.raises(DownloadError, match=r"took longer than \$MFEF_ZOO_DEADLINE=1 s"):
            pull(url, progress=False)
    assert time.monotonic() - started < 3 and sent[0] >= 3
    assert _cache_files("endless") == {".lock"}


def test_an_endless_download_stops_at_its_size_or_the_byte_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("MFEF_ZOO_MAX_BYTES", str(1 << 20))
    with _endless_server(trickle=False) as (url, sent):
        with pytest.raises(DownloadError, match=r"sent (\d+) bytes, more than \$MFEF_ZOO_MAX_BYTES=1048576") as caught:
            pull(url, progress=False)
    # Refused at the first read past the cap; the server got no further than its socket buffers allow.
    received = int(re.search(r"sent (\d+) bytes", str(caught.value)).group(1))
    assert 1 << 20 < received <= (1 << 20) + (1 << 16) and sent[0] < 16 << 20
    assert _cache_files("endless") == {".lock"}
    # A size pinned in the URL is the cap: the download stops at the first read beyond it.
    with _endless_server(trickle=False) as (url, sent):
        with pytest.raises(IntegrityError, match=r"more bytes than recorded.: expected 1000 bytes, got \d+\."):
            pull(url + "&size=1000", progress=False)
    assert _cache_files("endless") == {".lock"} and sent[0] < 16 << 20


@pytest.mark.parametrize(
    "variable, value",
    [
        ("MFEF_ZOO_DEADLINE", "-1"),
        ("MFEF_ZOO_DEADLINE", "abc"),
        ("MFEF_ZOO_MAX_BYTES", "1.5"),
        ("MFEF_ZOO_TIMEOUT", "nan"),
    ],
)
def test_bad_download_limits_are_refused_before_any_download(tmp_path, monkeypatch, no_network, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=rf"\${variable} must be a positive .*got '{value}'"):
        pull(f"http://127.0.0.1:9/x.tar.gz#sha256={'0' * 64}", progress=False)
    assert _cache_files("x") == {".lock"}


def test_sources_are_checked_before_any_download(published, tmp_path, monkeypatch, no_network):
    with pytest.raises(ZooError, match="#sha256="):
        resolve_preset("https://example.invalid/resnet8_mfef.digits_s0.tar.gz")
    with pytest.raises(ZooError, match="must be #sha256="):
        resolve_preset("https://example.invalid/a.tar.gz#md5=abc")
    with pytest.raises(ZooError, match="Unsupported source"):
        resolve_preset("ftp://example.invalid/a.tar.gz")
    with pytest.raises(ZooError, match="not name a preset archive"):
        resolve_preset("https://example.invalid/model.keras#sha256=" + "0" * 64)
    with pytest.raises(FileNotFoundError, match="No preset folder or archive"):
        resolve_preset("./no/such/preset")
    # A local archive, by path or file:// URL, is hashed, unpacked into the cache and verified.
    by_path = resolve_preset(published["archive"])
    assert by_path == resolve_preset(published["archive"].as_uri())
    assert by_path.name == published["entry"]["sha256"] and by_path.parent.name == NAME


def test_unverified_remote_archives_need_explicit_consent(published, tmp_path):
    with _http_server(published["out"], tmp_path / "server.log") as base_url:
        url = f"{base_url}/{NAME}.tar.gz"
        with pytest.raises(ZooError, match="allow_unverified"):
            pull(url)
        with pytest.warns(UserWarning, match=published["entry"]["sha256"]):
            path = pull(url, allow_unverified=True, progress=False)
    assert path.name == published["entry"]["sha256"]


def test_unknown_and_ambiguous_names_are_refused_with_suggestions(published, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"Unknown zoo student 'resnet8_mfef\.digits_test0'"):
        resolve_preset(NAME)
    other = "resnet8_mfef.digits_s1"
    _use_manifest(monkeypatch, tmp_path / "m.json", {NAME: published["entry"], other: published["entry"]})
    with pytest.raises(ValueError, match=r"Unknown zoo student 'resnet8_mfef\.digit_s0'\. Did you mean 'resnet8_mfef"):
        resolve_preset("resnet8_mfef.digit_s0")
    with pytest.raises(
        ValueError, match="matches several zoo students: resnet8_mfef.digits_s0, resnet8_mfef.digits_s1"
    ):
        resolve_preset("resnet8_mfef.*")
    assert list_models("*_s1") == [other] and model_info("*_s1")["name"] == other
    assert entry_url(published["entry"], tmp_path / "m.json") == (tmp_path / f"{NAME}.tar.gz").as_uri()


def test_cache_defaults_to_the_home_cache_and_is_created(tmp_path, monkeypatch):
    monkeypatch.delenv("MFEF_ZOO_CACHE")
    assert cache_dir() == tmp_path / "home" / ".cache" / "mfef_keras" / "zoo" and cache_dir().is_dir()


# ---------------------------------------------------------------- unsafe archives


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attributes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attributes.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in attributes.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


@pytest.mark.parametrize(
    "member, attributes, message",
    [
        ("../evil.txt", {}, "contains '..'"),
        ("preset/../../evil.txt", {}, "contains '..'"),
        ("/tmp/evil.txt", {}, "absolute path"),
        ("preset/link", {"type": tarfile.SYMTYPE, "linkname": "../../evil.txt"}, "is a link"),
        ("preset/hard", {"type": tarfile.LNKTYPE, "linkname": "preset/preset.json"}, "is a link"),
        ("preset/null", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "device"),
        ("preset/preset.json", {}, "appears twice"),
        ("preset/preset.json/inner", {"type": tarfile.DIRTYPE}, "inside another member"),
    ],
)
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, member, attributes, message):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "preset/preset.json", json.dumps({"files": {}}).encode())
        _add(tar, member, **attributes)
    box = tmp_path / "box"
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_archive(archive, box / "target")
    assert [p.name for p in box.iterdir()] == ["target"] and not any((box / "target").iterdir())
    assert not (tmp_path / "evil.txt").exists()
    with pytest.raises(UnsafeArchiveError, match=message):
        resolve_preset(archive)
    assert _cache_files("evil") == {".lock"}


def _preset_archive(path: Path, members: dict[str, int], listed: dict[str, int]) -> Path:
    """A .tar.gz whose preset.json lists ``listed`` (name -> size) and which holds ``members`` (name -> zero bytes)."""
    index = {"format": "mfef-zoo-preset/1", "files": {n: {"sha256": "0" * 64, "size": k} for n, k in listed.items()}}
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "preset/preset.json", json.dumps(index).encode())
        for name, size in members.items():
            info = tarfile.TarInfo(f"preset/{name}")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_an_archive_member_larger_than_its_preset_json_says_is_refused_before_writing(tmp_path):
    # 16 MiB of zeros pack into 16 kB: a member that preset.json says holds 100 bytes.
    archive = _preset_archive(tmp_path / "bomb.tar.gz", {"model.keras": 16 << 20}, {"model.keras": 100})
    assert archive.stat().st_size < 100_000
    with pytest.raises(UnsafeArchiveError, match="'preset/model.keras' declares 16777216 bytes but .* lists 100"):
        extract_archive(archive, tmp_path / "target")
    assert not any((tmp_path / "target").iterdir())
    with pytest.raises(UnsafeArchiveError, match="declares 16777216 bytes"):
        resolve_preset(archive)
    assert _cache_files("bomb") == {".lock"}

    # Files packed before preset.json are compared with it once it is read.
    late = tmp_path / "late.tar.gz"
    with tarfile.open(late, "w:gz") as tar:
        _add(tar, "preset/model.keras", bytes(1000))
        _add(tar, "preset/preset.json", json.dumps({"files": {"model.keras": {"size": 100}}}).encode())
    with pytest.raises(UnsafeArchiveError, match="'preset/model.keras' declares 1000 bytes but .* lists 100"):
        extract_archive(late, tmp_path / "target")
    unlisted = _preset_archive(tmp_path / "unlisted.tar.gz", {"extra.bin": 10}, {})
    with pytest.raises(UnsafeArchiveError, match="'preset/extra.bin' is not listed in preset/preset.json"):
        extract_archive(unlisted, tmp_path / "target")
    assert not any((tmp_path / "target").iterdir())


def test_an_archive_larger_than_the_byte_cap_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("MFEF_ZOO_MAX_BYTES", str(1 << 20))
    sizes = {"model.keras": 1 << 19, "metadata.json": (1 << 19) + 1}
    archive = _preset_archive(tmp_path / "big.tar.gz", sizes, sizes)
    message = r"metadata.json. brings the archive to \d+ bytes unpacked, more than \$MFEF_ZOO_MAX_BYTES=1048576"
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_archive(archive, tmp_path / "target")
    assert not any((tmp_path / "target").iterdir())


def test_a_member_stream_longer_than_its_header_stops_at_the_declared_size(tmp_path, monkeypatch):
    archive = _preset_archive(tmp_path / "liar.tar.gz", {"model.keras": 100}, {"model.keras": 100})
    extractfile = tarfile.TarFile.extractfile

    def longer(self, member):
        stream = extractfile(self, member)
        if not member.name.endswith("model.keras"):
            return stream
        return io.BytesIO(stream.read() + bytes(1 << 20))

    monkeypatch.setattr(tarfile.TarFile, "extractfile", longer)
    with pytest.raises(UnsafeArchiveError, match="'preset/model.keras' holds more than the 100 bytes it declares"):
        extract_archive(archive, tmp_path / "target")
    assert (tmp_path / "target" / "preset" / "model.keras").stat().st_size <= 100


# ---------------------------------------------------------------- the command line


def test_cli_list_info_pull_verify_publish(published, tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(zoo_group, ["list"])
    assert result.exit_code == 0 and all(name in result.output for name in SHIPPED)
    result = runner.invoke(zoo_group, ["list", "nothing*"])
    assert result.exit_code == 0 and "No published student matches 'nothing*'" in result.output

    monkeypatch.setenv("MFEF_ZOO_MANIFEST", str(published["out"] / "manifest.json"))
    result = runner.invoke(zoo_group, ["list", "*_test0"])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split() == (
        ["name", "dataset", "backbone", "params", "method", "test", "top-1", "over", "seeds", "vs", "alone", "size"]
        + ["cached"]
    )
    params = f"{published['entry']['params']:,}"
    assert row.split()[:9] == [NAME, "digits", "resnet8", params, "mfef", "80.00%", "(val-selected)", "–", "–"]
    assert row.split()[-1] == "no"

    result = runner.invoke(zoo_group, ["info", NAME])
    assert result.exit_code == 0 and published["entry"]["sha256"] in result.output and "cached" in result.output

    result = runner.invoke(zoo_group, ["pull", NAME])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and published["entry"]["sha256"] in result.output
    assert runner.invoke(zoo_group, ["list", "*_test0"]).output.splitlines()[1].split()[-1] == "yes"

    result = runner.invoke(zoo_group, ["verify"])
    assert result.exit_code == 0 and result.output.startswith(f"OK   {NAME}")
    (cache_dir() / NAME / published["entry"]["sha256"] / "README.md").write_text("edited")
    result = runner.invoke(zoo_group, ["verify", NAME])
    assert result.exit_code == 1 and "BAD" in result.output and "README.md" in result.output
    result = runner.invoke(zoo_group, ["pull", NAME])
    assert result.exit_code == 0 and "Warning: The cached copy" in result.output and "README.md" in result.output
    assert runner.invoke(zoo_group, ["verify", "resnet8_*"]).exit_code == 0
    result = runner.invoke(zoo_group, ["verify", str(published["preset"])])
    assert result.exit_code == 0 and result.output.startswith("OK")

    result = runner.invoke(zoo_group, ["info", "resnet8_mfef.digit_s0"])
    assert result.exit_code == 1 and "Did you mean" in result.output and "Traceback" not in result.output

    out = tmp_path / "published"
    args = ["publish", str(published["run"]), "--name", "resnet8_mfef.digits_s1", "--out", str(out), "--student", "1"]
    result = runner.invoke(zoo_group, args)
    assert result.exit_code == 0, result.output
    verify_preset(out / "resnet8_mfef.digits_s1")
    result = runner.invoke(zoo_group, args)
    assert result.exit_code == 1 and "exists already" in result.output and "Traceback" not in result.output
    result = runner.invoke(zoo_group, ["publish", str(published["run"]), "--name", "bad name", "--out", str(out)])
    assert result.exit_code == 1 and "is not a zoo name" in result.output


def test_manifest_entries_without_the_selection_still_list_load_and_show(published, tmp_path, monkeypatch):
    # Entries published before the validation split have no selection, epoch or last-epoch accuracy.
    entry = {k: v for k, v in published["entry"].items() if k not in ("selection", "epoch", "test_accuracy_last")}
    entry["path"] = str(published["archive"].relative_to(published["out"]))
    _use_manifest(monkeypatch, published["out"] / "old-manifest.json", {"resnet8_mfef.digits_old0": entry})
    result = CliRunner().invoke(zoo_group, ["list", "*_old0"])
    assert result.exit_code == 0, result.output
    # Its epoch was chosen on the test split, the only split there was.
    assert result.output.splitlines()[1].split()[5:7] == ["80.00%", "(test-selected)"]
    result = CliRunner().invoke(zoo_group, ["info", "resnet8_mfef.digits_old0"])
    assert result.exit_code == 0 and "test_accuracy" in result.output and "selection" not in result.output
    assert load_student("resnet8_mfef.digits_old0").mfef_metadata["name"] == NAME


def test_a_manifest_path_that_is_a_directory_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MFEF_ZOO_MANIFEST", str(tmp_path))
    with pytest.raises(ZooError, match=f"Manifest {tmp_path} is a directory; .* e.g. {tmp_path / 'manifest.json'}"):
        list_models()
    with pytest.raises(ZooError, match="is a directory"):
        read_manifest(tmp_path, missing_ok=True)


# ---------------------------------------------------------------- the shipped zoo


def test_the_shipped_manifest_lists_only_archives_that_exist():
    manifest = shipped_manifest_path()
    for name, entry in read_manifest(manifest).items():
        if "url" in entry:
            assert entry["url"].startswith("https://"), f"{name}: hosted presets are served over https"
            continue
        archive = manifest.parent / entry["path"]
        assert archive.is_file(), f"{name}: {archive} is missing"
        assert (archive.stat().st_size, sha256_file(archive)) == (entry["size"], entry["sha256"]), name


# The Fashion-MNIST students' 10,000 test images take half a minute each: slow, run by .ci/run; the digits
# students keep the same check in the default suite.
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if "fashion_mnist" in name else name for name in SHIPPED]
)
def test_mfef_eval_of_a_shipped_student_reproduces_its_manifest_accuracy(name, tmp_path):
    from mfef_keras.data import dataset_info

    entry = read_manifest(shipped_manifest_path())[name]
    if "url" in entry:
        pytest.skip(f"{name} is hosted remotely and the tests use no network")
    try:
        test_images = dataset_info(entry["dataset"]).splits["test"]
    except FileNotFoundError as error:
        pytest.skip(f"{entry['dataset']} is not installed here: {error}")
    result = subprocess.run(
        [sys.executable, "-m", "mfef_keras.cli", "eval", name, "--out", str(tmp_path / "eval")],
        capture_output=True,
        text=True,
        env=subprocess_env(MFEF_ZOO_OFFLINE="1"),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["examples"] == test_images
    # Counted in images: training recorded a float32 mean, eval a float64 one, of the same correct predictions.
    correct = round(metrics["top1"] * metrics["examples"])
    assert correct == round(entry["test_accuracy"] * metrics["examples"]), result.stdout
    assert f"top-1 {100 * entry['test_accuracy']:.2f}%" in result.stdout
