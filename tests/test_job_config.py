"""Bad settings fail before any model loads, naming the key, the value and what is accepted; every experiment
composes with every inversion × editor."""

from __future__ import annotations

from typing import Annotated

import pytest
from conftest import CONF, method_configs, run
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from invbench.errors import ConfigError
from invbench.hyperparameters import Range, Steps, check_value
from inversions import INVERSIONS
from orchestration.job_config import JOB_KEYS, check_job_config

INVERSION_CONFIGS, EDITOR_CONFIGS = method_configs("inversion"), method_configs("editor")  # on the tiny (sd) model
EXPERIMENTS = [None] + sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))


def job(*overrides: str) -> dict:
    """The job keys as launch.py composes them, on the tiny model unless the overrides name another."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        config = OmegaConf.to_container(compose("config", ["model=tiny", *overrides]), resolve=True)
    return {key: config[key] for key in JOB_KEYS}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["num_steps=-5"], r"num_steps=-5 is out of range .*: it must be >= 1"),
        (["num_steps=0"], r"num_steps=0 is out of range"),
        (["inversion.num_steps=0"], r"inversion.num_steps=0 is out of range \(conf/inversion/ddim.yaml\)"),
        (["num_steps=2.5"], r"num_steps=2.5 is not an integer"),
        (["editor.guidance_scale=abc"], r"editor.guidance_scale='abc' is not a number \(conf/editor/direct.yaml\)"),
        (["editor.guidance_scale=-1"], r"editor.guidance_scale=-1 is out of range .* >= 0"),
        (["seed=abc"], r"seed='abc' is not an integer"),
        (["model.resolution=100"], r"model.resolution=100 is out of range .* a multiple of 8"),
        (["model.dtype=float8"], r"model.dtype='float8' is not one of 'float32'"),
        (["num_threads=0"], r"num_threads=0 is not an integer >= 1 or null"),
        (["dataset.categories=[1,12]"], r"dataset.categories=\[1, 12\] is not a list of"),
        (
            ["editor=p2p", "editor.controller=swap"],
            r"editor.controller='swap' is not one of 'refine', 'replace', 'auto'",
        ),
        (["editor=p2p", "editor.cross_replace_steps=1.5"], r"editor.cross_replace_steps=1.5 is out of range .* <= 1"),
        (["editor=p2p", "editor.reweight=null"], None),  # null switches re-weighting off
        (["inversion=nti", "inversion.single_branch=maybe"], r"inversion.single_branch='maybe' is not true or false"),
        (["inversion=proxedit", "inversion.base.num_steps=0"], r"inversion.base.num_steps=0 is out of range"),
        (["inversion=edit_friendly", "inversion.skip=60"], r"inversion.skip=60 must be below inversion.num_steps=50"),
        (["inversion=todinv", "inversion.appearance_levels=[0]"], r"inversion.appearance_levels=\[0\]"),
        (["metrics.backbones=some"], r"metrics.backbones='some' is not one of 'auto', 'real', 'tiny'"),
    ],
)
def test_bad_settings_name_the_key_the_value_and_the_accepted_range(overrides, message):
    if message is None:
        check_job_config(job(*overrides))
        return
    with pytest.raises(ConfigError, match=message):
        check_job_config(job(*overrides))


def test_a_bad_setting_stops_launch_with_exit_2_before_the_model_loads(tmp_path):
    code, output = run("launch.py", "editor.guidance_scale=abc", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert code == 2 and "editor.guidance_scale='abc' is not a number" in output and "Traceback" not in output
    assert "MODEL:" not in output  # nothing was loaded
    sweep = tmp_path / "sweep"
    code, output = run("launch.py", "-m", "num_steps=10,-5", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert code == 2 and "1 of 2 jobs of this sweep cannot run; nothing was launched" in output, output
    assert "num_steps=-5 is out of range" in output
    assert not [path for path in sweep.iterdir() if path.is_dir()]


@pytest.mark.ci_only  # about 1 min on 2 cores; .ci/run runs it
@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[str(e) for e in EXPERIMENTS])
def test_every_experiment_composes_with_every_inversion_and_editor(experiment):
    """Compose and check only (no run): the experiment's settings reach every method through the run-level keys."""
    chosen = [] if experiment is None else [f"experiment={experiment}"]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        for inversion in INVERSION_CONFIGS:
            for editor in EDITOR_CONFIGS:
                config = compose("config", [*chosen, f"inversion={inversion}", f"editor={editor}"])
                resolved = OmegaConf.to_container(config, resolve=True)
                checked = check_job_config({key: resolved[key] for key in JOB_KEYS})
                steps = getattr(checked.inversion, "num_steps", None) or getattr(checked.inversion, "base", {})
                if steps and experiment == "smoke":
                    assert (
                        resolved["num_steps"] == 10 and (steps if isinstance(steps, int) else steps["num_steps"]) == 10
                    )


def test_the_run_level_guidance_reaches_every_editor_and_every_guidance_tuned_inversion():
    """`guidance_scale=5` sets every editor's guidance and the scale every guidance-tuned inversion computes its state
    for, so every inversion composes and pairs with P2P at 5 (before, NTI at 7.5 under an editor at 5 was refused);
    methods with a guidance of their own keep it."""
    own = {"edict": 3.0}
    for editor in EDITOR_CONFIGS:
        assert job(f"editor={editor}", "guidance_scale=5")["editor"]["guidance_scale"] == 5
    tuned = set()
    for inversion in INVERSION_CONFIGS:
        checked = check_job_config(job(f"inversion={inversion}", "editor=p2p", "guidance_scale=5"))  # pair check
        scale = checked.inversion.tuned_for_guidance()
        assert scale in (None, 5, own.get(inversion)), (inversion, scale)
        if scale == 5:
            tuned.add(inversion)
    assert {"nti", "pti", "stylediffusion", "todinv", "directinversion", "proxedit_nti"} <= tuned


def test_a_method_on_a_model_family_it_does_not_support_is_refused_before_the_model_loads():
    from invbench.models import MODEL_FAMILIES

    for name in ("tiny", "sd14", "sd15", "sd14_random"):
        assert job(f"model={name}")["model"]["family"] == "sd"
    for name in ("sdxl", "sdxl_tiny"):
        assert job(f"model={name}")["model"]["family"] == "sdxl"
    check_job_config(job("inversion=nti", "editor=p2p"))  # every method runs on SD
    check_job_config(job("model=sdxl_tiny", "inversion=nti", "editor=p2p"))
    with pytest.raises(
        ConfigError, match=r"inversion=todinv works on the model families \['sd'\], but model=sdxl_tiny"
    ):
        check_job_config(job("model=sdxl_tiny", "inversion=todinv", "editor=p2p"))
    with pytest.raises(ConfigError) as refused:
        check_job_config(job("inversion=nti", "editor=p2p", "model.family=flux"))
    message = str(refused.value)
    assert "inversion=nti works on the model families ['sd', 'sdxl'], but model=tiny is of family 'flux'" in message
    assert "editor=p2p works on the model families ['sd', 'sdxl']" in message
    with pytest.raises(ConfigError, match="model.family"):
        check_job_config(job("model.family=sd2000"))
    assert set(MODEL_FAMILIES) == {"sd", "sdxl", "sd3", "flux"}


def test_scaled_steps_follow_the_run_level_num_steps():
    assert job("inversion=edit_friendly")["inversion"]["skip"] == 12  # the reference: 12 of 50
    assert job("inversion=edit_friendly", "num_steps=10")["inversion"]["skip"] == 2
    assert job("inversion=edit_friendly", "inversion.num_steps=25")["inversion"]["skip"] == 6


def test_values_are_converted_only_where_exact():
    assert check_value(float, 1, "k", "w") == 1.0 and isinstance(check_value(float, 1, "k", "w"), float)
    with pytest.raises(ConfigError, match="k=True is not a number"):
        check_value(float, True, "k", "w")
    with pytest.raises(ConfigError, match="k=3.0 is not an integer"):
        check_value(Steps, 3.0, "k", "w")
    with pytest.raises(ConfigError, match="k=nan is out of range"):
        check_value(Annotated[float, Range(low=0)], float("nan"), "k", "w")
    assert check_value(float | None, None, "k", "w") is None
    assert INVERSIONS.build({"name": "ddim", "num_steps": 3, "guidance_scale": 1}).guidance_scale == 1.0
