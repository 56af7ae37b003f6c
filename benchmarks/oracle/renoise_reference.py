"""Regenerate the ReNoise goldens of tests/test_oracle.py: run ReNoise's official code on invbench's tiny model.

    python benchmarks/oracle/renoise_reference.py <ReNoise-Inversion checkout or git dir> [--work /tmp/renoise-ref]

Copies src/ and main.py of garibida/ReNoise-Inversion at REFERENCE_COMMIT outside this repository and runs them
unpatched, as examples/inversion_example_sd.py does (main.run with RunConfig(model_type=SD15,
scheduler_type=DDIM, num_renoise_steps=1, perform_noise_correction=False, seed=7865), do_reconstruction=False),
with two substitutions for what is not here: the tiny model's components in place of SD v1.5 from the Hub (put
together as get_pipes does: an img2img pipeline, the reference's SDDDIMPipeline on its components, the reference's
MyDDIMScheduler from SD v1.5's scheduler settings, add_noise replaced by the identity as get_pipes does for SD), and
an empty `pyrallis` module (main.py imports it only for its command line). 5 inversion steps instead of 50, so that
the grid (1, 201, 401, 601, 801) has both kinds of step: averaged below t = 250, plain renoising above.

The noise regularisation is checked apart, on unit-variance noise, because on the tiny model it is chaotic: the
random UNet predicts noise of magnitude ~0.1, so the 4×4 patches' variances are ~1e-4 and the KL steps (gradient
clipped to ±100, times 0.065) overshoot; 5e-8 on the input becomes 1 on the output after four rounds, so no two
CPUs agree. So the trajectories are run with noise_regularization_num_reg_steps=0 (everything else as the example),
and the reference's noise_regularization is run by itself, with the example's weights, on N(0, 1) maps, where it is
well-conditioned. Writes tests/golden/oracle/renoise/<sample>.pt (the trajectory z_0 .. z_T) and
regularisation.pt. About 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = REPO / "tests" / "golden" / "oracle" / "renoise"
REFERENCE_COMMIT = "fa83238"
STEPS = 5
SAMPLES = ("121000000001", "623000000006")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a clone (or git dir) of github.com/garibida/ReNoise-Inversion")
    parser.add_argument("--work", type=Path, default=Path("/tmp/renoise-ref"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from patch_reference import extract

    args.work.mkdir(parents=True, exist_ok=True)
    extract(args.source, REFERENCE_COMMIT, args.work, ("src", "main.py"))
    sys.path[:0] = [str(args.work), str(REPO)]
    sys.modules["pyrallis"] = types.SimpleNamespace(wrap=lambda: lambda function: function)

    import main as reference  # the reference's main.py
    from common import conf, tiny_model, tiny_pipeline
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image
    from src.config import RunConfig
    from src.eunms import Model_Type, Scheduler_Type
    from src.pipes.sd_inversion_pipeline import SDDDIMPipeline
    from src.schedulers.ddim_scheduler import MyDDIMScheduler

    from invbench.images import fit_square
    from pie_bench import edit_class_lookup, load_benchmark

    scheduler_config = conf("scheduler/ddim") | {"steps_offset": 1}  # SD v1.5's scheduler_config.json
    tiny = tiny_model(scheduler_config)
    pipe_inference = tiny_pipeline(tiny, MyDDIMScheduler.from_config(scheduler_config), StableDiffusionImg2ImgPipeline)
    pipe_inversion = SDDDIMPipeline(**pipe_inference.components)
    pipe_inversion.scheduler = MyDDIMScheduler.from_config(scheduler_config)
    pipe_inversion.scheduler.add_noise = lambda init_latents, noise, timestep: init_latents  # get_pipes, for SD
    config = RunConfig(
        model_type=Model_Type.SD15,
        num_inference_steps=STEPS,
        num_inversion_steps=STEPS,
        num_renoise_steps=1,
        scheduler_type=Scheduler_Type.DDIM,
        perform_noise_correction=False,
        seed=7865,
        noise_regularization_num_reg_steps=0,  # chaotic on the tiny model: checked apart below
    )
    mini = load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv")))
    samples = {sample.id: sample for sample in mini.samples}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for sample_id in SAMPLES:
        sample = samples[sample_id]
        image = Image.fromarray(fit_square(sample.read_image(), 512))
        _, _, _, trajectory = reference.run(
            image, sample.source_prompt, config, pipe_inversion, pipe_inference, do_reconstruction=False
        )
        torch.save(
            {
                "reference": f"garibida/ReNoise-Inversion@{REFERENCE_COMMIT}, examples/inversion_example_sd.py "
                f"settings, {STEPS} steps, tiny model",
                "config": json.loads(json.dumps(config.__dict__, default=str)),
                "sample": sample_id,
                "steps": STEPS,
                "timesteps": [int(t) for t in pipe_inversion.scheduler.timesteps],
                "trajectory": torch.cat(trajectory).float(),  # (steps + 1, 4, h, w): z_0 (a posterior sample) .. z_T
            },
            GOLDEN / f"{sample_id}.pt",
        )
        print("wrote", GOLDEN / f"{sample_id}.pt")
    write_regularisation_golden(RunConfig())


def write_regularisation_golden(config) -> None:
    """The reference's noise_regularization with its default weights on unit-variance noise maps."""
    from src.renoise_inversion import noise_regularization

    inputs = torch.Generator().manual_seed(0)
    noise, optimal = (torch.randn(1, 4, 64, 64, generator=inputs) for _ in range(2))
    optimal = 0.5 * noise + 0.9 * optimal  # a KL target near the noise, as ε(z_0, t) is near ε(ẑ, t)
    shifts = torch.Generator().manual_seed(config.seed)
    regularised = [
        noise_regularization(
            noise,
            optimal,
            lambda_kl=config.noise_regularization_lambda_kl,
            lambda_ac=config.noise_regularization_lambda_ac,
            num_reg_steps=config.noise_regularization_num_reg_steps,
            num_ac_rolls=config.noise_regularization_num_ac_rolls,
            generator=shifts,
        )
        for _ in range(2)  # twice from one generator: the second call's shifts continue the first's draws
    ]
    torch.save(
        {
            "reference": f"garibida/ReNoise-Inversion@{REFERENCE_COMMIT}, src/renoise_inversion.py "
            "noise_regularization, src/config.py weights",
            "seed": config.seed,
            "noise": noise,
            "optimal": optimal,
            "regularised": torch.cat(regularised),
        },
        GOLDEN / "regularisation.pt",
    )
    print("wrote", GOLDEN / "regularisation.pt")


if __name__ == "__main__":
    main()
