"""One job: invert and edit a shard of a PIE-Bench-format benchmark; write images and one result row per sample.

Per sample: seed, load and fit the source image, invert (VAE encode included), edit (VAE decode included), write the
edited image and the source-branch reconstruction as PNG, score them with the metric suite, append the row. A sample
that raises is recorded as failed with its reason and the job goes on. Rerunning into the same folder skips samples
that already succeeded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from editors import EDITORS, Editor
from invbench.compatibility import check_pair
from invbench.errors import ConfigError, InvbenchError
from invbench.images import fit_square, save_png
from invbench.loggers import LOGGERS
from invbench.models import DiffusionModel, load_model
from invbench.registry import hyperparameters
from invbench.results import RESULTS_FILE, SELECTION_FILE, ResultsFile, config_hash, write_json_atomically
from invbench.runtime import configure_threads, environment_info, resolve_device, seed_everything
from inversions import INVERSIONS, Inversion
from metrics import METRICS, CostMeter, MetricSuite
from pie_bench import InvalidSample, Sample, edit_class_lookup, load_benchmark, select
from reports import mean_table, to_markdown

log = logging.getLogger(__name__)

# The parts of the configuration that determine a sample's result; their hash names the configuration.
RESULT_DEFINING_KEYS = ("model", "scheduler", "inversion", "editor", "edit_classes", "seed")
EDITED_FOLDER, RECONSTRUCTION_FOLDER = "edited", "reconstruction"


def run_job(
    cfg: DictConfig, output_dir: Path, launcher_cpus: int | None = None, job_num: int | None = None
) -> pd.DataFrame:
    """Run the job described by a composed `conf/config.yaml`; returns this job's result rows. `job_num` is the job's
    number in its sweep (None for a single run): recorded so that a sweep's job list can find the job's folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing in a job may reach the network
    output_dir = Path(output_dir)
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    threads = configure_threads(config["num_threads"], launcher_cpus)
    device = resolve_device(config["device"])

    # Everything that can be checked without the model is checked first, so a typo fails in a second.
    inversion = INVERSIONS.build(config["inversion"])
    editor = EDITORS.build(config["editor"])
    check_pair(inversion, editor)
    metrics = METRICS.build(config["metrics"])
    logger = LOGGERS.build(config["logger"])
    config["inversion"], config["editor"] = hyperparameters(inversion), hyperparameters(editor)
    digest = config_hash({key: config[key] for key in RESULT_DEFINING_KEYS})
    dataset = config["dataset"]
    benchmark = load_benchmark(
        dataset["root"], edit_class_lookup(config["edit_classes"]), dataset["mapping_file"], strict=False
    )
    selected = select(benchmark.entries, dataset["categories"], dataset["num_shards"], dataset["shard_index"])
    results = ResultsFile(output_dir / RESULTS_FILE)
    _refuse_other_configuration(results, digest)
    write_json_atomically(
        output_dir / SELECTION_FILE,
        {
            "mapping_file": str(benchmark.mapping_file),
            **{key: dataset[key] for key in ("name", "categories", "num_shards", "shard_index")},
            "job_num": job_num,
            "sample_ids": [entry.id for entry in selected],
        },
    )
    done = results.finished_ids()
    todo = [entry for entry in selected if entry.id not in done]
    log.info(
        "%d of %d samples of %s selected; %d already done in %s; %d CPU threads",
        len(selected),
        len(benchmark.entries),
        benchmark.mapping_file,
        len(selected) - len(todo),
        output_dir,
        threads,
    )

    if todo:
        model = load_model(config["model"], config["scheduler"], device)
        metrics.load(device)
        if device.type == "cuda":
            model.warm_up()
        _write_run_record(output_dir, config, digest, device)
        shared = {
            "inversion": inversion.name,
            "editor": editor.name,
            "model": model.name,
            "model_weights": model.weights,
            "device": str(device),
            "dtype": config["model"]["dtype"],
            "resolution": model.resolution,
            "config_hash": digest,
            "hparams": {"inversion": config["inversion"], "editor": config["editor"]},
            "seed": config["seed"],
            "metrics_setup": metrics.setup,
        }
        meter = CostMeter(model.unet, device)
        logger.start(config, output_dir, group=output_dir.parent.name if job_num is not None else output_dir.name)
        try:
            for position, entry in enumerate(todo, 1):
                row = {
                    **shared,
                    **_process(entry, model, inversion, editor, metrics, meter, output_dir, config["seed"]),
                }
                results.append(row)
                logger.log_sample(row)
                log.info(
                    "[%d/%d] %s (%s): %s in %.1f s%s",
                    position,
                    len(todo),
                    entry.id,
                    row["category"],
                    row["status"],
                    row.get("total_seconds", float("nan")),
                    f" - {row['error']}" if row["error"] else "",
                )
        finally:
            meter.close()
            logger.finish(pd.DataFrame(results.rows()).drop_duplicates("sample_id", keep="last"))

    selected_ids = {entry.id for entry in selected}
    job_rows = pd.DataFrame([row for row in results.rows() if row["sample_id"] in selected_ids])
    job_rows = job_rows.drop_duplicates(subset="sample_id", keep="last")
    write_summary(
        job_rows,
        output_dir,
        skipped=len(selected) - len(todo),
        locations={"edited images": output_dir / EDITED_FOLDER, "reconstructions": output_dir / RECONSTRUCTION_FOLDER},
    )
    return job_rows


def _process(
    entry: Sample | InvalidSample,
    model: DiffusionModel,
    inversion: Inversion,
    editor: Editor,
    metrics: MetricSuite,
    meter: CostMeter,
    output_dir: Path,
    seed: int,
) -> dict[str, Any]:
    row = describe_sample(entry)
    meter.start_sample()
    try:
        if isinstance(entry, InvalidSample):
            raise InvbenchError(" | ".join(entry.problems))
        seed_everything(seed)
        image = fit_square(entry.read_image(), model.resolution)
        with meter.phase("inversion"):
            inverted = inversion.invert(model, model.encode_image(image), entry)
        _require_finite(f"inversion={inversion.name}", inverted.noise_latent)
        with meter.phase("edit"):
            edit = editor.edit(model, inverted, entry)
            _require_finite(f"editor={editor.name}", torch.cat([edit.edited, edit.reconstruction]))
            edited, reconstruction = model.decode_latents(torch.cat([edit.edited, edit.reconstruction]))
        image_file = entry.output_name  # validated by the reader: inside the job folder, one per sample
        save_png(edited, output_dir / EDITED_FOLDER / image_file)
        save_png(reconstruction, output_dir / RECONSTRUCTION_FOLDER / image_file)
        row.update(
            edited_image=str(Path(EDITED_FOLDER) / image_file),
            reconstruction_image=str(Path(RECONSTRUCTION_FOLDER) / image_file),
            inversion_info=inverted.info,
            edit_info=edit.info,
        )
        row.update(_costs(meter))
        started = time.perf_counter()
        row.update(metrics.score(entry, edited, reconstruction, lossless=True))
        row.update(metrics_seconds=time.perf_counter() - started, status="ok", error=None)
    except Exception as error:  # one bad sample never stops the job
        expected = isinstance(error, (InvbenchError, FileNotFoundError))
        log.error("sample %s failed: %s: %s", entry.id, type(error).__name__, error, exc_info=not expected)
        row.update(status="failed", error=f"{type(error).__name__}: {error}")
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
    if "total_seconds" not in row:
        row.update(_costs(meter))
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return row


def _require_finite(method: str, latents: torch.Tensor) -> None:
    """A NaN or infinite latent decodes to a plausible-looking image and would be scored as a result: fail the
    sample instead, naming the method."""
    bad = int((~torch.isfinite(latents)).sum())
    if bad:
        raise InvbenchError(
            f"{method} produced {bad} non-finite latent values (NaN or inf) of {latents.numel()}: the method "
            "diverged on this sample with these settings (e.g. a step size tuned for another model)"
        )


def _costs(meter: CostMeter) -> dict[str, Any]:
    """Seconds, UNet evaluations and peak memory of inversion + editing (metrics are timed separately)."""
    costs = dict(meter.values)
    costs["total_seconds"] = costs.get("inversion_seconds", 0.0) + costs.get("edit_seconds", 0.0)
    costs["peak_memory_mb"], costs["memory_kind"] = meter.peak_memory()
    return costs


def describe_sample(entry: Sample | InvalidSample) -> dict[str, Any]:
    if isinstance(entry, InvalidSample):
        return {
            "sample_id": entry.id,
            "image_path": entry.image_path,
            "editing_type": entry.editing_type,
            "category": "invalid",
            "edit_class": None,
            "source_prompt": None,
            "target_prompt": None,
            "blended_words": None,
        }
    return {
        "sample_id": entry.id,
        "image_path": entry.image_path,
        "editing_type": entry.editing_type,
        "category": entry.category,
        "edit_class": entry.edit_class,
        "source_prompt": entry.source_prompt,
        "target_prompt": entry.target_prompt,
        "blended_words": list(entry.blended_words) if entry.blended_words else None,
    }


def _refuse_other_configuration(results: ResultsFile, digest: str) -> None:
    other = {row["config_hash"] for row in results.rows()} - {digest}
    if other:
        raise ConfigError(
            f"{results.path.parent} already holds results of another configuration (config_hash {sorted(other)}, "
            f"this run is {digest}). Resume with the same model/inversion/editor/seed settings, or write to a new "
            "folder: hydra.run.dir=<folder> (or omit it for a fresh time-stamped one)."
        )


def _write_run_record(output_dir: Path, config: Mapping[str, Any], digest: str, device: torch.device) -> None:
    """run.json: the configuration and environment of the first start in this folder (kept on resume)."""
    path = output_dir / "run.json"
    if path.exists():
        return
    record = {
        "config_hash": digest,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment_info(device),
        "config": config,
    }
    write_json_atomically(path, record)


def write_summary(rows: pd.DataFrame, output_dir: Path, skipped: int, locations: Mapping[str, Path]) -> None:
    """Print the job's table, counts and failures, and keep them in summary.md."""
    if rows.empty:
        print(f"invbench: no samples selected; nothing written to {output_dir}")
        return
    failed = rows[rows["status"] != "ok"]
    where = {"results": output_dir / RESULTS_FILE, **locations}
    lines = [
        f"invbench: {len(rows) - len(failed)} samples ok, {len(failed)} failed "
        f"({skipped} already done before this run)",
        *(f"  {name:<16}{path}" for name, path in where.items()),
        "",
        to_markdown(mean_table(rows)),
    ]
    if len(failed):
        lines += ["", "failed samples:"] + [f"  {r.sample_id}: {r.error}" for r in failed.itertuples()]
    text = "\n".join(lines)
    (output_dir / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)
