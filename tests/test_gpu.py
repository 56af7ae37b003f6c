"""Real-size checks on a CUDA device: `pytest -m gpu`. Skipped without a GPU (and, for real weights, without them)."""

import pytest
import torch
from conftest import conf_file, relative_error

from editors import denoise_branches
from invbench.errors import ModelNotAvailableError
from invbench.images import fit_square
from invbench.models import load_model
from inversions import INVERSIONS
from orchestration.runner import run_job

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_sd14_sized_job_on_gpu(compose, tmp_path):
    rows = run_job(compose("model=sd14_random", "dataset.categories=[1,6]", "device=cuda"), tmp_path)
    assert set(rows["status"]) == {"ok"}
    assert (rows["memory_kind"] == "cuda_max_allocated").all()
    assert (rows["peak_memory_mb"] > 3000).all()  # the fp32 SD v1.4 UNet alone holds 3.2 GiB
    assert (rows["inversion_unet_evals"] == 50).all() and (rows["edit_unet_evals"] == 200).all()


def test_real_sd14_ddim_reconstructs_at_guidance_1_and_drifts_at_7_5(sample):
    try:
        model = load_model(conf_file("model/sd14.yaml"), conf_file("scheduler/ddim.yaml"), torch.device("cuda"))
    except ModelNotAvailableError as error:
        pytest.skip(str(error).splitlines()[0])
    latent = model.encode_image(fit_square(sample.read_image(), 512))
    inversion = INVERSIONS.build({"name": "ddim", "num_steps": 50, "guidance_scale": 1.0}).invert(
        model, latent, sample
    )
    cond = model.encode_prompts([sample.source_prompt])
    error_at_1 = relative_error(denoise_branches(model, inversion, cond, 1.0), latent)
    error_at_7_5 = relative_error(denoise_branches(model, inversion, cond, 7.5), latent)
    assert error_at_1 < 0.1 and error_at_7_5 > 2 * error_at_1
