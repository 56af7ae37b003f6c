"""Every inversion × every editor: declared inversion state, config-time refusal of pairs that cannot work, and the
full grid through launch.py and aggregate.py on one mini-benchmark sample."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import pandas as pd
import pytest
import torch
from conftest import CONF, method_configs, run
from grid_record import check_against_record

from editors import EDITORS
from editors.direct import DirectEditor
from invbench.errors import ConfigError
from inversions import INVERSIONS
from orchestration.compatibility import check_pair, incompatibilities

ALL_INVERSION_CONFIGS = sorted(path.stem for path in (CONF / "inversion").glob("*.yaml"))
ALL_EDITOR_CONFIGS = sorted(path.stem for path in (CONF / "editor").glob("*.yaml"))
# the grid runs on the tiny model: every configuration of a method that works on the SD family
INVERSION_CONFIGS, EDITOR_CONFIGS = method_configs("inversion"), method_configs("editor")


@cache
def composed(axis: str, name: str) -> dict:
    """conf/<axis>/<name>.yaml as launch.py composes it (defaults lists included)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return OmegaConf.to_container(compose("config", [f"{axis}={name}"])[axis], resolve=True)


def build(axis: str, name: str, **changes):
    registry = {"inversion": INVERSIONS, "editor": EDITORS}[axis]
    return registry.build(composed(axis, name) | changes)


def few_steps(config: dict) -> dict[str, int]:
    """Overrides that shorten an inversion configuration to a couple of steps (and of optimisation iterations)."""
    if "base" in config:
        return {"base.num_steps": 2}
    overrides = {key: value for key, value in (("num_steps", 2), ("inner_steps", 2)) if key in config}
    # pix2pix-zero's KL step of 20 and ReNoise's patch-wise KL steps are calibrated for SD's unit-variance noise and
    # diverge on the tiny model's (std 0.03); pix2pix-zero's holds at 1, ReNoise's only without them
    if "lambda_kl" in config:
        overrides["lambda_kl"] = 0.0 if config["name"] == "renoise" else 1.0
    return overrides | ({"num_steps": 3, "skip": 1} if "skip" in config else {})


def short_inversion(name: str):
    config = composed("inversion", name)
    for key, value in few_steps(config).items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return INVERSIONS.build(config)


def test_every_method_has_a_config_and_every_editor_one_file():
    assert {composed("inversion", name)["name"] for name in ALL_INVERSION_CONFIGS} == set(INVERSIONS.names())
    assert {composed("editor", name)["name"] for name in ALL_EDITOR_CONFIGS} == set(EDITORS.names())


@pytest.mark.parametrize("name", INVERSION_CONFIGS)
def test_declared_state_is_what_the_results_carry(name, tiny_model, sample, source_latent):
    inversion = short_inversion(name)
    assert inversion.invert(tiny_model, source_latent, sample).state() == inversion.state()


def test_state_is_the_hooks_a_method_overrides():
    from inversions.base import CombinedHooks, StepHooks, UnconditionalEmbeddings

    assert build("inversion", "ddim").state() == frozenset()
    assert build("inversion", "directinversion").state() == {"after_step"}
    assert build("inversion", "spdinv").state() == {"conditioning", "step"}
    assert build("inversion", "spdinv_plain").state() == {"conditioning"}
    assert build("inversion", "todinv").state() == {"controllers"}

    class Correction(StepHooks):
        def after_step(self, i, latents):
            return latents

    assert Correction().state() == {"after_step"}
    assert CombinedHooks(UnconditionalEmbeddings([]), Correction()).state() == {"conditioning", "after_step"}


def test_every_shipped_pair_is_compatible():
    for inversion in INVERSION_CONFIGS:
        for editor in EDITOR_CONFIGS:
            assert incompatibilities(build("inversion", inversion), build("editor", editor)) == []


def test_an_editor_that_cannot_use_a_state_is_refused_with_the_state_named():
    @dataclasses.dataclass
    class OffsetBlindEditor(DirectEditor):
        uses = frozenset({"conditioning"})

    blind = OffsetBlindEditor(guidance_scale=7.5)
    check_pair(build("inversion", "nti"), blind)
    with pytest.raises(ConfigError, match=r"cannot use the inversion's corrections after each step \(after_step\)"):
        check_pair(build("inversion", "directinversion"), blind)


@pytest.mark.parametrize(
    ("inversion", "changes", "guidance", "reason"),
    [
        (
            "nti",
            {},
            5.0,
            r"under guidance 7.5, the editor guides its source branch at 5; set inversion.guidance_scale",
        ),
        ("pti", {}, 1.0, r"set inversion.guidance_scale and editor.guidance_scale"),
        ("directinversion", {}, 5.0, r"set inversion.edit_guidance_scale and editor.guidance_scale"),
        ("proxedit_nti", {}, 5.0, r"set inversion.base.guidance_scale"),
        ("proxedit", {}, 1.0, r"sampler needs the unconditional prediction"),
        ("spdinv", {}, 1.0, r"sampler needs the unconditional prediction"),
        ("edict", {}, 1.0, r"sampler needs the unconditional prediction"),
        ("edit_friendly", {"source_guidance_scale": 3.0}, 1.0, r"sampler needs the unconditional prediction"),
    ],
)
def test_pairs_that_cannot_reconstruct_are_refused(inversion, changes, guidance, reason):
    built = build("inversion", inversion, **changes)
    for editor in EDITOR_CONFIGS:
        with pytest.raises(ConfigError, match=reason):
            check_pair(built, build("editor", editor, guidance_scale=guidance))


def test_guidance_free_states_accept_any_editor_guidance():
    editor = EDITORS.build({"name": "direct", "guidance_scale": 1.0})
    for inversion in ("ddim", "npi", "spdinv_plain", "edit_friendly", "fpi", "fpi_plain"):
        check_pair(build("inversion", inversion), editor)


def test_a_sweep_with_a_refused_pair_launches_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["inversion=ddim,nti", "editor=direct,p2p", "editor.guidance_scale=5", "metrics=none"]
    code, output = run("launch.py", "-m", *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert code == 2, output
    assert "2 of 4 jobs of this sweep cannot run; nothing was launched" in output
    assert "jobs: inversion=nti editor=direct editor.guidance_scale=5 metrics=none" in output
    assert not [path for path in sweep.iterdir() if path.is_dir()]  # no job folder: no job started
    code, output = run("launch.py", "inversion=edict", "editor.guidance_scale=1", "metrics=none", cwd=tmp_path)
    assert code == 2 and "set editor.guidance_scale above 1" in output, output


# PnP is left out: as its reference it feeds one feature row (the "" prompt's) to both halves of the target's guidance,
# so even with identical prompts its target is not its source pass (tests/test_pnp.py checks its injections)
@pytest.mark.parametrize("name", sorted({composed("editor", name)["name"] for name in EDITOR_CONFIGS} - {"pnp"}))
def test_identical_prompts_reproduce_the_source_branch(name, tiny_model, sample, source_latent):
    # each editor's own target-only change switched off: P2P's re-weighting of the blended word
    neutral = {"reweight": None}
    config = composed("editor", name)
    editor = EDITORS.build(config | {key: value for key, value in neutral.items() if key in config})
    same = dataclasses.replace(sample, target_prompt=sample.source_prompt)
    inverted = INVERSIONS.build({"name": "ddim", "num_steps": 6, "guidance_scale": 1.0})
    result = editor.edit(tiny_model, inverted.invert(tiny_model, source_latent, same), same)
    # the branches sit at different rows of one batch, whose kernels may round differently (2.5e-6 after 6 steps
    # at guidance 7.5 with 3 branches); an edit moves latents of up to ~3 by ~0.1
    torch.testing.assert_close(result.edited, result.reconstruction, rtol=0, atol=1e-5)


@pytest.mark.ci_only  # about 2.5 min on 2 cores; .ci/run runs it
def test_the_grid_runs_and_aggregates_a_row_per_pair(tmp_path):
    """Every inversion configuration × every editor, one sample, 2-3 steps, through launch.py (one sweep per set of
    step overrides) and aggregate.py; every pair's outputs equal the committed grid record (bit for bit where this
    CPU's kernels are the recorder's, else its statuses and evaluation counts)."""
    groups = defaultdict(list)
    for name in INVERSION_CONFIGS:
        overrides = few_steps(composed("inversion", name))
        groups[tuple(f"++inversion.{key}={value}" for key, value in overrides.items())].append(name)

    def sweep(number: int, overrides: tuple[str, ...], names: list[str]) -> tuple[int, str]:
        args = [f"inversion={','.join(names)}", f"editor={','.join(EDITOR_CONFIGS)}", *overrides, "num_threads=1"]
        args += ["dataset.categories=[1]", "model.resolution=64", "metrics=none", f"hydra.sweep.dir=sweep{number}"]
        return run("launch.py", "-m", *args, cwd=tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:  # two sweeps at a time, one thread each
        for code, output in pool.map(sweep, range(len(groups)), groups, groups.values()):
            assert code == 0, output
    sweeps = sorted(tmp_path.glob("sweep*"))
    tables = tmp_path / "tables"
    code, output = run(
        "aggregate.py", *map(str, sweeps), "--out", str(tables), "--no-figures", "--no-gallery", cwd=tmp_path
    )
    assert code == 0, output
    table = pd.read_csv(tables / "table1.csv")
    assert len(table) == len(INVERSION_CONFIGS) * len(EDITOR_CONFIGS)
    assert (table["samples_ok"] == 1).all() and (table["samples_failed"] == 0).all(), table.loc[
        table["samples_ok"] != 1, ["inversion", "editor"]
    ]
    # proxedit and proxedit_nti are one method under two configurations: the setup letter tells them apart
    assert not table.duplicated(["inversion", "editor", "setup"]).any()
    names = {composed("inversion", name)["name"] for name in INVERSION_CONFIGS}
    editors = {composed("editor", name)["name"] for name in EDITOR_CONFIGS}
    assert set(zip(table["inversion"], table["editor"])) == {(i, e) for i in names for e in editors}
    assert (table.loc[table["inversion"] == "none", "unet_evals"] == 0).all()  # nothing to denoise from z_0
    means = pd.read_csv(tables / "mean_by_method.csv").set_index(["inversion", "editor"])
    # both configurations of the pix2pix-zero editor (one guided copy per half, or one latent) cost the same
    assert (
        means.loc[("ddim", "pix2pix_zero"), "edit_unet_evals"] == 2 * means.loc[("ddim", "direct"), "edit_unet_evals"]
    ).all()
    # every pair's images and counts against the committed record (tests/grid_record.py)
    print(check_against_record(sweeps))
