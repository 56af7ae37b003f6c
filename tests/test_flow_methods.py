"""The rectified-flow inversions and editors on the embedded sd3_tiny and flux_tiny: solver orders, RF-Inversion's
controllers switched off, FlowEdit's fixed point, evaluation counts, the inversion-free pair check, and the
headline-style sweep through launch.py and aggregate.py next to SD rows."""

import dataclasses
import itertools
import re

import pandas as pd
import pytest
import torch
from conftest import FAST, conf_file, relative_error, run

from editors import EDITORS
from editors.rf_edit import VALUES
from invbench.errors import ConfigError
from invbench.images import fit_square
from invbench.models import load_model
from inversions import INVERSIONS
from inversions.base import StepHooks
from metrics.cost import CostMeter
from orchestration.compatibility import incompatibilities

CPU = torch.device("cpu")
DIRECT_AT_1 = {"name": "direct", "guidance_scale": 1.0}


def tiny(name: str):
    return load_model(conf_file(f"model/{name}.yaml") | {"resolution": 64}, conf_file("scheduler/ddim.yaml"), CPU)


@pytest.fixture(scope="module")
def sd3_tiny():
    return tiny("sd3_tiny")


@pytest.fixture(scope="module")
def flux_tiny():
    return tiny("flux_tiny")


def latent_of(model, sample):
    return model.encode_image(fit_square(sample.read_image(), 64))


def reconstruction_error(model, method: str, steps: int, sample, latent) -> float:
    inverted = INVERSIONS.build({"name": method, "num_steps": steps, "guidance_scale": 1.0}).invert(
        model, latent, sample
    )
    return relative_error(EDITORS.build(DIRECT_AT_1).edit(model, inverted, sample).reconstruction, latent)


def test_euler_is_first_order_and_the_solvers_second_order(sd3_tiny, sample):
    """Measured on sd3_tiny at 4, 8, 16 steps: flow 3.4e-3, 1.2e-3, 5.5e-4 (ratios 2.9, 2.1: the shifted grid's steps
    are uneven at 4); rf_solver 9.5e-5, 2.5e-5, 7.1e-6 (3.7, 3.6); fireflow 1.0e-4, 2.4e-5, 6.1e-6 (4.3, 3.9)."""
    latent = latent_of(sd3_tiny, sample)
    errors = {
        method: [reconstruction_error(sd3_tiny, method, steps, sample, latent) for steps in (4, 8, 16)]
        for method in ("flow", "rf_solver", "fireflow")
    }
    ratios = {method: [a / b for a, b in itertools.pairwise(values)] for method, values in errors.items()}
    assert all(1.6 < ratio < 3.2 for ratio in ratios["flow"]), errors  # half the step, about half the error
    for method in ("rf_solver", "fireflow"):
        assert all(3.0 < ratio < 5.5 for ratio in ratios[method]), errors  # half the step, a quarter of the error
        assert errors[method][1] < errors["flow"][1] / 20, errors  # at equal steps


def test_solvers_beat_euler_on_flux_at_equal_steps_and_equal_evaluations(flux_tiny, sample):
    """Measured on flux_tiny: rf_solver 6.9e-6 vs flow 4.1e-4 at 8 steps; fireflow 8.9e-6 at 8 steps (9 evaluations
    each way) vs flow 3.7e-4 at 9 steps (9 evaluations)."""
    latent = latent_of(flux_tiny, sample)
    flow_8, flow_9 = (reconstruction_error(flux_tiny, "flow", steps, sample, latent) for steps in (8, 9))
    assert reconstruction_error(flux_tiny, "rf_solver", 8, sample, latent) < flow_8 / 20
    assert reconstruction_error(flux_tiny, "fireflow", 8, sample, latent) < flow_9 / 20


def evaluations(model, inversion, editor, sample, latent) -> tuple[int, int]:
    meter = CostMeter(model.denoiser, CPU)
    with meter.phase("inversion"):
        inverted = inversion.invert(model, latent, sample)
    with meter.phase("edit"):
        editor.edit(model, inverted, sample)
    meter.close()
    return meter.values["inversion_unet_evals"], meter.values["edit_unet_evals"]


@pytest.mark.parametrize(
    ("method", "expected"),
    [("flow", (6, 12)), ("rf_solver", (12, 24)), ("fireflow", (7, 14)), ("rf_inversion", (6, 12))],
)
def test_evaluations_per_sample_follow_each_algorithm(flux_tiny, sample, method, expected):
    """6 steps, two branches on FLUX.1-dev (embedded guidance: one evaluation per branch): Euler N + 2N, RF-Solver
    2N + 4N, FireFlow (N + 1) + 2(N + 1), RF-Inversion N + 2N."""
    config = conf_file(f"inversion/{method}.yaml") | {"num_steps": 6}
    editor = EDITORS.build({"name": "direct", "guidance_scale": 2.0})
    assert evaluations(flux_tiny, INVERSIONS.build(config), editor, sample, latent_of(flux_tiny, sample)) == expected


def test_rf_inversion_without_its_controllers_is_the_plain_ode(flux_tiny, sample):
    latent = latent_of(flux_tiny, sample)
    config = conf_file("inversion/rf_inversion.yaml") | {"num_steps": 6, "gamma": 0.0, "eta": 0.0}
    inverted = INVERSIONS.build(config).invert(flux_tiny, latent, sample)
    # γ = 0: the uncontrolled forward ODE on the reference's grid, written out here
    schedule, empty = flux_tiny.schedule(6), flux_tiny.encode_prompts([""])
    sigmas = [float(schedule.sigma(t)) for t in schedule.timesteps] + [0.0]
    expected = latent
    for i in range(6):
        velocity = flux_tiny.predict_noise(expected, i / 7 * 1000, empty, guidance=0.0)
        expected = expected + velocity * (sigmas[i] - sigmas[i + 1])
    torch.testing.assert_close(inverted.noise_latent, expected, rtol=0, atol=1e-6)
    # η = 0: the controlled reverse ODE is the model's Euler step
    editor = EDITORS.build({"name": "direct", "guidance_scale": 2.0})
    controlled = editor.edit(flux_tiny, inverted, sample)
    plain = editor.edit(flux_tiny, dataclasses.replace(inverted, hooks=StepHooks()), sample)
    torch.testing.assert_close(controlled.edited, plain.edited, rtol=0, atol=1e-6)
    # and with them on, the source pulls the reconstruction back (η 0.9 over the first quarter)
    steered = INVERSIONS.build(config | {"eta": 0.9}).invert(flux_tiny, latent, sample)
    assert relative_error(editor.edit(flux_tiny, steered, sample).reconstruction, latent) < relative_error(
        plain.reconstruction, latent
    )


@pytest.mark.parametrize("model_name", ["flux_tiny", "sd3_tiny"])
def test_flowedit_returns_the_source_for_identical_prompts_and_counts_its_evaluations(model_name, sample, request):
    model = request.getfixturevalue(model_name)
    latent = latent_of(model, sample)
    config = conf_file("editor/flowedit.yaml") | {"num_steps": 8, "n_max": 6}
    none = INVERSIONS.build({"name": "none"})
    same = dataclasses.replace(sample, target_prompt=sample.source_prompt)
    unchanged = EDITORS.build(config | {"guidance_scale": config["source_guidance_scale"]}).edit(
        model, none.invert(model, latent, same), same
    )
    # every velocity difference is zero up to the rounding of z + z_src − x_src (2.5e-8 in float64)
    torch.testing.assert_close(unchanged.edited, latent, rtol=0, atol=1e-5)
    flowedit = EDITORS.build(config)
    assert relative_error(flowedit.edit(model, none.invert(model, latent, sample), sample).edited, latent) > 1e-4
    # 6 edited steps, source and target: 12 evaluations; classifier-free guidance (SD3) doubles them
    per_velocity = 1 if model.backbone.guidance_embedded else 2
    assert evaluations(model, none, flowedit, sample, latent) == (0, 12 * per_velocity)


def test_flowedit_pairs_with_inversion_none_only():
    flowedit = EDITORS.build(conf_file("editor/flowedit.yaml"))
    assert incompatibilities(INVERSIONS.build({"name": "none"}), flowedit) == []
    (problem,) = incompatibilities(INVERSIONS.build(conf_file("inversion/flow.yaml")), flowedit)
    assert "pairs with inversion=none only, as it is inversion-free" in problem


@pytest.mark.ci_only  # about 2 min on 2 cores; .ci/run runs it
def test_flow_methods_run_through_launch_and_aggregate_next_to_sd_rows(tmp_path):
    """The issue's headline sweep on flux_tiny, every other flow method on flux_tiny or sd3_tiny, and an SD 1.x row,
    through launch.py and into one aggregate.py table whose setup letters keep the models apart."""
    launches = [
        ("-m", "model=flux_tiny", "inversion=fireflow,rf_solver,rf_inversion", "editor=direct"),
        ("-m", "model=flux_tiny", "inversion=none", "editor=flowedit"),
        ("-m", "model=flux_tiny", "inversion=uniedit_flow", "editor=uniedit"),
        # flux_tiny has 2 single-stream blocks; RF-Edit's are 20-37 of FLUX.1's 38
        ("-m", "model=flux_tiny", "inversion=rf_solver", "editor=rf_edit", "editor.first_single_block=0",
         "editor.last_single_block=1"),
        ("-m", "model=sd3_tiny", "inversion=rf_solver,fireflow", "editor=direct"),
        ("-m", "model=sd3_tiny", "inversion=none", "editor=flowedit_sd3"),
    ]  # fmt: skip
    for number, arguments in enumerate(launches):
        code, output = run(
            "launch.py", *arguments, "experiment=smoke", f"hydra.sweep.dir={tmp_path}/{number}", cwd=tmp_path
        )
        assert code == 0 and "samples_failed" in output, output
    code, output = run(
        "launch.py", "inversion=ddim", "editor=direct", *FAST, f"hydra.run.dir={tmp_path}/sd", cwd=tmp_path
    )
    assert code == 0, output
    code, output = run(
        "aggregate.py", str(tmp_path), "--out", str(tmp_path / "report"), "--no-figures", "--no-gallery", cwd=tmp_path
    )
    assert code == 0, output
    table = pd.read_csv(tmp_path / "report" / "table1.csv")
    assert (table["samples_failed"] == 0).all()
    assert (table.loc[table["inversion"] != "ddim", "samples_ok"] == 2).all()  # smoke: 2 samples; FAST: all 10
    text = (tmp_path / "report" / "table1.md").read_text()
    models = dict(re.findall(r"\[(\w)\] model=(\w+)", text))
    assert sorted(models.values()) == ["flux_tiny", "sd3_tiny", "tiny"], text
    evaluations = {(row.inversion, row.editor, models[row.setup]): row.unet_evals for row in table.itertuples()}
    # per sample: FireFlow's 8 steps 9 + 2 · 9 (FLUX.1-dev: one evaluation per branch); RF-Solver's 25: 50 + 2 · 50;
    # RF-Inversion's 28: 28 + 2 · 28; FlowEdit 2 · 24; Uni-Inv round(0.6 · 15) + 1 = 10, Uni-Edit 3 · 9; on SD3 the
    # editors guide at 7.5 with both halves: RF-Solver 50 + 8 · 25, FireFlow 9 + 4 · 9, FlowEdit 4 · 33
    assert evaluations == {
        ("fireflow", "direct", "flux_tiny"): 27, ("rf_solver", "direct", "flux_tiny"): 150,
        ("rf_inversion", "direct", "flux_tiny"): 84, ("none", "flowedit", "flux_tiny"): 48,
        ("uniedit_flow", "uniedit", "flux_tiny"): 37, ("rf_solver", "rf_edit", "flux_tiny"): 150,
        ("rf_solver", "direct", "sd3_tiny"): 250, ("fireflow", "direct", "sd3_tiny"): 45,
        ("none", "flowedit", "sd3_tiny"): 132, ("ddim", "direct", "tiny"): 50,
    }, evaluations  # fmt: skip


def rf_edit(**changes):
    # flux_tiny has 2 single-stream blocks: share both (FLUX.1's configs name blocks 20-37 and 0-37 of 38)
    return EDITORS.build(
        {"name": "rf_edit", "guidance_scale": 2.0, "first_single_block": 0, "last_single_block": 1} | changes
    )


def observed_edit(model, editor, inversion, sample, latent):
    with editor.observe_inversion(model, inversion) as observed:
        inverted = inversion.invert(model, latent, sample)
    inverted.observed = observed  # as the runner stores it
    return inverted, editor.edit(model, inverted, sample)


def test_value_sharing_over_zero_steps_is_direct_and_shares_the_inversions_values(flux_tiny, sample):
    latent = latent_of(flux_tiny, sample)
    rf_solver = INVERSIONS.build(conf_file("inversion/rf_solver.yaml") | {"num_steps": 6})
    inverted, none = observed_edit(flux_tiny, rf_edit(inject=0), rf_solver, sample, latent)
    direct = EDITORS.build({"name": "direct", "guidance_scale": 2.0}).edit(flux_tiny, inverted, sample)
    # our FLUX processor and diffusers' call the same fused attention; only the kernels' batching may differ
    torch.testing.assert_close(none.edited, direct.edited, rtol=0, atol=1e-6)
    _, shared = observed_edit(flux_tiny, rf_edit(inject=6), rf_solver, sample, latent)
    # every step reads the source's inversion values in both single blocks: the target moves toward the source
    assert relative_error(shared.edited, latent) < relative_error(direct.edited, latent)
    assert relative_error(shared.edited, direct.edited) > 1e-4


def test_recorded_stages_follow_each_solver(flux_tiny, sample):
    """RF-Solver evaluates each step's start and midpoint; FireFlow reuses its midpoint velocity, so its last
    inversion step (the first denoising step's pair) evaluates only the midpoint: as in the reference, only that is
    shared."""
    latent = latent_of(flux_tiny, sample)
    schedule = flux_tiny.schedule(6)
    sigma_0, sigma_1 = 1.0, float(schedule.sigma(schedule.timesteps[1]))
    for method, stages in (("rf_solver", 2), ("fireflow", 1)):
        editor, inversion = (
            rf_edit(inject=1),
            INVERSIONS.build(conf_file(f"inversion/{method}.yaml") | {"num_steps": 6}),
        )
        with editor.observe_inversion(flux_tiny, inversion) as observed:
            inversion.invert(flux_tiny, latent, sample)
        recorded = observed[VALUES]
        levels = sorted({sigma for sigma, _ in recorded})
        expected = [sigma_1, (sigma_0 + sigma_1) / 2][2 - stages :]
        assert levels == pytest.approx(expected, abs=1e-6), method
        assert {name for _, name in recorded} == {f"single_transformer_blocks.{i}.attn" for i in (0, 1)}
        # the editor keeps nothing: what it reads travels in the inversion result
        assert not [name for name in vars(editor) if name.startswith("_")]


def test_value_sharing_pairs_with_the_flow_solvers_only():
    editor = EDITORS.build(conf_file("editor/rf_edit.yaml") | {"guidance_scale": 2.0})
    for name in ("flow", "rf_solver", "fireflow"):
        assert incompatibilities(INVERSIONS.build(conf_file(f"inversion/{name}.yaml")), editor) == []
    (problem,) = incompatibilities(INVERSIONS.build(conf_file("inversion/rf_inversion.yaml")), editor)
    assert "pairs with inversion=fireflow, inversion=flow, inversion=rf_solver only" in problem


def test_value_sharing_with_blocks_the_model_lacks_is_refused_before_it_loads(flux_tiny, tmp_path):
    code, output = run(
        "launch.py", "model=flux_tiny", "inversion=rf_solver", "editor=rf_edit", "experiment=smoke",
        f"hydra.run.dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert code == 2 and "blocks 20..37 are not all in model=flux_tiny, which has 2 (0..1)" in output, output
    assert "RANDOM weights" not in output  # refused before the model was built
    editor = EDITORS.build(conf_file("editor/rf_edit.yaml") | {"guidance_scale": 2.0})
    assert editor.model_problems(conf_file("model/flux.yaml")) == []  # FLUX.1: 38 single-stream blocks
    assert editor.model_problems(conf_file("model/flux_random.yaml")) == []
    # and, should a model differ from its YAML, the job says so when the model is there
    inversion = INVERSIONS.build(conf_file("inversion/rf_solver.yaml") | {"num_steps": 2})
    editor = EDITORS.build(conf_file("editor/rf_edit.yaml") | {"guidance_scale": 2.0})  # blocks 20-37 of FLUX.1's 38
    refused = pytest.raises(
        ConfigError, match=r"blocks 20\.\.37 are not all in model=flux_tiny, which has 2 \(0\.\.1\)"
    )
    with refused, editor.observe_inversion(flux_tiny, inversion):
        pass


def test_uniedit_mask_is_the_min_max_normalised_patch_mean():
    from editors.uniedit import edit_mask

    difference = torch.zeros(1, 16, 4, 4)
    difference[0, :, :2, :2] = 2.0  # token (0, 0): mean |d| 2
    difference[0, 0, 2:, 2:] = -16.0  # token (1, 1): one channel of 16 at 16 in every pixel -> mean 1
    mask = edit_mask(difference)
    assert mask.shape == difference.shape
    torch.testing.assert_close(mask[0, :, 0, 0], torch.ones(16), rtol=0, atol=0)
    torch.testing.assert_close(mask[0, :, 3, 3], torch.full((16,), 0.5), rtol=0, atol=1e-7)
    assert not mask[0, :, :2, 2:].any()  # the smallest token (0) maps to 0
    assert not edit_mask(torch.zeros(1, 16, 4, 4)).any()  # no difference, no mask (the reference divides 0 by 0)


def test_uniedit_inverts_part_of_the_way_and_returns_the_source_branch_for_identical_prompts(flux_tiny, sample):
    latent = latent_of(flux_tiny, sample)
    inversion = INVERSIONS.build(conf_file("inversion/uniedit_flow.yaml") | {"num_steps": 10})
    uniedit = EDITORS.build(conf_file("editor/uniedit.yaml"))
    # round(0.6 · 10) = 6 steps up and back: 6 + 1 evaluations to invert (the first predictor), 3 per editing step
    assert evaluations(flux_tiny, inversion, uniedit, sample, latent) == (7, 18)
    inverted = inversion.invert(flux_tiny, latent, sample)
    assert inverted.schedule.num_steps == 6 and inverted.grid_steps == 10
    sigmas = [float(inverted.schedule.sigma(t)) for t in inverted.schedule.timesteps]
    assert sigmas == pytest.approx([float(s) for s in flux_tiny.schedule(10)._sigmas[4:10]])
    same = dataclasses.replace(sample, target_prompt=sample.source_prompt)
    result = uniedit.edit(flux_tiny, inversion.invert(flux_tiny, latent, same), same)
    torch.testing.assert_close(result.edited, result.reconstruction, rtol=0, atol=1e-6)
    edited = uniedit.edit(flux_tiny, inverted, sample)
    assert relative_error(edited.edited, edited.reconstruction) > 1e-3
    (problem,) = incompatibilities(INVERSIONS.build(conf_file("inversion/flow.yaml")), uniedit)
    assert "pairs with inversion=uniedit_flow only" in problem
