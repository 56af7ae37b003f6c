"""The commands a newcomer meets first: `launch.py --help`, checking a job or a sweep without running it, listing
the pairs that run on a model, progress lines, and the console scripts of a plain (non-editable) install used from
another directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, REPO, run, script_env

from orchestration.progress import Progress, duration


def test_help_says_what_the_app_does_lists_every_group_and_points_to_the_docs(tmp_path):
    code, output = run("launch.py", "--help", cwd=tmp_path)
    assert code == 0, output
    assert output.startswith("invbench (python launch.py")
    groups = {line.split(":")[0] for line in output.splitlines() if re.match(r"^[a-z_]+: ", line)}
    assert groups >= {"dataset", "model", "scheduler", "inversion", "editor", "metrics", "launcher", "fan_out"}
    assert "inversion: aidi_plain, ddim, directinversion" in output
    assert "docs/reference/options.md" in output and "dry_run=true" in output
    assert not list(tmp_path.iterdir())  # --help writes nothing


def test_a_dry_run_sweep_checks_and_lists_every_job_and_launches_none(tmp_path):
    sweep = tmp_path / "sweep"
    code, output = run("launch.py", "-m", "inversion=nti,ddim", "editor=p2p,pnp", "dry_run=true",
                       f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    assert "all 4 jobs can run; nothing was launched" in output
    assert len(re.findall(r"^  #\d inversion=\w+ editor=\w+", output, flags=re.MULTILINE)) == 4
    assert not list(sweep.glob("*/results.jsonl")) and not list(sweep.glob("[0-9]*"))  # no job folder
    # a refused pair refuses the dry run as it refuses the sweep: exit code 2, every reason, nothing launched
    code, output = run("launch.py", "-m", "inversion=nti", "editor=direct,p2p", "editor.guidance_scale=5",
                       "dry_run=true", f"hydra.sweep.dir={tmp_path / 'refused'}", cwd=tmp_path)  # fmt: skip
    assert code == 2, output
    assert "2 of 2 jobs of this sweep cannot run; nothing was launched" in output


def test_a_dry_run_job_checks_its_data_and_loads_nothing(tmp_path):
    code, output = run("launch.py", "inversion=pti", "editor=p2p", "dataset.categories=[1,6]", "dry_run=true",
                       f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    assert "inversion=pti editor=p2p model=tiny can run on 2 samples" in output
    assert not (tmp_path / "job" / "results.jsonl").exists() and "Loading" not in output
    code, output = run("launch.py", "num_steps=-5", "dry_run=true", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert code == 2 and "num_steps=-5 is out of range" in output, output


def test_pairs_lists_what_composes_on_a_model_and_why_the_rest_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "orchestration.catalog", "model=sd3_tiny"], cwd=REPO,
                          env=script_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^\| (\w+) \| (\w+) \|$", done.stdout, flags=re.MULTILINE)[1:]  # the header row first
    # SD3: the flow inversions with direct; FlowEdit is inversion-free, so it pairs with `none` alone
    assert sorted(listed) == [("fireflow", "direct"), ("flow", "direct"), ("none", "direct"), ("none", "flowedit"),
                              ("none", "flowedit_sd3"), ("rf_solver", "direct")]  # fmt: skip
    assert "flow + flowedit: " in done.stdout and "pairs with inversion=none only" in done.stdout
    done = subprocess.run([sys.executable, "-m", "orchestration.catalog", "inversion=ddim"], cwd=REPO,
                          env=script_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "usage: invbench-pairs model=<name>" in done.stderr


def test_progress_says_elapsed_and_what_is_left_at_the_pace_so_far():
    now = [100.0]
    progress = Progress(4, clock=lambda: now[0])
    assert progress.status() == "0 s elapsed"
    now[0] += 30
    progress.advance()
    assert progress.status() == "30 s elapsed, about 1 min 30 s left"  # 3 more at 30 s each
    now[0] += 3 * 3600
    progress.done = 4
    assert progress.status() == "3 h 00 min elapsed"
    assert [duration(s) for s in (0.4, 59.6, 61, 3599, 7325)] == ["0 s", "1 min 00 s", "1 min 01 s", "59 min 59 s",
                                                                  "2 h 02 min"]  # fmt: skip


def test_a_progress_bar_only_on_a_terminal(monkeypatch):
    from orchestration.progress import terminal_bar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    with terminal_bar(3, "job") as bar:
        assert bar is None  # a file, a pipe, a Slurm log: log lines only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with terminal_bar(3, "job") as bar:
        bar.update()
        assert bar.n == 1 and bar.total == 3


def test_a_job_logs_elapsed_time_and_an_estimate_per_sample_and_a_sweep_counts_its_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    code, output = run("launch.py", "-m", "editor=direct,p2p", "dataset.categories=[1,6]", *FAST,
                       f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    assert re.search(r"\[1/2\] \w+ \(change object\): ok in [\d.]+ s; \d+ s elapsed, about \d+ s left", output)
    assert re.search(r"invbench sweep: 1/2 jobs done \(editor=direct .*: completed\); \d+ s elapsed, about", output)
    assert re.search(
        r"invbench sweep: 2/2 jobs done \(editor=p2p .*: completed\); \d+ s elapsed$", output, re.MULTILINE
    )
    assert "it/s" not in output and "sample/s" not in output  # no progress bar: stderr is not a terminal


@pytest.mark.ci_only  # about 1 min: a venv, a wheel built from a copy of the sources, a smoke job from elsewhere
def test_a_plain_install_works_from_any_directory(tmp_path):
    """`pip install .` (not editable) from a copy of the tracked files; then, from another directory, the console
    scripts run a job (and one on the default toy model, whose weights ship in the package), aggregate it and score it, and `import evaluate` does not find ours. The new venv reaches the
    test environment's libraries through a .pth file, so that only invbench itself is installed (no download)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    source = tmp_path / "source"
    for name in filter(None, files.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = next(path for path in sys.path if path.endswith("site-packages"))
    (Path(site) / "invbench_test_libraries.pth").write_text(ours + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(source)],
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = script_env() | {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)

    job = command("invbench", "experiment=smoke", *FAST, "hydra.run.dir=job")
    assert job.returncode == 0, job.stdout + job.stderr
    assert (elsewhere / "job" / "results.jsonl").is_file() and "2 samples ok" in job.stdout
    toy = command("invbench", "experiment=smoke", "num_steps=3", "metrics.backbones=tiny", "hydra.run.dir=toy")
    assert toy.returncode == 0 and "TOY" in toy.stdout + toy.stderr, toy.stdout + toy.stderr  # its weights shipped
    tables = command("invbench-aggregate", "job", "--out", "tables")
    assert tables.returncode == 0 and (elsewhere / "tables").is_dir(), tables.stdout + tables.stderr
    score = command("invbench-score", "--help")
    assert score.returncode == 0 and "score" in score.stdout, score.stdout + score.stderr
    where = command(str(python), "-c", "import launch, invbench; print(launch.__file__); print(invbench.__file__)")
    assert all(line.startswith(site) for line in where.stdout.split()), where.stdout + where.stderr
    shadow = command(str(python), "-c", "import evaluate; print(evaluate.__file__)")
    assert shadow.returncode != 0 or not shadow.stdout.startswith(site), shadow.stdout
