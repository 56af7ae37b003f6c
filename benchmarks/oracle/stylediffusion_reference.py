"""Regenerate the StyleDiffusion goldens of tests/test_oracle.py: run the PIE-Bench reference's
run_editing_stylediffusion.py (`stylediffusion+p2p`) on invbench's tiny model.

    pip install openai-clip                  # the reference imports OpenAI's clip package (its model code only here)
    python benchmarks/oracle/stylediffusion_reference.py <PnPInversion checkout or git dir> [--work /tmp/sd-ref]

Copies run_editing_stylediffusion.py, models/stylediffusion/ and utils/ at REFERENCE_COMMIT, applies PATCHES and
calls edit_image_stylediffusion_p2p with its __main__'s arguments (setup_seed(), 100 inner steps, τ_v 0.5, τ_c 0.6,
τ_s 0.6, τ_u 0) at STEPS steps, with the tiny model in place of SD v1.4. The image encoder is the reference's own
class (clip_util.py's VisionTransformer, every token through ln_post) built with CLIP ViT-B/16's layout at the tiny
model's width (patch 16, 224², 2 layers, 4 heads, 32 wide: its tokens must be as wide as the text embedding they
scale), and takes the weights of invbench's tiny stand-in (`inversion.image_encoder.backbone=tiny` with its MLP
4x wide, as OpenAI's blocks) converted to OpenAI's names. Nothing is downloaded: the patched `clip.load` returns that
model and OpenAI's preprocessing for 224². The reference's mapping networks are initialised from the global
generator (after setup_seed and whatever the encoder's construction drew); invbench's from its own seed, so the
golden keeps the first network's initial weights, and the test starts ours from them.

Keeps the image tokens, the DDIM inversion trajectory, the gradient of the first step's loss at the initial network,
each step's trained (scale, shift) and Adam iterations, the source and target after every editing step and a crop of
the saved edit, in
tests/golden/oracle/stylediffusion/<case>.pt. About 3 minutes on 2 cores.
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
GOLDEN = REPO / "tests" / "golden" / "oracle" / "stylediffusion"
REFERENCE_COMMIT = "07f97f4"
STEPS = 5
CROP = (slice(192, 320), slice(192, 320))
SAMPLES = (
    "121000000001",
    "623000000006",
)  # cat -> tiger (refine: other lengths), red -> blue (replace: equal lengths)
ENCODER = {"intermediate_size": 128}  # the tiny stand-in's MLP as wide as OpenAI's blocks make it (4 x 32)
MODELS = "_invbench_stylediffusion_models"
SD = "models/stylediffusion"

# (file, old text, new text, how many times the old text occurs, why)
PATCHES = [
    (
        f"{SD}/clip_util.py",
        "result = urllib.request.urlopen('https://www.example.com')",
        "result = None",
        1,
        "S1: the module opens a URL when imported (a certificate check); nothing here reaches the network",
    ),
    (
        f"{SD}/utils.py",
        "self.clip_model, clip_preprocess = clip.load('ViT-B/16', device=self.device)",
        (
            f"from {MODELS} import clip_load\n        self.clip_model, clip_preprocess = clip_load('ViT-B/16', "
            "device=self.device)"
        ),
        1,
        (
            "S2: clip.load downloads CLIP ViT-B/16; here its layout at the tiny model's width with the tiny stand-in's "
            "weights, and OpenAI's preprocessing"
        ),
    ),
    (
        f"{SD}/utils.py",
        "if net_.__class__.__name__ == 'CrossAttention':",
        "if net_.__class__.__name__ in ('CrossAttention', 'Attention'):",
        1,
        "S3: diffusers renamed CrossAttention to Attention; without this no layer is hooked",
    ),
    (
        f"{SD}/utils.py",
        "        def forward(x, context=None, mask=None):\n",
        (
            "        def forward(x, context=None, mask=None, **kwargs):\n"
            "            context = kwargs.pop('encoder_hidden_states', context)\n"
            "            mask = kwargs.pop('attention_mask', mask)\n"
        ),
        1,
        "S4: diffusers now calls attention with encoder_hidden_states= / attention_mask=",
    ),
    (f"{SD}/utils.py", "self.reshape_heads_to_batch_dim(", "self.head_to_batch_dim(", 3, "S5: renamed in diffusers"),
    (f"{SD}/utils.py", "self.reshape_batch_dim_to_heads(", "self.batch_to_head_dim(", 1, "S5: renamed in diffusers"),
    (
        f"{SD}/inversion.py",
        "0.18215",
        "self.model.vae.config.scaling_factor",
        2,
        "S6: the VAE's scaling factor was hard-coded for SD's VAE (the tiny model's is 4.0)",
    ),
    (
        f"{SD}/ptp_utils_v.py",
        "latents = 1 / 0.18215 * latents",
        "latents = 1 / vae.config.scaling_factor * latents",
        1,
        "S6: as above, for the saved images",
    ),
    (
        f"{SD}/inversion.py",
        "trainer.cur_att_layer = 32  # w=1, skip uncond attn layer",
        "trainer.cur_att_layer = trainer.num_uncond_att_layers  # w=1, skip uncond attn layer",
        1,
        (
            "S7: 32 is SD v1.x's count of attention layers (its unconditional half's, under LOW_RESOURCE), which the "
            "inversion skips to store the conditional maps; the tiny UNet has 14, and with 32 its store never closes "
            "a step (no map would be kept)"
        ),
    ),
    (
        "run_editing_stylediffusion.py",
        "NUM_DDIM_STEPS = 50",
        f"NUM_DDIM_STEPS = {STEPS}",
        1,
        f"S8: {STEPS} steps (a setting; invbench's num_steps)",
    ),
]


def openai_vision_state(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPVisionModel's weights under OpenAI's VisionTransformer names (q, k, v stacked)."""
    hf = {name.removeprefix("vision_model."): value for name, value in hf_state.items()}
    out = {
        "conv1.weight": hf["embeddings.patch_embedding.weight"],
        "class_embedding": hf["embeddings.class_embedding"],
        "positional_embedding": hf["embeddings.position_embedding.weight"],
        "ln_pre.weight": hf["pre_layrnorm.weight"],
        "ln_pre.bias": hf["pre_layrnorm.bias"],
        "ln_post.weight": hf["post_layernorm.weight"],
        "ln_post.bias": hf["post_layernorm.bias"],
    }
    layers = sorted({int(name.split(".")[2]) for name in hf if name.startswith("encoder.layers.")})
    for i in layers:
        old, new = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[new + f"attn.in_proj_{kind}"] = torch.cat(
                [hf[old + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            )
            out[new + f"attn.out_proj.{kind}"] = hf[old + f"self_attn.out_proj.{kind}"]
            out[new + f"ln_1.{kind}"] = hf[old + f"layer_norm1.{kind}"]
            out[new + f"ln_2.{kind}"] = hf[old + f"layer_norm2.{kind}"]
            out[new + f"mlp.c_fc.{kind}"] = hf[old + f"mlp.fc1.{kind}"]
            out[new + f"mlp.c_proj.{kind}"] = hf[old + f"mlp.fc2.{kind}"]
    return out


def import_openai_clip() -> None:
    """OpenAI's `clip` package. Its loader module imports `packaging` through setuptools' pkg_resources, which
    today's setuptools no longer ships: where it is missing, a stand-in module hands it the `packaging` library."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)
    try:
        import clip  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"pip install openai-clip: the reference imports OpenAI's clip package ({error})") from None


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import conf, prepare_reference, tiny_model, tiny_pipeline

    prepare_reference(
        __doc__, "cure-lab/PnPInversion", "/tmp/sd-ref", REFERENCE_COMMIT,
        ("run_editing_stylediffusion.py", SD, "utils"), ("models", SD, "utils"), PATCHES,
    )  # fmt: skip
    torch.set_num_threads(2)
    import_openai_clip()
    for name in ("cv2", "IPython", "IPython.display"):  # imported by ptp_utils_v for drawing and notebooks only
        stub = sys.modules.setdefault(name, types.ModuleType(name))
        stub.display = lambda *a, **k: None

    from diffusers import StableDiffusionPipeline

    from inversions.stylediffusion import _load_image_encoder

    tiny = tiny_model()
    settings = conf("inversion/stylediffusion")["image_encoder"]
    settings = settings | {
        "backbone": "tiny",
        "tiny": settings["tiny"] | {"config": settings["tiny"]["config"] | ENCODER},
    }
    hf_encoder = _load_image_encoder(settings, 32).network
    state = openai_vision_state(hf_encoder.state_dict())
    models = types.ModuleType(MODELS)

    def clip_load(name, device):
        from clip.clip import _transform
        from models.stylediffusion.clip_util import VisionTransformer

        config = hf_encoder.config
        visual = VisionTransformer(
            input_resolution=config.image_size,
            patch_size=config.patch_size,
            width=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            output_dim=config.hidden_size,
        )
        missing, unexpected = visual.load_state_dict(state, strict=False)
        assert missing == ["proj"] and not unexpected, (missing, unexpected)  # proj: unused, every token is kept
        model = types.SimpleNamespace(visual=visual.to(device), dtype=torch.float32)
        model.encode_image = lambda image: model.visual(image.type(model.dtype))
        return model, _transform(config.image_size)  # clip.load's preprocessing

    models.clip_load = clip_load
    sys.modules[MODELS] = models

    def from_pretrained(cls, *_, scheduler, **__):
        return tiny_pipeline(tiny, scheduler)

    StableDiffusionPipeline.from_pretrained = classmethod(from_pretrained)
    import models.stylediffusion.ptp_utils_v as ptp
    import run_editing_stylediffusion as script
    from models.stylediffusion import inversion, utils

    script.txt_draw = lambda text, target_size=(512, 512): np.zeros((target_size[1], target_size[0], 3), np.uint8)
    seen: dict[str, list] = {"steps": [], "adam": [], "ddim": [], "initial": [], "first_gradient": []}
    trainers = []

    class CountedAdam(torch.optim.Adam):
        def __init__(self, params, *a, **k):
            params = list(params)
            super().__init__(params, *a, **k)
            seen["adam"].append(0)

        def step(self, *a, **k):
            if not seen["adam"][-1] and len(seen["adam"]) == 1:  # the first step: the gradient at the initial network
                seen["first_gradient"].append(torch.cat([p.grad.flatten() for p in self.param_groups[0]["params"]]))
            seen["adam"][-1] += 1
            return super().step(*a, **k)

    inversion.Adam = CountedAdam
    ddim_loop = inversion.VaeInversion.ddim_loop

    def recorded_loop(self, latent, trainer=None):
        out = ddim_loop(self, latent, trainer)
        seen["ddim"].append(torch.cat(out))
        return out

    inversion.VaeInversion.ddim_loop = recorded_loop
    optimization = inversion.VaeInversion.optimization

    def recorded_optimization(self, trainer, *a, **k):
        seen["initial"].append({k: v.detach().clone() for k, v in trainer.embedding[0].state_dict().items()})
        trainers.append(trainer)
        return optimization(self, trainer, *a, **k)

    inversion.VaeInversion.optimization = recorded_optimization
    diffusion_step = ptp.diffusion_step

    def recorded_step(*a, **k):
        out = diffusion_step(*a, **k)
        seen["steps"].append(out.detach().clone())
        return out

    ptp.diffusion_step = script.ptp_utils_v.diffusion_step = recorded_step
    del utils

    from pie_bench import edit_class_lookup, load_benchmark

    samples = {s.id: s for s in load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv"))).samples}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for sample_id in SAMPLES:
        sample = samples[sample_id]
        for kept in seen.values():
            kept.clear()
        torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # the script's setup_seed()
        shown = script.edit_image_stylediffusion_p2p(  # the arguments of the script's __main__
            image_path=[str(sample.image_file)],
            prompt_src=sample.source_prompt,
            prompt_tar=sample.target_prompt,
            guidance_scale=7.5,
            cross_replace_steps=0.4,
            self_replace_steps=0.6,
            blend_word=None,
            eq_params=None,
            is_replace_controller=False,
            num_inner_steps=100,
            num_epoch=1,
            tau_v=0.5,
            tau_c=0.6,
            tau_s=0.6,
            tau_u=0.0,
        )
        trainer = trainers[-1]
        tokens = trainer.encode_images(trainer.image).to(torch.float32)
        modulation = []
        with torch.no_grad():
            for network in trainer.embedding:  # in training mode, as forward_embed applies them
                out = tokens
                for block in network.values():
                    out = block(out)
                modulation.append(out)
        assert len(seen["steps"]) == 2 * STEPS  # the reconstruction run, then the edit
        case = f"stylediffusion_p2p_{sample_id}"
        torch.save(
            {
                "reference": f"cure-lab/PnPInversion@{REFERENCE_COMMIT}, run_editing_stylediffusion.py, patches: "
                + ", ".join(sorted({why.split(":")[0] for *_, why in PATCHES})),
                "method": "stylediffusion+p2p",
                "sample": sample_id,
                "steps": STEPS,
                "image_encoder": ENCODER,
                "initial_network": seen["initial"][0],  # the first step's mapping network before training
                "tokens": tokens,
                "trajectory": seen["ddim"][0],  # (steps + 1, 4, h, w): z*_0 … z*_T
                # the gradient of the first step's loss (latents and attention maps) at the initial network
                "first_gradient": seen["first_gradient"][0],
                "modulation": torch.cat(modulation),  # (steps, 154, width): scale rows, then shift rows
                "adam_steps": list(seen["adam"]),
                "steps_latents": torch.stack(seen["steps"][STEPS:]),  # (steps, 2, 4, h, w): source, target
                "edited_image_crop": torch.from_numpy(np.asarray(shown)[:, 3 * 512 :][CROP].copy()),
            },
            GOLDEN / f"{case}.pt",
        )
        print("wrote", GOLDEN / f"{case}.pt", "Adam steps", seen["adam"])


if __name__ == "__main__":
    main()
