"""Tuning-free and fixed-point inversions: NPI, DirectInversion (and its ablations), ProxEdit, FPI, AIDI, ReNoise —
their invariants on the tiny model (8×8 latents), and UNet evaluation counts that match each algorithm."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import conf_file, relative_error

from editors import EDITORS, denoise_branches
from invbench.attention import AttentionController
from invbench.errors import ConfigError
from invbench.images import fit_square
from inversions import INVERSIONS, fixed_point_residual
from inversions.base import StepHooks
from inversions.noise_regularisation import autocorrelation_loss, patch_kl
from inversions.proxedit import proximal
from metrics import CostMeter

STEPS = 10
P2P = {
    "name": "p2p",
    "guidance_scale": 7.5,
    "controller": "refine",
    "cross_replace_steps": 0.4,
    "self_replace_steps": 0.6,
    "self_replace_max_resolution": 32,
    "reweight": 2.0,
    "local_blend": True,
    "blend_start": 0.2,
    "blend_threshold": 0.3,
    "blend_map_divisor": 4,
    "attention_outside_windows": "materialised",
}
DIRECT_INVERSION = {
    "name": "directinversion",
    "num_steps": STEPS,
    "inversion_guidance_scale": 1.0,
    "edit_guidance_scale": 7.5,
    "offset_scale": 1.0,
    "offset_interval": 1,
    "offset_branches": "source",
}
RENOISE = conf_file("inversion/renoise.yaml") | {"num_steps": STEPS}  # the official SD example's settings
# ReNoise as a plain fixed-point solver: 4 renoising passes, the last 3 averaged at every step, no regularisation
RENOISE_AVERAGING = RENOISE | {"renoise_steps": 4, "first_steps_below": 0, "average_range": [2, 5], "reg_steps": 0}
PROXEDIT = {
    "name": "proxedit",
    "base": {"name": "npi", "num_steps": STEPS},
    "prox": "l0",
    "operators": "paper",
    "quantile": 0.75,
    "quantile_scope": "branch",
    "recon_lr": 1.0,
    "recon_t": 400,
    "dilate_mask": 1,
    "reconstruction_guidance": True,
    "inversion_guidance": True,
}


def edit(model, inversion, sample, editor=None):
    return EDITORS.build(editor or {"name": "direct", "guidance_scale": 7.5}).edit(model, inversion, sample)


def ddim(model, latent, sample, guidance=1.0):
    return INVERSIONS.build({"name": "ddim", "num_steps": STEPS, "guidance_scale": guidance}).invert(
        model, latent, sample
    )


def test_npi_source_branch_is_ddim_at_guidance_1(tiny_model, sample, source_latent):
    npi = INVERSIONS.build({"name": "npi", "num_steps": STEPS}).invert(tiny_model, source_latent, sample)
    # the same text-encoder call on the same input: identical on any CPU (deterministic, same kernels)
    assert all(torch.equal(u, tiny_model.encode_prompts([sample.source_prompt])) for u in npi.hooks.embeddings)
    guided = edit(tiny_model, npi, sample)
    plain = edit(tiny_model, ddim(tiny_model, source_latent, sample), sample, {"name": "direct", "guidance_scale": 1})
    # ε(c_src) + 7.5 · (ε(c_src) − ε(c_src)) = ε(c_src): the reconstruction of DDIM at guidance 1
    assert relative_error(guided.reconstruction, plain.reconstruction) < 1e-5
    assert relative_error(guided.edited, guided.reconstruction) > 1e-3


@pytest.mark.parametrize("editor", [None, P2P], ids=["direct", "p2p"])
def test_directinversion_source_branch_retraces_the_inversion_at_guidance_7_5(
    tiny_model, sample, source_latent, editor
):
    inverted = INVERSIONS.build(DIRECT_INVERSION).invert(tiny_model, source_latent, sample)
    result = edit(tiny_model, inverted, sample, editor)
    assert relative_error(result.reconstruction, inverted.latents[0]) < 1e-5
    # without the offsets the same inversion drifts at guidance 7.5
    plain = edit(tiny_model, dataclasses.replace(inverted, hooks=StepHooks()), sample, editor)
    assert relative_error(plain.reconstruction, inverted.latents[0]) > 1e-2


class SourceRecorder(AttentionController):
    """Keeps the source branch's latent after every denoising step."""

    def __init__(self):
        self.latents = []

    def wants(self, site):
        return False

    def end_step(self, step, latents):
        self.latents.append(latents[:1].clone())
        return latents


def test_directinversion_source_branch_is_on_the_trajectory_at_every_step(tiny_model, sample, source_latent):
    inverted = INVERSIONS.build(DIRECT_INVERSION).invert(tiny_model, source_latent, sample)
    recorder = SourceRecorder()
    cond = tiny_model.encode_prompts([sample.source_prompt, sample.target_prompt])
    denoise_branches(tiny_model, inverted, cond, 7.5, recorder)
    for i, latent in enumerate(recorder.latents):
        assert relative_error(latent, inverted.latents[STEPS - i - 1]) < 1e-5, f"step {i}"


def test_directinversion_ablations(tiny_model, sample, source_latent):
    build = lambda **changes: INVERSIONS.build(DIRECT_INVERSION | changes)
    full = build().invert(tiny_model, source_latent, sample)
    half = build(offset_scale=0.5).invert(tiny_model, source_latent, sample)
    assert all(torch.allclose(h, 0.5 * f) for h, f in zip(half.hooks.source, full.hooks.source))
    assert relative_error(edit(tiny_model, half, sample).reconstruction, full.latents[0]) > 1e-3
    every_third = build(offset_interval=3).invert(tiny_model, source_latent, sample)
    for i, (kept, offset) in enumerate(zip(every_third.hooks.source, full.hooks.source)):
        if i % 3 == 0:  # kept: the full run's offset (the same computation; not compared with 0, since the last
            # step's offset, from t = 0 to the final ᾱ = ᾱ_0, is an identity whose offset is rounding noise)
            torch.testing.assert_close(kept, offset, rtol=0, atol=1e-6)
        else:  # dropped: multiplied by 0.0, which is exactly zero in IEEE arithmetic on every CPU
            assert torch.count_nonzero(kept) == 0, f"step {i}"
    # the kept offsets are the ones that matter: the largest is far above rounding
    assert max(float(o.abs().max()) for o in every_third.hooks.source) > 1e-3
    to_all = build(offset_branches="source_to_all").invert(tiny_model, source_latent, sample)
    assert to_all.hooks.targets is to_all.hooks.source
    # add-target: each branch gets the offset of its own prompt, so with identical prompts both retrace z*
    same = dataclasses.replace(sample, target_prompt=sample.source_prompt)
    both = build(offset_branches="source_and_target").invert(tiny_model, source_latent, same)
    result = edit(tiny_model, both, same)
    assert relative_error(result.edited, both.latents[0]) < 1e-5
    with pytest.raises(ConfigError, match="inversion.offset_branches='nope' is not one of 'source'"):
        build(offset_branches="nope")


def test_proximal_operators_on_hand_values():
    # Small integers and their halves are exact in binary floating point, so these values hold bit for bit.
    delta = torch.tensor([1.0, -2.0, 3.0, -4.0]).view(1, 4, 1, 1)  # |δ| median (0.5 quantile) = 2.5
    values = lambda *args: proximal(*args)[0].flatten().tolist()
    # the paper's: hard (l0) and soft (l1) thresholds
    assert values(delta, "l0", 0.5) == [0.0, 0.0, 3.0, -4.0]
    assert values(delta, "l1", 0.5) == [0.0, 0.0, 0.5, -1.5]
    two = torch.cat([delta, 10 * delta])  # the paper's threshold is per branch
    assert proximal(two, "l0", 0.5)[0][1].flatten().tolist() == [0.0, 0.0, 30.0, -40.0]
    # the reference's: 'l0' is δ − clamp(δ, ±τ); 'l1' then moves values above 0 down by τ, after that values below
    # 0 up by τ (so 0.5 → −2 → 0.5, and −1.5 → 1)
    assert values(delta, "l0", 0.5, "reference", "batch") == [0.0, 0.0, 0.5, -1.5]
    assert values(delta, "l1", 0.5, "reference", "batch") == [0.0, 0.0, 0.5, 1.0]
    # one τ over the batch: the median of |1..4, 10..40| is 7
    assert proximal(two, "l0", 0.5, "reference", "batch")[0][1].flatten().tolist() == [3.0, -13.0, 23.0, -33.0]
    assert proximal(two, "l0", 0.5, "reference", "batch")[0][0].abs().sum() == 0  # |δ| < τ: δ − δ, exactly 0


def test_proxedit_paper_pulls_unedited_elements_back_to_the_source(tiny_model, sample, source_latent):
    inverted = INVERSIONS.build(PROXEDIT).invert(tiny_model, source_latent, sample)
    result = edit(tiny_model, inverted, sample, P2P)
    # NPI's source branch has δ = 0 everywhere, so below recon_t both pulls (lr 1) put it on z*: z*_0 at the end
    assert torch.allclose(result.reconstruction, inverted.latents[0], atol=1e-6)
    reference = INVERSIONS.build(conf_file("inversion/proxedit.yaml") | {"base": {"name": "npi", "num_steps": STEPS}})
    assert not (reference.reconstruction_guidance or reference.inversion_guidance)  # inert in the reference run
    reference_run = edit(tiny_model, reference.invert(tiny_model, source_latent, sample), sample, P2P)
    assert relative_error(reference_run.reconstruction, inverted.latents[0]) > 1e-4
    assert relative_error(result.edited, result.reconstruction) > 1e-3
    nti = {"name": "nti", "num_steps": STEPS, "guidance_scale": 7.5, "inner_steps": 2, "learning_rate": 1e-2}
    nti |= {"early_stop": 1e-5, "early_stop_growth": 2e-5, "single_branch": False}
    nti_based = INVERSIONS.build(PROXEDIT | {"base": nti})
    assert edit(tiny_model, nti_based.invert(tiny_model, source_latent, sample), sample).edited.isfinite().all()


@pytest.mark.parametrize(
    "config",
    [
        {"name": "fpi_plain", "num_steps": STEPS, "iterations": 3, "tolerance": None},
        {"name": "aidi_plain", "num_steps": STEPS, "iterations": 3, "memory": 2, "tolerance": None},
        RENOISE_AVERAGING,
    ],
    ids=["fpi_plain", "aidi_plain", "renoise"],
)
def test_fixed_point_inversions_lower_the_inversion_residual(tiny_model, sample, source_latent, config):
    cond = tiny_model.encode_prompts([sample.source_prompt])
    baseline = fixed_point_residual(tiny_model, ddim(tiny_model, source_latent, sample), cond)
    solved = INVERSIONS.build(config).invert(tiny_model, source_latent, sample)
    assert fixed_point_residual(tiny_model, solved, cond) < 0.5 * baseline


def test_renoise_steps_as_its_reference_on_hand_computed_iterates(tiny_model, sample, source_latent):
    """The step z_1 -> z_501 of a 2-step grid (1, 501). Below `first_steps_below` (here moved to 1000):
    ε_0 = ε(z_1), ẑ_1 = DDIM⁻¹(z_1; ε_0), ε_1 = ε(ẑ_1), and the step ends at DDIM⁻¹(z_1; (ε_0 + ε_1) / 2). Above it
    (here: moved to 0) nothing is averaged at 1 renoising pass: it ends at ẑ_2 = DDIM⁻¹(z_1; ε(ẑ_1))."""
    config = RENOISE | {"num_steps": 2, "reg_steps": 0}
    cond = tiny_model.encode_prompts([sample.source_prompt])

    def expected(inverted, averaging):
        schedule, start = inverted.schedule, inverted.latents[1]
        assert schedule.timesteps == [501, 1]
        first = tiny_model.predict_noise(start, 501, cond)
        second = tiny_model.predict_noise(schedule.inverse_step(first, 501, start), 501, cond)
        return schedule.inverse_step((first + second) / 2 if averaging else second, 501, start)

    averaged = INVERSIONS.build(config | {"first_steps_below": 1000}).invert(tiny_model, source_latent, sample)
    torch.testing.assert_close(averaged.noise_latent, expected(averaged, averaging=True))
    plain = INVERSIONS.build(config | {"first_steps_below": 0}).invert(tiny_model, source_latent, sample)
    torch.testing.assert_close(plain.noise_latent, expected(plain, averaging=False))
    assert relative_error(averaged.noise_latent, plain.noise_latent) > 1e-3


def test_renoise_regularises_only_averaged_iterates_and_caps_the_first_steps(tiny_model, sample, source_latent):
    inverted = INVERSIONS.build(RENOISE | {"num_steps": 6}).invert(tiny_model, source_latent, sample)
    # below t = 250 (steps 1 and 167): iterates 0 and 1 and their mean; above, the range (8, 10) is never reached
    assert inverted.info == {"renoising_passes": 6 * 2, "regularised_noise_maps": 2 * 3}
    capped = INVERSIONS.build(RENOISE | {"num_steps": 6, "renoise_steps": 7, "reg_steps": 0})
    # 5 renoising passes below t = 250, 7 above, each after the DDIM guess
    assert capped.invert(tiny_model, source_latent, sample).info["renoising_passes"] == 2 * 6 + 4 * 8


def test_renoise_encodes_a_seeded_posterior_sample_as_its_reference(tiny_model, sample):
    from invbench.images import fit_square

    image = fit_square(sample.read_image(), tiny_model.resolution)
    inversion = INVERSIONS.build(RENOISE)
    drawn = inversion.encode_source(tiny_model, image)
    torch.testing.assert_close(drawn, inversion.encode_source(tiny_model, image), rtol=0, atol=0)  # seeded
    assert relative_error(drawn, tiny_model.encode_image(image)) > 1e-3  # not the mean
    mean = INVERSIONS.build(RENOISE | {"image_latent": "posterior_mean"}).encode_source(tiny_model, image)
    torch.testing.assert_close(mean, tiny_model.encode_image(image), rtol=0, atol=0)


def test_renoise_regularisation_lowers_both_of_its_losses():
    """On smooth (auto-correlated) noise, as ε drifts from white: the KL steps alone lower the patch-wise KL to the
    target, the auto-correlation steps alone lower the auto-correlation loss (averaged over 20 draws of shifts)."""
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(1, 4, 64, 64, generator=generator)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 4, 66, 66, generator=generator), 3, stride=1) * 3
    kl_only = INVERSIONS.build(RENOISE | {"lambda_ac": 0.0}).regularise(smooth, target, None)
    assert patch_kl(kl_only, target) < 0.9 * patch_kl(smooth, target)

    def mean_autocorrelation(noise):
        shifts = torch.Generator().manual_seed(1)
        return sum(float(autocorrelation_loss(noise, shifts)) for _ in range(20)) / 20

    ac_only = INVERSIONS.build(RENOISE | {"lambda_kl": 0.0}).regularise(smooth, target, torch.Generator())
    assert mean_autocorrelation(ac_only) < 0.97 * mean_autocorrelation(smooth)  # measured 0.94


def test_patch_kl_on_hand_values():
    """One 4×4 patch, one channel: values 0..15 (mean 7.5, unbiased variance 68/3) against twice them (mean 15,
    variance 272/3): |log(4) + (68/3 + 7.5²) / (272/3) − 1| with ε = 1e-6 in both variances."""
    values = torch.arange(16.0, dtype=torch.float64).view(1, 1, 4, 4)
    variance, reference_variance = 68 / 3 + 1e-6, 272 / 3 + 1e-6
    expected = abs(math.log(reference_variance / variance) + (68 / 3 + 7.5**2) / reference_variance - 1)
    assert math.isclose(float(patch_kl(values, 2 * values)), expected, rel_tol=1e-12)
    assert float(patch_kl(values, values)) < 1e-7  # a map against itself: only the ε terms remain


def test_anderson_acceleration_converges_faster_than_plain_iterations(tiny_model, sample, source_latent):
    cond = tiny_model.encode_prompts([sample.source_prompt])
    residual = {
        name: fixed_point_residual(
            tiny_model, INVERSIONS.build(config).invert(tiny_model, source_latent, sample), cond
        )
        for name, config in {
            "fpi": {"name": "fpi_plain", "num_steps": STEPS, "iterations": 4, "tolerance": None},
            "aidi_plain": {"name": "aidi_plain", "num_steps": STEPS, "iterations": 4, "memory": 3, "tolerance": None},
        }.items()
    }
    assert residual["aidi_plain"] < residual["fpi"]


def test_edict_inverts_and_regenerates_exactly_in_float64(sample, source_latent):
    from conftest import conf_file

    from invbench.models import load_model

    model = load_model(conf_file("model/tiny.yaml") | {"resolution": 64, "dtype": "float64"},
                       conf_file("scheduler/ddim.yaml"), torch.device("cpu"))  # fmt: skip
    latent = source_latent.double()
    config = {
        "name": "edict",
        "num_steps": STEPS,
        "strength": 0.8,
        "mix": 0.93,
        "guidance_scale": 3.0,
        "image_latent": "posterior_mean",
        "posterior_seed": 1,
        "steps_offset": 0,
    }
    inverted = INVERSIONS.build(config).invert(model, latent, sample)
    assert inverted.schedule.timesteps == [700, 600, 500, 400, 300, 200, 100, 0]  # the reference's own grid
    assert len(inverted.schedule.timesteps) == 8 and relative_error(inverted.noise_latent, latent) > 0.1
    result = edit(model, inverted, sample)
    assert relative_error(result.reconstruction, latent) <= 1e-6
    assert relative_error(result.edited, result.reconstruction) > 1e-3
    with_p2p = edit(model, INVERSIONS.build(config).invert(model, latent, sample), sample, P2P)
    assert relative_error(with_p2p.reconstruction, latent) <= 1e-6  # P2P leaves the source branch alone
    # the reference reseeds the device's generator with 1 before each sample (its reconstruction's and its edit's
    # inversions start alike), and draws the noise in float32 whatever the model's dtype
    image = fit_square(sample.read_image(), 64)
    by_default = INVERSIONS.build(config | {"image_latent": "posterior_sample"})
    torch.manual_seed(3)
    first = by_default.encode_source(model, image)
    torch.manual_seed(4)
    assert torch.equal(by_default.encode_source(model, image), first)  # the global generator plays no part
    mean = INVERSIONS.build(config).encode_source(model, image)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float32).double()
    std = model.vae.encode(torch.tensor(image).permute(2, 0, 1)[None].double() / 127.5 - 1).latent_dist.std
    torch.testing.assert_close(first, mean + std * noise * model.vae.config.scaling_factor, rtol=0, atol=1e-12)


def test_edict_alternates_which_latent_it_updates_first_as_its_reference():
    """EDICT's leapfrog_steps: at even steps x is updated from ε(y), then y from ε(x'); at odd steps the other way
    round; then the mixing layer. Checked against the reference's recipe written out by hand, with a stand-in ε."""
    from invbench.ddim import DDIMSchedule
    from inversions.edict import CoupledSampler

    schedule = DDIMSchedule(conf_file("scheduler/ddim.yaml"), 4)
    x0, y0 = torch.randn(2, 1, 4, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sampler = CoupledSampler(y0, 0.93, 1.0, torch.float64)
    epsilon = lambda z: 0.3 * z + 0.1
    parts = lambda z: (None, epsilon(z))
    x, y, returned = x0, y0, x0  # the sampler carries y itself; it is handed back its x
    for i, t in enumerate(schedule.timesteps[:2]):
        returned = sampler.step(schedule, i, t, returned, parts, 1.0)
        if i % 2 == 0:
            x = schedule.step(epsilon(y), t, x)
            y = schedule.step(epsilon(x), t, y)
        else:
            y = schedule.step(epsilon(x), t, y)
            x = schedule.step(epsilon(y), t, x)
        x = 0.93 * x + 0.07 * y
        y = 0.93 * y + 0.07 * x
        torch.testing.assert_close(returned, x, rtol=0, atol=1e-12)  # the same float64 operations


EDIT_FRIENDLY = {"name": "edit_friendly", "num_steps": STEPS, "eta": 1.0, "skip": 3, "source_guidance_scale": 1.0}


def test_edit_friendly_ddpm_reconstructs_with_its_stored_noise(tiny_model, sample, source_latent):
    config = EDIT_FRIENDLY | {"steps_offset": 0, "last_noise": "exact"}  # ours: the last step's difference stored
    torch.manual_seed(0)
    inverted = INVERSIONS.build(config).invert(tiny_model, source_latent, sample)
    assert len(inverted.schedule.timesteps) == STEPS - 3
    for editor in (None, P2P):
        result = edit(tiny_model, inverted, sample, editor)
        assert relative_error(result.reconstruction, source_latent) < 1e-5
        assert relative_error(result.edited, result.reconstruction) > 1e-3
    # the stored noise is what makes it exact: fresh noise instead does not come back
    fresh = dataclasses.replace(inverted.hooks, noise_maps=[torch.randn_like(z) for z in inverted.hooks.noise_maps])
    drifted = edit(tiny_model, dataclasses.replace(inverted, hooks=fresh), sample)
    assert relative_error(drifted.reconstruction, source_latent) > 1e-2


def test_edit_friendly_ddpm_on_the_reference_grid_zeroes_its_last_noise_map(tiny_model, sample, source_latent):
    """The reference runs SD v1.4's scheduler configuration (timesteps 981 ... 1) and sets the last step's noise map
    to zero, so that step adds no noise: the source branch ends near z_0, not on it."""
    reference = INVERSIONS.build(conf_file("inversion/edit_friendly.yaml") | EDIT_FRIENDLY)
    torch.manual_seed(0)
    inverted = reference.invert(tiny_model, source_latent, sample)
    assert inverted.schedule.timesteps[-1] == 1 and inverted.grid_steps == STEPS
    assert torch.count_nonzero(inverted.hooks.noise_maps[-1]) == 0  # set to zero, as zs[0] = 0
    assert all(torch.count_nonzero(z) > 0 for z in inverted.hooks.noise_maps[:-1])
    error = relative_error(edit(tiny_model, inverted, sample).reconstruction, source_latent)
    assert 1e-5 < error < 0.1  # the last step's noise is missing; every earlier step is retraced


@pytest.mark.parametrize(
    ("config", "inversion_evals", "edit_evals"),
    [
        ({"name": "npi", "num_steps": 6}, 6, 6 * 2 * 2),  # editing: 2 branches x (uncond + cond) per step
        (DIRECT_INVERSION | {"num_steps": 6}, 6 + 6 * 2, 24),  # inversion + one guided step per denoising step
        (DIRECT_INVERSION | {"num_steps": 6, "offset_branches": "source_and_target"}, 6 + 6 * 4, 24),
        (PROXEDIT | {"base": {"name": "npi", "num_steps": 6}}, 6, 24),
        ({"name": "fpi_plain", "num_steps": 6, "iterations": 2, "tolerance": None}, 6 * (1 + 2), 24),
        # FPI: the adjustment's int(50 * 0.05) = 2 guided steps, then 2 guided iterations per step
        ({"name": "fpi", "num_steps": 6, "iterations": 2, "guidance_scale": 2.0, "adjustment_strength": 0.05, "adjustment_grid_steps": 50, "image_latent": "posterior_mean"}, 2 * 2 + 6 * 2 * 2, 24),
        ({"name": "aidi_plain", "num_steps": 6, "iterations": 3, "memory": 2, "tolerance": None}, 6 * (1 + 3), 24),
        # ReNoise on SD's grid (1, 167, 333, ...): the first pass of each step is a batch of 2 (the KL target's);
        # without the KL steps, which diverge on the tiny model's small noise predictions (std 0.03, not SD's 1)
        (RENOISE | {"num_steps": 6, "lambda_kl": 0.0}, 6 * (2 + 1), 24),
        # EDICT: 2 UNet calls per step, each with classifier-free guidance, over int(0.5 * 6) = 3 steps
        ({"name": "edict", "num_steps": 6, "strength": 0.5, "mix": 0.93, "guidance_scale": 3.0, "image_latent": "posterior_mean", "posterior_seed": 1, "steps_offset": 0}, 3 * 2 * 2, 3 * 2 * 4),
        # edit-friendly: one conditional evaluation per grid step; editing runs the 6 - 2 steps after the skip
        (EDIT_FRIENDLY | {"num_steps": 6, "skip": 2, "steps_offset": 1, "last_noise": "zero"}, 6, 4 * 2 * 2),
    ],
    ids=["npi", "directinversion", "directinversion-add-target", "proxedit", "fpi_plain", "fpi", "aidi_plain", "renoise",
         "edict", "edit_friendly"],
)  # fmt: skip
@pytest.mark.parametrize("editor", [None, P2P], ids=["direct", "p2p"])
def test_unet_evaluations_match_each_algorithm(
    tiny_model, sample, source_latent, config, inversion_evals, edit_evals, editor
):
    meter = CostMeter(tiny_model.denoiser, tiny_model.device)
    try:
        with meter.phase("inversion"):
            inverted = INVERSIONS.build(config).invert(tiny_model, source_latent, sample)
        with meter.phase("edit"):
            result = edit(tiny_model, inverted, sample, editor)
    finally:
        meter.close()
    assert meter.values["inversion_unet_evals"] == inversion_evals
    assert meter.values["edit_unet_evals"] == edit_evals
    assert result.edited.isfinite().all()


@pytest.mark.slow
def test_every_new_inversion_runs_with_direct_and_p2p_from_the_command_line(tmp_path):
    """The 9 configurations × {direct, p2p} at 50 steps through launch.py (about 2.5 min on 2 cores)."""
    from conftest import run

    from invbench.results import read_rows

    inversions = "npi,directinversion,proxedit,proxedit_nti,fpi,aidi_plain,edict,edit_friendly"
    common = ["editor=direct,p2p", "dataset.categories=[1]", "model.resolution=64", "metrics=none"]
    # ReNoise's KL steps diverge on the tiny model's small noise predictions (tests/test_oracle.py): without them
    for name, choice in (
        ("sweep", [f"inversion={inversions}"]),
        ("renoise", ["inversion=renoise", "inversion.lambda_kl=0"]),
    ):
        code, output = run("launch.py", "-m", *choice, *common, f"hydra.sweep.dir={tmp_path / name}", cwd=tmp_path)
        assert code == 0, output
    rows = [row for path in tmp_path.glob("*/*/results.jsonl") for row in read_rows(path)]
    assert len(rows) == 18 and all(row["status"] == "ok" for row in rows)
    evals = {(r["inversion"], r["editor"], r["inversion_unet_evals"], r["edit_unet_evals"]) for r in rows}
    assert ("edict", "p2p", 40 * 2 * 2, 40 * 2 * 4) in evals and ("edit_friendly", "direct", 50, 38 * 2 * 2) in evals
    assert ("renoise", "p2p", 50 * 3, 200) in evals and ("directinversion", "direct", 150, 200) in evals
