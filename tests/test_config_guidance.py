"""sample.guidance and its options: validation, refusal of another rule's option, the rule they
select, and the per-call override the CLI applies."""

import pytest

from jaxstage.cli import GUIDANCE_CHOICES
from jaxstage.config import Config, ConfigError, apply_overrides, guidance_rule, with_guidance
from jaxstage.diffusion.guidance_rules import KINDS, GuidanceRule


def test_default_is_plain_cfg():
    assert guidance_rule(Config().sample) == GuidanceRule("cfg")
    assert GUIDANCE_CHOICES == KINDS


@pytest.mark.parametrize("overrides, rule", [
    (["sample.guidance=rescale"], GuidanceRule("rescale", rescale_phi=0.7)),
    (["sample.guidance=rescale", "sample.cfg_rescale=1.0"], GuidanceRule("rescale", rescale_phi=1.0)),
    (["sample.guidance=apg", "sample.apg_eta=0.5", "sample.apg_norm_threshold=4"],
     GuidanceRule("apg", apg_eta=0.5, apg_norm_threshold=4.0)),
])
def test_the_selected_rule(overrides, rule):
    assert guidance_rule(apply_overrides(Config(), overrides).sample) == rule


@pytest.mark.parametrize("overrides, message", [
    (["sample.guidance=pag"], "sample.guidance='pag' is not one of cfg, rescale, apg"),
    (["sample.guidance=rescale", "sample.cfg_rescale=1.5"], r"sample.cfg_rescale=1.5 must be in \[0, 1\]"),
    (["sample.guidance=apg", "sample.apg_eta=-1"], "sample.apg_eta=-1.0 must be >= 0"),
    (["sample.guidance=apg", "sample.apg_norm_threshold=-2"], "sample.apg_norm_threshold=-2.0 must be >= 0"),
    (["sample.apg_eta=0.5"], r"sample.apg_eta is set but only sample.guidance=apg reads it \(sample.guidance='cfg'\)"),
    (["sample.guidance=rescale", "sample.apg_norm_threshold=1"],
     "sample.apg_norm_threshold is set but only sample.guidance=apg reads it"),
    (["sample.guidance=apg", "sample.cfg_rescale=0.5"], "sample.cfg_rescale is set but only sample.guidance=rescale"),
    (["task=autoencoder", "sample.guidance=apg"], "sample.guidance is set but task=autoencoder does not read it"),
])
def test_bad_or_unread_guidance_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        apply_overrides(Config(), overrides)
    assert "\n" not in str(err.value)


def test_sr_refuses_a_guidance_rule():
    base = ["task=sr", "data.source=synthetic_speech", "sample.cfg_scale=1"]
    apply_overrides(Config(), base)
    with pytest.raises(ConfigError, match="sample.guidance='apg': task=sr samples without classifier-free"):
        apply_overrides(Config(), base + ["sample.guidance=apg"])


def test_with_guidance_overrides_one_call_and_keeps_the_run_config():
    run = apply_overrides(Config(), ["sample.guidance=apg", "sample.apg_eta=0.5"])
    assert guidance_rule(with_guidance(run).sample) == GuidanceRule("apg", apg_eta=0.5)
    # a new rule drops the run's options of the other rule instead of refusing them
    rescaled = with_guidance(run, "rescale", cfg_rescale=0.3)
    assert guidance_rule(rescaled.sample) == GuidanceRule("rescale", rescale_phi=0.3)
    assert guidance_rule(with_guidance(run, apg_norm_threshold=2.0).sample) == GuidanceRule("apg", 0.7, 0.5, 2.0)
    assert run.sample.guidance == "apg" and run.sample.apg_norm_threshold == 0.0  # not written into the run's config
    with pytest.raises(ConfigError, match=r"sample.apg_eta=0.0 is given but only sample.guidance=apg reads it"):
        with_guidance(run, "cfg", apg_eta=0.0)  # given explicitly (even at its default): refused
    with pytest.raises(ConfigError, match="sample.cfg_rescale=0.5 is given but only sample.guidance=rescale"):
        with_guidance(run, cfg_rescale=0.5)
    with pytest.raises(ConfigError, match=r"sample.cfg_rescale=2.0 must be in \[0, 1\]"):
        with_guidance(run, "rescale", cfg_rescale=2.0)
