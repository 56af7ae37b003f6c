"""Faults of the machine are never a sample's: a disk that fills up, a folder that turns read-only, vanishes or loses
its lock. The job stops with one message (what, where, how to resume) and exit code 3, nothing is left torn or
half-written, job_status.json says why, and rerunning the same command after the fault is fixed resumes cleanly.

The disks are real: a small tmpfs mounted in a private mount namespace (`unshare -rm`, which needs no root and
leaves nothing behind), filled up or remounted read-only while the job runs, from a shell script that copies the
folder's state out before the namespace ends."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, run, script_env

from invbench.results import read_rows

pytestmark = pytest.mark.ci_only  # about 2 minutes on 2 cores; .ci/run runs them

# 4 samples of about half a second each: a fault injected after the first row lands while the job still works
JOB = [
    "model=tiny",
    "model.resolution=64",
    "num_steps=20",
    "metrics=none",
    "dataset.categories=[0,1,2,3]",
    "num_threads=1",
]


def namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not namespaces_work(), reason="needs `unshare -rm` and tmpfs mounts in a user namespace (util-linux)"
)


def on_small_disk(tmp_path: Path, size: str, script: str) -> str:
    """Run `script` (sh) with $DISK a fresh tmpfs of `size`, $OUT a folder outside it, $LAUNCH the launch.py
    command; returns what it printed."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    body = f"set -u\nmount -t tmpfs -o size={size} tmpfs {disk}\n" + textwrap.dedent(script)
    env = script_env(DISK=str(disk), OUT=str(out), LAUNCH=f"{sys.executable} {REPO / 'launch.py'}")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", body], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    return done.stdout + done.stderr


def one_message(output: str) -> None:
    """A fault ends with our message, not with tracebacks or logging's own error reports."""
    assert "Traceback" not in output and "--- Logging error ---" not in output, output
    assert output.count("stopped: could not") >= 1, output


def whole_rows(folder: Path) -> list[dict]:
    """The folder's rows; every line complete (no torn row) and no half-written file anywhere in it."""
    text = (folder / "results.jsonl").read_text()
    assert text.endswith("\n"), "a torn last row"
    assert not list(folder.rglob("*.partial")), list(folder.rglob("*.partial"))
    return read_rows(folder / "results.jsonl")


WHEN_FIRST_ROW = 'until grep -q sample_id "$DISK/job/results.jsonl" 2>/dev/null; do sleep 0.02; done'


def fault_then_resume(tmp_path: Path, size: str, fault: str, fix: str) -> tuple[str, str]:
    """On a tmpfs of `size`: a job into $DISK/job that meets `fault` (sh) once its first row is written; its folder
    copied to $OUT/stopped; `fix` (sh); the same command again, its folder copied to $OUT/resumed. Returns (what the
    script printed, what the first job printed), after checking that the first job stopped with exit code 3."""
    job = f"$LAUNCH {' '.join(JOB)} hydra.run.dir=$DISK/job"
    output = on_small_disk(
        tmp_path,
        size,
        f"""
        ( {WHEN_FIRST_ROW}; {fault} ) &
        {job} > $OUT/first.txt 2>&1; echo $? > $OUT/first.code
        wait
        cp -a $DISK/job $OUT/stopped
        {fix}
        {job} > $OUT/second.txt 2>&1; echo $? > $OUT/second.code
        cp -a $DISK/job $OUT/resumed
    """,
    )
    out = tmp_path / "out"
    first = (out / "first.txt").read_text()
    assert (out / "first.code").read_text().strip() == "3", output + first
    return output, first


@needs_mounts
def test_a_full_disk_stops_the_job_cleanly_and_a_rerun_resumes(tmp_path):
    _, first = fault_then_resume(tmp_path, "8m", 'cat /dev/zero > "$DISK/filler" 2>/dev/null', "rm $DISK/filler")
    out = tmp_path / "out"
    one_message(first)
    assert "no space left on the device" in first and "rerun the same command" in first
    assert first.count("cannot write the log file") <= 1  # the log file's failure is reported once
    stopped = out / "stopped"
    rows = whole_rows(stopped)
    assert rows and all(row["status"] == "ok" for row in rows)  # no sample blamed for the disk
    status = json.loads((stopped / "job_status.json").read_text())
    assert status["state"] == "failed" and "no space left on the device" in status["reason"]
    second = (out / "second.txt").read_text()
    assert (out / "second.code").read_text().strip() == "0", second
    assert f"({len(rows)} already done before this run)" in second
    resumed = whole_rows(out / "resumed")
    assert sorted(row["sample_id"] for row in resumed) == sorted({row["sample_id"] for row in resumed})
    assert len(resumed) == 4 and all(row["status"] == "ok" for row in resumed)
    assert json.loads((out / "resumed" / "job_status.json").read_text())["state"] == "ok"


@needs_mounts
def test_a_folder_that_turns_read_only_or_is_read_only_from_the_start(tmp_path):
    # Linux refuses to remount a file system read-only while a file on it is open for writing (the job's lock and
    # log), so the images folder turns read-only under the running job (a read-only bind mount over it); the whole
    # disk is remounted read-only once no job runs
    read_only = 'mount --bind "$DISK/job/edited" "$DISK/job/edited" && mount -o remount,ro,bind "$DISK/job/edited"'
    _, first = fault_then_resume(
        tmp_path,
        "64m",
        read_only,
        f"""
        umount "$DISK/job/edited"
        mount -o remount,ro "$DISK"
        $LAUNCH {" ".join(JOB)} hydra.run.dir=$DISK/other > $OUT/start.txt 2>&1; echo $? > $OUT/start.code
        $LAUNCH -m {" ".join(JOB)} hydra.sweep.dir=$DISK/sweep > $OUT/sweep.txt 2>&1; echo $? > $OUT/sweep.code
        mount -o remount,rw "$DISK"
    """,
    )
    out = tmp_path / "out"
    one_message(first)
    assert "the file system is read-only" in first
    assert all(row["status"] == "ok" for row in whole_rows(out / "stopped"))
    for name, folder in (("start", "other"), ("sweep", "sweep")):  # refused before Hydra touches the folder
        text = (out / f"{name}.txt").read_text()
        assert (out / f"{name}.code").read_text().strip() == "3", text
        assert "Traceback" not in text and "Unable to configure handler" not in text, text
        assert f"could not write the output folder {tmp_path / 'disk' / folder}: the file system is read-only" in text
    assert (out / "second.code").read_text().strip() == "0", (out / "second.txt").read_text()
    assert len(whole_rows(out / "resumed")) == 4


@needs_mounts
def test_a_cache_entry_results_row_or_status_written_on_a_full_disk_leaves_nothing_torn(tmp_path):
    """Each of invbench's writers on a disk that fills up under it: the inversion cache keeps no partial entry, the
    results file no torn row, and job_status.json still records how the job ended, in the room it reserved."""
    check = tmp_path / "check.py"
    check.write_text(
        textwrap.dedent(f"""
        import json, os, sys
        from pathlib import Path
        import torch
        sys.path.insert(0, {str(REPO)!r})
        from invbench.errors import OutputFault
        from orchestration.inversion_cache import InversionCache
        from invbench.job_folder import job_status
        from invbench.results import ResultsFile
        disk = Path(os.environ["DISK"])
        found = {{}}
        results = ResultsFile(disk / "results.jsonl")
        results.append({{"sample_id": "a", "status": "ok"}})
        cache = InversionCache(disk / "inversion_cache", torch.device("cpu"))
        cache.store("small", {{"inverted": torch.zeros(10)}})
        try:
            with job_status(disk, {{}}):
                (disk / "filler").write_bytes(b"0" * (1 << 30))
        except OSError:
            pass  # the disk is full now
        try:
            cache.store("big", {{"inverted": torch.zeros(1 << 20)}})
        except OutputFault as fault:
            found["cache"] = str(fault)
        try:
            results.append({{"sample_id": "b", "status": "ok", "pad": "x" * 100000}})
        except OutputFault as fault:
            found["row"] = str(fault)
        try:
            with job_status(disk, {{}}):
                raise OutputFault("write the image", disk / "edited" / "x.png", OSError(28, "No space left"))
        except OutputFault:
            pass
        found["status"] = json.loads((disk / "job_status.json").read_text())
        found["cache_files"] = sorted(os.listdir(disk / "inversion_cache"))
        found["rows"] = (disk / "results.jsonl").read_text()
        found["small"] = cache.load("small") is not None
        print(json.dumps(found))
    """)
    )
    output = on_small_disk(tmp_path, "2m", f"{sys.executable} {check}")
    found = json.loads(output.strip().splitlines()[-1])
    assert "could not store an inversion in the sweep's cache" in found["cache"] and "no space left" in found["cache"]
    assert found["cache_files"] == ["small.pt"]  # no partial entry, and the earlier entry intact
    assert found["small"]
    assert "could not append a row to" in found["row"]
    assert found["rows"] == '{"sample_id": "a", "status": "ok"}\n'  # the failed row undone, not torn
    assert found["status"]["state"] == "failed" and "could not write the image" in found["status"]["reason"]


def test_a_folder_deleted_or_its_lock_replaced_while_the_job_runs_stops_it(tmp_path):
    replaced = "rm job/.invbench.lock && touch job/.invbench.lock"
    for fault, expected in (("rm -rf job", "the folder vanished"), (replaced, "replaced the folder's lock file")):
        job = tmp_path / "job"
        process = subprocess.Popen(
            [sys.executable, str(REPO / "launch.py"), *JOB, f"hydra.run.dir={job}"], cwd=tmp_path,
            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.time() + 300
        while not (job / "results.jsonl").is_file() or "sample_id" not in (job / "results.jsonl").read_text():
            assert process.poll() is None and time.time() < deadline, process.communicate()[0]
            time.sleep(0.02)
        subprocess.run(["sh", "-c", fault], cwd=tmp_path, check=True)
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 3, output
        one_message(output)
        assert expected in output
        assert not (job / "edited").exists() or fault.startswith("rm job/")  # a deleted folder is not recreated
        shutil.rmtree(job, ignore_errors=True)


def test_under_submitit_a_fault_is_the_jobs_failure_with_its_reason(tmp_path):
    """The Slurm path (submitit_local runs it in subprocesses, as Slurm does): the fault is that job's failure, with
    its message in the sweep's report and in job_status.json."""
    sweep = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), "-m", "hydra/launcher=submitit_local", *JOB,
         f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=script_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not any("sample_id" in path.read_text() for path in sweep.glob("*/results.jsonl")):
        assert process.poll() is None and time.time() < deadline, process.communicate()[0]
        time.sleep(0.02)
    (job,) = [path.parent for path in sweep.glob("*/results.jsonl")]
    (job / ".invbench.lock").unlink()
    (job / ".invbench.lock").touch()
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 1, output
    assert "1 job(s) failed" in output and "OutputFault: stopped: could not keep the lock on" in output
    status = json.loads((job / "job_status.json").read_text())
    assert status["state"] == "failed" and "replaced the folder's lock file" in status["reason"]
    assert all(row["status"] == "ok" for row in read_rows(job / "results.jsonl"))
    code, output = run("launch.py", "-m", "hydra/launcher=submitit_local", *JOB, f"hydra.sweep.dir={sweep}",
                       cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    assert len(read_rows(job / "results.jsonl")) == 4
