"""The real metric backbones' architectures with seeded random weights, saved where and how a user's machine keeps
the real ones, so that the real loading code and the real-size metric paths run without the weights.

    python benchmarks/metric_backbones.py --hf-home /tmp/hf --torch-home /tmp/torch --clip-path /tmp/clip
    HF_HOME=/tmp/hf TORCH_HOME=/tmp/torch python launch.py metrics.backbones=real metrics.clip.path=/tmp/clip

- DINO ViT-B/8 (`facebook/dino-vitb8`'s config) in a Hugging Face cache folder, as `hf download` leaves it
  (`<HF_HOME>/hub/models--facebook--dino-vitb8/snapshots/<revision>/`, `refs/main` naming the revision);
- CLIP ViT-L/14 (`openai/clip-vit-large-patch14`'s config, its image processor and CLIP's tokenizer) in a plain
  folder for `metrics.clip.path` (and, with --clip-in-cache, in the Hugging Face cache too);
- LPIPS's SqueezeNet 1.1 trunk as torchvision's ImageNet checkpoint in torch hub's cache
  (`<TORCH_HOME>/hub/checkpoints/squeezenet1_1-b8a52dc0.pth`); LPIPS's linear layers ship with the `lpips` package.

Each is marked as random (`invbench_random_weights` in the config, a `.invbench-random` file beside the checkpoint),
and the loaders name that in every row's `metrics_setup`: values scored with these backbones mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REVISION = "0" * 40  # a snapshot name as the hub gives one
MARK = "invbench_random_weights"

DINO_VITB8 = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
              "image_size": 224, "patch_size": 8, "qkv_bias": True, "layer_norm_eps": 1e-12}  # fmt: skip
CLIP_VITL14_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": 768,
                    "hidden_act": "quick_gelu"}  # fmt: skip
CLIP_VITL14_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "projection_dim": 768,
                      "hidden_act": "quick_gelu"}  # fmt: skip


def hub_snapshot(hf_home: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in a Hugging Face cache, with refs/main pointing at it."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def write_dino(folder: Path, seed: int = 0) -> None:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    vit = ViTModel(ViTConfig(**DINO_VITB8, **{MARK: True}), add_pooling_layer=False)
    vit.save_pretrained(folder)


def write_clip(folder: Path, seed: int = 0) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    sys.path.insert(0, str(ROOT))
    from invbench.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    clip = CLIPModel(CLIPConfig(text_config=CLIP_VITL14_TEXT, vision_config=CLIP_VITL14_VISION, projection_dim=768,
                                **{MARK: True}))  # fmt: skip
    clip.save_pretrained(folder)
    processor = CLIPImageProcessor(  # openai/clip-vit-large-patch14's preprocessor_config.json
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3,
    )  # fmt: skip
    processor.save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)


def write_lpips_trunk(torch_home: Path, seed: int = 0) -> Path:
    import torchvision

    torch.manual_seed(seed)
    url = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1.url
    path = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    path.with_name(path.name + ".invbench-random").write_text("random weights: a loading rehearsal\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hf-home", type=Path, required=True)
    parser.add_argument("--torch-home", type=Path, required=True)
    parser.add_argument("--clip-path", type=Path, required=True, help="a folder for metrics.clip.path")
    parser.add_argument("--clip-in-cache", action="store_true", help="also put CLIP in the Hugging Face cache")
    args = parser.parse_args(argv)
    write_dino(hub_snapshot(args.hf_home, "facebook/dino-vitb8"))
    write_clip(args.clip_path)
    if args.clip_in_cache:
        write_clip(hub_snapshot(args.hf_home, "openai/clip-vit-large-patch14"))
    trunk = write_lpips_trunk(args.torch_home)
    print(json.dumps({"HF_HOME": str(args.hf_home), "TORCH_HOME": str(args.torch_home),
                      "metrics.clip.path": str(args.clip_path), "lpips trunk": str(trunk)}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
