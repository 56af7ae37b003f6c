"""Train the embedded toy model (`model=toy`): Stable Diffusion's architecture at toy width, trained on a handful of
photographs on two CPU cores, so that the demo reconstructs the user's photo instead of printing noise.

    python benchmarks/train_toy.py                        # the committed weights: invbench/embedded/toy.*
    python benchmarks/train_toy.py --out /tmp/toy         # the same run elsewhere, to compare with them
    python benchmarks/train_toy.py --out /tmp/t --vae-steps 20 --unet-steps 20    # a smoke run

What it trains, in the order of SD (Rombach et al., CVPR 2022):

1. the KL-VAE of conf/model/toy.yaml as an autoencoder on random crops of the photos (mean squared error, which is
   what PSNR measures, plus SD's tiny KL weight 1e-6 on the posterior, decoded from a posterior sample);
2. the VAE's scaling factor, 1 / the standard deviation of the photos' latents (SD's 0.18215 is the same for its
   VAE), so that the UNet sees unit-variance latents;
3. the text-conditioned UNet with the ε-prediction objective on those latents, noised with SD's schedule
   (scaled_linear, β 0.00085 to 0.012, 1000 steps, timesteps uniform), conditioned on each photo's caption (below)
   through a CLIP text encoder that stays as built (seeded, frozen); the caption is dropped for 10% of the examples
   (the empty prompt), as classifier-free guidance needs.

The photographs ship with the dependencies: scikit-image's sample data (including the ten of the mini benchmark)
and matplotlib's. Every random draw comes from `--seed`, so a rerun on the same machine gives the same weights, byte
for byte (measured: docs/models.md); another CPU rounds convolutions differently, so expect close metrics there, not
the same bytes.

It writes `toy.safetensors` (the UNet, the VAE and the text encoder, float32) and `toy.json` (these settings, the
sha256 of the weights, what it measured, the seconds each phase took and the machine), and prints the lines of
conf/model/toy.yaml that name the weights. This is a toy trained on a handful of photos: it reconstructs them, it
does not edit like SD.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EMBEDDED = ROOT / "invbench" / "embedded"
MODEL_CONFIG = ROOT / "conf" / "model" / "toy.yaml"

# (package, file in its sample data, caption). The mini benchmark's ten photos carry its source prompts.
PHOTOS = (
    ("skimage", "astronaut.png", "a smiling woman astronaut in an orange spacesuit in front of an american flag"),
    ("skimage", "chelsea.png", "a close-up photo of a cat with green eyes"),
    ("skimage", "moon.png", "the grey cratered surface of the moon"),
    ("skimage", "rocket.jpg", "a rocket on the launch pad between two lightning towers at dusk"),
    ("skimage", "coins.png", "rows of ancient silver coins with portraits on them"),
    ("skimage", "camera.png", "a man leaning forward behind a camera on a tripod on a lawn"),
    ("skimage", "motorcycle_left.png", "a red motorcycle parked in a garage"),
    ("skimage", "coffee.png", "a ceramic cup of coffee on a saucer with a spoon"),
    ("skimage", "retina.jpg", "a fundus photograph of a human retina on a black background"),
    ("skimage", "ihc.png", "a microscope photo of stained tissue"),
    ("skimage", "motorcycle_right.png", "a red motorcycle in a garage seen from the right"),
    ("skimage", "hubble_deep_field.jpg", "a deep field photo of many distant galaxies in black space"),
    ("skimage", "brick.png", "a grey brick wall"),
    ("skimage", "grass.png", "a close-up photo of grass"),
    ("skimage", "gravel.png", "a close-up photo of grey gravel"),
    ("skimage", "cell.png", "a microscope photo of a single cell"),
    ("skimage", "clock_motion.png", "a blurred photo of a wall clock"),
    ("matplotlib", "grace_hopper.jpg", "a portrait of a woman in a navy uniform in front of a flag"),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int = 0
    threads: int = 2
    side: int = 512  # photos are resized so that their short side is this, as the benchmark's images
    vae_steps: int = 2000
    vae_batch: int = 8
    vae_crop: int = 96  # pixels; the VAE is convolutional, crops are cheaper than whole photos
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 2000
    unet_batch: int = 16
    unet_crop: int = 32  # latent pixels (256 image pixels)
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    warmup_steps: int = 100  # both phases: linear warm-up, then cosine decay to zero


def load_photos(side: int) -> list[tuple[np.ndarray, str]]:
    """(H×W×3 uint8, caption) of each photo, resized (Lanczos) so that its short side is `side`."""
    import importlib.util

    from PIL import Image

    found = []
    for package, name, caption in PHOTOS:
        (folder,) = importlib.util.find_spec(package).submodule_search_locations
        data = {"skimage": Path(folder) / "data", "matplotlib": Path(folder) / "mpl-data" / "sample_data"}[package]
        image = Image.open(data / name).convert("RGB")
        scale = side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        found.append((np.asarray(image), caption))
    return found


def center_square(image: np.ndarray, side: int) -> np.ndarray:
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


def to_pixels(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1  # a writable copy


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def build_networks(config: dict):
    """The toy model's UNet, VAE and text encoder as conf/model/toy.yaml describes them, freshly initialised."""
    from invbench.random_sd import random_clip_text_encoder, random_unet, random_vae
    from invbench.tokenizer import build_clip_tokenizer

    untamed = {**config, "tame": {"unet_output_scale": 1.0, "vae_scaling_factor": 1.0}}
    tokenizer = build_clip_tokenizer()
    unet = random_unet(untamed, cross_attention_dim=config["text_encoder"]["hidden_size"])
    vae = random_vae(untamed)
    text_encoder = random_clip_text_encoder(untamed, config["text_encoder"], tokenizer)
    return unet, vae, text_encoder, tokenizer


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@torch.no_grad()
def round_trip(vae, image: np.ndarray) -> np.ndarray:
    """uint8 image -> posterior mean -> decoded uint8 image (as the benchmark's inversion=none does)."""
    latent = vae.encode(to_pixels(image)[None]).latent_dist.mean
    pixels = (vae.decode(latent).sample[0] / 2 + 0.5).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(1, 2, 0).numpy()


class Descent:
    """AdamW on one network: per step the learning rate of `learning_rate`, gradients clipped to norm 1, the loss
    kept, and the mean of the last 100 logged every 100 steps."""

    def __init__(self, phase: str, network: torch.nn.Module, steps: int, peak: float, warmup: int, log) -> None:
        self.phase, self.network, self.steps, self.peak, self.warmup, self.log = (
            phase,
            network,
            steps,
            peak,
            warmup,
            log,
        )
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=peak, weight_decay=0.0)
        self.losses: list[float] = []

    def step(self, step: int, loss: torch.Tensor) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, self.steps, self.peak, self.warmup)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
        self.optimizer.step()
        self.losses.append(loss.item())
        if step % 100 == 0 or step == self.steps - 1:
            self.log(f"{self.phase} step {step}/{self.steps}: loss {np.mean(self.losses[-100:]):.5f}")


def sd_noise_schedule():
    """SD v1.x's training noise schedule (its scheduler_config.json): scaled_linear β from 0.00085 to 0.012."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def train_vae(vae, photos, settings: Settings, generator: torch.Generator, log) -> list[float]:
    pixels = [to_pixels(image) for image, _ in photos]
    with torch.no_grad():  # the posterior's log-variance starts at -10 (std 0.007), not at ~0 (std 1): noise of
        half = vae.quant_conv.out_channels // 2  # std 1 on unit-scale latents buries the reconstruction signal,
        vae.quant_conv.weight[half:] *= 0.01  # and a KL weight of 1e-6 takes thousands of steps to shrink it
        vae.quant_conv.bias[half:] = -10.0
    descent = Descent("vae", vae, settings.vae_steps, settings.vae_lr, settings.warmup_steps, log)
    vae.train()
    for step in range(settings.vae_steps):
        crops = []
        for _ in range(settings.vae_batch):
            image = pixels[int(torch.randint(len(pixels), (1,), generator=generator))]
            top = int(torch.randint(image.shape[1] - settings.vae_crop + 1, (1,), generator=generator))
            left = int(torch.randint(image.shape[2] - settings.vae_crop + 1, (1,), generator=generator))
            crop = image[:, top : top + settings.vae_crop, left : left + settings.vae_crop]
            crops.append(crop.flip(2) if torch.rand((), generator=generator) < 0.5 else crop)
        batch = torch.stack(crops)
        posterior = vae.encode(batch).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        decoded = vae.decode(posterior.mean + posterior.std * noise).sample
        loss = torch.nn.functional.mse_loss(decoded, batch) + settings.kl_weight * posterior.kl().mean()
        descent.step(step, loss)
    vae.eval()
    return descent.losses


def train_unet(unet, latents, conditioning, empty, settings: Settings, generator: torch.Generator, log) -> list[float]:
    """ε-prediction on random crops of the photos' latents (and their mirror images), SD's noise schedule."""
    schedule = sd_noise_schedule()
    descent = Descent("unet", unet, settings.unet_steps, settings.unet_lr, settings.warmup_steps, log)
    unet.train()
    crop = settings.unet_crop
    for step in range(settings.unet_steps):
        picks = torch.randint(len(latents), (settings.unet_batch,), generator=generator).tolist()
        crops, texts = [], []
        for pick in picks:
            latent = latents[pick]
            top = int(torch.randint(latent.shape[1] - crop + 1, (1,), generator=generator))
            left = int(torch.randint(latent.shape[2] - crop + 1, (1,), generator=generator))
            crops.append(latent[:, top : top + crop, left : left + crop])
            texts.append(
                empty if torch.rand((), generator=generator) < settings.caption_dropout else conditioning[pick]
            )
        clean, text = torch.stack(crops), torch.cat(texts)
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(1000, (len(picks),), generator=generator)
        predicted = unet(schedule.add_noise(clean, noise, timesteps), timesteps, encoder_hidden_states=text).sample
        loss = torch.nn.functional.mse_loss(predicted, noise)
        descent.step(step, loss)
    unet.eval()
    return descent.losses


@torch.no_grad()
def noise_prediction_std(unet, latents, conditioning, timesteps=(100, 500, 900), seed: int = 0) -> dict[int, float]:
    """The standard deviation of ε̂(z_t, t, c) on the photos' noised latents: ≈ 1 for a trained ε-model."""
    schedule = sd_noise_schedule()
    generator = torch.Generator().manual_seed(seed)
    found = {}
    for t in timesteps:
        stds = []
        for latent, text in zip(latents[:4], conditioning[:4]):
            noise = torch.randn(latent[None].shape, generator=generator)
            noised = schedule.add_noise(latent[None], noise, torch.tensor([t]))
            stds.append(float(unet(noised, t, encoder_hidden_states=text).sample.std()))
        found[t] = float(np.mean(stds))
    return found


def sha256(path: Path) -> str:
    from invbench.digests import sha256 as file_sha256

    return file_sha256(path.read_bytes())


FIRST_LOSSES = 50  # recorded per phase: a rerun's first steps are checked against them (tests/test_toy_model.py)


def train(settings: Settings, out: Path, log=print, evaluate: bool = True, vae_from: Path | None = None) -> dict:
    """Train, write `toy.safetensors` and `toy.json` into `out`, and return the record. `evaluate=False` leaves
    out the measurements (a quick check of the first steps); `vae_from`: take the VAE from those weights instead of
    training it (each phase draws from its own seeded generator, so the UNet's training is the same either way)."""
    from safetensors.torch import save_file

    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    vae_generator = torch.Generator().manual_seed(settings.seed)
    unet_generator = torch.Generator().manual_seed(settings.seed + 1)
    config = yaml.safe_load(MODEL_CONFIG.read_text())
    unet, vae, text_encoder, tokenizer = build_networks(config)
    text_encoder.requires_grad_(False).eval()
    photos = load_photos(settings.side)
    started = time.perf_counter()

    if vae_from is None:
        vae_losses = train_vae(vae, photos, settings, vae_generator, log)
    else:
        from safetensors.torch import load_file

        vae.load_state_dict({key[4:]: value for key, value in load_file(str(vae_from)).items() if key[:4] == "vae."})
        vae.eval()
        vae_losses = []
    vae_seconds = time.perf_counter() - started
    squares = [center_square(image, settings.side) for image, _ in photos]
    with torch.no_grad():
        means = [vae.encode(to_pixels(square)[None]).latent_dist.mean[0] for square in squares]
    scaling_factor = float(1 / torch.stack(means).std())
    mirrored = [mean.flip(2) for mean in means]
    latents = [latent * scaling_factor for latent in means + mirrored]

    def encode(prompt: str) -> torch.Tensor:
        ids = tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return text_encoder(ids)[0]

    captions = [caption for _, caption in photos]
    conditioning = [encode(caption) for caption in captions + captions]
    unet_losses = train_unet(unet, latents, conditioning, encode(""), settings, unet_generator, log)
    total_seconds = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    weights = out / "toy.safetensors"
    vae.config.scaling_factor = scaling_factor  # recorded in toy.json and conf/model/toy.yaml
    tensors = {f"{name}.{key}": value.detach().contiguous()
               for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))
               for key, value in module.state_dict().items()}  # fmt: skip
    save_file(tensors, str(weights), metadata={"model": "toy", "trained_by": "benchmarks/train_toy.py"})
    record = {
        "model": "toy",
        "what": "a toy trained on a handful of photos: it reconstructs them, it does not edit like SD",
        "weights": weights.name,
        "sha256": sha256(weights),
        "bytes": weights.stat().st_size,
        "parameters": {
            name: sum(p.numel() for p in module.parameters())
            for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))
        },
        "vae_scaling_factor": scaling_factor,
        "settings": dataclasses.asdict(settings),
        "photos": [{"package": package, "file": name, "caption": caption} for package, name, caption in PHOTOS],
        "first_losses": {"vae": vae_losses[:FIRST_LOSSES], "unet": unet_losses[:FIRST_LOSSES]},
        "final_losses": {
            "vae": float(np.mean(vae_losses[-100:] or [np.nan])),
            "unet": float(np.mean(unet_losses[-100:] or [np.nan])),
        },
        "seconds": {"vae": round(vae_seconds, 1), "total": round(total_seconds, 1)},
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": settings.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    if evaluate:
        reconstructions = {name: psnr(square, round_trip(vae, square))
                           for (_, name, _), square in zip(PHOTOS, squares)}  # fmt: skip
        record["measured"] = {
            "vae_round_trip_psnr_db": reconstructions,
            "vae_round_trip_psnr_db_mean": float(np.mean(list(reconstructions.values()))),
            "noise_prediction_std": noise_prediction_std(unet, latents, conditioning),
        }
    (out / "toy.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {weights} ({record['bytes'] / 1e6:.1f} MB, sha256 {record['sha256']}) and {out / 'toy.json'}")
    if evaluate:
        log(f"VAE round trip {record['measured']['vae_round_trip_psnr_db_mean']:.2f} dB on average; "
            f"noise prediction std {record['measured']['noise_prediction_std']}; {total_seconds / 60:.1f} min")  # fmt: skip
    log(f"conf/model/toy.yaml: sha256: {record['sha256']}, vae_scaling_factor: {scaling_factor:.6g}")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED, help="where toy.safetensors and toy.json go")
    for field in dataclasses.fields(Settings):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = parser.parse_args(argv)
    settings = Settings(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Settings)})
    train(settings, args.out, log=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True))


if __name__ == "__main__":
    main()
