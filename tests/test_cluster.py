"""Cluster scale without a cluster: the Slurm launcher's real sbatch script (submitted to a stand-in `sbatch`), a
non-blocking submitit_local sweep that aggregate.py merges while it reports what is missing, and jobs that are
preempted (USR2 → submitit requeue) or killed outright (SIGKILL → rerun) finishing with the same rows and images as
an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run, script_env

from invbench.columns import METRIC_COLUMNS
from invbench.results import read_rows

QUICK = ["model.resolution=64", "num_steps=5", "metrics.backbones=tiny"]
# Slower samples for the interruption tests, so that a signal sent after the first row lands before the last one.
INTERRUPTIBLE = [
    "model=tiny",
    "model.resolution=64",
    "num_steps=25",
    "metrics.backbones=tiny",
    "dataset.categories=[1,6,8,9]",
]

FAKE_SBATCH = """#!/bin/sh
# Stands in for Slurm's sbatch: accept the script (submitit keeps a copy) and answer as sbatch does.
echo "Submitted batch job 4242"
"""

SITE_SLURM = """# @package _global_
hydra:
  launcher:
    partition: gpu
    account: acct
    array_parallelism: 5
    setup:
      - export HF_HOME=/shared/hf
    additional_parameters:
      mail-type: FAIL
"""


def start(script: str, *args: str, cwd: Path, log: Path) -> subprocess.Popen:
    """A script in the background, its output to a file (a pipe would stay open as long as the jobs it spawns)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(REPO / script), *args],
            cwd=cwd,
            env=script_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def row_count(folder: Path) -> int:
    return len(read_rows(folder / "results.jsonl"))


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def comparable(folder: Path) -> dict[str, tuple]:
    """Per sample: status, every metric, and the bytes of both written images (timings left out)."""
    return {
        row["sample_id"]: (
            row["status"],
            tuple(row[c] for c in METRIC_COLUMNS),
            (folder / row["edited_image"]).read_bytes(),
            (folder / row["reconstruction_image"]).read_bytes(),
        )
        for row in read_rows(folder / "results.jsonl")
    }


def test_slurm_launcher_renders_the_sbatch_script_and_lists_the_jobs(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "srun": "#!/bin/sh\n"}.items():
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)
    site = tmp_path / "site"
    (site / "local").mkdir(parents=True)
    (site / "local" / "slurm.yaml").write_text(SITE_SLURM)  # as a user's git-ignored conf/local/slurm.yaml
    env = script_env(PATH=f"{fake_bin}:{script_env()['PATH']}")
    sweep = tmp_path / "sweep"

    code, output = run(
        "launch.py",
        "-m",
        "launcher=slurm",
        "fan_out=category",
        "inversion=ddim,nti",
        "editor=p2p",
        "hydra.launcher.gres=gpu:a100:1",
        "hydra.launcher.wait=false",
        f"hydra.sweep.dir={sweep}",
        "--config-dir",
        str(site),
        cwd=tmp_path,
        env=env,
    )
    assert code == 0, output
    assert "20 slurm jobs submitted; not waiting for them." in output and f"python aggregate.py {sweep}" in output

    script = (sweep / ".submitit" / "4242" / "4242_submission.sh").read_text()
    for line in (
        "#SBATCH --array=0-19%5",  # 10 categories x 2 inversions, at most 5 at once (from the site file)
        "#SBATCH --partition=gpu",
        "#SBATCH --account=acct",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --gres=gpu:a100:1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@180",
        "#SBATCH --job-name=invbench",
        "#SBATCH --mail-type=FAIL",
        "export HF_HOME=/shared/hf",
    ):
        assert line in script.splitlines(), f"{line!r} missing from\n{script}"
    assert "-m submitit.core._submit" in script

    listing = json.loads((sweep / "jobs.json").read_text())
    jobs = listing["jobs"]
    assert [job["job_id"] for job in jobs] == [f"4242_{n}" for n in range(20)]
    assert "dataset.categories=[3]" in jobs[6]["overrides"] and "inversion=ddim" in jobs[6]["overrides"]
    assert f"hydra.sweep.dir={sweep}" in listing["resubmit_command"]

    code, output = run("aggregate.py", str(sweep), "--out", str(tmp_path / "tables"), cwd=tmp_path)
    assert code == 1 and "coverage: 0 of 20 jobs done" in output and "[job 4242_7]" in output, output
    assert listing["resubmit_command"] in output

    # fan_out=shards: one job per contiguous range of the samples.
    sweep = tmp_path / "shards"
    args = ["-m", "launcher=slurm", "fan_out=shards", "dataset.num_shards=3", "hydra.launcher.wait=false"]
    code, output = run("launch.py", *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=env)
    assert code == 0, output
    assert "#SBATCH --array=0-2%3" in (sweep / ".submitit" / "4242" / "4242_submission.sh").read_text()
    overrides = [job["overrides"] for job in json.loads((sweep / "jobs.json").read_text())["jobs"]]
    assert [o[0] for o in overrides] == [f"dataset.shard_index={n}" for n in range(3)]

    # The site file is read by launcher=slurm only: the default launcher composes without it.
    code, output = run("launch.py", "--cfg", "hydra", "-p", "hydra.launcher", "--config-dir", str(site), cwd=tmp_path)
    assert code == 0 and "partition" not in output and "BasicLauncher" in output, output


def test_a_blocking_slurm_sweep_waits_while_squeue_lists_the_job(tmp_path, monkeypatch):
    """submitit judges from sacct alone whether a job ended; on a busy cluster it has judged a pending array task
    ended and reported it failed before it ran. The launcher first waits while slurmctld (squeue) lists the job."""
    from types import SimpleNamespace

    from hydra_plugins.invbench_launcher import launcher

    result = tmp_path / "5_0_0_result.pkl"
    job = SimpleNamespace(job_id="5_0", paths=SimpleNamespace(result_pickle=result))
    polls = []

    def squeue() -> set[str]:
        polls.append(len(polls))
        if len(polls) == 3:  # pending, pending, then it runs and writes its result
            result.write_bytes(b"result")
        return {"5_0", "5_1"}

    monkeypatch.setattr(launcher, "QUEUE_POLL_SECONDS", 0.0)
    monkeypatch.setattr(launcher, "queued_slurm_jobs", squeue)
    launcher.InvbenchSlurmLauncher._wait_while_queued(None, job)
    assert result.exists() and len(polls) == 3

    # A job squeue no longer lists (it ended without a result), or no squeue answer: submitit decides at once.
    result.unlink()
    for answer in ({"5_1"}, None):
        monkeypatch.setattr(launcher, "queued_slurm_jobs", lambda answer=answer: answer)
        launcher.InvbenchSlurmLauncher._wait_while_queued(None, job)
        assert not result.exists()


@pytest.mark.ci_only  # about 70 s on 2 cores; .ci/run runs it
def test_non_blocking_local_sweep_merges_shards_reports_and_refills_the_missing(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "launcher=submitit_local",
        "editor=direct,p2p",
        "dataset.categories=[1],[6]",
        *QUICK,
        "hydra.launcher.wait=false",
        f"hydra.sweep.dir={sweep}",
    ]
    launcher = start("launch.py", *args, cwd=tmp_path, log=tmp_path / "launch.out")
    assert launcher.wait(timeout=120) == 0, (tmp_path / "launch.out").read_text()
    names = ["0_ddim+direct_cat1", "1_ddim+direct_cat6", "2_ddim+p2p_cat1", "3_ddim+p2p_cat6"]
    folders = [sweep / name for name in names]
    assert not all(row_count(f) == 1 for f in folders)  # the launcher returned before the jobs were done
    output = (tmp_path / "launch.out").read_text()
    assert "4 local jobs submitted; not waiting for them." in output and "resubmit missing" in output
    wait_for(lambda: all(row_count(f) == 1 for f in folders), 300, "the four jobs to write their rows")

    tables = tmp_path / "tables"
    code, output = run("aggregate.py", str(sweep), "--out", str(tables), cwd=tmp_path)
    assert code == 0 and "coverage: 4 of 4 jobs done; samples: 4 ok, 0 failed, 0 missing" in output, output
    assert "| ddim | direct | " in output and "| ddim | p2p | " in output
    table = (tables / "mean_by_method.csv").read_text().splitlines()
    assert len(table) == 3  # header + one row per method, each merged from two category jobs

    # One job lost (as if it never ran): the other three still merge, and aggregate names the gap and the fix.
    lost = folders[3]
    for path in sorted(lost.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    lost.rmdir()
    code, output = run("aggregate.py", str(sweep), "--out", str(tables), cwd=tmp_path)
    assert code == 0 and "coverage: 3 of 4 jobs done" in output, output
    assert f"(no folder yet) [job {json.loads((sweep / 'jobs.json').read_text())['jobs'][3]['job_id']}]" in output
    assert "no output; ended-failed: ended, but its folder is not there" in output and "stderr: " in output
    resubmit = json.loads((sweep / "jobs.json").read_text())["resubmit_command"]
    assert resubmit in output

    # The printed command refills it; the finished jobs skip their samples.
    python, script, *argv = shlex.split(resubmit)
    assert (python, script) == ("python", str(REPO / "launch.py"))
    launcher = start("launch.py", *argv, cwd=tmp_path, log=tmp_path / "resubmit.out")
    assert launcher.wait(timeout=120) == 0, (tmp_path / "resubmit.out").read_text()
    wait_for(lambda: row_count(lost) == 1, 300, "the refilled job")
    wait_for(lambda: "1 already done" in (folders[0] / "launch.log").read_text(), 120, "a finished job to skip")
    code, output = run("aggregate.py", str(sweep), "--out", str(tables), cwd=tmp_path)
    assert "coverage: 4 of 4 jobs done" in output and [row_count(f) for f in folders] == [1, 1, 1, 1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, output = run("launch.py", *INTERRUPTIBLE, "num_threads=1", f"hydra.run.dir={folder}", cwd=folder.parent)
    assert code == 0, output
    return comparable(folder)


def test_killed_job_resumes_to_the_same_rows_and_images(tmp_path, uninterrupted):
    folder = tmp_path / "run"
    args = [*INTERRUPTIBLE, "num_threads=1", f"hydra.run.dir={folder}"]
    job = start("launch.py", *args, cwd=tmp_path, log=tmp_path / "first.out")
    wait_for(lambda: row_count(folder) >= 1, 300, "the first row")
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert 1 <= row_count(folder) < 4, "the job must be killed mid-run"

    code, output = run("launch.py", *args, cwd=tmp_path)
    assert code == 0, output
    assert comparable(folder) == uninterrupted
    assert not list(folder.rglob("*.partial"))  # no half-written file survives the resume


@pytest.mark.ci_only  # about 40 s on 2 cores; .ci/run runs it
def test_preempted_submitit_job_is_requeued_and_resumes(tmp_path, uninterrupted):
    sweep = tmp_path / "sweep"
    args = ["-m", "launcher=submitit_local", *INTERRUPTIBLE, f"hydra.sweep.dir={sweep}"]
    launcher = start("launch.py", *args, cwd=tmp_path, log=tmp_path / "launch.out")
    wait_for(lambda: (sweep / "jobs.json").exists(), 120, "the job list")
    (job,) = json.loads((sweep / "jobs.json").read_text())["jobs"]
    folder = sweep / "0_ddim+direct_cat1+6+8+9"
    wait_for(lambda: row_count(folder) >= 1, 300, "the first row")
    (task,) = children(int(job["job_id"]))  # the local job id is its controller's pid; the task is its child
    os.kill(task, signal.SIGUSR2)  # what Slurm sends a job it preempts, or signal_delay_s before its time limit
    assert row_count(folder) < 4, "the job must be preempted mid-run"

    assert launcher.wait(timeout=300) == 0, (tmp_path / "launch.out").read_text()
    log = (folder / "launch.log").read_text()
    assert "this job is preempted" in log and f"Requeued job {job['job_id']}" in log
    skipped = re.search(r"selected; (\d+) already done", log.split("Requeued job")[1])
    assert skipped and int(skipped[1]) >= 1  # the requeued run went on from the finished samples
    assert comparable(folder) == uninterrupted


def test_a_blocking_submitit_sweep_reports_a_failed_job_and_coverage_names_its_reason(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "launcher=submitit_local", "model=tiny,sd14", "++model.path=/nonexistent", "dataset.categories=[1]"]
    code, output = run("launch.py", *args, *QUICK, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert code == 1, output
    assert "| ddim | direct | tiny |" in output  # the table of the job that succeeded
    assert "invbench sweep: 1/2 jobs done" in output and "invbench sweep: 2/2 jobs done" in output  # as they finish
    assert "invbench sweep: 1 job(s) failed:" in output and "ModelNotAvailableError" in output
    assert "Traceback" not in output

    tables = tmp_path / "tables"
    code, output = run("aggregate.py", str(sweep), "--out", str(tables), "--no-figures", cwd=tmp_path)
    assert code == 0, output
    assert "coverage: 1 of 2 jobs done (1 ended-failed)" in output
    assert "ended-failed: ModelNotAvailableError: model.path=/nonexistent is not a folder" in output
    assert "stdout: " in output and "stderr: " in output
    failed = (tables / "failed.csv").read_text()
    assert "job ended: ModelNotAvailableError" in failed and "model=sd14" in failed
    listing = json.loads((sweep / "jobs.json").read_text())
    assert listing["jobs"][1]["stdout"].endswith("_log.out") and listing["jobs"][1]["stderr"].endswith("_log.err")
    _python, script, *_ = shlex.split(listing["resubmit_command"])
    assert Path(script).is_absolute() and f"hydra.sweep.dir={sweep.resolve()}" in listing["resubmit_command"]
