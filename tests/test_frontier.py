"""Frontiers: the Pareto front, hypervolume and matched-preservation editability on hand-made points; the knobs
methods declare and the settings a frontier sweep expands a job into; a frontier sweep through launch.py and
aggregate.py, resumed; and every declared knob's ends running (ci_only)."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from conftest import CONF, FAST, conf_file, run

from editors import EDITORS
from invbench.errors import ConfigError
from invbench.hyperparameters import Knob
from inversions import INVERSIONS
from orchestration.frontier import knob_settings
from reports.frontier import at_matched_preservation, frontiers, hypervolume, pareto_front

NAN = float("nan")


def test_pareto_front_keeps_the_undominated_points_and_their_ties():
    points = [(20, 25), (22, 24), (21, 26), (19, 27), (22, 24), (18, 20), (NAN, 30)]
    # (20, 25) is beaten by (21, 26); (18, 20) by everything; the NaN row is never on the front; the two equal
    # (22, 24) are both kept
    assert pareto_front(points) == [3, 2, 1, 4]
    assert pareto_front([(20, 25)]) == [0]
    assert pareto_front([]) == [] and pareto_front([(NAN, NAN)]) == []


def test_hypervolume_is_the_dominated_area_above_the_reference():
    reference = (10, 15)
    assert hypervolume([(20, 25)], reference) == (20 - 10) * (25 - 15)
    # two steps: (22, 24) covers 12 × 9; (19, 27) adds 9 × (27 - 24)
    assert hypervolume([(22, 24), (19, 27)], reference) == 12 * 9 + 9 * 3
    # a dominated point adds nothing; a point below the reference on one axis adds nothing; NaN adds nothing
    assert hypervolume([(22, 24), (19, 27), (18, 20), (30, 14), (NAN, 40)], reference) == 12 * 9 + 9 * 3
    assert hypervolume([], reference) == 0


def test_editability_at_matched_preservation_interpolates_along_the_front():
    front = [(19, 27), (21, 26), (22, 24)]
    assert at_matched_preservation(front, 20) == pytest.approx(26.5)
    assert at_matched_preservation(front, 22) == 24
    assert math.isnan(at_matched_preservation(front, 23)) and math.isnan(at_matched_preservation(front, 18))
    assert math.isnan(at_matched_preservation([], 20)) and math.isnan(at_matched_preservation(front, NAN))


def test_frontiers_from_rows_with_bootstrap_intervals():
    rows = []
    for digest, shift in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        for k in range(6):
            rows.append({"inversion": "ddim", "editor": "p2p", "model": "tiny", "data": "mini", "metrics_setup": "m",
                         "config_hash": digest, "variant": f"editor.cross_replace_steps={shift}", "sample_id": str(k),
                         "status": "ok", "psnr_unedit_part": 20 + shift + k % 2, "total_seconds": 1.0,
                         "clip_similarity_target_image_edit_part": 24 - shift + k % 3})  # fmt: skip
    rows.append(dict(rows[0], sample_id="9", status="failed", psnr_unedit_part=NAN))
    found = frontiers(pd.DataFrame(rows), resamples=200)
    (method,) = found.methods
    assert len(method.points) == 3 and sorted(method.front) == [0, 1, 2]  # each trades one axis for the other
    assert method.points["n"].tolist() == [6, 6, 6] and method.points["failed"].tolist() == [1, 0, 0]
    low, high = method.hypervolume_interval
    assert low <= method.hypervolume <= high
    assert found.matched_source == "the median preservation of all front points"
    # one setting only: no frontier to draw
    assert frontiers(pd.DataFrame([r for r in rows if r["config_hash"] == "a"]), resamples=10) is None


def test_knob_values_on_each_scale():
    assert Knob("x", 0.1, 0.9).values(3) == [0.1, 0.5, 0.9]
    assert Knob("x", 1.0, 100.0, "log").values(3) == [1.0, 10.0, 100.0]
    assert Knob("x", 4, 10, "int").values(4) == [4, 6, 8, 10]
    assert Knob("x", 0, 1, "int").values(5) == [0, 1]  # an integer knob has no more values than its range
    with pytest.raises(ConfigError, match="at least 2 points"):
        Knob("x", 0.1, 0.9).values(1)


def test_declared_knobs_are_checked_like_hyperparameters():
    p2p = {key: value for key, value in conf_file("editor/p2p.yaml").items() if key != "frontier"}
    assert [
        knob.name for knob in EDITORS.knobs(p2p | {"frontier": {"cross_replace_steps": {"low": 0.1, "high": 0.9}}})
    ]
    bad = {
        "nope": {"low": 0, "high": 1},
        "cross_replace_steps": {"low": 0.9, "high": 0.1},
    }
    with pytest.raises(ConfigError, match="'nope' is not a hyperparameter"):
        EDITORS.knobs(p2p | {"frontier": {"nope": bad["nope"]}})
    with pytest.raises(ConfigError, match="low=0.9 must be below high=0.1"):
        EDITORS.knobs(p2p | {"frontier": {"cross_replace_steps": bad["cross_replace_steps"]}})
    with pytest.raises(ConfigError, match="frontier.cross_replace_steps.high=2"):
        EDITORS.knobs(p2p | {"frontier": {"cross_replace_steps": {"low": 0.1, "high": 2}}})  # a fraction: ≤ 1
    with pytest.raises(ConfigError, match="scale='cubic'"):
        EDITORS.knobs(p2p | {"frontier": {"cross_replace_steps": {"low": 0.1, "high": 0.9, "scale": "cubic"}}})
    # the declaration is not a hyperparameter: building the method ignores it after checking it
    assert (
        EDITORS.build(p2p | {"frontier": {"cross_replace_steps": {"low": 0.1, "high": 0.9}}}).cross_replace_steps
        == 0.4
    )


def test_a_frontier_job_expands_into_its_knob_settings():
    methods = {"inversion": {"name": "ddim", "num_steps": 5, "guidance_scale": 1.0},
               "editor": {**conf_file("editor/p2p.yaml"), "frontier": {
                   "cross_replace_steps": {"low": 0.2, "high": 0.8}, "self_replace_steps": {"low": 0.2, "high": 0.8}}}}  # fmt: skip
    line = knob_settings(methods, {"points": 3, "include_default": False}, [])
    assert line == [["editor.cross_replace_steps=0.2", "editor.self_replace_steps=0.2"],
                    ["editor.cross_replace_steps=0.5", "editor.self_replace_steps=0.5"],
                    ["editor.cross_replace_steps=0.8", "editor.self_replace_steps=0.8"]]  # fmt: skip
    assert len(knob_settings(methods, {"points": 3, "mode": "grid"}, [])) == 1 + 9  # the configured setting first
    held = knob_settings(methods, {"points": 2}, ["editor.self_replace_steps=0.6"])
    assert held == [[], ["editor.cross_replace_steps=0.2"], ["editor.cross_replace_steps=0.8"]]
    assert knob_settings({"inversion": methods["inversion"], "editor": {"name": "direct", "guidance_scale": 7.5}},
                         {"points": 3}, []) == [[]]  # fmt: skip
    with pytest.raises(ConfigError, match="frontier.mode='zigzag'"):
        knob_settings(methods, {"points": 3, "mode": "zigzag"}, [])


def test_every_editor_and_the_inversions_with_a_trade_off_declare_knobs():
    from orchestration.catalog import composed

    for path in sorted((CONF / "editor").glob("*.yaml")):  # variants inherit their base's knobs
        assert EDITORS.knobs(composed((f"editor={path.stem}",))["editor"]), path.name
    for name in ("edit_friendly", "proxedit", "uniedit_flow"):
        assert INVERSIONS.knobs(composed((f"inversion={name}",))["inversion"]), name


def test_a_frontier_sweep_runs_resumes_and_lands_in_one_table_and_figure(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=frontier", "inversion=ddim", "editor=p2p", "frontier.points=3", "dataset.categories=[1,6]",
            *FAST, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    code, output = run("launch.py", *args, cwd=tmp_path)
    assert code == 0, output
    jobs = sorted(folder.name for folder in sweep.glob("[0-9]*"))
    assert len(jobs) == 4 and "invbench sweep: 4/4 jobs done" in output  # the reference setting and 3 points
    code, output = run("launch.py", *args, cwd=tmp_path)  # the same command again resumes: nothing left to do
    assert code == 0 and len(re.findall(r"selected; 2 already done", output)) == 4, output
    tables = tmp_path / "tables"
    code, output = run("aggregate.py", str(sweep), "--out", str(tables), "--resamples", "200", cwd=tmp_path)
    assert code == 0, output
    assert "**Frontiers: preservation vs editability**" in output and "ddim + p2p" in output
    frontier = pd.read_csv(tables / "frontier.csv")
    assert frontier["settings"].tolist() == [4] and frontier["front_points"].iloc[0] >= 1
    points = pd.read_csv(tables / "frontier_points.csv")
    settings = ((0.1, 0.2), (0.4, 0.6), (0.5, 0.55), (0.9, 0.9))  # (0.4, 0.6): P2P's reference setting
    assert sorted(points["setting"]) == [
        f"editor.cross_replace_steps={c}, editor.self_replace_steps={s}" for c, s in settings
    ]
    assert "DDIM + P2P at its reference setting" in output  # the matched preservation level
    assert "RANDOM WEIGHTS (tiny)" in output
    assert (tables / "figures" / "frontier_psnr_vs_clip_edited.png").stat().st_size > 1000
    assert (tables / "frontier.tex").read_text().startswith("\\begin{tabular}")
    assert "<img" in (tables / "gallery" / "frontier.html").read_text()


def test_an_optuna_frontier_search_repeats_its_trials_resumes_and_lands_in_the_table(tmp_path):
    import json

    def search(sweep):
        args = ["-m", "experiment=frontier", "frontier.mode=optuna", "frontier.trials=3", "frontier.seed=3",
                "inversion=ddim", "editor=p2p", "dataset.categories=[1]", *FAST, f"hydra.sweep.dir={sweep}"]  # fmt: skip
        code, output = run("launch.py", *args, cwd=tmp_path)
        assert code == 0, output
        (method,) = json.loads((sweep / "frontier_search.json").read_text())["methods"]
        return method["trials"], output

    trials, output = search(tmp_path / "first")
    assert [trial["state"] for trial in trials] == ["complete"] * 3 and "invbench sweep: 3/3 jobs done" in output
    assert trials[0]["setting"] == {"editor.cross_replace_steps": 0.4, "editor.self_replace_steps": 0.6}  # reference
    assert len({json.dumps(trial["setting"]) for trial in trials}) == 3 and any(t["pareto_optimal"] for t in trials)
    for trial in trials[1:]:  # inside the declared ranges, rounded to 4 significant digits
        assert 0.1 <= trial["setting"]["editor.cross_replace_steps"] <= 0.9
        assert 0.2 <= trial["setting"]["editor.self_replace_steps"] <= 0.9
    again, _ = search(tmp_path / "second")  # a fresh folder, the same seed: the same trials
    assert [t["setting"] for t in again] == [t["setting"] for t in trials]
    # a sweep killed during its last trial: that job's rows are lost; the same command finishes it alone
    (tmp_path / "first" / "2_ddim+p2p_cat1" / "results.jsonl").unlink()
    resumed, output = search(tmp_path / "first")
    assert [t["setting"] for t in resumed] == [t["setting"] for t in trials]
    assert len(re.findall(r"selected; 1 already done", output)) == 2 and "0 already done" in output, output
    tables = tmp_path / "tables"
    code, output = run("aggregate.py", str(tmp_path / "first"), "--out", str(tables), "--resamples", "50",
                       cwd=tmp_path)  # fmt: skip
    assert code == 0 and "**Frontiers: preservation vs editability**" in output, output
    assert pd.read_csv(tables / "frontier.csv")["settings"].tolist() == [3]
    assert (tables / "figures" / "frontier_psnr_vs_clip_edited.png").stat().st_size > 1000


def test_an_optuna_frontier_search_is_checked_before_it_launches(tmp_path):
    base = ["-m", "experiment=frontier", "frontier.mode=optuna", "inversion=ddim", "editor=p2p", *FAST,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    code, output = run("launch.py", *base, "dry_run=true", "frontier.trials=4", cwd=tmp_path)
    assert code == 0 and "Optuna would run 4 trials" in output, output
    assert "editor.cross_replace_steps in [0.1, 0.9] (linear)" in output
    code, output = run("launch.py", *base, "hydra/launcher=invbench_local", "hydra.launcher.wait=false", cwd=tmp_path)
    assert code == 2 and "needs a launcher that waits" in output, output
    code, output = run("launch.py", *base, "frontier.trials=0", cwd=tmp_path)
    assert code == 2 and "frontier.trials=0: an integer, at least 1" in output, output
    code, output = run("launch.py", *base, "frontier.mode=line", "frontier.points=1", cwd=tmp_path)
    assert code == 2 and "frontier.points=1: an integer, at least 2" in output, output
    code, output = run("launch.py", *base, "+frontier.trails=4", cwd=tmp_path)
    assert code == 2 and "frontier.trails: not a frontier setting" in output, output
    assert not (tmp_path / "sweep").exists() or not list((tmp_path / "sweep").glob("[0-9]*"))


def test_a_frontier_needs_a_sweep(tmp_path):
    code, output = run("launch.py", "experiment=frontier", *FAST, f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert code == 2 and "add -m" in output, output


@pytest.mark.ci_only  # about 5 min: one sample, 4 steps at 64², every declared knob at both of its ends
def test_every_declared_knob_runs_at_both_ends(tmp_path):
    """Each editor with an inversion it pairs with on an embedded model of its family, and the inversions that
    declare knobs with an editor of theirs; `frontier.points=2` puts every knob at its low and its high end."""
    from collections import defaultdict

    from orchestration.catalog import FAMILY_MODELS, groups, registered_class, valid_pairs

    runs: dict[tuple[str, str, str], list[str]] = defaultdict(list)  # (model, inversion, axes) -> editors
    for editor in groups()["editor"]:
        families = registered_class("editor", editor).families
        model = FAMILY_MODELS["sd" if "sd" in families else min(families)]
        inversions = [inversion for inversion, paired in valid_pairs(model)[0] if paired == editor]
        preferred = [name for name in ("ddim", "flow", "none") if name in inversions] or inversions
        runs[model, preferred[0], "[editor]"].append(editor)
    for model, inversion, editor in (("tiny", "edit_friendly", "p2p_edit_friendly"), ("tiny", "proxedit", "p2p"),
                                     ("flux_tiny", "uniedit_flow", "uniedit")):  # fmt: skip
        runs[model, inversion, "[inversion,editor]"].append(editor)
    for number, ((model, inversion, axes), editors) in enumerate(sorted(runs.items())):
        sweep = tmp_path / f"sweep{number}"
        # RF-Edit's reference blocks (20..37) are FLUX.1's; the tiny FLUX has two single-stream blocks
        fit = ["++editor.first_single_block=0", "++editor.last_single_block=1"] if "rf_edit" in editors else []
        code, output = run("launch.py", "-m", "experiment=frontier", "frontier.points=2", f"frontier.axes={axes}",
                           f"model={model}", f"inversion={inversion}", f"editor={','.join(editors)}", *fit,
                           "dataset.categories=[1]", "model.resolution=64", "num_steps=4", "metrics.backbones=tiny",
                           f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
        assert code == 0, (model, inversion, editors, output[-3000:])
        rows = [
            line for folder in sweep.glob("[0-9]*") for line in (folder / "results.jsonl").read_text().splitlines()
        ]
        assert len(rows) == 3 * len(editors), (model, inversion, editors)  # the configured setting and both ends
        assert all('"status": "ok"' in row for row in rows), (model, inversion, editors)
