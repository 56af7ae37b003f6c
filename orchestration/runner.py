"""One job: invert and edit a shard of a PIE-Bench-format benchmark; write images and one result row per sample.

The job checks its configuration before any model loads, selects its shard, refuses a folder whose rows came from
another configuration, dataset, metric setup or code (resume.py), skips the samples already done, loads the model
and the metric suite (kept resident between the jobs of a local sweep), processes the samples (samples.py: a sample
that raises is recorded as failed with its reason and the job goes on), appends each row as soon as it is scored,
and writes run.json and the summary (records.py). Only one process works in a folder at a time
(invbench/job_folder.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from editors import Editor
from invbench.errors import InvbenchError
from invbench.job_folder import (
    FolderLock,
    exclusive_use,
    job_logs,
    job_status,
    refuse_mixing,
    refuse_other_data,
    remove_stale_partials,
)
from invbench.models import DiffusionModel, load_model
from invbench.provenance import row_fields
from invbench.registry import hyperparameters
from invbench.results import RESULTS_FILE, SELECTION_FILE, ResultsFile, config_hash, write_json_atomically
from invbench.runtime import configure_threads, keep_freed_memory, resolve_device
from metrics import CostMeter, MetricSuite
from orchestration.inversion_cache import CACHE_FOLDER, InversionCache
from orchestration.job_config import check_job_config
from orchestration.progress import Progress, terminal_bar
from orchestration.prompt_limits import check_samples, prompt_encoders
from orchestration.records import write_run_record, write_summary
from orchestration.resident import resident
from orchestration.resume import RESULT_DEFINING_KEYS, current_data, refuse_other_code, what_changed
from orchestration.samples import EDITED_FOLDER, RECONSTRUCTION_FOLDER, process_group
from pie_bench import InvalidSample, Sample, edit_class_lookup, load_dataset, select

log = logging.getLogger(__name__)


def run_job(
    cfg: DictConfig,
    output_dir: Path,
    launcher_cpus: int | None = None,
    job_num: int | None = None,
    logs: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Run the job described by a composed `conf/config.yaml`; returns this job's result rows. `job_num` is the job's
    number in its sweep (None for a single run): recorded so that a sweep's job list can find the job's folder.
    `logs` (name -> path) are recorded in job_status.json, which says how the job ended."""
    output_dir = Path(output_dir)
    with exclusive_use(output_dir, "launch.py job") as lock, job_status(output_dir, logs or job_logs()):
        return _run_job(cfg, output_dir, launcher_cpus, job_num, lock)


def _run_job(
    cfg: DictConfig, output_dir: Path, launcher_cpus: int | None, job_num: int | None, lock: FolderLock
) -> pd.DataFrame:
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    # Everything that can be checked without the model is checked first, so a typo fails in a second.
    checked = check_job_config(config)
    inversion, editor, metrics, logger = checked.inversion, checked.editor, checked.metrics, checked.logger
    threads = configure_threads(config["num_threads"], launcher_cpus)
    keep_freed_memory()
    device = resolve_device(config["device"])
    if config["precision"] != "reference":
        editor = editor.fast_path()  # its hyperparameters, recorded below, say what ran
    config["inversion"], config["editor"] = hyperparameters(inversion), hyperparameters(editor)
    digest = config_hash({key: config[key] for key in RESULT_DEFINING_KEYS} | _precision_key(config))
    metrics_digest = config_hash(config["metrics"])
    dataset = config["dataset"]
    benchmark = load_dataset(dataset, edit_class_lookup(config["edit_classes"]), strict=False)
    selected = select(benchmark.entries, dataset["categories"], dataset["num_shards"], dataset["shard_index"])
    # prompts against the text encoders' limits, with the tokenizers alone: a refusal costs no model load
    selected, prompt_cuts = check_samples(selected, prompt_encoders(config["model"]), editor)
    for stale in remove_stale_partials(output_dir):
        log.info("removed %s, half-written by a process that was killed", stale)
    results = ResultsFile(output_dir / RESULTS_FILE)
    previous = results.latest_rows()
    explain = what_changed(output_dir, config, previous)
    refuse_mixing(output_dir, previous, {"config_hash": digest, "metrics_config_hash": metrics_digest}, explain)
    refuse_other_data(output_dir, previous, benchmark.mapping_file, current_data(benchmark))
    code_changes = refuse_other_code(output_dir, previous, config["resume_with_other_code"])
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
        # a local sweep runs its jobs in this process: the model and the metric backbones of the previous job are
        # reused when this job's configuration would build the same ones (orchestration/resident.py)
        model, model_reused = resident(
            "model",
            {"model": config["model"], "scheduler": config["scheduler"], "device": str(device)},
            lambda: load_model(config["model"], config["scheduler"], device),
        )
        metrics, _ = resident(
            "metrics", {"metrics": config["metrics"], "device": str(device)}, partial(_loaded, metrics, device)
        )
        # which backbones `auto` found is known only now: real ones cached since would change every value
        refuse_mixing(output_dir, previous, {"metrics_setup": metrics.setup})
        _set_precision(model, config["precision"])
        if device.type == "cuda" and not model_reused:
            model.warm_up(batches=sorted({1, 2, 4, 4 * config["batch_size"]}))
        write_run_record(output_dir, config, digest, device, len(selected) - len(todo))
        shared = {
            "inversion": inversion.name,
            "editor": editor.name,
            "model": model.name,
            "model_weights": model.weights,
            "device": str(device),
            "dtype": config["model"]["dtype"],
            "precision": config["precision"],
            "resolution": model.resolution,
            "config_hash": digest,
            "hparams": {"inversion": config["inversion"], "editor": config["editor"]},
            "seed": config["seed"],
            "dataset": dataset["name"],
            "mapping_file": str(benchmark.mapping_file),
            "images_root": str(benchmark.images_root),
            "metrics_setup": metrics.setup,
            "metrics_config_hash": metrics_digest,
            **row_fields(),
        }
        if code_changes:  # resume_with_other_code=true: these rows say which changes they were computed across
            shared["resumed_with_other_code"] = code_changes
        meter = CostMeter(model.denoiser, device)
        sharing = _inversion_sharing(config, output_dir, job_num, editor, device)
        logger.start(config, output_dir, group=output_dir.parent.name if job_num is not None else output_dir.name)
        batch_size = config["batch_size"] if inversion.batches and editor.batches else 1
        if batch_size < config["batch_size"]:
            log.info(
                "batch_size=%d: %s does not batch samples; they run one at a time",
                config["batch_size"],
                f"inversion={inversion.name}" if not inversion.batches else f"editor={editor.name}",
            )
        process_samples = partial(
            process_group,
            model=model,
            inversion=inversion,
            editor=editor,
            metrics=metrics,
            meter=meter,
            output_dir=output_dir,
            seed=config["seed"],
            sharing=sharing,
        )

        def work(group: list[Sample | InvalidSample]) -> Iterator[dict[str, Any]]:
            lock.check()  # the folder still ours and still there, before any work goes into it
            return process_samples(group)

        progress = Progress(len(todo))
        try:
            groups = (todo[start : start + batch_size] for start in range(0, len(todo), batch_size))
            done_rows = ((entry, row) for group in groups for entry, row in zip(group, work(group), strict=True))
            with terminal_bar(len(todo), f"{inversion.name}+{editor.name}") as bar:
                for position, (entry, row) in enumerate(done_rows, 1):
                    row = {**shared, **row}
                    if entry.id in prompt_cuts:
                        row["prompt_truncated"] = prompt_cuts[entry.id]
                    lock.check()
                    results.append(row)
                    logger.log_sample(row)
                    progress.advance()
                    log.info(
                        "[%d/%d] %s (%s): %s in %.1f s; %s%s",
                        position,
                        len(todo),
                        entry.id,
                        row["category"],
                        row["status"],
                        row.get("total_seconds", float("nan")),
                        progress.status(),
                        f" - {row['error']}" if row["error"] else "",
                    )
                    if bar is not None:
                        bar.update()
        except BaseException:
            meter.close()
            with contextlib.suppress(Exception):  # what stopped the job is the error to report, not the logger's
                logger.finish(_latest(results))
            raise
        meter.close()
        logger.finish(_latest(results))

    selected_ids = {entry.id for entry in selected}
    job_rows = pd.DataFrame([row for row in results.rows() if row["sample_id"] in selected_ids])
    job_rows = job_rows.drop_duplicates(subset="sample_id", keep="last")
    write_summary(
        job_rows,
        output_dir,
        skipped=len(selected) - len(todo),
        locations={"edited images": output_dir / EDITED_FOLDER, "reconstructions": output_dir / RECONSTRUCTION_FOLDER},
    )
    if len(job_rows) and (job_rows["status"] != "ok").all():
        raise NoSampleSucceeded(
            f"all {len(job_rows)} samples of this job failed (reasons in {output_dir / 'summary.md'}): nothing in "
            "it can be scored. Fix what the reasons name and rerun the same command: it retries the failed samples"
        )
    return job_rows


def check_only(cfg: DictConfig) -> str:
    """`dry_run=true`: what a job checks before it loads anything (its settings, methods, pair and data selection),
    and a line saying what it would run; raises the ConfigError a real run would stop with."""
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    checked = check_job_config(config)
    dataset = config["dataset"]
    benchmark = load_dataset(dataset, edit_class_lookup(config["edit_classes"]), strict=False)
    selected = select(benchmark.entries, dataset["categories"], dataset["num_shards"], dataset["shard_index"])
    return (
        f"invbench (dry_run=true): inversion={checked.inversion.name} editor={checked.editor.name} "
        f"model={config['model']['name']} can run on {len(selected)} samples of {benchmark.mapping_file}; "
        "nothing was loaded or run"
    )


class NoSampleSucceeded(InvbenchError):
    """Every selected sample failed: the job ends with a non-zero exit code (2) after writing its summary."""


def _latest(results: ResultsFile) -> pd.DataFrame:
    """The folder's latest row of each sample (none: an empty frame with the columns readers index)."""
    rows = results.latest_rows()
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["sample_id", "status"])


def _precision_key(config: Mapping[str, Any]) -> dict[str, str]:
    """The precision where it is not the reference's: part of what defines a result (absent from reference runs'
    hashes, which predate the setting)."""
    return {} if config["precision"] == "reference" else {"precision": config["precision"]}


def _set_precision(model: DiffusionModel, precision: str) -> None:
    """`reference`: the model's dtype throughout, no TF32 (the published tables' arithmetic). `bfloat16` /
    `float16`: denoiser calls under autocast to it, and TF32 matmuls and convolutions on CUDA. Set per job, both
    ways, because the model and torch's flags outlive a job in a local sweep."""
    fast = precision != "reference"
    model.autocast_dtype = getattr(torch, precision) if fast else None
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast


def _loaded(metrics: MetricSuite, device: torch.device) -> MetricSuite:
    metrics.load(device)
    return metrics


def _inversion_sharing(
    config: Mapping[str, Any], output_dir: Path, job_num: int | None, editor: Editor, device: torch.device
) -> tuple[InversionCache, dict[str, Any]] | None:
    """The sweep's inversion cache and what defines an inversion, or None: a single run, `inversion_cache: false`,
    or an editor that observes the inversion while it runs."""
    if not config["inversion_cache"] or job_num is None or editor.observes_inversion():
        return None
    defining = {key: config[key] for key in ("model", "scheduler", "inversion", "seed")} | {"device": str(device)}
    defining |= _precision_key(config)
    versions = row_fields()  # a sweep resumed with other code (resume_with_other_code) never reuses the old entries
    defining |= {"source_sha256": versions["code_version"]["source_sha256"], "libraries": versions["library_versions"]}
    cache = InversionCache(output_dir.parent / CACHE_FOLDER, device)
    for stale in cache.remove_stale_partials():
        log.info("removed %s, half-written by a process that was killed", stale)
    return cache, defining
