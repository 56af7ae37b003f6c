"""Real size before the first GPU-hour: the methods on SD v1.4's real architecture at 512² (random weights), the real
metric backbones' loading code and metric paths, and the GPU suite's code paths, all on CPU.

The full tables come from `python benchmarks/real_size.py` (docs/real_size.md); these tests keep a representative
subset true in CI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO, run, script_env

from invbench.results import read_rows

pytestmark = pytest.mark.ci_only


# one pair per kind of machinery: P2P's maps at 512², an optimisation loop with backward passes, MasaCtrl's
# mutual self-attention, PnP's feature injection, edit-friendly DDPM's noise maps, pix2pix-zero's guidance by gradient
SUBSET = ["ddim+p2p", "nti+p2p", "directinversion+masactrl", "directinversion+pnp",
          "edit_friendly+p2p_edit_friendly", "pix2pix_zero+pix2pix_zero"]  # fmt: skip


def test_representative_pairs_run_on_sd14s_real_architecture_at_512(tmp_path):
    """About 8 minutes on 2 cores: every pair of SUBSET on sd14_random at 512², 2 steps, metrics on."""
    out = tmp_path / "table.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "real_size.py"), "--pairs", *SUBSET, "--work", str(tmp_path),
         "--out", str(out)], capture_output=True, text=True, check=False, env=script_env(), timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    table = json.loads(out.with_suffix(".json").read_text())
    rows = {row["pair"]: row for row in table["rows"]}
    assert set(rows) == set(SUBSET) and all(row["status"] == "ok" for row in rows.values()), rows
    assert rows["nti+p2p"]["backward_evals"] > 0  # the optimisation loop ran, with its backward passes
    assert rows["pix2pix_zero+pix2pix_zero"]["backward_evals"] > 0  # its guidance: a gradient on attention maps
    # the maps P2P materialises at SD v1.4's 32² self-attention: 1,024² per head, 8 heads, 2 branches, float32
    assert rows["ddim+p2p"]["largest_attention_map_mb"] >= 1024 * 1024 * 8 * 2 * 4 / 2**20
    assert rows["directinversion+masactrl"]["largest_attention_map_mb"] > 0  # its window reached (start_step=1)
    assert "sd14_random at 512², 2 steps" in out.read_text()


def test_the_real_metric_backbones_load_from_where_a_user_keeps_them_and_score_at_512(tmp_path):
    """DINO ViT-B/8 in a Hugging Face cache folder, CLIP ViT-L/14 in a metrics.clip.path folder, LPIPS's SqueezeNet
    trunk in torch hub's checkpoint cache, each its real architecture with random weights
    (benchmarks/metric_backbones.py): the real loaders read them and the rows say which, and that they are random."""
    hf, torch_home, clip = tmp_path / "hf", tmp_path / "torch", tmp_path / "clip"
    code, output = run("benchmarks/metric_backbones.py", "--hf-home", str(hf), "--torch-home", str(torch_home),
                       "--clip-path", str(clip), cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    env = script_env(HF_HOME=str(hf), TORCH_HOME=str(torch_home))
    job = tmp_path / "job"
    code, output = run(
        "launch.py", "metrics.backbones=real", f"metrics.clip.path={clip}", "num_steps=2", "dataset.categories=[1]",
        f"hydra.run.dir={job}", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert code == 0, output
    (row,) = read_rows(job / "results.jsonl")
    setup = row["metrics_setup"]
    assert "dino=facebook/dino-vitb8 (RANDOM weights" in setup and f"clip={clip} (RANDOM weights" in setup
    assert "lpips=lpips-squeeze (RANDOM weights" in setup
    assert all(math.isfinite(row[key]) for key in ("structure_distance", "lpips_unedit_part",
                                                   "clip_similarity_target_image"))  # fmt: skip
    code, output = run("launch.py", "metrics.backbones=real", "num_steps=2", "dataset.categories=[1]",
                       f"hydra.run.dir={tmp_path / 'no_clip'}", cwd=tmp_path, env=env)  # fmt: skip
    assert code == 2 and "the CLIP" in output and "is not available on this machine" in output


def test_the_gpu_suite_runs_its_code_paths_on_cpu_with_the_tiny_models(tmp_path):
    """`benchmarks/gpu_suite.py --smoke`: every part with the tiny models at 64² and 128², 2 steps."""
    code, output = run("benchmarks/gpu_suite.py", "--smoke", "--out", str(tmp_path / "suite"), "--budget-s", "1200",
                       cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    report = json.loads((tmp_path / "suite" / "gpu_suite.json").read_text())
    statuses = {(entry["part"], entry["pair"]): entry["status"] for entry in report["entries"]}
    assert all(status == "ok" for status in statuses.values()), statuses
    assert {entry["model"] for entry in report["entries"]} == {"tiny", "sdxl_tiny", "sd3_tiny", "flux_tiny"}
    assert report["gpu_hours"] > 0 and "device-hours" in (tmp_path / "suite" / "gpu_suite.md").read_text()


def test_the_gpu_suite_drops_optional_parts_when_the_budget_is_used_up(tmp_path):
    code, output = run("benchmarks/gpu_suite.py", "--smoke", "--out", str(tmp_path / "suite"), "--budget-s", "0",
                       "--parts", "7", "8", cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    report = json.loads((tmp_path / "suite" / "gpu_suite.json").read_text())
    assert all(how.startswith("dropped: the budget was used up") for how in report["parts"].values())
    assert {entry["status"] for entry in report["entries"]} == {"dropped"}
