"""One prepared GPU run: seconds per image, UNet evaluations and peak CUDA memory of the PIE-Bench rows and the flow
methods at real size, within a time budget, and the GPU-hours of a full PIE-Bench sweep computed from them.

    python benchmarks/gpu_suite.py --out gpu_suite                  # one GPU of 80 GB, at most 8 minutes
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_smoke     # the same code paths on CPU, tiny models

Parts, in the order they run (each a local sweep: `launch.py -m`, the model built once, metrics off):
1. the PIE-Bench rows on `sd14_random` at 512², 50 steps: DDIM, NTI, NPI, DirectInversion, SPDInv, TODInv and
   edit-friendly DDPM with P2P (edit-friendly with its own P2P), and the MasaCtrl and PnP rows (DDIM and
   DirectInversion), at batch 1 in the reference precision (required);
2. the same rows in bfloat16 (optional);
3. the pairs that batch, at a larger batch (`--batch-size`, default 4; optional);
4. `sdxl_random` at 1024²: DDIM + direct and DDIM + P2P (optional);
5. `sd3_random` and 6. `flux_random` at 512², then 7. and 8. at 1024²: every flow method with its editors, at its
   own step count (optional).
A part runs with what remains of the budget as its limit; the optional parts come cheapest first, so when the budget
runs out the slowest are the ones dropped (or cut), and the report says which. Each timed configuration runs two
groups of samples and times the second (the first carries one-time costs: kernel selection, caches).

Writes `<out>/gpu_suite.json` and `<out>/gpu_suite.md`: per configuration the seconds per image, evaluations
(forward and backward) and peak memory, and the GPU-hours of the 700-image PIE-Bench over the measured grid.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PIE_BENCH_IMAGES = 700
P2P_ROWS = ["ddim+p2p", "nti+p2p", "npi+p2p", "directinversion+p2p", "spdinv+p2p", "todinv+p2p",
            "edit_friendly+p2p_edit_friendly"]  # fmt: skip
PLUGIN_ROWS = ["ddim+masactrl", "directinversion+masactrl", "ddim+pnp", "directinversion+pnp"]
BATCHING_ROWS = ["ddim+p2p", "npi+p2p", "directinversion+p2p", "edit_friendly+p2p_edit_friendly", "ddim+masactrl",
                 "directinversion+masactrl"]  # fmt: skip
FLOW_ROWS = {
    "sd3": ["flow+direct", "rf_solver+direct", "fireflow+direct", "none+flowedit_sd3"],  # the others are FLUX's
    "flux": ["flow+direct", "rf_solver+direct", "rf_solver+rf_edit", "fireflow+fireflow_edit", "rf_inversion+direct",
             "uniedit_flow+uniedit", "none+flowedit"],
}  # fmt: skip


@dataclass
class Part:
    name: str
    model: str
    resolution: int
    pairs: list[str]
    batch_size: int = 1
    precision: str = "reference"
    steps: int | None = 50  # None: each method's own step count
    required: bool = False
    extra: list[str] = field(default_factory=list)
    editor_extra: dict[str, list[str]] = field(default_factory=dict)  # overrides for one editor's sweep


def parts(smoke: bool, batch_size: int = 4) -> list[Part]:
    real = not smoke
    sd, sdxl = ("sd14_random", "sdxl_random") if real else ("tiny", "sdxl_tiny")
    sd3, flux = ("sd3_random", "flux_random") if real else ("sd3_tiny", "flux_tiny")
    low, high = (512, 1024) if real else (64, 128)
    steps = 50 if real else 2
    listed = [
        Part("PIE-Bench rows, sd14, reference precision", sd, low, P2P_ROWS + PLUGIN_ROWS, steps=steps,
             required=True),
        Part("PIE-Bench rows, sd14, bfloat16", sd, low, P2P_ROWS + PLUGIN_ROWS, precision="bfloat16", steps=steps),
        Part(f"batching rows, sd14, batch {batch_size}", sd, low, BATCHING_ROWS, batch_size=batch_size, steps=steps),
        Part("sdxl at its resolution", sdxl, high, ["ddim+direct", "ddim+p2p"], steps=steps),
    ]  # fmt: skip
    for resolution in (low, high):
        for family, model in (("sd3", sd3), ("flux", flux)):
            # the tiny FLUX has 2 single-stream blocks: the editors that inject into blocks 20..37 get 0..1
            blocks = ["editor.first_single_block=0", "editor.last_single_block=1"]
            editor_extra = {} if real or family != "flux" else {"rf_edit": blocks, "fireflow_edit": blocks}
            listed.append(Part(f"{family} flow methods at {resolution}²", model, resolution, FLOW_ROWS[family],
                               steps=None, editor_extra=editor_extra))  # fmt: skip
    return listed


def sweep_overrides(part: Part, pairs: list[str], folder: Path, device: str, samples: int) -> list[list[str]]:
    """The launch.py arguments of the sweeps that run `pairs` (a sweep is a full inversion × editor grid, so pairs are
    grouped by editor)."""
    by_editor: dict[str, list[str]] = {}
    for pair in pairs:
        inversion, editor = pair.split("+")
        by_editor.setdefault(editor, []).append(inversion)
    categories = ",".join(str(k) for k in range(samples))
    sweeps = []
    for number, (editor, inversions) in enumerate(by_editor.items()):
        overrides = [
            "-m", f"inversion={','.join(inversions)}", f"editor={editor}", f"model={part.model}",
            f"model.resolution={part.resolution}", f"batch_size={part.batch_size}", f"precision={part.precision}",
            f"device={device}", "metrics=none", f"dataset.categories=[{categories}]",
            f"hydra.sweep.dir={folder / f'sweep{number}'}", *part.extra, *part.editor_extra.get(editor, []),
        ]  # fmt: skip
        if part.steps is not None:
            overrides.append(f"num_steps={part.steps}")
        sweeps.append(overrides)
    return sweeps


def measure(rows: list[dict], batch_size: int) -> dict:
    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        return {"status": "failed", "reason": next((row.get("error") for row in rows), "no rows")}
    timed = ok[batch_size:] or ok  # the first group carries one-time costs
    return {
        "status": "ok",
        "samples": len(ok),
        "seconds_per_image": statistics.mean(row["total_seconds"] for row in timed),
        "evals": statistics.mean(row["inversion_unet_evals"] + row["edit_unet_evals"] for row in ok),
        "backward_evals": statistics.mean(
            row["inversion_unet_backward_evals"] + row["edit_unet_backward_evals"] for row in ok
        ),
        "peak_memory_mb": max(row["peak_memory_mb"] for row in ok),
        "memory_kind": ok[0]["memory_kind"],
        "device": ok[0]["device"],
    }


def read_sweep(folder: Path) -> dict[str, list[dict]]:
    found = {}
    for results in sorted(folder.glob("sweep*/*/results.jsonl")):
        chosen = dict(
            item.split("=", 1) for item in yaml.safe_load((results.parent / ".hydra" / "overrides.yaml").read_text())
            if "=" in item
        )  # fmt: skip
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        found[f"{chosen['inversion']}+{chosen['editor']}"] = rows
    return found


def run_part(part: Part, folder: Path, device: str, limit: float) -> tuple[list[dict], str]:
    """Run a part within `limit` seconds; (one entry per pair, how it ended)."""
    samples = 2 * part.batch_size  # two groups: the second is timed
    started, ended = time.perf_counter(), "complete"
    folder.mkdir(parents=True, exist_ok=True)
    said: dict[str, str] = {}  # editor -> the last line its sweep printed
    for overrides in sweep_overrides(part, part.pairs, folder, device, samples):
        remaining = limit - (time.perf_counter() - started)
        if remaining <= 0:
            ended = "cut at the budget"
            break
        try:
            done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *overrides], cwd=folder, capture_output=True, check=False,
                           text=True, timeout=remaining, env=os.environ | {"HF_HUB_OFFLINE": "1",
                                                                           "WANDB_MODE": "disabled"})  # fmt: skip
        except subprocess.TimeoutExpired:
            ended = "cut at the budget"
            break
        lines = (done.stdout + done.stderr).strip().splitlines()
        said[next(item for item in overrides if item.startswith("editor="))[len("editor=") :]] = (
            lines[-1] if lines else f"exit {done.returncode}, no output"
        )
    rows = read_sweep(folder)
    entries = []
    for pair in part.pairs:
        entry = {"part": part.name, "pair": pair, "model": part.model, "resolution": part.resolution,
                 "batch_size": part.batch_size, "precision": part.precision}  # fmt: skip
        if pair in rows:
            entry |= measure(rows[pair], part.batch_size)
        else:
            entry |= {"status": "not run", "reason": said.get(pair.split("+")[1], ended)}
        entries.append(entry)
    return entries, ended


def gpu_hours(entries: list[dict]) -> float:
    """Hours of the 700-image PIE-Bench for every measured pair of the PIE-Bench part at its best setting."""
    best: dict[str, float] = {}
    for entry in entries:
        if entry["status"] == "ok" and entry["model"] in ("sd14_random", "tiny"):
            best[entry["pair"]] = min(best.get(entry["pair"], float("inf")), entry["seconds_per_image"])
    return sum(best.values()) * PIE_BENCH_IMAGES / 3600


def markdown(report: dict) -> str:
    lines = [f"# GPU suite: {report['device']}, {report['date']}", "",
             f"Budget {report['budget_s']:.0f} s, used {report['used_s']:.0f} s. {report['gpu_hours_note']}", "",
             "| part | pair | model | res | batch | precision | s/image | evals | backward | peak MB | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for entry in report["entries"]:

        def cell(key, digits=2, entry=entry):
            value = entry.get(key)
            return "" if value is None else f"{value:.{digits}f}"

        status = entry["status"] if entry["status"] == "ok" else f"{entry['status']}: {entry.get('reason', '')}"
        lines.append(
            f"| {entry['part']} | {entry['pair']} | {entry['model']} | {entry['resolution']} | {entry['batch_size']} "
            f"| {entry['precision']} | {cell('seconds_per_image')} | {cell('evals', 0)} | {cell('backward_evals', 0)} "
            f"| {cell('peak_memory_mb', 0)} | {status.replace('|', '/')} |"
        )
    lines += ["", "Parts:"] + [f"- {name}: {how}" for name, how in report["parts"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=None, help="default: 480 (600 with --smoke)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny models on CPU: the code paths, not the numbers")
    parser.add_argument("--batch-size", type=int, default=4, help="part 3's batch (default: %(default)s)")
    parser.add_argument("--parts", type=int, nargs="*", help="run only these parts (1-based)")
    args = parser.parse_args(argv)
    budget = args.budget_s if args.budget_s is not None else (600.0 if args.smoke else 480.0)
    device = args.device or ("cpu" if args.smoke else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    started, entries, how = time.perf_counter(), [], {}
    for number, part in enumerate(parts(args.smoke, args.batch_size), 1):
        if args.parts and number not in args.parts:
            continue
        remaining = budget - (time.perf_counter() - started)
        if remaining <= 0 and not part.required:
            how[part.name] = "dropped: the budget was used up (the optional parts run cheapest first)"
            entries += [{"part": part.name, "pair": pair, "model": part.model, "resolution": part.resolution,
                         "batch_size": part.batch_size, "precision": part.precision, "status": "dropped",
                         "reason": "budget"} for pair in part.pairs]  # fmt: skip
            continue
        limit = remaining if not part.required else max(remaining, budget)
        done, ended = run_part(part, args.out / f"part{number}", device, limit)
        entries += done
        how[part.name] = ended
        print(f"part {number} ({part.name}): {ended}, {time.perf_counter() - started:.0f} s so far", flush=True)
    hours = gpu_hours(entries)
    report = {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
        "device": entries[0].get("device", device) if entries else device,
        "host": platform.node(),
        "smoke": args.smoke,
        "budget_s": budget,
        "used_s": time.perf_counter() - started,
        "gpu_hours": hours,
        "gpu_hours_note": f"A full PIE-Bench sweep of the measured PIE-Bench rows ({PIE_BENCH_IMAGES} images, each "
        f"at its fastest measured setting): {hours:.2f} device-hours.",
        "parts": how,
        "entries": entries,
    }
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "gpu_suite.md").write_text(text)
    print(text)
    return 0 if all(entry["status"] == "ok" for entry in entries if entry["part"] == parts(args.smoke)[0].name) else 1


if __name__ == "__main__":
    sys.exit(main())
