"""Reference equivalence: the reference's own code (cure-lab/PnPInversion's run_editing_*.py paths, patched for API
drift only, and the official code of ReNoise, SPDInv, FPI and the flow methods; EDICT's own early diffusers; StyleDiffusion's with its image encoder class) ran on our tiny models; tests/golden/oracle/
holds what it computed (benchmarks/oracle/ writes it from a reference checkout). invbench's configurations of the same
names must compute the same, step by step, and save the same edit.

What each case computes and compares is in tests/oracle_cases.py. Each quantity's tolerance is measured, not picked:
the difference between ours and the reference on the measuring CPU plus 4x the spread of our own runs under 1 and 2
threads and a one-ulp change of the input (tests/golden/oracle/tolerances.json says, per quantity, what was measured;
`python tests/oracle_cases.py` measures it again). So the goldens hold on any x86-64 CPU whose kernels round no worse
than reordering does, not only on the one that wrote them."""

from __future__ import annotations

import pytest
from oracle_cases import Models, OracleCase, all_cases, assert_within, build_models, load_tolerances

CASES = all_cases()


def params(cases: list[OracleCase]) -> list:
    return [pytest.param(case, id=case.id, marks=() if case.default_suite else pytest.mark.ci_only) for case in cases]


@pytest.fixture(scope="module")
def models(compose) -> Models:
    return build_models(compose)


@pytest.fixture(scope="module")
def tolerances() -> dict:
    return load_tolerances()


@pytest.fixture(scope="module")
def compose():
    from oracle_cases import compose_config

    return compose_config


def check(case: OracleCase, models: Models, tolerances: dict) -> None:
    from oracle_cases import unchanged

    ours, reference = case.run(models, unchanged)
    assert_within(case.id, ours, reference, tolerances[case.id])


@pytest.mark.parametrize("case", params(CASES["p2p"]))
def test_the_reference_run_is_reproduced_step_by_step(case, models, tolerances):
    """ddim, nti, npi, directinversion, proxedit and proxedit_nti with p2p (run_editing_p2p.py, 5 steps, 512² images):
    z*_0, z*_T, the per-step nulls and Adam steps or DirectInversion's offsets, the latents after the first blend
    step and at the end, and the saved edit (truncated to levels, as the reference saves it)."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["renoise"]))
def test_renoise_reproduces_its_official_code_step_by_step(case, models, tolerances):
    """ReNoise's official code (garibida/ReNoise-Inversion, its SD example's settings), 5 steps: averaged steps below
    t = 250, plain renoising above, without the noise regularisation (chaotic on the tiny model; checked apart
    below): the same posterior sample and, from the reference's z_0, every latent of the trajectory."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["renoise_regularisation"]))
def test_renoise_regularises_noise_as_its_official_code(case, models, tolerances):
    """The reference's noise_regularization on unit-variance noise, where it is well-conditioned: the same maps,
    twice in a row from one generator."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["pnp"]))
def test_pnp_reproduces_the_reference_step_by_step(case, models, tolerances):
    """run_editing_pnp.py (ddim+pnp and directinversion+pnp), 5 steps on SD's grid: features read from the same
    latents at every step (one step late for ddim, the inversion trajectory for DirectInversion), the same target
    after every step, the same saved edit."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["masactrl"]))
def test_masactrl_reproduces_the_reference_step_by_step(case, models, tolerances):
    """run_editing_masactrl.py (ddim+masactrl, directinversion+masactrl), 8 steps: the same target after every
    step, the same final latents and saved edit."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["edit_friendly"]))
def test_edit_friendly_p2p_reproduces_the_reference_step_by_step(case, models, tolerances):
    """run_editing_edit_friendly_p2p.py, 10 steps: the same noisy x_t (the seed as the reference's setup_seed), the
    same noise maps, as many skipped steps, the same source and target after every editing step (one sample whose
    prompts have as many words, the reference's word swap; one whose do not, its refine) and the same edit."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["spdinv"]))
def test_spdinv_p2p_reproduces_its_official_code_step_by_step(case, models, tolerances):
    """SPDInv's official run_SPDInv_P2P.py (leeruibin/SPDInv), 5 steps: the same fixed points with as many AdamW
    iterations, the same source and target after every editing step and the same edit. Its proximal guidance
    thresholds the guidance difference, so a last-bit change flips elements that sit on the threshold: its latents'
    measured tolerance is wider than the other methods'."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["pix2pix_zero"]))
def test_pix2pix_zero_reproduces_the_reference_step_by_step(case, models, tolerances):
    """run_editing_pix2pix_zero.py (ddim+pix2pix-zero), 10 steps: the same posterior sample, the same regularised
    trajectory, the same reconstruction and edit after every step, the same saved edit."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["edict"]))
def test_edict_reproduces_the_reference_step_by_step(case, models, tolerances):
    """run_editing_edict.py (edict+p2p as editor=p2p_edict, edict+direct_forward as editor=direct), float64, 10 steps
    (8 at strength 0.8) on the reference's own grid: the same posterior sample, the same coupled pair after inversion,
    the same two updates of every editing step, the same final pair and saved edit."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["stylediffusion"]))
def test_stylediffusion_reproduces_the_reference(case, models, tolerances):
    """run_editing_stylediffusion.py (stylediffusion+p2p as editor=p2p_stylediffusion), 5 steps, its image encoder's
    layout at the tiny width: the same image tokens, DDIM inversion, gradient of the first loss at the reference's
    initial mapping network, as many Adam iterations, and from the reference's trained scales and shifts the same
    source and target after every editing step and the same saved edit."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["fpi"]))
def test_fpi_reproduces_its_official_code(case, models, tolerances):
    """FPI's official code (dvirsamuel/FPI, main.py's calls), 10 steps: the same posterior sample, and from it the
    same prompt-aware adjustment, the same latent after every step of 20 fixed-point iterations at guidance 2, the
    same reconstruction at guidance 2."""
    check(case, models, tolerances)


@pytest.mark.parametrize("case", params(CASES["flow"]))
def test_flow_methods_equal_their_official_code(case, models, tolerances):
    """RF-Solver, FireFlow, plain flow inversion, UniEdit-Flow, FlowEdit (FLUX and SD3) and RF-Inversion's official
    code on flux_tiny / sd3_tiny (64², T5 at the pipelines' 512 / 256 tokens): the sigma grid, the inverted noise and
    the edit, latents and image."""
    check(case, models, tolerances)


def test_every_golden_has_a_case_and_every_quantity_a_measured_tolerance():
    from oracle_cases import GOLDEN

    ids = {case.id for cases in CASES.values() for case in cases}
    goldens = {str(path.relative_to(GOLDEN).with_suffix("")) for path in GOLDEN.rglob("*.pt")}
    assert goldens == ids
    measured = load_tolerances()
    assert set(measured) == ids, "rerun python tests/oracle_cases.py"
    for case_id, quantities in measured.items():
        for name, tolerance in quantities.items():
            assert tolerance["why"], (case_id, name)
            if "atol" in tolerance and "scale" in tolerance:
                # a tolerance that admitted a different method would prove nothing: the methods' edits move latents
                # by 0.01-0.1 and more, so a latent tolerance stays well under that
                assert tolerance["atol"] < 0.01, (case_id, name, tolerance)
