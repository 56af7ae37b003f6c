"""Regenerate the EDICT goldens of tests/test_oracle.py: run the PIE-Bench reference's run_editing_edict.py
(`edict+p2p` and `edict+direct_forward`) on invbench's tiny model, in float64 as the reference runs.

    python benchmarks/oracle/edict_reference.py <PnPInversion checkout or git dir> [--work /tmp/edict-ref]

Copies run_editing_edict.py and models/edict/ (its own early diffusers, `my_diffusers`, which casts to float64 in
places) at REFERENCE_COMMIT, applies PATCHES and calls the script's edit_image_edict_p2p as its __main__ does
(setup_seed(), then the reconstruction and EDICT_editing with the script's defaults), at STEPS steps. The reference's
own UNet and VAE classes are built from the tiny model's configuration and take its weights (the VAE's attention
renamed to the old names); its CLIP text model is the tiny model's (a transformers CLIPTextModel's `text_model`, as
the reference's), all cast to float64 as the reference casts SD v1.4. Two kinds of patch (each listed with why):
E1-E4 for drift and loading (old imports, the weights loaded at import, a CPU, the VAE's scaling factor), and
E5-E6 where the old classes cannot express the tiny architecture (GroupNorm's 32 groups hard-coded, the tiny
model's are 8; a down block of one layer whose channels change, which SD's two layers per block never met). E7
reproduces on a CPU what the reference's `torch.cuda.manual_seed(seed)` does on its GPU: reseed the device's default
generator with 1 before every call's VAE sample (on a CPU the call does nothing and returns None, so the sample
would come from wherever the global generator stands).

Keeps, per case: z_0 (the posterior sample the edit's own inversion starts from), the coupled pair after inversion,
the pair after every editing step, the edit's final pair and a crop of the saved edit, in
tests/golden/oracle/edict/<case>.pt. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import random
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = REPO / "tests" / "golden" / "oracle" / "edict"
REFERENCE_COMMIT = "07f97f4"
STEPS = 10  # strength 0.8: 8 coupled steps, inverted and edited
CROP = (slice(192, 320), slice(192, 320))
# case -> (sample, use_p2p): the script's methods edict+p2p and edict+direct_forward
CASES = {
    "edict_p2p_121000000001": ("121000000001", True),  # cat -> tiger: a changed object
    "edict_p2p_623000000006": ("623000000006", True),  # red -> blue motorcycle: an aligned attribute word
    "edict_direct_121000000001": ("121000000001", False),
}
MODELS = "_invbench_edict_models"  # the module the patched reference imports its models from

LOADING = """model_path_clip = "openai/clip-vit-large-patch14"
clip_tokenizer = CLIPTokenizer.from_pretrained(model_path_clip)
clip_model = CLIPModel.from_pretrained(model_path_clip, torch_dtype=torch.float16)
clip = clip_model.text_model



model_path_diffusion = "CompVis/stable-diffusion-v1-4"
# Build our SD model
unet = UNet2DConditionModel.from_pretrained(model_path_diffusion, subfolder="unet", revision="fp16", torch_dtype=torch.float16)
vae = AutoencoderKL.from_pretrained(model_path_diffusion, subfolder="vae", revision="fp16", torch_dtype=torch.float16)

# Push to devices w/ double precision
device = 'cuda'
"""
DOWNSAMPLER = (
    "                    Downsample2D(\n                        in_channels, use_conv=True, out_channels=out_channels"
)
OLD_DIFFUSERS = "models/edict/my_diffusers"

# (file, old text, new text, how many times the old text occurs, why)
PATCHES = [
    *(
        (
            f"{OLD_DIFFUSERS}/pipelines/stable_diffusion/{name}.py",
            "from transformers import CLIPFeatureExtractor, ",
            "from transformers import CLIPImageProcessor as CLIPFeatureExtractor, ",
            1,
            "E1: transformers removed CLIPFeatureExtractor (imported by the package's pipelines, none of them used)",
        )
        for name in (
            "pipeline_stable_diffusion",
            "pipeline_stable_diffusion_img2img",
            "pipeline_stable_diffusion_inpaint",
            "pipeline_stable_diffusion_onnx",
        )
    ),
    (
        "models/edict/edict_functions.py",
        LOADING,
        f"from {MODELS} import clip_tokenizer, clip, unet, vae, VAE_SCALING_FACTOR\ndevice = 'cpu'\n",
        1,
        (
            "E2: the module loads CLIP ViT-L/14 and SD v1.4 from the Hub when imported; here the tiny model's, in the "
            "reference's own classes, float64; E3: a CPU"
        ),
    ),
    (
        "models/edict/edict_functions.py",
        "0.18215",
        "VAE_SCALING_FACTOR",
        7,
        "E4: the VAE's scaling factor was hard-coded for SD's VAE (the tiny model's is 4.0)",
    ),
    (
        f"{OLD_DIFFUSERS}/models/unet_blocks.py",
        "resnet_groups: int = 32",
        "resnet_groups: int = 8",
        12,
        "E5: GroupNorm's 32 groups were hard-coded in the old classes (the tiny model's norm_num_groups is 8)",
    ),
    (f"{OLD_DIFFUSERS}/models/attention.py", "num_groups: int = 32", "num_groups: int = 8", 1, "E5: as above"),
    (f"{OLD_DIFFUSERS}/models/attention.py", "GroupNorm(num_groups=32", "GroupNorm(num_groups=8", 1, "E5: as above"),
    (f"{OLD_DIFFUSERS}/models/resnet.py", "        groups=32,", "        groups=8,", 1, "E5: as above"),
    (f"{OLD_DIFFUSERS}/models/vae.py", "resnet_groups=32", "resnet_groups=8", 2, "E5: as above"),
    (f"{OLD_DIFFUSERS}/models/vae.py", "num_groups_out = 32", "num_groups_out = 8", 2, "E5: as above"),
    (
        f"{OLD_DIFFUSERS}/models/unet_blocks.py",
        DOWNSAMPLER,
        DOWNSAMPLER.replace("in_channels, use_conv", "out_channels, use_conv"),
        5,
        (
            "E6: a down block's downsampler is built for its input channels, which its resnets' loop rebinds to the "
            "output channels only from a second layer on; the tiny UNet has one layer per block and a block that "
            "changes channels (32 -> 64), where the old class would fail. This builds it for what it receives"
        ),
    ),
    (
        "models/edict/edict_functions.py",
        "generator = torch.cuda.manual_seed(seed)",
        "generator = torch.manual_seed(seed)",
        2,
        (
            "E7: on its GPU the reference reseeds the device's default generator with `seed` (1) before each call's VAE "
            "sample; on a CPU torch.cuda.manual_seed does nothing. torch.manual_seed does the same to the CPU's"
        ),
    ),
]


def old_vae_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Today's AutoencoderKL weights under the old class's names (its attention's query/key/value/proj_attn)."""
    renamed = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    out = {}
    for name, value in state.items():
        for new, old in renamed.items():
            name = name.replace(new, old)
        out[name] = value
    return out


def reference_models(tiny):
    """The tiny model's weights in the reference's own UNet and VAE classes, its text model, float64."""
    from models.edict.my_diffusers import AutoencoderKL, UNet2DConditionModel

    unet_config, vae_config = tiny.denoiser.config, tiny.vae.config
    unet = UNet2DConditionModel(
        **{
            key: unet_config[key]
            for key in (
                "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
                "down_block_types", "up_block_types", "block_out_channels", "layers_per_block", "downsample_padding",
                "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim",
                "attention_head_dim",
            )
        }
    )  # fmt: skip
    unet.load_state_dict(tiny.denoiser.state_dict(), strict=True)
    vae = AutoencoderKL(
        **{
            key: vae_config[key]
            for key in (
                "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
                "layers_per_block", "act_fn", "latent_channels", "sample_size",
            )
        }
    )  # fmt: skip
    vae.load_state_dict(old_vae_state(tiny.vae.state_dict()), strict=True)
    module = types.ModuleType(MODELS)
    module.clip_tokenizer = tiny.tokenizer
    module.clip = tiny.backbone.text_encoder  # today CLIPModel.text_model is a CLIPTextModel itself
    module.unet, module.vae = unet.double().eval(), vae.double().eval()
    module.clip.double()
    module.VAE_SCALING_FACTOR = float(vae_config.scaling_factor)
    return module


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import conf, prepare_reference, tiny_model

    args = prepare_reference(
        __doc__, "cure-lab/PnPInversion", "/tmp/edict-ref", REFERENCE_COMMIT,
        ("models/edict", "run_editing_edict.py", "utils"), ("models", "models/edict", "utils"), PATCHES,
    )  # fmt: skip
    del args
    torch.set_num_threads(2)
    tiny = tiny_model()
    sys.modules[MODELS] = reference_models(tiny)

    import models.edict.edict_functions as edict
    import run_editing_edict as script

    script.txt_draw = lambda text, target_size=(512, 512): np.zeros((target_size[1], target_size[0], 3), np.uint8)
    seen: dict[str, list] = {"calls": [], "updates": [], "decoded": [], "posterior": [], "inverted": []}
    coupled, editing, forward = edict.coupled_stablediffusion, edict.EDICT_editing, edict.forward_step

    def recorded(*args, **kwargs):  # every call at STEPS steps (the script's calls leave its default, 50)
        kwargs.setdefault("steps", STEPS)
        out = coupled(*args, **kwargs)
        seen["calls"].append(kwargs)
        if kwargs.get("reverse"):
            seen["inverted"].append(torch.cat(out))
        return out

    def forward_step(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen["updates"].append(out.detach().clone())
        return out

    # the script's star import bound its own names; EDICT_editing reads the module's
    edict.coupled_stablediffusion = script.coupled_stablediffusion = recorded
    script.EDICT_editing = lambda *args, **kwargs: editing(*args, **{"steps": STEPS, **kwargs})
    edict.forward_step = forward_step
    vae = sys.modules[MODELS].vae
    encode, decode = vae.encode, vae.decode

    def encoded(pixels):
        out = encode(pixels)
        sample = out.latent_dist.sample

        def kept(generator=None):
            drawn = sample(generator)
            seen["posterior"].append(drawn.detach().clone())
            return drawn

        out.latent_dist.sample = kept
        return out

    def decoded(latents):
        seen["decoded"].append(latents.detach().clone())
        return decode(latents)

    vae.encode, vae.decode = encoded, decoded

    from pie_bench import edit_class_lookup, load_benchmark

    samples = {s.id: s for s in load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv"))).samples}
    scale = sys.modules[MODELS].VAE_SCALING_FACTOR
    used = int(STEPS * 0.8)  # EDICT_editing's init_image_strength
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for case, (sample_id, use_p2p) in CASES.items():
        sample = samples[sample_id]
        for kept in seen.values():
            kept.clear()
        torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # the script's setup_seed()
        shown = script.edit_image_edict_p2p(
            str(sample.image_file), sample.source_prompt, sample.target_prompt, use_p2p
        )
        # the reconstruction's inversion and generation (strength 1), then EDICT_editing's inversion and edit
        assert [call.get("init_image_strength", 1.0) for call in seen["calls"]] == [1.0, 1.0, 0.8, 0.8]
        assert len(seen["posterior"]) == 2 and torch.equal(*seen["posterior"])  # E7: both calls draw alike
        updates = seen["updates"][-2 * used :]  # the edit's two DDIM updates per step, in the order made
        record = {
            "reference": f"cure-lab/PnPInversion@{REFERENCE_COMMIT}, run_editing_edict.py (edit_image_edict_p2p, "
            "EDICT_editing's defaults), patches: " + ", ".join(sorted({why.split(":")[0] for *_, why in PATCHES})),
            "method": "edict+p2p" if use_p2p else "edict+direct_forward",
            "sample": sample_id,
            "steps": STEPS,
            "z0": seen["posterior"][-1] * scale,
            "inverted": seen["inverted"][-1],  # (2, 4, h, w): the coupled pair x_T, y_T the edit starts from
            "updates": torch.stack([torch.cat(updates[k : k + 2]) for k in range(0, len(updates), 2)]),
            "edited": torch.cat(seen["decoded"][-2:]) * scale,  # the edit's final pair after the last mix
            "edited_image_crop": torch.from_numpy(np.asarray(shown)[:, 3 * 512 :][CROP].copy()),
        }
        torch.save(record, GOLDEN / f"{case}.pt")
        print("wrote", GOLDEN / f"{case}.pt", "max |update|", float(record["updates"].abs().max()))


if __name__ == "__main__":
    main()
