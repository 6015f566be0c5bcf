"""Config tree: experiment files, dotted overrides, rejection of unknown keys and bad values, JSON."""

import json

import pytest

from jaxstage import config as config_lib
from jaxstage.config import Config, ConfigError, apply_overrides, load_config


def test_default_config_file_loads():
    cfg = load_config()
    assert cfg.name == "synth_t2a"
    assert cfg.num_samples == int(cfg.data.sample_rate * cfg.data.clip_seconds)


def test_overrides_are_typed():
    cfg = apply_overrides(Config(), ["model.depth=6", "optim.lr=3e-4", "model.qk_norm=true",
                                     "sample.cfg_interval=(0.1, 5.0)", "diffusion.objective=edm"])
    assert cfg.model.depth == 6 and isinstance(cfg.model.depth, int)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.qk_norm is True
    assert cfg.sample.cfg_interval == (0.1, 5.0)
    assert cfg.diffusion.objective == "edm"


def test_unknown_key_names_key_and_close_match():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.dept'.*model\.depth"):
        apply_overrides(Config(), ["model.dept=4"])
    with pytest.raises(ConfigError, match="unknown config key 'nosuch.key'"):
        apply_overrides(Config(), ["nosuch.key=1"])


@pytest.mark.parametrize("override, message", [
    ("model.depth=four", "model.depth='four' is not a valid int"),
    ("model.depth=0", "model.depth=0 must be > 0"),
    ("diffusion.objective=ddpm", "diffusion.objective='ddpm' is not one of edm, v, rf"),
    ("diffusion.cond_dropout=1.5", r"diffusion.cond_dropout=1.5 must be in \[0, 1\]"),
    ("model.qk_norm=maybe", "model.qk_norm='maybe' is not a valid bool"),
    ("model=3", "'model' is a config section"),
    ("model.depth", "must look like key=value"),
    ("model.num_heads=3", "not divisible by model.num_heads=3"),
    ("regime.mode=sometimes", "regime.mode=.sometimes. is not one of adaptive"),
    ("arc.gen_lr=0", "arc.gen_lr=0.0 must be > 0"),
    ("arc.r1_sigma=-1", "arc.r1_sigma=-1.0 must be > 0"),
    ("arc.ema_decay=1", r"arc.ema_decay=1.0 must be in \[0, 1\)"),
    ("arc.disc_depth=0", "arc.disc_depth=0 must be > 0"),
    ("guidance.eps=1", "unknown config key 'guidance.eps'"),  # stage constants that are not keys
    ("struct.freeze_groups=false", "unknown config key 'struct.freeze_groups'"),
])
def test_bad_values_rejected_with_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        apply_overrides(Config(), [override])
    assert "\n" not in str(info.value)


def test_json_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["model.depth=3", "mesh.rules=[[\"embed\", \"fsdp\"]]"])
    path = tmp_path / "config.json"
    config_lib.save_json(cfg, path)
    again = config_lib.load_json(path)
    assert again == cfg
    data = json.loads(path.read_text())
    data["model"]["bogus"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown config key 'model.bogus'"):
        config_lib.load_json(path)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="broken.py.*failed to import"):
        load_config(broken)
    nofn = tmp_path / "nofn.py"
    nofn.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="no get_config"):
        load_config(nofn)


def test_every_config_file_loads():
    from pathlib import Path

    for path in sorted(Path(config_lib.DEFAULT_CONFIG).parent.glob("*.py")):
        cfg = load_config(path)
        assert isinstance(cfg, Config)
        assert "jaxstage train" in open(path).read().split('"""')[1], f"{path} docstring lacks its run command"


def test_stage_sections_extend_the_stage_configs():
    """regime/guidance/timesteps/struct inherit the stage hyperparameters; make_recipe builds the
    (hashable, checked) stage configs from them, derived values applied."""
    from jaxstage.stage import guidance, regime, structure, timesteps
    from jaxstage.train.recipe import make_recipe

    cfg = apply_overrides(Config(), ["model.depth=2", "struct.num_groups=3", "regime.mode=linear",
                                     "guidance.lambda0=0.5", "timesteps.adaptive=true", "regime.beta=0.5"])
    assert isinstance(cfg.guidance, guidance.AlignmentConfig) and isinstance(cfg.struct, structure.StructureConfig)
    recipe = make_recipe(cfg)
    assert recipe.progress == regime.ProgressConfig(mode="linear", beta=0.5)
    assert recipe.structure == structure.StructureConfig(num_groups=2)
    assert recipe.guidance == guidance.AlignmentConfig(lambda0=0.5)
    assert recipe.timesteps == timesteps.AdaptiveTimestepConfig()
    hash((recipe.progress, recipe.structure, recipe.guidance, recipe.timesteps))
    assert "eps" not in config_lib.to_dict(cfg)["guidance"]


@pytest.mark.parametrize("override, message", [
    ("diffusion.objective=v", "diffusion.objective=v: ARC post-trains a rectified-flow model"),
    ("arc.disc_depth=5", r"arc.disc_depth=5 must be in \[1, model.depth=4\]"),
])
def test_posttrain_checks(override, message):
    config_lib.validate_posttrain(Config())
    cfg = Config()
    config_lib.set_value(cfg, *override.split("="))
    with pytest.raises(ConfigError, match=message):
        config_lib.validate_posttrain(cfg)
