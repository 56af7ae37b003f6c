"""Score edited images that already exist: our run folders, or anyone's outputs in the reference layout.

Two layouts are recognised from the folder given as `outputs`:
- a run folder of launch.py (it holds results.jsonl): every successful row is scored again from its lossless PNGs
  with the configured metric suite (e.g. after real backbones became available, or to switch `reference_compat`);
  failed rows are carried over as failed;
- a method folder of the reference layout, `output/<method>/annotation_images/<image_path>` (the PnPInversion
  scripts and the published outputs): each image is the 2048×512 composite [prompt | source | reconstruction |
  edited] whose bottom-right 512×512 panel is the edit, or a plain 512×512 edit. `<method>` such as `ddim+p2p` fills
  the inversion and editor columns. A missing image is a failed row, never a crash.

Rows go to a new folder (results.jsonl, summary.md) that aggregate.py reads like any run; rerunning into the same
folder scores only what is missing.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from invbench.columns import METRIC_COLUMNS
from invbench.errors import ConfigError, ImageError, InvbenchError
from invbench.images import decode_image
from invbench.job_folder import exclusive_use, refuse_mixing, remove_stale_partials
from invbench.paths import contained_path_problem
from invbench.provenance import row_fields
from invbench.results import (
    RESULTS_FILE,
    SELECTION_FILE,
    ResultsFile,
    config_hash,
    read_rows,
    write_json_atomically,
)
from invbench.runtime import configure_threads, keep_freed_memory, resolve_device
from metrics import METRICS, MetricSuite
from orchestration.records import write_summary
from orchestration.resume import refuse_other_code
from orchestration.samples import describe_sample
from pie_bench import PIE_MASK_SHAPE, InvalidSample, Sample, edit_class_lookup, load_dataset, select

log = logging.getLogger(__name__)

REFERENCE_IMAGES_FOLDER = "annotation_images"
PANEL = PIE_MASK_SHAPE[0]  # the reference composites are rows of 512×512 panels
# Row fields a re-score replaces; everything else (method, costs, prompts) is kept from the original row.
_SCORE_FIELDS = ("status", "error", "metrics_setup", "metrics_seconds", "metrics_resized_from", "metrics_note")


def split_reference_composite(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(edited, reconstruction or None) from a reference output image, cropped as the reference's evaluate.py does:
    a non-square image gives its bottom-right 512×512 panel as the edit and the panel to its left as the
    reconstruction (None when that panel is black, as model-based methods leave it); a square image is the edit."""
    height, width = image.shape[:2]
    if height == width:
        return image, None
    if height < PANEL or width < PANEL:
        raise ValueError(f"a {width}×{height} composite has no {PANEL}×{PANEL} panel")
    edited = image[height - PANEL :, width - PANEL :]
    reconstruction = image[height - PANEL :, width - 2 * PANEL : width - PANEL] if width >= 2 * PANEL else None
    if reconstruction is not None and not reconstruction.any():
        reconstruction = None
    return edited, reconstruction


def read_rgb(path: Path, what: str) -> np.ndarray:
    """An output image's 8-bit RGB pixels; an image that cannot be decoded is an ImageError naming `what` (the
    sample and field) and the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no output image at {path}")
    try:
        return decode_image(path.read_bytes()).pixels
    except ImageError as error:
        raise ImageError(f"{what} ({path}): {error}") from None


def evaluate_folder(cfg: DictConfig, output_dir: Path, launcher_cpus: int | None = None) -> pd.DataFrame:
    """Score the folder `cfg.outputs` into `output_dir`; returns the rows of this evaluation."""
    with exclusive_use(output_dir, "score.py"):
        return _evaluate_folder(cfg, output_dir, launcher_cpus)


def _evaluate_folder(cfg: DictConfig, output_dir: Path, launcher_cpus: int | None) -> pd.DataFrame:
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    configure_threads(config["num_threads"], launcher_cpus)
    keep_freed_memory()
    device = resolve_device(config["device"])
    source = Path(config["outputs"]).expanduser().resolve()
    metrics = METRICS.build(config["metrics"])
    if (source / RESULTS_FILE).is_file():
        jobs = _run_folder_jobs(source)
    elif (source / REFERENCE_IMAGES_FOLDER).is_dir():
        jobs = _reference_folder_jobs(source, config)
    else:
        raise ConfigError(
            f"outputs={source} is neither a run folder of launch.py (no {RESULTS_FILE}) nor a reference-layout "
            f"method folder (no {REFERENCE_IMAGES_FOLDER}/ inside). Point outputs= at one of those."
        )
    remove_stale_partials(output_dir)
    results = ResultsFile(output_dir / RESULTS_FILE)
    previous = results.latest_rows()
    metrics_digest = config_hash(config["metrics"])
    refuse_mixing(output_dir, previous, {"scored_from": str(source), "metrics_config_hash": metrics_digest})
    code_changes = refuse_other_code(output_dir, previous, config["resume_with_other_code"])
    write_json_atomically(  # what this evaluation is meant to produce, so that aggregate.py can tell what is missing
        output_dir / SELECTION_FILE,
        {
            "scored_from": str(source),
            "mapping_file": next((row.get("mapping_file") for row, _, _ in jobs if row.get("mapping_file")), None),
            "job_num": None,
            "sample_ids": [row["sample_id"] for row, _, _ in jobs],
        },
    )
    done = results.finished_ids()
    todo = [(row, sample, images) for row, sample, images in jobs if row["sample_id"] not in done]
    log.info("scoring %d samples of %s (%d already in %s)", len(todo), source, len(jobs) - len(todo), output_dir)
    if todo:
        metrics.load(device)
        refuse_mixing(output_dir, previous, {"metrics_setup": metrics.setup})
    for position, (row, sample, images) in enumerate(todo, 1):
        scored = _score(row, sample, images, metrics) | {
            "metrics_config_hash": metrics_digest,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # when it was scored
            **row_fields(),  # the scorer's code and libraries (a run's own are kept as run_code_version)
        }
        if code_changes:
            scored["resumed_with_other_code"] = code_changes
        if scored.get("metrics_resized_from"):
            side = scored["metrics_resized_from"]
            log.warning("sample %s: the edit is %dx%d, rescaled to 512x512 for the metrics (metrics_resized_from)",
                        row["sample_id"], side, side)  # fmt: skip
        results.append(scored)
        log.info("[%d/%d] %s: %s%s", position, len(todo), row["sample_id"], scored["status"], _reason(scored))
    ids = {row["sample_id"] for row, _, _ in jobs}
    rows = pd.DataFrame([row for row in results.rows() if row["sample_id"] in ids])
    rows = rows.drop_duplicates(subset="sample_id", keep="last") if len(rows) else rows
    write_summary(rows, output_dir, skipped=len(jobs) - len(todo), locations={"scored from": source})
    return rows


# A job: the row to complete, the benchmark sample (None: carry the row over unscored), and a function that reads
# (edited, reconstruction or None, lossless) -- called inside the per-sample error handling.
_Job = tuple[dict[str, Any], Sample | None, Any]


def _run_folder_jobs(folder: Path) -> list[_Job]:
    record = json.loads((folder / "run.json").read_text(encoding="utf-8")) if (folder / "run.json").is_file() else {}
    run_config = record.get("config")
    if run_config is None:
        raise ConfigError(f"{folder / 'run.json'} is missing or has no 'config'; cannot tell which benchmark it ran")
    dataset = run_config["dataset"]
    benchmark = load_dataset(dataset, edit_class_lookup(run_config["edit_classes"]), strict=False)
    entries = {entry.id: entry for entry in benchmark.entries}
    latest = {row["sample_id"]: row for row in read_rows(folder / RESULTS_FILE)}  # a retried sample's last row
    writers = Counter(row.get("edited_image") for row in latest.values() if row["status"] == "ok")
    jobs: list[_Job] = []
    for row in latest.values():
        original = {key: value for key, value in row.items() if key not in _SCORE_FIELDS + METRIC_COLUMNS}
        original["scored_from"] = str(folder)
        for key in ("code_version", "library_versions"):  # the run's; the row gets the scorer's when scored
            if key in original:
                original[f"run_{key}"] = original.pop(key)
        problem = (
            _run_row_problem(row, folder, entries.get(row["sample_id"]), writers) if row["status"] == "ok" else None
        )
        if row["status"] != "ok" or problem:
            error = f"InvbenchError: {problem}" if problem else row["error"]
            jobs.append(({**original, "status": "failed", "error": error}, None, None))
            continue

        def read(row: Mapping[str, Any] = row) -> tuple[np.ndarray, np.ndarray | None, bool]:
            images = [
                read_rgb(folder / row[column], f"{folder / RESULTS_FILE}: sample '{row['sample_id']}', {column}")
                for column in ("edited_image", "reconstruction_image")
            ]
            return *images, True

        jobs.append((original, entries[row["sample_id"]], read))
    return jobs


def _run_row_problem(
    row: Mapping[str, Any], folder: Path, entry: Sample | InvalidSample | None, writers: Counter
) -> str | None:
    """Why a successful row of a run folder cannot be scored again (None when it can): its sample is not a valid
    sample of the run's benchmark, an image path leaves the folder, or another sample's row names the same edit."""
    if entry is None:
        return f"sample {row['sample_id']} is not in the benchmark the run used"
    if isinstance(entry, InvalidSample):
        return " | ".join(entry.problems)
    for column in ("edited_image", "reconstruction_image"):
        problem = contained_path_problem(row.get(column), folder)
        if problem:
            return f"{folder / RESULTS_FILE}: sample '{row['sample_id']}', field '{column}': {problem}"
    if writers[row["edited_image"]] > 1:
        return (
            f"{folder / RESULTS_FILE}: sample '{row['sample_id']}': its edited_image {row['edited_image']} is named by "
            f"{writers[row['edited_image']]} samples' rows, so it holds one of them; rerun them into a new folder"
        )
    return None


def _reference_folder_jobs(folder: Path, config: Mapping[str, Any]) -> list[_Job]:
    method = config["method"] or folder.name
    inversion, _, editor = method.partition("+")
    dataset = config["dataset"]
    benchmark = load_dataset(dataset, edit_class_lookup(config["edit_classes"]), strict=False)
    selected = select(benchmark.entries, dataset["categories"], dataset["num_shards"], dataset["shard_index"])
    shared = {
        "inversion": inversion,
        "editor": editor or "-",
        "model": "external",
        "model_weights": f"outputs of {folder}",
        "config_hash": config_hash({"outputs": str(folder), "method": method}),
        "dataset": dataset["name"],
        "mapping_file": str(benchmark.mapping_file),
        "scored_from": str(folder),
    }
    jobs: list[_Job] = []
    for entry in selected:
        row = {**describe_sample(entry), **shared, "edited_image": f"{REFERENCE_IMAGES_FOLDER}/{entry.image_path}"}
        if isinstance(entry, InvalidSample):
            jobs.append(({**row, "status": "failed", "error": " | ".join(entry.problems)}, None, None))
            continue

        def read(entry: Sample = entry):
            problem = contained_path_problem(entry.image_path, folder / REFERENCE_IMAGES_FOLDER)
            if problem:
                raise InvbenchError(f"output of sample '{entry.id}' (image_path): {problem}")
            path = folder / REFERENCE_IMAGES_FOLDER / entry.image_path
            return (*split_reference_composite(read_rgb(path, f"output of sample '{entry.id}'")), False)

        jobs.append((row, entry, read))
    return jobs


def _score(row: dict[str, Any], sample: Sample | None, read, metrics: MetricSuite) -> dict[str, Any]:
    if read is None:  # carried over as it was
        return row
    scored = {**row, "metrics_setup": metrics.setup}
    started = time.perf_counter()
    try:
        if sample is None:
            raise InvbenchError(f"sample {row['sample_id']} is not in the benchmark the run used")
        edited, reconstruction, lossless = read()
        scored.update(metrics.score(sample, edited, reconstruction, lossless))
        scored.update(status="ok", error=None, metrics_seconds=time.perf_counter() - started)
    except Exception as error:  # one unreadable output never stops the evaluation
        expected = isinstance(error, (InvbenchError, FileNotFoundError, ValueError))
        log.error("sample %s failed: %s: %s", row["sample_id"], type(error).__name__, error, exc_info=not expected)
        scored.update(status="failed", error=f"{type(error).__name__}: {error}")
    return scored


def _reason(row: Mapping[str, Any]) -> str:
    return f" - {row['error']}" if row.get("error") else ""
