"""Where a job's wall time goes: the denoiser and the VAE against everything else (imports, set-up, metrics, writes).

    python benchmarks/overhead.py                          # the default job: DDIM + direct, mini benchmark, tiny model
    python benchmarks/overhead.py experiment=smoke         # any launch.py overrides

Runs `launch.py` in this process with timers around every denoiser forward and every VAE encode and decode, and
prints the job's wall time from interpreter start, the time in those calls, the rest as a share of the wall time,
and that rest split into imports (until launch.py's job starts), metrics (the rows' metrics_seconds) and the
remainder. The job folder is a temporary one, removed afterwards.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any heavy import: the interpreter's own start-up (~50 ms) is not counted

import json
import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spent = {"denoiser": 0.0, "vae": 0.0}
marks: dict[str, float] = {}


def timed(owner: type, name: str, bucket: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[bucket] += time.perf_counter() - started

    setattr(owner, name, wrapper)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.insert(0, str(ROOT))
    folder = Path(tempfile.mkdtemp(prefix="invbench-overhead-"))
    sys.argv = [str(ROOT / "launch.py"), *sys.argv[1:], f"hydra.run.dir={folder}"]
    from orchestration import runner

    run_job = runner.run_job

    def marked_run_job(*args, **kwargs):
        marks["job start"] = time.perf_counter()
        import diffusers

        timed(diffusers.UNet2DConditionModel, "forward", "denoiser")
        for name in ("encode", "decode"):
            timed(diffusers.AutoencoderKL, name, "vae")
        return run_job(*args, **kwargs)

    runner.run_job = marked_run_job  # launch.py's main imports it when the job starts
    try:
        runpy.run_path(str(ROOT / "launch.py"), run_name="__main__")
    except SystemExit as exit:
        if exit.code:
            raise
    wall = time.perf_counter() - STARTED
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    metrics = sum(row.get("metrics_seconds") or 0 for row in rows)
    imports = marks["job start"] - STARTED
    model = spent["denoiser"] + spent["vae"]
    rest = wall - model
    print(f"wall {wall:.1f} s; denoiser {spent['denoiser']:.1f} s, VAE {spent['vae']:.1f} s")
    print(f"outside the denoiser and VAE: {rest:.1f} s = {100 * rest / wall:.1f} % of the wall time")
    for name, seconds in (("imports", imports), ("metrics", metrics), ("the rest", rest - imports - metrics)):
        print(f"  {name}: {seconds:.1f} s ({100 * seconds / wall:.1f} %)")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
