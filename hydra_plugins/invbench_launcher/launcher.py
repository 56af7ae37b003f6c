"""Hydra launchers for sweeps on Slurm (and local subprocesses): hydra-submitit-launcher's, plus a job list and an
optional non-blocking submit.

`launcher=slurm` and `launcher=submitit_local` select them (conf/launcher/; config nodes in config.py). On top of
the plugin they

* write `<sweep dir>/jobs.json` at submission: every job's number, scheduler id, overrides and log, and the command
  that resubmits the sweep into the same folders. `aggregate.py` reads it to say which jobs are missing;
* with `hydra.launcher.wait=false`, return as soon as the jobs are queued, after printing their ids and where the
  results will land, instead of holding the login shell until the last job ends;
* when waiting on Slurm, wait while squeue still lists a job. submitit decides from sacct alone that a job has
  ended, and on a busy cluster it has judged an array task that was still pending ended and reported it failed
  ("No output/error stream produced"), although the job then ran and wrote its results.

Timeouts and preemption are the plugin's: Slurm signals the job (USR2, `signal_delay_s` before the time limit, and
at preemption where the cluster sets `SlurmctldParameters=preempt_send_user_signal`), submitit calls the launcher's
`checkpoint`, which resubmits the same job, and the requeued job resumes in its own folder, skipping the samples
whose rows are already written (invbench/results.py). `max_num_timeout` bounds how often a job that hits its time
limit is requeued.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

import orchestration.resolvers  # noqa: F401  (a job process resolves its folder name with them)
from invbench.job_list import JOBS_FILE, write_job_list
from orchestration.progress import Progress

log = logging.getLogger(__name__)


class _JobListMixin:
    """Submits like BaseSubmititLauncher.launch, then records the jobs and, unless waiting, returns at once."""

    _EXECUTOR: str

    def __init__(self, wait: bool = True, **params: Any) -> None:
        super().__init__(**params)
        self.wait = wait

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **self._executor_init_parameters())
        executor.update_parameters(**self._job_parameters())
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        arguments = [
            (list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state())
            for number, overrides in zip(numbers, job_overrides)
        ]
        jobs = executor.map_array(self, *zip(*arguments))
        listed = [
            {
                "num": number,
                "job_id": job.job_id,
                "overrides": filter_overrides(overrides),
                "stdout": str(job.paths.stdout),  # our log lines
                "stderr": str(job.paths.stderr),  # tracebacks
                "ended_marker": str(job.paths.result_pickle),  # submitit writes it when the job function returns
            }
            for number, overrides, job in zip(numbers, job_overrides, jobs)
        ]
        resubmit = self._resubmit_command(sweep_dir)
        write_job_list(sweep_dir, listed, self._EXECUTOR, resubmit)
        for job in listed:
            log.info("#%d %s: %s", job["num"], job["job_id"], " ".join(job["overrides"]))
        if self.wait:
            return self._wait_for(jobs, job_overrides, numbers)
        print(
            f"invbench: {len(jobs)} {self._EXECUTOR} jobs submitted; not waiting for them.\n"
            f"  results           {sweep_dir}/<job number>_<inversion>+<editor>[_<categories or shard>]/\n"
            f"  job list          {sweep_dir / JOBS_FILE}\n"
            f"  merge and check   python aggregate.py {shlex.quote(str(sweep_dir))}\n"
            f"  resubmit missing  {resubmit}"
        )
        return [
            JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=job.job_id)
            for overrides, job in zip(job_overrides, jobs)
        ]

    def _wait_for(
        self, jobs: Sequence[Any], job_overrides: Sequence[Sequence[str]], numbers: range
    ) -> list[JobReturn]:
        """Every job's result, in submission order, logging `k/N jobs done` as they finish (in any order)."""
        progress = Progress(len(jobs))
        results: dict[int, JobReturn] = {}
        while len(results) < len(jobs):
            finished = [k for k, job in enumerate(jobs) if k not in results and job.done()]
            for k in finished:
                self._wait_while_queued(jobs[k])
                results[k] = _result(jobs[k], job_overrides[k])
                progress.advance()
                log.info("invbench sweep: %d/%d jobs done (#%d %s: %s); %s", progress.done, progress.total,
                         numbers[k], jobs[k].job_id, results[k].status.name.lower(), progress.status())  # fmt: skip
            if len(results) < len(jobs) and not finished:
                time.sleep(PROGRESS_POLL_SECONDS)
        return [results[k] for k in range(len(jobs))]

    def _wait_while_queued(self, job: Any) -> None:
        """The scheduler's own view of whether a job is still queued or running (none for local jobs)."""

    def _executor_init_parameters(self) -> dict[str, Any]:
        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        return init

    def _job_parameters(self) -> dict[str, Any]:
        """The plugin's rule: shared fields keep their names, the executor's own get its prefix."""
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        return {
            key if key in shared else f"{self._EXECUTOR}_{key}": value
            for key, value in self.params.items()
            if key not in ("submitit_folder", "max_num_timeout")
        }

    def _resubmit_command(self, sweep_dir: Path) -> str:
        """The same sweep into the same folders: finished samples are skipped, so only what is missing runs. Paths
        are absolute, so the command works from any directory."""
        overrides = [
            *self.config.hydra.overrides.task,
            *(o for o in self.config.hydra.overrides.hydra if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))),
            f"hydra.sweep.dir={sweep_dir.resolve()}",
        ]
        config_dirs = [  # --config-dir folders given on the command line (a site's conf/local lives there)
            f"--config-dir={Path(source.path).resolve()}"
            for source in self.config.hydra.runtime.config_sources
            if source.provider == "command-line" and source.schema == "file"
        ]
        return shlex.join(["python", str(Path(sys.argv[0]).resolve()), "-m", *overrides, *config_dirs])


class JobFailed(Exception):
    """A job of a blocking sweep that ended without a result: the reason and where its logs are."""

    def __init__(self, reason: str, logs: dict[str, str]):
        super().__init__(f"{reason} (logs: {', '.join(logs.values())})")
        self.reason, self.logs = reason, logs


def _result(job: Any, overrides: Sequence[str]) -> JobReturn:
    """The job's Hydra result; a job that ended without one (it exited, was cancelled or killed) becomes a failed
    result with the last line of its error, instead of a traceback that stops the sweep's report."""
    try:
        return job.results()[0]
    except Exception as error:  # submitit's FailedJobError / UncompletedJobError
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(error).__name__
        failure = JobFailed(reason, {"stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})
        return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=failure)


QUEUE_POLL_SECONDS = 10.0
PROGRESS_POLL_SECONDS = 5.0  # how often a blocking sweep asks submitit which jobs are done


def queued_slurm_jobs() -> set[str] | None:
    """The ids slurmctld still holds, array tasks one by one ("4242_7"); None when squeue does not answer."""
    try:
        listed = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return set(listed.split())


class InvbenchSlurmLauncher(_JobListMixin, SlurmLauncher):
    def _wait_while_queued(self, job: Any) -> None:
        """Until the job has written its result or squeue no longer lists it: submitit then reads its outcome (or
        sacct's reason). Where squeue does not answer, submitit's own wait decides, as before."""
        while not Path(job.paths.result_pickle).exists():
            queued = queued_slurm_jobs()
            if queued is None or str(job.job_id) not in queued:
                return
            time.sleep(QUEUE_POLL_SECONDS)


class InvbenchLocalLauncher(_JobListMixin, LocalLauncher):
    pass
