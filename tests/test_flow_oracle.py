"""Reference equivalence for the flow methods: the official sampling code of RF-Solver, FireFlow, UniEdit-Flow and
FlowEdit ran on our flux_tiny / sd3_tiny (benchmarks/oracle/flow_reference.py: 64×64, sample 121000000001, T5 at the
pipelines' 512 / 256 tokens); tests/golden/oracle/flow/ holds what it computed, and invbench's configurations of the
same names, with the reference's settings at these step counts, must compute the same.

Tolerance: float32 on CPU; the same network evaluated in other batch layouts and the steps' arithmetic in another
order differ by rounding on latents of magnitude ~1 (measured at most 9.5e-7), so latents compare at 1e-5. The
edits move the latents by 0.01-0.12 and methods differ from one another by more than 1e-3; FlowEdit with another
seed (or its noise drawn unpacked on FLUX) lands 0.007 away."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import conf_file

from editors import EDITORS
from invbench.images import fit_square
from invbench.models import load_model
from inversions import INVERSIONS

GOLDEN = Path(__file__).parent / "golden" / "oracle" / "flow"
TOLERANCE = 1e-5
CPU = torch.device("cpu")


def golden(name: str) -> dict:
    return torch.load(GOLDEN / f"{name}.pt", weights_only=False)


@pytest.fixture(scope="module")
def flux_512():
    return load_model(conf_file("model/flux_tiny.yaml") | {"resolution": 64, "t5_tokens": 512}, {}, CPU)


@pytest.fixture(scope="module")
def sd3_256():
    return load_model(conf_file("model/sd3_tiny.yaml") | {"resolution": 64, "t5_tokens": 256}, {}, CPU)


@pytest.mark.parametrize("method", ["flow", "rf_solver", "fireflow"])
def test_solvers_equal_their_official_code(method, flux_512, sample):
    reference = golden(method)
    assert reference["sample"] == sample.id
    latent = flux_512.encode_image(fit_square(sample.read_image(), 64))
    inversion = INVERSIONS.build(conf_file(f"inversion/{method}.yaml") | {"num_steps": 6})
    inverted = inversion.invert(flux_512, latent, sample)
    sigmas = [float(inverted.schedule.sigma(t)) for t in inverted.schedule.timesteps]
    assert sigmas == pytest.approx(reference["sigmas"][:-1], abs=1e-6)  # BFL's get_schedule
    torch.testing.assert_close(inverted.noise_latent, reference["noise"], rtol=0, atol=TOLERANCE)
    edited = EDITORS.build({"name": "direct", "guidance_scale": 2.0}).edit(flux_512, inverted, sample).edited
    torch.testing.assert_close(edited, reference["edited"], rtol=0, atol=TOLERANCE)


def test_uniedit_equals_its_official_code(flux_512, sample):
    reference = golden("uniedit")
    latent = flux_512.encode_image(fit_square(sample.read_image(), 64))
    inversion = INVERSIONS.build(conf_file("inversion/uniedit_flow.yaml") | {"num_steps": 10})
    inverted = inversion.invert(flux_512, latent, sample)
    torch.testing.assert_close(inverted.noise_latent, reference["noise"], rtol=0, atol=TOLERANCE)
    edited = EDITORS.build(conf_file("editor/uniedit.yaml")).edit(flux_512, inverted, sample).edited
    torch.testing.assert_close(edited, reference["edited"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("case", "config"), [("flowedit_flux", "flowedit"), ("flowedit_sd3", "flowedit_sd3")])
def test_flowedit_equals_its_official_code(case, config, flux_512, sd3_256, sample):
    reference = golden(case)
    model = flux_512 if case == "flowedit_flux" else sd3_256
    settings = conf_file(f"editor/{config}.yaml")
    if "defaults" in settings:  # flowedit_sd3 composes flowedit
        settings = conf_file("editor/flowedit.yaml") | {k: v for k, v in settings.items() if k != "defaults"}
    editor = EDITORS.build(settings | {"num_steps": 8, "n_max": 6})
    none = INVERSIONS.build({"name": "none"})
    torch.manual_seed(0)  # the reference run's seed, set just before FlowEdit draws its noise
    edited = editor.edit(model, none.invert(model, reference["source"], sample), sample).edited
    torch.testing.assert_close(edited, reference["edited"], rtol=0, atol=TOLERANCE)


def test_rf_inversion_equals_its_official_pipeline(flux_512, sample):
    """The authors' RFInversionFluxPipeline (its README example at 6 steps, seed 0): the posterior sample, the
    controlled forward ODE's noise and the controlled reverse ODE's edit at guidance 3.5."""
    reference = golden("rf_inversion")
    inversion = INVERSIONS.build(conf_file("inversion/rf_inversion.yaml") | {"num_steps": 6})
    torch.manual_seed(0)  # as the runner seeds each sample: the posterior sample, then y_1
    latent = inversion.encode_source(flux_512, fit_square(sample.read_image(), 64))
    # the pipeline hands the VAE a non-contiguous image (numpy's transpose), whose convolutions round otherwise:
    # 1.1e-4 apart on latents up to 17 (as ReNoise's posterior sample, tests/test_oracle.py); the method then
    # continues from the reference's own sample, with the generator where the sample left it
    torch.testing.assert_close(latent, reference["source"], rtol=0, atol=1e-3)
    inverted = inversion.invert(flux_512, reference["source"], sample)
    torch.testing.assert_close(inverted.noise_latent, reference["noise"], rtol=0, atol=TOLERANCE)
    edited = EDITORS.build({"name": "direct", "guidance_scale": 3.5}).edit(flux_512, inverted, sample).edited
    torch.testing.assert_close(edited, reference["edited"], rtol=0, atol=TOLERANCE)
