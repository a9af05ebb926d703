"""`mfef zoo`: list, inspect, pull, verify and publish pretrained students (registered by the CLI as ``zoo_group``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from mfef_keras.zoo.errors import ZooError

# What a user can cause and fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (ZooError, ValueError, OSError)


@contextmanager
def _plain_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None


def _size(num_bytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError("unreachable")


@click.group(name="zoo")
def zoo_group() -> None:
    """Pretrained students: list, inspect, download, verify and publish presets.

    \b
    Cache:     $MFEF_ZOO_CACHE, or ~/.cache/mfef_keras/zoo
    Offline:   MFEF_ZOO_OFFLINE=1 uses only the cache and never the network
    Manifests: the package's own, plus files named in $MFEF_ZOO_MANIFEST
    Timeout:   $MFEF_ZOO_TIMEOUT seconds per network stall (default 10)
    Min rate:  $MFEF_ZOO_MIN_RATE bytes/s averaged over each $MFEF_ZOO_RATE_WINDOW seconds (default 1000, 30)
    Deadline:  $MFEF_ZOO_DEADLINE seconds per download in all (default: the recorded size at the minimum
               rate, at most 3600)
    Max size:  $MFEF_ZOO_MAX_BYTES bytes per download of unrecorded size, and per unpacked preset
               (default 2147483648)
    """


# How each manifest entry's weights were chosen, as `mfef zoo list` shows it. Entries without a selection were
# published before the validation split existed, when the best epoch was taken on the test split.
_SELECTED = {"validation": "val-selected", "test": "test-selected", "last_epoch": "last epoch", None: "test-selected"}


def _accuracy(entry: dict) -> str:
    """The entry's test top-1 with how its epoch was chosen, e.g. ``93.41% (val-selected)``."""
    accuracy = entry.get("test_accuracy")
    if accuracy is None:
        return "?"
    selection = entry.get("selection")
    return f"{100 * accuracy:.2f}% ({_SELECTED.get(selection, selection)})"


def _over_seeds(entry: dict) -> tuple[str, str]:
    """The study's test top-1 over seeds and its paired difference to the network alone, as two table cells."""
    from mfef_keras.zoo.study_figures import holds_family_wise

    study = entry.get("study")
    if not study:
        return "–", "–"
    interval = study.get("test_top1_ci95")
    mean = f"{study['test_top1_mean']:.2f}%" + (f" ±{interval:.2f}" if interval is not None else "")
    difference = study.get("diff_vs_baseline_mean")
    if difference is None:
        versus = "baseline" if study["variant"] == study.get("baseline") else "–"
    else:
        star = "**" if holds_family_wise(study) else "*" if study.get("diff_significant") else ""
        versus = f"{difference:+.2f} ±{study['diff_vs_baseline_ci95']:.2f}{star}"
    return f"{mean} ({study['seeds']})", versus


def _score(entry: dict) -> tuple[float, str] | None:
    """The figure students are compared by: the study's mean over seeds where there is one, else this seed's."""
    study = entry.get("study")
    if study:
        seeds = study["seeds"]
        return study["test_top1_mean"], f"mean of {seeds} seed{'s' if seeds != 1 else ''}"
    accuracy = entry.get("test_accuracy")
    return None if accuracy is None else (100 * accuracy, "one seed")


def _best(rows: list[dict]) -> list[dict]:
    """The rows of the highest score (several when they tie)."""
    top = max(_score(row)[0] for row in rows)
    return [row for row in rows if _score(row)[0] == top]


def _said(tied: list[dict]) -> str:
    value, basis = _score(tied[0])
    others = f", tied with {', '.join(row['name'] for row in tied[1:])}" if len(tied) > 1 else ""
    return f"{tied[0]['name']} ({tied[0]['params']:,} parameters, {value:.2f}% test top-1, {basis}{others})"


def _picks(rows: list[dict]) -> list[str]:
    """Per dataset with a choice, which student to take for size and which for accuracy."""
    lines = []
    for dataset in sorted({str(row.get("dataset")) for row in rows}):
        ranked = [r for r in rows if str(r.get("dataset")) == dataset and _score(r) and r.get("params")]
        if len(ranked) < 2:
            continue
        fewest = min(row["params"] for row in ranked)
        smallest = _best([row for row in ranked if row["params"] == fewest])
        accurate = _best(ranked)
        if smallest == accurate:
            lines.append(f"{dataset}: {_said(smallest)} is both the smallest and the most accurate.")
        else:
            lines.append(f"{dataset}: for size take {_said(smallest)}; for accuracy {_said(accurate)}.")
    return lines


@zoo_group.command(name="list")
@click.argument("pattern", default="*")
def list_command(pattern: str) -> None:
    """List published students, or those matching PATTERN, and which to pick for size or accuracy.

    PATTERN takes shell wildcards, e.g. 'resnet8_*' or '*.digits_*'. The test top-1 is that of the published
    weights, with the split their epoch was selected on (val-selected: the validation split held out from
    training; test-selected: the test split itself, which flatters the number). Students published from a
    comparison study also show the study's test top-1 over seeds (mean ±95 % CI, seeds in brackets) and the
    paired difference to the same network trained alone (±95 % CI; * where that interval excludes zero, ** where
    the difference also holds after Holm's correction across the study's cells, as a study's headline asks): one
    seed is one draw, so students are picked by the figure over seeds where there is one."""
    from mfef_keras.zoo.registry import list_models, model_info

    with _plain_errors():
        rows = [model_info(name) for name in list_models(pattern)]
    if not rows:
        click.echo(f"No published student matches {pattern!r}.")
        return
    header = (
        "name",
        "dataset",
        "backbone",
        "params",
        "method",
        "test top-1",
        "over seeds",
        "vs alone",
        "size",
        "cached",
    )
    table = [header] + [
        (
            row["name"],
            str(row.get("dataset", "?")),
            str(row.get("backbone", "?")),
            f"{row['params']:,}" if row.get("params") else "?",
            str(row.get("method", "?")),
            _accuracy(row),
            *_over_seeds(row),
            _size(row["size"]),
            "yes" if row["cached"] else "no",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    picks = _picks(rows)
    if picks:
        click.echo("\nWhich to pick:\n" + "\n".join(f"  {line}" for line in picks))


@zoo_group.command(name="info")
@click.argument("name")
def info_command(name: str) -> None:
    """Show a published student's details and cache state."""
    from mfef_keras.zoo.registry import model_info

    with _plain_errors():
        info = model_info(name)
    from mfef_keras.zoo.study_figures import describe

    for key in sorted(info):
        click.echo(f"{key:<20}{describe(info[key], ' %') if key == 'study' and info[key] else info[key]}")
    if (info.get("study") or {}).get("command"):
        click.echo(f"{'study command':<20}{info['study']['command']}")
    if info["cached_path"]:
        from mfef_keras.student_dir import read_card

        with _plain_errors():
            card = read_card(info["cached_path"])
        shape = "x".join(str(side) for side in card.dataset.image_shape)
        click.echo(
            f"{'card':<20}{card.backbone} by {card.method}, epoch {card.epoch}, {card.dataset.name} "
            f"({card.dataset.num_classes} classes, {shape} images), license {card.license}"
        )
    click.echo(f'{"load it":<20}from mfef_keras.zoo import load_student; load_student("{info["name"]}")')


@zoo_group.command(name="pull")
@click.argument("name")
@click.option("--allow-unverified", is_flag=True, help="Accept a remote archive URL that gives no #sha256=.")
def pull_command(name: str, allow_unverified: bool) -> None:
    """Download and verify a student into the cache.

    NAME is a zoo name, or the URL of a preset archive (with #sha256=<hex>).
    """
    from mfef_keras.zoo.resolve import pull

    with _plain_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = pull(name, allow_unverified=allow_unverified, progress=True)
    for warning in caught:
        click.echo(f"Warning: {warning.message}", err=True)
    click.echo(f"{name}: verified, in {path}")


@zoo_group.command(name="verify")
@click.argument("name", required=False)
@click.pass_context
def verify_command(ctx: click.Context, name: str | None) -> None:
    """Re-hash cached presets and report OK or BAD for each.

    Checks all cached presets, or those of NAME (shell wildcards allowed), or
    the preset folder NAME. Exits with status 1 if any preset is BAD.
    """
    from mfef_keras.zoo.cache import cache_dir
    from mfef_keras.zoo.preset import verify_preset
    from mfef_keras.zoo.resolve import verify_cache

    with _plain_errors():
        if name and Path(name).is_dir():
            try:
                verify_preset(name)
                results = [(name, None)]
            except ZooError as error:
                results = [(name, str(error))]
        else:
            results = [(f"{entry.key} ({entry.preset})", error) for entry, error in verify_cache(name or "*")]
            if not results:
                where = f"for {name!r} " if name else ""
                click.echo(f"Nothing cached {where}in {cache_dir()}.")
                return
    for label, error in results:
        click.echo(f"OK   {label}" if error is None else f"BAD  {label}: {error}")
    bad = sum(error is not None for _, error in results)
    if bad:
        click.echo(f"{bad} of {len(results)} cached presets are damaged; `mfef zoo pull NAME` replaces one.", err=True)
        ctx.exit(1)


@zoo_group.command(name="publish")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="Zoo name arch_method.dataset_tag, e.g. resnet8_mfef.digits_s0.")
@click.option(
    "--out",
    "out_dir",
    help="Output folder. [default: ./zoo-presets, or the package's zoo/presets with --update-manifest]",
)
@click.option("--student", type=int, help="Publish students/sK instead of the best student.")
@click.option("--license", "license_", default="Apache-2.0", show_default=True, help="License of the weights.")
@click.option("--update-manifest", is_flag=True, help="Record the entry in the manifest shipped with the package.")
@click.option("--base-url", help="Record the archive as BASE_URL/NAME.tar.gz (where you will upload it).")
@click.option("--overwrite", is_flag=True, help="Replace an existing preset of that name.")
@click.option(
    "--study",
    "study_dir",
    type=click.Path(exists=True, file_okay=False),
    help="The `mfef study --out` folder RUN_DIR belongs to: the card and the listing carry the study's figures "
    "for this student (mean over seeds, 95 % CI, paired difference to the network trained alone).",
)
def publish_command(run_dir, name, out_dir, student, license_, update_manifest, base_url, overwrite, study_dir) -> None:
    """Publish a run's best student as a zoo preset.

    Writes the preset folder (model, metadata, model card, hashes), its .tar.gz and
    the manifest entry; --update-manifest lists it in the package's own zoo.

    \b
    A run of a study, with its figures over seeds:
      mfef zoo publish STUDY/runs/mfef@resnet20+resnet8-seed2 --study STUDY \\
        --name resnet8_mfef.fashion_mnist_studys2
    """
    from mfef_keras.zoo.manifest import shipped_manifest_path
    from mfef_keras.zoo.publish import publish

    if out_dir is None:
        out_dir = shipped_manifest_path().parent / "presets" if update_manifest else Path("zoo-presets")
    with _plain_errors():
        target = publish(
            run_dir,
            name,
            out_dir,
            license=license_,
            student=student,
            overwrite=overwrite,
            update_shipped_manifest=update_manifest,
            base_url=base_url,
            study_dir=study_dir,
        )
    archive = target.parent / f"{target.name}.tar.gz"
    manifest = shipped_manifest_path() if update_manifest else target.parent / "manifest.json"
    click.echo(f"Preset {target}\nArchive {archive}\nManifest {manifest}")
