"""Reference equivalence: the PIE-Bench reference's own code (cure-lab/PnPInversion's run_editing_p2p.py path, patched
for API drift only) ran on our tiny model, 512x512 images (64x64 latents), 5 steps; tests/golden/oracle/ holds what
it computed (benchmarks/oracle/regenerate.py writes it from a reference checkout; the PnP, MasaCtrl, edit-friendly,
ReNoise and SPDInv goldens come from the other scripts there). invbench's configurations of the same names must compute the
same, step by step.

Tolerances: float32 on CPU, the same operations in another order (batched differently, other kernels) differ by
about 1e-5 where latents reach 13 (measured at most 1.3e-5), so latents are compared at 1e-4 absolute. Decoded
images are then equal except where a value sits within that difference of a quantisation step: at most one level,
on under 1% of the pixels (measured 0.3%)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import conf_file
from omegaconf import OmegaConf

from editors import EDITORS, denoise_branches
from invbench.images import fit_square
from invbench.runtime import seed_everything
from inversions import INVERSIONS
from inversions.base import UnconditionalEmbeddings

GOLDEN = Path(__file__).parent / "golden" / "oracle"
# The default suite proves every method on this sample (a changed object, cat -> tiger); the other samples' goldens
# (an attribute word, an added object) run with `-m ci_only`, which .ci/run runs after the default suite.
DEFAULT_SAMPLE = "121000000001"


def golden_cases(folder: Path, *, also_by_default: tuple[str, ...] = ()) -> list:
    stems = sorted(path.stem for path in folder.glob("*.pt") if path.stem != "regularisation")
    return [
        pytest.param(stem, marks=() if DEFAULT_SAMPLE in stem or stem in also_by_default else pytest.mark.ci_only)
        for stem in stems
    ]


# the partial-blend case stays in the default suite: it is the one that exercises the local blend's mask
CASES = golden_cases(GOLDEN, also_by_default=("ddim_p2p_623000000006_blend087",))
# the reference's method -> invbench's inversion configuration of the same method (all with editor=p2p)
INVERSION = {
    "ddim+p2p": "ddim",
    "null-text-inversion+p2p": "nti",
    "negative-prompt-inversion+p2p": "npi",
    "directinversion+p2p": "directinversion",
    "negative-prompt-inversion+proximal-guidance": "proxedit",
    "null-text-inversion+proximal-guidance": "proxedit_nti",
}
LATENT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model_512():
    from invbench.models import load_model

    return load_model(conf_file("model/tiny.yaml"), conf_file("scheduler/ddim.yaml"), torch.device("cpu"))


def p2p_latents_after_every_step(model, editor, inverted, sample) -> torch.Tensor:
    """(steps, 2, 4, h, w): the source and target after every step of a Prompt-to-Prompt-style editor's run."""
    control, _ = editor.build_control(model, inverted, sample)
    steps, end_step = [], control.end_step

    def keep(step, latents):
        latents = end_step(step, latents)
        steps.append(latents.clone())
        return latents

    control.end_step = keep
    cond = model.encode_prompts([sample.source_prompt, sample.target_prompt])
    denoise_branches(model, inverted, cond, editor.guidance_scale, control)
    return torch.stack(steps)


def close(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(ours, reference, rtol=0, atol=LATENT_TOLERANCE, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("case", CASES)
def test_the_reference_run_is_reproduced_step_by_step(case, model_512, mini, compose):
    golden = torch.load(GOLDEN / f"{case}.pt", weights_only=False)
    steps, sample = golden["steps"], next(s for s in mini.samples if s.id == golden["sample"])
    overrides = [f"inversion={INVERSION[golden['method']]}", "editor=p2p", f"num_steps={steps}"]
    if golden["blend_threshold"] is not None:
        overrides.append(f"editor.blend_threshold={golden['blend_threshold']}")
    config = OmegaConf.to_container(compose(*overrides), resolve=True)
    inversion, editor = INVERSIONS.build(config["inversion"]), EDITORS.build(config["editor"])

    torch.manual_seed(1234)  # the reference's setup_seed, as the runner's seed_everything
    latent = model_512.encode_image(fit_square(sample.read_image(), model_512.resolution))
    inverted = inversion.invert(model_512, latent, sample)
    close(inverted.latents[0], golden["z0"], "z*_0")
    close(inverted.noise_latent, golden["zT"], "z*_T")
    if "nulls" in golden:
        parts = getattr(inverted.hooks, "parts", (inverted.hooks,))  # ProxEdit's hooks combine its base's
        nulls = next(part for part in parts if isinstance(part, UnconditionalEmbeddings))
        close(torch.cat(nulls.embeddings), golden["nulls"], "the per-step nulls")
        assert inverted.info.get("optimisation_steps", 0) == golden["adam_steps"]
    if "offsets" in golden:
        close(torch.cat(inverted.hooks.source), golden["offsets"], "DirectInversion's per-step offsets")

    control, _ = editor.build_control(model_512, inverted, sample)
    first_blend_step, seen = int(0.2 * steps), {}
    end_step = control.end_step

    def keep(step, latents):
        latents = end_step(step, latents)
        if step == first_blend_step:
            seen["after_first_blend_step"] = latents.clone()
        return latents

    control.end_step = keep
    cond = model_512.encode_prompts([sample.source_prompt, sample.target_prompt])
    edited = denoise_branches(model_512, inverted, cond, editor.guidance_scale, control)  # p2p's own edit
    close(seen["after_first_blend_step"], golden["after_first_blend_step"], "latents after the first blend step")
    close(edited, golden["edited_latents"], "final latents (source, target)")

    image = model_512.decode_latents(edited[1:], "truncate")[0]  # reference_compat: the reference's quantisation
    crop = torch.from_numpy(image[192:320, 192:320].copy()).int()
    difference = (crop - golden["edited_image_crop"].int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01


RENOISE_CASES = golden_cases(GOLDEN / "renoise")


@pytest.mark.parametrize("sample_id", RENOISE_CASES)
def test_renoise_reproduces_its_official_code_step_by_step(sample_id, model_512, mini, compose):
    """ReNoise's official code (garibida/ReNoise-Inversion, its SD example's settings; written by
    benchmarks/oracle/renoise_reference.py) on the tiny model, 5 steps: averaged steps below t = 250, plain
    renoising above, without the noise regularisation (chaotic on the tiny model; checked apart below).
    invbench's `inversion=renoise` must encode the same posterior sample and, from the reference's z_0, retrace every
    latent of the trajectory.

    z_0 gets a looser tolerance: the reference's image processor hands the VAE a contiguous tensor and invbench (as
    the PIE-Bench reference) a permuted one, and the tiny VAE's random encoder turns that change of kernel path into
    1e-4 on the posterior mean, times its standard deviation (up to 3.3) on the sample: measured 5.7e-4."""
    golden = torch.load(GOLDEN / "renoise" / f"{sample_id}.pt", weights_only=False)
    sample = next(s for s in mini.samples if s.id == sample_id)
    overrides = ["inversion=renoise", f"num_steps={golden['steps']}", "inversion.reg_steps=0"]
    config = OmegaConf.to_container(compose(*overrides), resolve=True)
    inversion = INVERSIONS.build(config["inversion"])
    latent = inversion.encode_source(model_512, fit_square(sample.read_image(), model_512.resolution))
    close_to = golden["trajectory"]
    torch.testing.assert_close(latent, close_to[:1], rtol=0, atol=1e-3, msg=lambda m: f"the posterior sample: {m}")
    inverted = inversion.invert(model_512, close_to[:1].clone(), sample)
    assert list(reversed(inverted.schedule.timesteps)) == golden["timesteps"][::-1]
    assert inverted.info["renoising_passes"] == 5 * 2  # the DDIM guess and 1 renoising pass per step
    for k, (ours, reference) in enumerate(zip(inverted.latents, close_to, strict=True)):
        close(ours, reference[None], f"z*_{k}")


def test_renoise_regularises_noise_as_its_official_code(compose):
    """The reference's noise_regularization (its default weights; seeded shifts) on unit-variance noise, where it is
    well-conditioned: invbench's steps, KL and auto-correlation losses and its use of the generator must give the
    same maps, twice in a row from one generator. Measured: equal; 1e-6 on the input moves the output 4.5e-6."""
    golden = torch.load(GOLDEN / "renoise" / "regularisation.pt", weights_only=False)
    config = OmegaConf.to_container(compose("inversion=renoise"), resolve=True)["inversion"]
    inversion = INVERSIONS.build(config)
    shifts = torch.Generator().manual_seed(golden["seed"])
    ours = [inversion.regularise(golden["noise"], golden["optimal"], shifts) for _ in range(2)]
    close(torch.cat(ours), golden["regularised"], "the regularised noise maps")


PNP_CASES = golden_cases(GOLDEN / "pnp")


@pytest.mark.parametrize("case", PNP_CASES)
def test_pnp_reproduces_the_reference_step_by_step(case, model_512, mini, compose, monkeypatch):
    """The PIE-Bench reference's run_editing_pnp.py (ddim+pnp and directinversion+pnp; written by
    benchmarks/oracle/pnp_reference.py) on the tiny model, 5 steps on SD's grid: invbench's `editor=pnp` with
    `inversion=ddim` / `directinversion` must read features from the same latents at every step (one step late for
    ddim, the inversion trajectory for DirectInversion) and produce the same target after every step. Measured:
    targets within 1.3e-5 (latents up to 27), the saved edit within one level on 0.01% of the crop."""
    from editors import pnp

    golden = torch.load(GOLDEN / "pnp" / f"{case}.pt", weights_only=False)
    sample = next(s for s in mini.samples if s.id == golden["sample"])
    inversion_name = golden["method"].split("+")[0]
    overrides = [f"inversion={inversion_name}", "editor=pnp", f"num_steps={golden['steps']}"]
    config = OmegaConf.to_container(compose(*overrides), resolve=True)
    model = model_512
    inversion, editor = INVERSIONS.build(config["inversion"]), EDITORS.build(config["editor"])

    latent = model.encode_image(fit_square(sample.read_image(), model.resolution))
    close(latent, golden["z0"], "z*_0")
    inverted = inversion.invert(model, latent, sample)
    close(inverted.noise_latent, golden["zT"], "z*_T")

    seen = {"targets": []}

    def end_step(self, step, latents):
        seen["features"] = self.feature_latents
        seen["targets"].append(latents[1:].clone())
        return latents

    monkeypatch.setattr(pnp.FeatureInjection, "end_step", end_step)
    edited = editor.edit(model, inverted, sample)
    close(torch.cat(seen["features"]), golden["sources"], "the latents features are read from")
    close(torch.cat(seen["targets"]), golden["targets"], "the target after every step")
    image = model.decode_latents(edited.edited, "truncate")[0]
    crop = torch.from_numpy(image[192:320, 192:320].copy()).int()
    difference = (crop - golden["edited_image_crop"].int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01


MASACTRL_CASES = golden_cases(GOLDEN / "masactrl")


@pytest.mark.parametrize("case", MASACTRL_CASES)
def test_masactrl_reproduces_the_reference_step_by_step(case, model_512, mini, compose, monkeypatch):
    """The PIE-Bench reference's run_editing_masactrl.py (ddim+masactrl, directinversion+masactrl; written by
    benchmarks/oracle/masactrl_reference.py) on the tiny model, 8 steps: invbench's `editor=masactrl` (its ""
    source prompt) with `inversion=ddim` / `directinversion` must give the same target after every step. The tiny
    UNet has 7 transformer blocks, so the reference's layer 10 controls none (that case checks the rest of the run);
    layer 4 puts the mutual self-attention on the decoder's blocks."""
    from editors import masactrl

    golden = torch.load(GOLDEN / "masactrl" / f"{case}.pt", weights_only=False)
    sample = next(s for s in mini.samples if s.id == golden["sample"])
    overrides = [f"inversion={golden['method'].split('+')[0]}", "editor=masactrl", f"num_steps={golden['steps']}"]
    config = OmegaConf.to_container(compose(*overrides, f"editor.start_layer={golden['start_layer']}"), resolve=True)
    inversion, editor = INVERSIONS.build(config["inversion"]), EDITORS.build(config["editor"])
    seen = editor.prepare_sample(sample)
    assert seen.source_prompt == ""  # the reference inverts and reconstructs with ""

    latent = model_512.encode_image(fit_square(sample.read_image(), model_512.resolution))
    close(latent, golden["z0"], "z*_0")
    inverted = inversion.invert(model_512, latent, seen)
    close(inverted.noise_latent, golden["zT"], "z*_T")
    targets = []

    def end_step(self, step, latents):
        targets.append(latents[1:].clone())
        return latents

    monkeypatch.setattr(masactrl.MutualSelfAttention, "end_step", end_step)
    edited = editor.edit(model_512, inverted, seen)
    close(torch.cat(targets), golden["targets"], "the target after every step")
    close(torch.cat([edited.reconstruction, edited.edited]), golden["final"], "the final latents (source, target)")
    assert edited.info["controlled_layers"] == (0 if golden["start_layer"] == 10 else 3)
    image = model_512.decode_latents(edited.edited, "truncate")[0]
    crop = torch.from_numpy(image[192:320, 192:320].copy()).int()
    difference = (crop - golden["edited_image_crop"].int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01


EDIT_FRIENDLY_CASES = golden_cases(GOLDEN / "edit_friendly")


@pytest.mark.parametrize("case", EDIT_FRIENDLY_CASES)
def test_edit_friendly_p2p_reproduces_the_reference_step_by_step(case, model_512, mini, compose):
    """The PIE-Bench reference's run_editing_edit_friendly_p2p.py (written by
    benchmarks/oracle/edit_friendly_reference.py) on the tiny model, 10 steps: invbench's `inversion=edit_friendly
    editor=p2p_edit_friendly` must draw the same noisy x_t (the seed as the reference's setup_seed), solve the same
    noise maps, skip as many steps and give the same source and target after every editing step (one sample whose
    prompts have as many words, the reference's word swap; one whose do not, its refine)."""
    golden = torch.load(GOLDEN / "edit_friendly" / f"{case}.pt", weights_only=False)
    sample = next(s for s in mini.samples if s.id == golden["sample"])
    overrides = ["inversion=edit_friendly", "editor=p2p_edit_friendly", f"num_steps={golden['steps']}"]
    config = OmegaConf.to_container(compose(*overrides), resolve=True)
    assert config["inversion"]["skip"] == golden["skip"]
    inversion, editor = INVERSIONS.build(config["inversion"]), EDITORS.build(config["editor"])

    torch.manual_seed(1234)  # the reference's setup_seed, as the runner's seed_everything
    latent = model_512.encode_image(fit_square(sample.read_image(), model_512.resolution))
    close(latent, golden["z0"], "z_0")
    inverted = inversion.invert(model_512, latent, sample)
    skip = golden["skip"]
    # the trajectory kept for editing: x_0 and the x_t of the steps after the skip, t ascending
    close(torch.cat(inverted.latents), golden["xts"][: golden["steps"] - skip + 1], "the noisy x_t")
    # noise maps in denoising order; the reference keeps them t ascending
    close(torch.cat(inverted.hooks.noise_maps), golden["zs"].flip(0)[skip:], "the noise maps z_t")

    steps = p2p_latents_after_every_step(model_512, editor, inverted, sample)
    close(steps, golden["steps_latents"], "the source and target after every editing step")


SPDINV_CASES = golden_cases(GOLDEN / "spdinv")


@pytest.mark.parametrize("case", SPDINV_CASES)
def test_spdinv_p2p_reproduces_its_official_code_step_by_step(case, model_512, mini, compose):
    """SPDInv's official run_SPDInv_P2P.py (leeruibin/SPDInv; written by benchmarks/oracle/spdinv_reference.py) on the
    tiny model, 5 steps: invbench's `inversion=spdinv editor=p2p` must find the same fixed points with as many AdamW
    iterations, and its editing (proximal guidance, inversion guidance below t = 400, the source prompt as the
    unconditional embedding) must give the same source and target after every step. The official script's P2P
    replaces cross-attention for 80% of the steps (PIE-Bench's P2P runs 40%), set here as it runs it."""
    golden = torch.load(GOLDEN / "spdinv" / f"{case}.pt", weights_only=False)
    sample = next(s for s in mini.samples if s.id == golden["sample"])
    overrides = ["inversion=spdinv", "editor=p2p", f"num_steps={golden['steps']}"]
    config = OmegaConf.to_container(
        compose(*overrides, f"editor.cross_replace_steps={golden['cross_replace_steps']}"), resolve=True
    )
    inversion, editor = INVERSIONS.build(config["inversion"]), EDITORS.build(config["editor"])

    latent = model_512.encode_image(fit_square(sample.read_image(), model_512.resolution))
    inverted = inversion.invert(model_512, latent, sample)
    close(torch.cat(inverted.latents), golden["trajectory"], "z_0 and the SPDInv fixed points")
    assert inverted.info["optimisation_steps"] == golden["adamw_steps"]

    steps = p2p_latents_after_every_step(model_512, editor, inverted, sample)
    close(steps, golden["steps_latents"], "the source and target after every editing step")


PIX2PIX_ZERO_CASES = golden_cases(GOLDEN / "pix2pix_zero")


@pytest.mark.parametrize("case", PIX2PIX_ZERO_CASES)
def test_pix2pix_zero_reproduces_the_reference_step_by_step(case, model_512, mini, compose, monkeypatch):
    """The PIE-Bench reference's run_editing_pix2pix_zero.py (ddim+pix2pix-zero; written by
    benchmarks/oracle/pix2pix_zero_reference.py, its BLIP caption the source prompt) on the tiny model, 10 steps:
    invbench's `inversion=pix2pix_zero editor=pix2pix_zero` must draw the same posterior sample (the seed as the
    reference's setup_seed), regularise and invert on the reference's grid to the same z_T, and give the same
    reconstruction and edit (one guided copy of the target per half of guidance) after every step. λ_kl is the
    golden's: the reference's 20 diverges on the tiny model's small noise predictions."""
    from editors import pix2pix_zero

    golden = torch.load(GOLDEN / "pix2pix_zero" / f"{case}.pt", weights_only=False)
    sample = next(s for s in mini.samples if s.id == golden["sample"])
    overrides = ["inversion=pix2pix_zero", "editor=pix2pix_zero", f"num_steps={golden['steps']}"]
    config = OmegaConf.to_container(compose(*overrides, f"inversion.lambda_kl={golden['lambda_kl']}"), resolve=True)
    inversion, editor = INVERSIONS.build(config["inversion"]), EDITORS.build(config["editor"])

    seed_everything(1234)  # the reference's setup_seed, as the runner's
    latent = inversion.encode_source(model_512, fit_square(sample.read_image(), model_512.resolution))
    close(latent, golden["trajectory"][:1], "z_0, a sample of the VAE posterior")
    inverted = inversion.invert(model_512, latent, sample)
    close(torch.cat(inverted.latents), golden["trajectory"], "the regularised trajectory z_0 … z_T")

    steps = []

    def end_step(self, step, latents):
        steps.append(latents.clone())
        return latents

    monkeypatch.setattr(pix2pix_zero.CrossAttentionGuidance, "end_step", end_step)
    edited = editor.edit(model_512, inverted, sample)
    steps = torch.stack(steps)
    close(steps[:, 0], golden["sources"], "the reconstruction after every step")
    close(steps[:, 1], golden["targets"], "the edit after every step")
    image = model_512.decode_latents(edited.edited, "round")[0]  # the reference saves through numpy_to_pil: rounded
    crop = torch.from_numpy(image[192:320, 192:320].copy()).int()
    difference = (crop - golden["edited_image_crop"].int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01
