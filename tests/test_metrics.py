"""The PIE-Bench metrics: hand-computed values, the NaN and border rules, metric invariants, the reference's JPEG
and composite handling, backbone selection, and parity with the torchmetrics implementation the reference uses."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from conftest import conf_file
from PIL import Image

from invbench.errors import ConfigError, ModelNotAvailableError
from metrics.background import pixel_metrics, unedited_part_metrics
from metrics.clip_similarity import ClipSimilarity, load_clip
from metrics.perceptual import load_lpips
from metrics.pie_bench import reference_jpeg_round_trip
from metrics.structure_distance import StructureDistance, load_dino
from pie_bench import decode_mask

CPU = torch.device("cpu")
CONFIG = conf_file("metrics/pie_bench.yaml")


@pytest.fixture(scope="module")
def lpips_network():
    return load_lpips(CONFIG["lpips"], "tiny").network.eval()


@pytest.fixture(scope="module")
def structure():
    dino = load_dino(CONFIG["structure"], "tiny").network
    return StructureDistance(dino, -1, 224, 480, input_255=True, antialias=False, device=CPU)


@pytest.fixture(scope="module")
def clip():
    return ClipSimilarity(*load_clip(CONFIG["clip"], "tiny").network, device=CPU)


def photo(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random colour image (uint8 H×W×3)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def test_masked_psnr_and_mse_match_hand_computation(lpips_network):
    source = np.full((64, 64, 3), 100, np.uint8)
    edited = source.copy()
    mask = np.zeros((64, 64), bool)
    mask[:4] = True  # 256 edited pixels: whatever happens there is not scored
    edited[:4] = 250
    edited[10, 3:8] = 110  # 5 unedited pixels off by 10 levels in all 3 channels
    values = unedited_part_metrics(source, edited, mask, lpips_network)
    mse = 5 * 3 * (10 / 255) ** 2 / (3 * 64 * 64)  # zeroed pixels stay in the mean: divide by all 3·64·64 values
    assert values["mse_unedit_part"] == pytest.approx(mse, rel=1e-5)
    assert values["psnr_unedit_part"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)


def test_ssim_of_constant_images_matches_the_closed_form(lpips_network):
    a, b = 100 / 255, 150 / 255
    values = pixel_metrics(np.full((32, 32, 3), 100, np.uint8), np.full((32, 32, 3), 150, np.uint8), lpips_network)
    c1 = 0.01**2  # no variance anywhere: SSIM reduces to its luminance term
    # float32 as the reference computes it; the variance terms' cancellation error is ~2e-4 relative
    assert values["ssim"] == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=5e-4)


def test_nothing_unedited_gives_nan(lpips_network):
    values = unedited_part_metrics(photo(0), photo(1), np.ones((64, 64), bool), lpips_network)
    assert set(values) == {"psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part"}
    assert all(math.isnan(v) for v in values.values())


def test_border_frame_counts_as_edited(lpips_network):
    mask = decode_mask([], shape=(64, 64))  # no annotated region: only the forced 1-pixel frame
    source = photo(0)
    edited = source.copy()
    edited[0], edited[-1], edited[:, 0], edited[:, -1] = 0, 255, 17, 200
    values = unedited_part_metrics(source, edited, mask, lpips_network)
    # both images are zero outside the frame after masking, so their difference is exactly 0 (x − x in IEEE)
    assert values["mse_unedit_part"] == 0 and values["psnr_unedit_part"] == math.inf
    assert values["ssim_unedit_part"] == pytest.approx(1.0) and values["lpips_unedit_part"] == pytest.approx(
        0, abs=1e-7
    )
    edited[1, 1] += 1  # one pixel inside the frame is scored
    assert unedited_part_metrics(source, edited, mask, lpips_network)["mse_unedit_part"] > 0


def test_lpips_is_zero_on_identical_images_and_symmetric(lpips_network):
    a, b = photo(0), photo(1)
    assert pixel_metrics(a, a, lpips_network)["lpips"] == pytest.approx(0, abs=1e-7)
    ab, ba = pixel_metrics(a, b, lpips_network)["lpips"], pixel_metrics(b, a, lpips_network)["lpips"]
    assert ab > 0 and ab == pytest.approx(ba, rel=1e-6)


def test_lpips_equals_torchmetrics_for_the_same_weights(lpips_network):
    """The reference scores with torchmetrics' LPIPS; ours (the lpips package) gives the same number."""
    from torchmetrics.functional.image import lpips as tm_lpips
    from torchmetrics.image import lpip

    # torchmetrics cannot build an offline trunk; give it a random one, then load our weights into it.
    original = lpip._NoTrainLpips
    lpip._NoTrainLpips = functools.partial(tm_lpips._NoTrainLpips, pnet_rand=True)
    try:
        reference = lpip.LearnedPerceptualImagePatchSimilarity(net_type="squeeze")
    finally:
        lpip._NoTrainLpips = original
    ours_state = {name: value for name, value in lpips_network.state_dict().items() if "scaling" not in name}
    theirs_state = reference.net.state_dict()  # same layers in the same order, named differently
    assert [v.shape for v in ours_state.values()] == [v.shape for v in theirs_state.values()]
    heads = [name for name in theirs_state if name.startswith("lin")]
    shipped = dict(zip(theirs_state, ours_state.values()))
    assert all(torch.equal(theirs_state[name], shipped[name]) for name in heads)  # both ship the same heads
    reference.net.load_state_dict(shipped)  # and now the same (random) trunk
    a, b = (torch.tensor(photo(s)).permute(2, 0, 1)[None].float() / 255 for s in (0, 1))
    ours = lpips_network(a * 2 - 1, b * 2 - 1).item()
    assert ours == pytest.approx(reference(a * 2 - 1, b * 2 - 1).item(), rel=1e-5)


def test_structure_distance_is_zero_on_identical_images_and_symmetric(structure):
    a, b = photo(0, 512), photo(1, 512)
    assert structure(a, a) == 0  # the same image through the same network twice: identical features, exact 0
    assert structure(a, b) > 0 and structure(a, b) == pytest.approx(structure(b, a), rel=1e-6)
    similarity = structure.self_similarity(a)
    assert similarity.shape == (785, 785)  # CLS + 28×28 patches of 8 px at 224²
    assert torch.allclose(similarity.diagonal(), torch.ones(785), atol=1e-5)


def test_structure_distance_reference_quirks_change_the_value():
    dino = load_dino(CONFIG["structure"], "tiny").network
    a, b = photo(0, 512), photo(1, 512)
    quirky = StructureDistance(dino, -1, 224, 480, input_255=True, antialias=False, device=CPU)(a, b)
    corrected = StructureDistance(dino, -1, 224, 480, input_255=False, antialias=True, device=CPU)(a, b)
    assert quirky != pytest.approx(corrected, rel=1e-3)


def test_clip_similarity_of_identical_inputs_is_100(clip):
    image = photo(0, 224)
    assert clip("a cat on a mat", "a cat on a mat") == pytest.approx(100, abs=1e-3)
    assert clip(image, image) == pytest.approx(100, abs=1e-3)
    assert 0 <= clip(image, "a cat on a mat") <= 100  # max(100·cos, 0)


def test_jpeg_emulation_equals_the_reference_composite_saved_as_jpg(tmp_path):
    """Our strip [source | reconstruction | edited] decodes exactly like the reference's 2048×512 composite."""
    text, source, reconstruction, edited = (photo(seed, 512) for seed in range(4))
    path = tmp_path / "000000000000.jpg"
    Image.fromarray(np.concatenate([text, source, reconstruction, edited], axis=1)).save(path)
    composite = np.asarray(Image.open(path).convert("RGB"))
    _, reconstruction_read, edited_read = reference_jpeg_round_trip([source, reconstruction, edited])
    assert np.array_equal(edited_read, composite[:, 1536:]) and np.array_equal(
        reconstruction_read, composite[:, 1024:1536]
    )
    assert not np.array_equal(edited_read, edited)  # and it is lossy


def test_reference_composite_cropping():
    from orchestration.evaluation import split_reference_composite

    panels = [np.full((512, 512, 3), value, np.uint8) for value in (10, 20, 30, 40)]
    edited, reconstruction = split_reference_composite(np.concatenate(panels, axis=1))
    assert (edited == 40).all() and (reconstruction == 30).all()
    panels[2] = np.zeros_like(panels[2])  # model-based methods leave the reconstruction panel black
    assert split_reference_composite(np.concatenate(panels, axis=1))[1] is None
    square = photo(0, 512)
    assert split_reference_composite(square)[0] is square
    with pytest.raises(ValueError, match="no 512×512 panel"):
        split_reference_composite(np.zeros((256, 1024, 3), np.uint8))


def test_missing_real_backbone_fails_clearly_in_real_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match="never downloads.*squeezenet1_1"):
        load_lpips(CONFIG["lpips"], "real")
    with pytest.raises(ModelNotAvailableError, match="metrics.structure.path"):
        load_dino({**CONFIG["structure"], "path": str(tmp_path / "nothing")}, "real")
    assert not load_lpips(CONFIG["lpips"], "auto").real  # auto falls back, and says so in the description
    assert "random trunk" in load_lpips(CONFIG["lpips"], "auto").description
    with pytest.raises(ConfigError, match="metrics.backbones='sometimes'"):
        load_lpips(CONFIG["lpips"], "sometimes")


def test_real_loaders_read_local_folders_and_the_torch_cache(tmp_path, monkeypatch):
    """The real-backbone path, with locally saved (random) weights standing in for the cached real ones."""
    import torchvision

    dino = load_dino(CONFIG["structure"], "tiny").network
    dino.save_pretrained(tmp_path / "dino")
    loaded = load_dino({**CONFIG["structure"], "path": str(tmp_path / "dino")}, "real")
    assert loaded.real and loaded.description == str(tmp_path / "dino")
    assert loaded.network.config.layer_norm_eps == 1e-6  # DINO's own value, over whatever the config file says
    assert all(torch.equal(a, b) for a, b in zip(dino.state_dict().values(), loaded.network.state_dict().values()))

    clip_model, processor = load_clip(CONFIG["clip"], "tiny").network
    clip_model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    loaded_clip = load_clip({**CONFIG["clip"], "path": str(tmp_path / "clip")}, "real")
    similarity = ClipSimilarity(*loaded_clip.network, device=CPU)
    assert loaded_clip.real and similarity("a red car", "a red car") == pytest.approx(100, abs=1e-3)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    checkpoint.parent.mkdir(parents=True)
    trunk = torchvision.models.squeezenet1_1()
    torch.save(trunk.state_dict(), checkpoint)
    loaded_lpips = load_lpips(CONFIG["lpips"], "real")
    assert loaded_lpips.real and loaded_lpips.description == "lpips-squeeze"
    assert torch.equal(loaded_lpips.network.net.slice1[0].weight, trunk.features[0].weight)


def test_source_features_are_computed_once_per_source_and_give_the_same_values(sample, monkeypatch):
    """A sweep scores each sample once per job: DINO's view of the source and its CLIP score against the source
    prompt are computed the first time only, and the values equal computing them again; past the budget nothing more
    is kept."""
    from metrics import METRICS
    from metrics.pie_bench import SourceFeatures

    suite = METRICS.build(CONFIG | {"backbones": "tiny"})
    suite.load(CPU)
    fresh = METRICS.build(CONFIG | {"backbones": "tiny"})
    fresh.load(CPU)
    edited, other = photo(1, 512), photo(2, 512)
    first = suite.score(sample, edited, None, lossless=True)
    calls = []
    original = StructureDistance.self_similarity
    monkeypatch.setattr(
        StructureDistance, "self_similarity", lambda self, image: calls.append(1) or original(self, image)
    )
    again = suite.score(sample, other, None, lossless=True)
    assert len(calls) == 1  # the edit's only: the source's came from the first call
    expected = fresh.score(sample, other, None, lossless=True)
    assert again == pytest.approx(expected, rel=1e-6)  # the same computation; reused, not recomputed
    assert first["clip_similarity_source_image"] == pytest.approx(expected["clip_similarity_source_image"], rel=1e-6)

    tiny = SourceFeatures(budget_mb=1e-6)
    computed = []
    for _ in range(2):
        tiny.get(edited, "p", lambda: computed.append(1) or (torch.zeros(4, 4), 0.5))
    assert len(computed) == 2 and tiny.used_bytes == 0  # over the budget: computed each time, nothing kept
