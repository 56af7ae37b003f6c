"""One job: invert and edit a shard of a PIE-Bench-format benchmark; write images and one result row per sample.

Per sample: seed, load and fit the source image, invert (VAE encode included), edit (VAE decode included), write the
edited image and the source-branch reconstruction as PNG, score them with the metric suite, append the row. A sample
that raises is recorded as failed with its reason and the job goes on. Rerunning into the same folder skips samples
that already succeeded; it is refused when the folder's rows came from another configuration, dataset or metric
setup, or while another process works in the folder (invbench/job_folder.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from submitit.core.utils import UncompletedJobError

from editors import Editor
from invbench.errors import ConfigError, InvbenchError, OutputFault
from invbench.images import fit_changes, fit_square, save_png
from invbench.inversion_cache import (
    CACHE_FOLDER,
    COST_KEYS,
    InversionCache,
    cache_key,
    random_state,
    restore_random_state,
)
from invbench.job_config import check_job_config
from invbench.job_folder import (
    NEW_FOLDER,
    FolderLock,
    exclusive_use,
    job_logs,
    job_status,
    refuse_mixing,
    refuse_other_data,
    remove_stale_partials,
)
from invbench.models import DiffusionModel, load_model
from invbench.paths import writing
from invbench.prompt_limits import check_samples, prompt_encoders
from invbench.provenance import differences, row_fields
from invbench.registry import hyperparameters
from invbench.resident import resident
from invbench.results import RESULTS_FILE, SELECTION_FILE, ResultsFile, config_hash, write_json_atomically
from invbench.runtime import (
    configure_threads,
    environment_info,
    keep_freed_memory,
    resolve_device,
    seed_everything,
)
from inversions import Inversion
from metrics import CostMeter, MetricSuite
from pie_bench import Benchmark, InvalidSample, Sample, edit_class_lookup, load_dataset, select
from pie_bench.dataset import sha256
from reports import mean_table, to_markdown

log = logging.getLogger(__name__)

# The parts of the configuration that determine a sample's result; their hash names the configuration.
RESULT_DEFINING_KEYS = ("model", "scheduler", "inversion", "editor", "edit_classes", "seed")
EDITED_FOLDER, RECONSTRUCTION_FOLDER = "edited", "reconstruction"
# Exceptions that mean "stop the job", raised wherever the job happens to be (e.g. from a signal handler)
# A fault of the machine (OutputFault) stops the job too: it is never a sample's failure.
JOB_STOPPING = (UncompletedJobError, OutputFault)


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
    explain = _what_changed(output_dir, config, previous)
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
        # reused when this job's configuration would build the same ones (invbench/resident.py)
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
        _write_run_record(output_dir, config, digest, device, len(selected) - len(todo))
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
        process_group = partial(
            _process_group,
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
            return process_group(group)

        try:
            groups = (todo[start : start + batch_size] for start in range(0, len(todo), batch_size))
            done_rows = ((entry, row) for group in groups for entry, row in zip(group, work(group), strict=True))
            for position, (entry, row) in enumerate(done_rows, 1):
                row = {**shared, **row}
                if entry.id in prompt_cuts:
                    row["prompt_truncated"] = prompt_cuts[entry.id]
                lock.check()
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


class NoSampleSucceeded(InvbenchError):
    """Every selected sample failed: the job ends with a non-zero exit code (2) after writing its summary."""


def refuse_other_code(output_dir: Path, rows: list[Mapping[str, Any]], allowed: bool) -> list[str]:
    """The ways this process's code and libraries differ from those of the folder's results (invbench/provenance.py):
    refused (ConfigError listing them) unless `resume_with_other_code`, where they are returned for the rows to
    record. Failed rows are left out: they hold no result."""
    found = differences([row for row in rows if row.get("status") == "ok"])
    if found and not allowed:
        listed = "\n  ".join(found)
        raise ConfigError(
            f"{output_dir} holds results computed by other code or libraries than this run's:\n  {listed}\n"
            "Rows from two versions would be averaged together, and nothing in a table could tell them apart. "
            f"{NEW_FOLDER}. Only if you know the difference cannot change any result: resume_with_other_code=true "
            "(the new rows then record these differences in `resumed_with_other_code`)."
        )
    return found


def _what_changed(output_dir: Path, config: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> dict[str, str]:
    """For the refusal of a changed configuration: config_hash and metrics_config_hash -> the keys whose values
    differ from the folder's run.json, in words ({} without a run.json or a difference to name)."""
    try:
        recorded = json.loads((output_dir / "run.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    keys = (*RESULT_DEFINING_KEYS, "precision")
    return {
        "config_hash": "; ".join(config_differences({k: recorded.get(k) for k in keys}, {k: config[k] for k in keys})),
        "metrics_config_hash": "; ".join(config_differences(recorded.get("metrics"), config["metrics"], "metrics")),
    }


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key.path: old -> new' for every value that differs between two nested configurations."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                found.append(f"{path}: (absent) -> {new[key]!r}")
            elif key not in new:
                found.append(f"{path}: {old[key]!r} -> (absent)")
            else:
                found += config_differences(old[key], new[key], path)
        return found
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


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


def _invert(
    model: DiffusionModel,
    inversion: Inversion,
    editor: Editor,
    image: Any,
    image_sha256: str,
    seen: Sample,
    meter: CostMeter,
    sharing: tuple[InversionCache, dict[str, Any]] | None,
    output_dir: Path,
) -> tuple[Any, float | None]:
    """The sample's inversion, computed or (with `sharing`) loaded from the sweep's cache; and, when loaded, the
    peak memory its computation took."""
    if sharing is not None:
        cache, defining = sharing
        key = cache_key(defining, image_sha256, seen)
        cached = cache.load(key)
        if cached is not None:
            meter.values.update(cached["costs"])
            restore_random_state(cached["random_state"])
            return cached["inverted"], cached["peak_memory_mb"]
    with meter.phase("inversion"), editor.observe_inversion(model, inversion) as observed:
        inverted = inversion.invert(model, inversion.encode_source(model, image), seen)
    inverted.observed = observed
    _require_finite(f"inversion={inversion.name}", inverted.noise_latent)
    if sharing is not None:
        entry = {
            "inverted": inverted,
            "costs": {key: meter.values[key] for key in COST_KEYS},
            "peak_memory_mb": meter.peak_memory()[0],
            "random_state": random_state(),
            "computed_in": output_dir.name,
        }
        cache.store(key, entry)
    return inverted, None


def _process_group(
    entries: list[Sample | InvalidSample],
    model: DiffusionModel,
    inversion: Inversion,
    editor: Editor,
    metrics: MetricSuite,
    meter: CostMeter,
    output_dir: Path,
    seed: int,
    sharing: tuple[InversionCache, dict[str, Any]] | None,
) -> Iterator[dict[str, Any]]:
    """The rows of a group of samples inverted and edited together (`batch_size` > 1, methods that batch), in their
    order, each as soon as it is scored (so that the job appends it before scoring the next). Seconds, evaluations and
    calls are the group's, divided equally among its samples; peak memory is the group's. A sample that cannot be
    prepared, or a group whose batched work fails, is processed one sample at a time, so that one bad sample never
    costs the others their results."""
    alone = partial(
        _process, model=model, inversion=inversion, editor=editor, metrics=metrics, meter=meter,
        output_dir=output_dir, seed=seed, sharing=sharing,
    )  # fmt: skip
    if len(entries) == 1:
        yield alone(entries[0])
        return
    prepared: dict[int, tuple[dict[str, Any], Any, Sample]] = {}
    for k, entry in enumerate(entries):
        if isinstance(entry, InvalidSample):
            continue
        try:
            row = describe_sample(entry)
            prepared[k] = (row, read_source(entry, row, model.resolution), editor.prepare_sample(entry))
        except Exception:  # reported with its reason when the sample runs alone
            continue
    rows: dict[int, dict[str, Any]] = {}
    if len(prepared) > 1:
        try:
            rows = _invert_and_edit_together(prepared, model, inversion, editor, metrics, meter, seed, sharing,
                                             output_dir.name)  # fmt: skip
        except JOB_STOPPING:
            raise
        except Exception as error:
            log.warning("a batch of %d samples failed (%s: %s); running them one at a time", len(prepared),
                        type(error).__name__, error)  # fmt: skip
            rows = {}
    for k, entry in enumerate(entries):
        if k in rows:
            row, images = rows.pop(k)
            yield _write_and_score(entry, row, *images, metrics, output_dir)
        else:
            yield alone(entry)


def _invert_and_edit_together(
    prepared: Mapping[int, tuple[dict[str, Any], Any, Sample]],
    model: DiffusionModel,
    inversion: Inversion,
    editor: Editor,
    metrics: MetricSuite,
    meter: CostMeter,
    seed: int,
    sharing: tuple[InversionCache, dict[str, Any]] | None,
    job_folder_name: str,
) -> dict[int, tuple[dict[str, Any], tuple[Any, Any]]]:
    """Sample number -> (its row so far, (edited, reconstruction) images) for the prepared samples, inverted and
    edited in one batch. Inversions come from the sweep's cache when all of them are there."""
    order = list(prepared)
    seen = [prepared[k][2] for k in order]
    keys = [cache_key(sharing[1], prepared[k][0]["image_sha256"], prepared[k][2]) for k in order] if sharing else []
    cached = [sharing[0].load(key) for key in keys] if sharing else []
    reused = bool(cached) and all(entry is not None for entry in cached)
    meter.start_sample()
    with meter.phase("inversion"):
        if reused:
            inverted = [entry["inverted"] for entry in cached]
        else:
            latents = []
            for k in order:
                seed_everything(seed)  # each source encoded as it would be alone
                latents.append(inversion.encode_source(model, prepared[k][1]))
            inverted = inversion.invert_batch(model, latents, seen)
    for result in inverted:
        _require_finite(f"inversion={inversion.name}", result.noise_latent)
    inversion_costs = {key: meter.values[key] / len(order) for key in COST_KEYS}
    inversion_peak = meter.peak_memory()[0]
    if sharing and not reused:
        for key, result in zip(keys, inverted, strict=True):
            entry = {"inverted": result, "costs": inversion_costs, "peak_memory_mb": inversion_peak,
                     "random_state": random_state(), "computed_in": job_folder_name}  # fmt: skip
            sharing[0].store(key, entry)
    with meter.phase("edit"):
        edits = editor.edit_batch(model, inverted, seen)
        latents = torch.cat([part for edit in edits for part in (edit.edited, edit.reconstruction)])
        _require_finite(f"editor={editor.name}", latents)
        images = model.decode_latents(latents, metrics.image_quantisation)
    costs = _costs(meter)
    shared_costs = {
        key: value / len(order)
        for key, value in costs.items()
        if key.endswith(("_seconds", "_evals", "_calls")) and not key.startswith("inversion_")
    }
    rows = {}
    for position, k in enumerate(order):
        row = prepared[k][0]
        own_inversion = cached[position]["costs"] if reused else inversion_costs
        row.update(costs, **shared_costs, **own_inversion, inversion_reused=reused, batch_size=len(order))
        row["total_seconds"] = row["inversion_seconds"] + row["edit_seconds"]
        if reused:
            row["peak_memory_mb"] = max(row["peak_memory_mb"], cached[position]["peak_memory_mb"])
        row.update(inversion_info=inverted[position].info, edit_info=edits[position].info)
        rows[k] = (row, (images[2 * position], images[2 * position + 1]))
    return rows


def _write_and_score(
    entry: Sample, row: dict[str, Any], edited: Any, reconstruction: Any, metrics: MetricSuite, output_dir: Path
) -> dict[str, Any]:
    """Write a sample's images and score them; a failure fails this sample only."""
    try:
        _save_images(entry, row, edited, reconstruction, output_dir)
        started = time.perf_counter()
        row.update(metrics.score(entry, edited, reconstruction, lossless=True))
        row.update(metrics_seconds=time.perf_counter() - started, status="ok", error=None)
    except JOB_STOPPING:
        raise
    except Exception as error:
        log.error("sample %s failed: %s: %s", entry.id, type(error).__name__, error, exc_info=True)
        row.update(status="failed", error=f"{type(error).__name__}: {error}")
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return row


def _save_images(entry: Sample, row: dict[str, Any], edited: Any, reconstruction: Any, output_dir: Path) -> None:
    if not output_dir.is_dir():  # deleted while the sample ran: never recreate it with a stray image in it
        raise OutputFault("write the images into", output_dir, FileNotFoundError(errno.ENOENT, "vanished"))
    image_file = entry.output_name  # validated by the reader: inside the job folder, one per sample
    save_png(edited, output_dir / EDITED_FOLDER / image_file)
    save_png(reconstruction, output_dir / RECONSTRUCTION_FOLDER / image_file)
    row.update(
        edited_image=str(Path(EDITED_FOLDER) / image_file),
        reconstruction_image=str(Path(RECONSTRUCTION_FOLDER) / image_file),
    )


def _process(
    entry: Sample | InvalidSample,
    model: DiffusionModel,
    inversion: Inversion,
    editor: Editor,
    metrics: MetricSuite,
    meter: CostMeter,
    output_dir: Path,
    seed: int,
    sharing: tuple[InversionCache, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    row = {**describe_sample(entry), "batch_size": 1}
    meter.start_sample()
    try:
        if isinstance(entry, InvalidSample):
            raise InvbenchError(" | ".join(entry.problems))
        seed_everything(seed)
        image = read_source(entry, row, model.resolution)
        seen = editor.prepare_sample(entry)  # what the inversion and the editor work on
        inverted, reused_peak = _invert(
            model, inversion, editor, image, row["image_sha256"], seen, meter, sharing, output_dir
        )
        with meter.phase("edit"):
            edit = editor.edit(model, inverted, seen)
            _require_finite(f"editor={editor.name}", torch.cat([edit.edited, edit.reconstruction]))
            edited, reconstruction = model.decode_latents(
                torch.cat([edit.edited, edit.reconstruction]), metrics.image_quantisation
            )
        _save_images(entry, row, edited, reconstruction, output_dir)
        row.update(inversion_info=inverted.info, edit_info=edit.info)
        row.update(_costs(meter), inversion_reused=reused_peak is not None)
        if (
            reused_peak is not None
        ):  # the method's peak: its inversion's, measured where it was computed, or this edit's
            row["peak_memory_mb"] = max(row["peak_memory_mb"], reused_peak)
        started = time.perf_counter()
        row.update(metrics.score(entry, edited, reconstruction, lossless=True))
        row.update(metrics_seconds=time.perf_counter() - started, status="ok", error=None)
    except JOB_STOPPING:
        raise  # submitit stops the job from its signal handler: never a sample's failure
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


def read_source(entry: Sample, row: dict[str, Any], resolution: int) -> Any:
    """The sample's image decoded and fitted to the model's square. The row records the bytes it came from
    (`image_sha256`), what the file holds (`image_source`) and everything decoding and fitting changed
    (`image_changes`: kind -> what; the job summary counts them)."""
    data = entry.read_image_bytes()
    row["image_sha256"] = sha256(data)
    decoded = entry.decode(data)
    row["image_source"] = decoded.source
    row["image_changes"] = decoded.changes | fit_changes(decoded.pixels.shape, resolution)
    return fit_square(decoded.pixels, resolution)


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
    costs["largest_attention_map_mb"] = meter.largest_controlled_mb()
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
            "entry_sha256": entry.entry_sha256,
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
        "entry_sha256": entry.entry_sha256,
    }


def current_data(benchmark: Benchmark) -> dict[str, tuple[str | None, Callable[[], str | None]]]:
    """Sample id -> (its mapping entry's fingerprint, a function giving its image file's fingerprint now)."""

    def image_digest(entry: Sample | InvalidSample) -> str | None:
        if not isinstance(entry, Sample) or not entry.image_file.is_file():
            return None
        return sha256(entry.image_file.read_bytes())

    return {entry.id: (entry.entry_sha256, partial(image_digest, entry)) for entry in benchmark.entries}


def _write_run_record(
    output_dir: Path, config: Mapping[str, Any], digest: str, device: torch.device, done_before: int
) -> None:
    """run.json: the configuration, when the folder was first started, and the environment (code version included)
    of every start that did work in it, the latest as `environment`."""
    path = output_dir / "run.json"
    try:
        starts = json.loads(path.read_text(encoding="utf-8")).get("starts", [])
    except (OSError, ValueError, AttributeError):
        starts = []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    environment = environment_info(device)
    starts.append({"started_at": now, "samples_done_before": done_before, "environment": environment})
    record = {
        "config_hash": digest,
        "started_at": starts[0]["started_at"],
        "environment": environment,
        "config": config,
        "starts": starts,
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
    notes = adjustments(rows)
    if notes:
        lines += ["", "what was adapted to fit (each row records its own):"] + [f"  {note}" for note in notes]
    if len(failed):
        lines += ["", "failed samples:"] + [f"  {r.sample_id}: {r.error}" for r in failed.itertuples()]
    text = "\n".join(lines)
    with writing("write the summary", output_dir / "summary.md"):
        (output_dir / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)


def adjustments(rows: pd.DataFrame) -> list[str]:
    """One line per kind of thing the job did to fit a user's data to the model and the metrics, with how many
    samples it concerns: image conversions and fitting (`image_changes`), prompts cut to the text encoder
    (`prompt_truncated`), edits rescaled for the metrics (`metrics_resized_from`)."""
    notes = []
    if "image_changes" in rows:
        counts = Counter(kind for changes in rows["image_changes"] if isinstance(changes, dict) for kind in changes)
        notes += [f"source images, {kind}: {count} (image_changes)" for kind, count in sorted(counts.items())]
    if "prompt_truncated" in rows:
        cut = int(rows["prompt_truncated"].map(lambda value: isinstance(value, dict) and bool(value)).sum())
        if cut:
            notes.append(f"prompts cut to the text encoder's tokens, as the reference pipeline does: {cut} "
                         "(prompt_truncated)")  # fmt: skip
    if "metrics_resized_from" in rows:
        sizes = rows["metrics_resized_from"].dropna()
        if len(sizes):
            sides = ", ".join(f"{int(side)}x{int(side)}" for side in sorted(set(sizes)))
            notes.append(f"edits rescaled to 512x512 for the metrics: {len(sizes)}, from {sides} "
                         "(metrics_resized_from)")  # fmt: skip
    return notes
