"""The published tables (reports/published/): each parses with our columns and scales, every row mapped to the
registry names a pair that composes on its model, comparisons show the model and step count of both sides and name
every difference, and docs/published_values.md is what the tables give."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import CONF, REPO, run
from omegaconf import OmegaConf

from invbench.errors import ConfigError
from reports.paper import paper_table, prepare
from reports.published import (
    DESCRIBING,
    PUBLISHED_COLUMNS,
    compare_with_published,
    differences,
    list_published,
    load_published,
    our_setups,
    published_values_markdown,
    table_names,
)

TABLES = ["fireflow_v1_table4", "fireflow_v1_table6", "pnpinversion_table1", "todinv_table1",
          "uniedit_flow_pie_flux_sd3", "uniedit_flow_pie_sdxl"]  # fmt: skip
# the range each column can hold at PIE-Bench's printed scales (structure ×1e3, LPIPS ×1e3, MSE ×1e4, SSIM ×1e2,
# CLIP ×100): a value outside is a column shifted by a factor of 10 or 100, or one put in the wrong column
SCALES = {
    "structure_distance": (0, 300),
    "psnr_unedit_part": (10, 40),
    "lpips_unedit_part": (10, 400),
    "mse_unedit_part": (5, 800),
    "ssim_unedit_part": (40, 100),
    "clip_similarity_target_image": (15, 40),
    "clip_similarity_target_image_edit_part": (15, 40),
    "total_seconds": (0, 1000),
}
NOT_IN_THE_REGISTRY = {"sdxl_turbo": "sdxl"}  # models a paper used that we have no configuration for: their family
REAL_MODEL_OF = {"sd": "sd14", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}


def test_every_shipped_table_is_listed():
    assert table_names() == TABLES
    listed = list_published()
    assert list(listed["table"]) == TABLES and (listed["rows"] > 0).all()
    assert listed.set_index("table").loc["fireflow_v1_table4", "paper"].startswith("FireFlow: Fast Inversion")
    assert "flux" in listed.set_index("table").loc["uniedit_flow_pie_flux_sd3", "models"]


@pytest.mark.parametrize("name", TABLES)
def test_each_table_has_our_columns_at_our_scales(name):
    frame, source = load_published(name)
    assert source.startswith("Paper:") and "Source:" in source
    assert set(PUBLISHED_COLUMNS.values()) | set(DESCRIBING) <= set(frame.columns)
    for column, (low, high) in SCALES.items():
        values = frame[column].dropna()
        assert values.between(low, high).all(), (column, values[~values.between(low, high)].tolist())
    assert frame["registry_match"].isin(["yes", "partial", "no"]).all()
    models = set(frame["model"]) - {"-"} - set(NOT_IN_THE_REGISTRY)
    assert all((CONF / "model" / f"{model}.yaml").is_file() for model in models), models
    assert frame["paper_method"].ne("-").all()  # every row keeps the label the paper prints


def mapped_rows() -> list[tuple[str, int, dict]]:
    cases = []
    for name in TABLES:
        frame, _ = load_published(name)
        for index, row in frame.iterrows():
            if row["registry_match"] != "no":
                cases.append((name, index, row.to_dict()))
    return cases


@pytest.mark.parametrize(("name", "index", "row"), mapped_rows(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_mapped_row_composes_on_its_model(name, index, row, compose):
    """A row mapped to the registry (registry_match yes or partial) names a pair the pre-launch checks accept, on the
    row's model where we have it (else on a model of the pair's first family)."""
    from orchestration.job_config import check_job_config

    overrides = [f"inversion={row['inversion']}", f"editor={row['editor']}"]
    if row["model"] in NOT_IN_THE_REGISTRY:  # its family's model of ours
        overrides.append(f"model={REAL_MODEL_OF[NOT_IN_THE_REGISTRY[row['model']]]}")
    elif row["model"] == "-":  # a model of a family both methods support
        from editors import EDITORS
        from inversions import INVERSIONS

        built = compose(*overrides)
        families = INVERSIONS.get(OmegaConf.to_container(built.inversion)["name"]).families
        families &= EDITORS.get(OmegaConf.to_container(built.editor)["name"]).families
        overrides.append(f"model={next(REAL_MODEL_OF[f] for f in REAL_MODEL_OF if f in families)}")
    else:
        overrides.append(f"model={row['model']}")
    config = OmegaConf.to_container(compose(*overrides), resolve=True)
    from inversions import INVERSIONS

    supported = INVERSIONS.get(config["inversion"]["name"]).families
    if config["model"]["family"] not in supported:
        # the paper ran the method on a family ours does not support: the row must say so, and the pair runs on ours
        assert row["registry_match"] == "partial" and "runs on" in row["note"], (name, index, row)
        config = OmegaConf.to_container(
            compose(*overrides[:2], f"model={REAL_MODEL_OF[min(supported)]}"), resolve=True
        )
    try:
        check_job_config(config)
    except ConfigError as error:
        pytest.fail(f"{name} row {index} ({row['paper_method']}): {' '.join(overrides)} is refused: {error}")


def test_the_methods_page_is_what_the_tables_give():
    page = (REPO / "docs" / "published_values.md").read_text(encoding="utf-8")
    assert page == published_values_markdown(), (
        "regenerate: python -m reports.published --docs docs/published_values.md"
    )
    # the known disagreement: DDIM + PnP's background LPIPS is 113.46 in PnPInversion's table, 113.33 in TODInv's
    assert "113.46 in pnpinversion_table1 (sd15, - steps); 113.33 in todinv_table1 (sd14, 50 steps)" in page
    # FireFlow's structure distance printed with fewer decimals is rounding, not a disagreement
    assert "disagree on structure_distance_e3" not in page


def test_differences_name_family_model_and_steps():
    assert differences("sd14", "50", "sd14", "50") == ""
    assert differences("tiny", "50", "sd14", "50") == "other model: published sd14, ours tiny"
    assert differences("flux_tiny", "8", "sd14", "50") == (
        "OTHER MODEL FAMILY: published sd14 (sd), ours flux_tiny (flux); OTHER STEP COUNT: published 50, ours 8"
    )
    assert differences("sdxl", "4", "sdxl_turbo", "-") == (
        "OTHER MODEL FAMILY: published sdxl_turbo (not in the registry), ours sdxl (sdxl); published steps not stated"
    )
    assert differences("sd14", "50", "-", "50") == "published model not stated"


def rows_of(model: str, steps: int, inversion: str, editor: str, psnr: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "inversion": inversion,
            "editor": editor,
            "model": model,
            "status": "ok",
            "config_hash": "c",
            "metrics_setup": "pie_bench/reference",
            "sample_id": [f"s{k}" for k in range(len(psnr))],
            "editing_type": 0,
            "category": "random",
            "edit_class": "global",
            "psnr_unedit_part": psnr,
            "hparams": [{"inversion": {"name": inversion, "num_steps": steps}}] * len(psnr),
            "dataset": "d",
            "mapping_file": "m",
            "run_dir": "r",
        }
    )


def test_a_comparison_shows_both_settings_and_every_published_row_of_a_pair():
    """FireFlow's Table 4 has two rows for fireflow + fireflow_edit (15 and 8 steps): a run at 8 steps on
    flux_tiny is shown beside both, the 8-step row naming only the model, the 15-step one the step count too."""
    rows = prepare(rows_of("flux_tiny", 8, "fireflow", "rf_edit", [20.0, 26.0]))  # fireflow_edit runs rf_edit
    table = paper_table(rows, "T", resamples=50)
    published, source = load_published("fireflow_v1_table4")
    comparison = compare_with_published(table, published, our_setups(rows))
    psnr = comparison[comparison["metric"] == "psnr_unedit_part"].set_index("paper_method")
    assert set(psnr.index) == {"Ours (15 steps)", "Ours (8 steps)"}
    assert psnr.loc["Ours (8 steps)", "delta"] == pytest.approx(23.0 - 23.03)
    assert psnr.loc["Ours (8 steps)", "differs"] == "other model: published flux, ours flux_tiny"
    assert "OTHER STEP COUNT: published 15, ours 8" in psnr.loc["Ours (15 steps)", "differs"]
    assert psnr.loc["Ours (8 steps)", "our_steps"] == "8" and psnr.loc["Ours (8 steps)", "published_steps"] == "8"
    from reports.published import published_markdown

    text = published_markdown(comparison, source, "model=flux_tiny", real_setup=False)
    assert "| fireflow | rf_edit | Ours (8 steps) | flux_tiny / flux | 8 / 8 |" in text
    assert "WARNING" in text and "settings the paper did not run" in text


def test_an_sd_run_beside_a_flow_papers_table_meets_only_its_diffusion_rows():
    rows = prepare(rows_of("tiny", 3, "ddim", "p2p", [18.0, 19.0]))
    published, _ = load_published("uniedit_flow_pie_flux_sd3")
    comparison = compare_with_published(paper_table(rows, "T", resamples=50), published, our_setups(rows))
    assert set(comparison["paper_method"]) == {"P2P [25]"}  # only the pair both have
    differs = "other model: published sd14, ours tiny; OTHER STEP COUNT: published 50, ours 3"
    assert set(comparison["differs"]) == {differs}
    assert set(comparison["metric"]) == {"psnr_unedit_part"}  # the only metric our rows have


def test_aggregate_lists_the_tables_and_refuses_an_unknown_one(tmp_path):
    code, output = run("aggregate.py", "--published", cwd=tmp_path)
    assert code == 0, output
    assert all(f"| {name} |" in output for name in TABLES)
    code, output = run("aggregate.py", cwd=tmp_path)
    assert code == 2 and "give the run folders" in output
    with pytest.raises(ConfigError, match="shipped tables: .*'fireflow_v1_table4'"):
        load_published("nope")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """SD methods on tiny and flow methods on flux_tiny, one mini-benchmark sample each, metrics on."""
    root = tmp_path_factory.mktemp("published")
    common = ["dataset.categories=[1]", "metrics.backbones=tiny", "model.resolution=64"]
    sd = [
        "-m",
        "inversion=ddim,directinversion",
        "editor=p2p,masactrl",
        "num_steps=3",
        f"hydra.sweep.dir={root / 'sd'}",
    ]
    flow = ["-m", "model=flux_tiny", "inversion=fireflow,rf_solver", "editor=fireflow_edit,rf_edit",
            "++editor.first_single_block=0", "++editor.last_single_block=1", f"hydra.sweep.dir={root / 'flow'}"]  # fmt: skip
    for args in (sd, flow):
        code, output = run("launch.py", *args, *common, cwd=root)
        assert code == 0, output
    return root


@pytest.mark.ci_only
@pytest.mark.parametrize("name", TABLES)
def test_aggregate_compares_a_real_sweep_with_each_table(sweeps, name):
    out = sweeps / f"tables_{name}"
    code, output = run("aggregate.py", str(sweeps / "sd"), str(sweeps / "flow"), "--out", str(out), "--published",
                       name, "--no-figures", "--no-gallery", "--resamples", "50", cwd=sweeps)  # fmt: skip
    assert code == 0, output
    comparison = pd.read_csv(out / "published.csv", dtype={"our_steps": str, "published_steps": str})
    text = (out / "published.md").read_text()
    assert not comparison.empty and "WARNING" in text
    # every compared row shows both models and step counts, and says what separates them
    assert comparison[["our_model", "published_model", "our_steps", "published_steps"]].notna().all().all()
    assert (comparison["differs"] != "").all()  # tiny models and few steps: nothing here is the paper's setting
    for row in comparison.itertuples():
        assert row.our_model in ("tiny", "flux_tiny")
        if row.our_model == "flux_tiny" and row.published_model in ("sd14", "sd15"):
            assert "OTHER MODEL FAMILY" in row.differs
