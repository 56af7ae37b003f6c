"""launch.py and aggregate.py run as a user runs them: subprocesses, exit codes, files on disk."""

import csv

import pytest
from conftest import run, script_env

from invbench.results import read_rows

QUICK = ["model.resolution=64", "num_steps=5", "metrics.backbones=tiny"]


def launch_sweep(tmp_path, *overrides):
    """`launch.py -m <overrides> hydra.sweep.dir=<tmp>/sweep` -> (sweep folder, exit code, output)."""
    sweep = tmp_path / "sweep"
    return (sweep, *run("launch.py", "-m", *overrides, f"hydra.sweep.dir={sweep}", cwd=tmp_path))


def test_launch_end_to_end_on_two_samples(tmp_path):
    code, output = run(
        "launch.py", *QUICK, "dataset.categories=[1,6]", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert code == 0, output
    assert "invbench: 2 samples ok, 0 failed" in output and "| ddim | direct | tiny |" in output
    assert "RANDOM weights" in output  # the tiny model never runs silently
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all((tmp_path / "run" / r["edited_image"]).is_file() for r in rows)


def test_unknown_method_lists_the_available_ones(tmp_path):
    code, output = run("launch.py", "inversion=nope", cwd=tmp_path)
    assert code != 0 and "Could not find 'inversion/nope'" in output and "Available options in 'inversion'" in output
    assert "ddim" in output
    code, output = run("launch.py", "editor.name=nope", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert code == 2 and "unknown editor 'nope'. Available: direct" in output and "Traceback" not in output


def test_missing_model_is_a_clear_error(tmp_path):
    code, output = run(
        "launch.py", "model=sd14", "model.repo_id=invbench-tests/none", f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert code == 2 and "model.path=" in output and "Traceback" not in output


def test_multirun_sweep_then_aggregate(tmp_path):
    sweep, code, output = launch_sweep(
        tmp_path, "inversion=ddim", "editor=direct", "editor.guidance_scale=1,7.5", "dataset.categories=[1,6]", *QUICK
    )
    assert code == 0, output
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()) == [
        "0_ddim+direct_cat1+6",
        "1_ddim+direct_cat1+6",
    ]
    assert "invbench sweep: 4 rows from 2 jobs" in output and (sweep / "summary.md").is_file()

    code, output = run("aggregate.py", str(sweep), "--out", str(tmp_path / "tables"), cwd=tmp_path)
    assert code == 0, output
    with open(tmp_path / "tables" / "mean_by_method.csv") as f:
        table = {row["differs"]: row for row in csv.DictReader(f)}
    # 5 steps x 2 branches: 1 evaluation per branch per step without guidance, 2 with it
    assert float(table["editor.guidance_scale=1.0"]["edit_unet_evals"]) == 10
    assert float(table["editor.guidance_scale=7.5"]["edit_unet_evals"]) == 20
    assert {row["samples_ok"] for row in table.values()} == {"2"}
    assert (tmp_path / "tables" / "mean_by_method.md").is_file()


@pytest.mark.ci_only  # about 21 s on 2 cores; .ci/run runs it
def test_editor_sweep_direct_p2p_p2plus(tmp_path):
    sweep, code, output = launch_sweep(
        tmp_path, "inversion=ddim", "editor=direct,p2p,p2plus", "dataset.categories=[1,6]", *QUICK
    )
    assert code == 0, output
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()) == [
        "0_ddim+direct_cat1+6",
        "1_ddim+p2p_cat1+6",
        "2_ddim+p2plus_cat1+6",
    ]
    for editor in ("direct", "p2p", "p2plus"):
        assert f"| ddim | {editor} | tiny |" in output
    rows = read_rows(sweep / "1_ddim+p2p_cat1+6" / "results.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {r["edit_info"]["controller"] for r in rows} == {"refine"} and all(
        r["edit_info"]["local_blend"] for r in rows
    )


@pytest.mark.ci_only  # about 20 s on 2 cores; .ci/run runs it
def test_headline_sweep_accepts_the_ntI_spelling(tmp_path):
    sweep, code, output = launch_sweep(
        tmp_path, "inversion=ntI,todinv", "editor=p2p", "dataset.categories=[1]", *QUICK
    )
    assert code == 0, output
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()) == [
        "0_nti+p2p_cat1",
        "1_todinv+p2p_cat1",
    ]
    (row,) = read_rows(sweep / "0_nti+p2p_cat1" / "results.jsonl")
    assert row["status"] == "ok" and row["inversion"] == "nti" and row["inversion_info"]["optimisation_steps"] >= 5


@pytest.mark.ci_only  # about 27 s on 2 cores; .ci/run runs it
def test_submitit_local_sweep_runs_jobs_in_parallel_subprocesses(tmp_path):
    sweep, code, output = launch_sweep(tmp_path, "hydra/launcher=submitit_local", "dataset.categories=[1],[6]", *QUICK)
    assert code == 0, output
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 2
    assert [len(read_rows(job / "results.jsonl")) for job in jobs] == [1, 1]
    assert len([p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]) == 2  # one submitit job each
    logs = "".join((job / "launch.log").read_text() for job in jobs)
    assert logs.count("1 CPU threads") == 2


def test_aggregate_reports_bad_input(tmp_path):
    code, output = run("aggregate.py", str(tmp_path / "nope"), cwd=tmp_path)
    assert code == 2 and "does not exist" in output
    code, output = run("aggregate.py", str(tmp_path), cwd=tmp_path)
    assert code == 1 and "no result rows" in output


NETWORK_GUARD = """
import os, socket, traceback

def _record(what):
    with open(os.environ["INVBENCH_NETWORK_LOG"], "a") as log:
        log.write(what + "\\n" + "".join(traceback.format_stack(limit=40)) + "\\n")

class _NoInternetSocket(socket.socket):
    def __init__(self, family=socket.AF_INET, *args, **kwargs):
        if family in (socket.AF_INET, socket.AF_INET6):
            raise OSError("network sockets are refused in this test")
        super().__init__(family, *args, **kwargs)

def _refused(name):
    def call(*args, **kwargs):
        _record(f"{name}{args[:2]}")  # recorded: callers such as the hub client swallow the error and fall back
        raise OSError(f"network access refused in this test: {name}")
    return call

socket.socket = _NoInternetSocket
for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
    setattr(socket, _name, _refused(_name))
"""


def test_a_job_never_touches_the_network_whatever_the_environment(tmp_path):
    """No HF_HUB_OFFLINE in the shell (the README's quick start): a smoke job must still make no DNS lookup and no
    connection. sitecustomize makes internet sockets fail to create and records every lookup or connect."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = tmp_path / "network.log"
    env = {key: value for key, value in script_env().items() if not key.endswith("_OFFLINE")}
    env |= {"PYTHONPATH": str(guard), "INVBENCH_NETWORK_LOG": str(log)}
    code, output = run(
        "launch.py", "experiment=smoke", "metrics.backbones=auto", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert code == 0 and "2 samples ok, 0 failed" in output, output
    assert not log.exists(), log.read_text()


def test_a_sweep_with_a_failing_job_reports_it_after_the_table_of_the_others(tmp_path):
    _sweep, code, output = launch_sweep(
        tmp_path, "model=tiny,sd14", "++model.path=/nonexistent", "dataset.categories=[1]", *QUICK
    )
    assert code == 1, output
    assert "invbench sweep: 1 rows from 1 jobs" in output and "| ddim | direct | tiny |" in output
    assert "invbench sweep: 1 job(s) failed:" in output
    assert (
        "model=sd14 ++model.path=/nonexistent" in output
        and "ModelNotAvailableError: model.path=/nonexistent" in output
    )
    assert "Traceback" not in output
