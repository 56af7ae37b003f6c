"""The Slurm path on a real single-node Slurm (slurmctld + slurmd + slurmdbd accounting), started by .ci/slurm-up:
the headline sweep, a job cancelled with scancel, a job that fails before its first sample, what aggregate.py's
coverage says about each, and the resubmit that fills the gap.

Runs where INVBENCH_SLURM names a folder that .ci/slurm-up brought up (.ci/run does this when it runs as root);
skipped with the reason elsewhere. About 4 minutes on 2 cores."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import run, script_env

from reports.coverage import slurm_states

pytestmark = pytest.mark.slurm

CLUSTER = os.environ.get("INVBENCH_SLURM")
HEADLINE = ["launcher=slurm", "fan_out=category", "inversion=ntI,ddim", "editor=p2p", "experiment=smoke", "device=cpu"]


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """The environment of the test's commands, pointing Slurm's tools at the test cluster (also set in this
    process, for the squeue/sacct calls the test makes through reports.coverage)."""
    if not CLUSTER or not (Path(CLUSTER) / "env").is_file():
        pytest.skip(
            "no Slurm cluster: as root, run `.ci/slurm-up <folder>` and set INVBENCH_SLURM=<folder> "
            "(.ci/run does both when it can)"
        )
    conf = (Path(CLUSTER) / "env").read_text().split("SLURM_CONF=")[1].strip()
    env = script_env(SLURM_CONF=conf)
    if subprocess.run(["sinfo", "-h"], env=env, capture_output=True).returncode != 0:
        pytest.skip(f"the Slurm cluster of {CLUSTER} does not answer (sinfo failed)")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield env
    if before is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = before


@pytest.fixture
def site(tmp_path) -> Path:
    """A site's conf/local/slurm.yaml for this one-node, GPU-less cluster (shared/reference/slurm-single-node.md)."""
    folder = tmp_path / "site"
    (folder / "local").mkdir(parents=True)
    (folder / "local" / "slurm.yaml").write_text(
        "# @package _global_\n"
        "hydra:\n"
        "  launcher:\n"
        "    partition: debug\n"
        "    gpus_per_node: null\n"
        "    cpus_per_task: 1\n"
        "    mem_gb: 2\n"
        "    timeout_min: 15\n"
        "    signal_delay_s: 90\n"
        "    setup:\n"
        f"      - source {Path(sys.prefix) / 'bin' / 'activate'}\n"
        "      - export WANDB_MODE=disabled\n"
    )
    return folder


def array_ids(sweep: Path) -> list[str]:
    return [job["job_id"] for job in json.loads((sweep / "jobs.json").read_text())["jobs"]]


def wait_until_ended(job_ids: list[str], env: dict[str, str], timeout: float) -> dict[str, str]:
    """Poll Slurm (squeue and sacct, as aggregate.py does) until none of `job_ids` is pending or running; their
    final states."""
    deadline = time.monotonic() + timeout
    while True:
        states = {job_id: state for job_id, (state, _) in slurm_states(job_ids).items()}
        active = [i for i in job_ids if states.get(i, "PENDING") in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING")]
        if not active:
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs {active} still active after {timeout} s")
        time.sleep(3)


def aggregate(sweep: Path, out: Path, env: dict[str, str]) -> tuple[int, str]:
    return run("aggregate.py", str(sweep), "--out", str(out), "--no-figures", "--no-gallery", cwd=out.parent, env=env)


def test_headline_sweep_scancel_failed_job_coverage_and_resubmit(slurm_env, site, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *HEADLINE, "hydra.launcher.wait=false", f"hydra.sweep.dir={sweep}", "--config-dir", str(site)]
    code, output = run("launch.py", *args, cwd=tmp_path, env=slurm_env)
    assert code == 0 and "20 slurm jobs submitted; not waiting for them." in output, output
    jobs = array_ids(sweep)
    cancelled = jobs[-1]  # still pending behind 19 others on a 2-core node
    subprocess.run(["scancel", cancelled], env=slurm_env, check=True)

    # A blocking sweep whose second job fails before its first sample (no SD weights here): the launcher waits for
    # both, prints the table of the one that ran and the failure with its reason and logs, and exits 1.
    failing = tmp_path / "failing"
    code, output = run(
        "launch.py", "-m", "launcher=slurm", "model=tiny,sd14", "++model.path=/nonexistent", "experiment=smoke",
        "device=cpu", "dataset.categories=[1]", f"hydra.sweep.dir={failing}", "--config-dir", str(site),
        cwd=tmp_path, env=slurm_env,
    )  # fmt: skip
    assert code == 1, output
    assert "| ddim | direct | tiny |" in output and "invbench sweep: 1 job(s) failed:" in output, output
    assert "ModelNotAvailableError: model.path=/nonexistent is not a folder" in output and "Traceback" not in output

    states = wait_until_ended(jobs, slurm_env, timeout=900)
    # a task cancelled while pending leaves the queue without an accounting record of its own (Slurm 22.05)
    assert states[cancelled] in ("CANCELLED", "GONE") and all(states[i] == "COMPLETED" for i in jobs[:-1]), states

    code, output = aggregate(sweep, tmp_path / "tables", slurm_env)
    assert code == 0, output
    assert "coverage: 19 of 20 jobs done (1 ended-failed); samples: 19 ok, 0 failed, 0 missing" in output
    assert f"[job {cancelled}]: no output; ended-failed: Slurm: " in output
    coverage = pd.read_csv(tmp_path / "tables" / "coverage.csv").set_index("job_id")
    assert (coverage.drop(cancelled)["job_state"] == "ended-ok").all()
    table = pd.read_csv(tmp_path / "tables" / "table1.csv")
    assert sorted(zip(table["inversion"], table["editor"], table["samples_ok"])) == [
        ("ddim", "p2p", 9),
        ("nti", "p2p", 10),
    ]

    code, output = aggregate(failing, tmp_path / "failing_tables", slurm_env)
    assert code == 0 and "coverage: 1 of 2 jobs done (1 ended-failed)" in output, output
    assert "ended-failed: ModelNotAvailableError: model.path=/nonexistent is not a folder" in output
    assert "stdout: " in output and "stderr: " in output
    assert "job ended: ModelNotAvailableError" in (tmp_path / "failing_tables" / "failed.csv").read_text()

    # The printed resubmit command (absolute paths: run it from anywhere) runs the sweep again into the same folders;
    # the 19 finished jobs skip their sample and the cancelled one runs.
    resubmit = json.loads((sweep / "jobs.json").read_text())["resubmit_command"]
    _python, script, *argv = shlex.split(resubmit)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, output = run(script, *argv, cwd=elsewhere, env=slurm_env)
    assert code == 0 and "20 slurm jobs submitted" in output, output
    wait_until_ended(array_ids(sweep), slurm_env, timeout=600)
    code, output = aggregate(sweep, tmp_path / "tables", slurm_env)
    assert "coverage: 20 of 20 jobs done; samples: 20 ok, 0 failed, 0 missing" in output, output
    skipped = [path for path in sweep.glob("*/launch.log") if "1 already done" in path.read_text()]
    assert len(skipped) == 19
