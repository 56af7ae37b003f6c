"""One sample of a job, or a batch of samples inverted and edited together: seed, load and fit the source image,
invert (VAE encode included; from the sweep's inversion cache when it holds the inversion), edit (VAE decode
included), write the edited image and the reconstruction as PNG, score them, and return the row. A sample that
raises is returned as failed with its reason; only what stops the job (JOB_STOPPING) passes through.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
from submitit.core.utils import UncompletedJobError

from editors import Editor
from invbench.digests import sha256
from invbench.errors import InvbenchError, OutputFault
from invbench.images import fit_changes, fit_square, save_png
from invbench.models import DiffusionModel
from invbench.runtime import random_state, restore_random_state, seed_everything
from inversions import Inversion
from metrics import CostMeter, MetricSuite
from orchestration.inversion_cache import COST_KEYS, InversionCache, cache_key
from pie_bench import InvalidSample, Sample

log = logging.getLogger(__name__)

EDITED_FOLDER, RECONSTRUCTION_FOLDER = "edited", "reconstruction"
# Exceptions that mean "stop the job", raised wherever the job happens to be (e.g. from a signal handler)
# A fault of the machine (OutputFault) stops the job too: it is never a sample's failure.
JOB_STOPPING = (UncompletedJobError, OutputFault)
# the sweep's inversion cache and what defines an inversion (orchestration/inversion_cache.py), or None
Sharing = tuple[InversionCache, dict[str, Any]] | None


def _invert(
    model: DiffusionModel,
    inversion: Inversion,
    editor: Editor,
    image: Any,
    image_sha256: str,
    seen: Sample,
    meter: CostMeter,
    sharing: Sharing,
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


def process_group(
    entries: list[Sample | InvalidSample],
    model: DiffusionModel,
    inversion: Inversion,
    editor: Editor,
    metrics: MetricSuite,
    meter: CostMeter,
    output_dir: Path,
    seed: int,
    sharing: Sharing,
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
        except Exception:  # noqa: S112 (reported with its reason when the sample runs alone, below)
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
    sharing: Sharing,
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
        # the first line names the error (what a log reader greps for), the traceback follows
        log.error("sample %s failed: %s: %s", entry.id, type(error).__name__, error, exc_info=True)  # noqa: G201
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
    sharing: Sharing = None,
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
