"""guidance.ssl=encoder: a transformers HuBERT converted to JAX computes SSL targets inside the step."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from jaxstage.config import ConfigError, load_config  # noqa: E402
from jaxstage.train.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
sys.path.insert(0, str(ROOT / "tests" / "data"))


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    from hf_tiny import save_tiny_hubert

    return save_tiny_hubert(tmp_path_factory.mktemp("hubert"))


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("discrepancy,lambda0", [("alignment", "0.5"), ("output", "0")])
def test_encoder_targets_train_inside_the_compiled_step(tmp_path, hubert_dir, discrepancy, lambda0):
    sets = ["guidance.ssl=encoder", f"guidance.ssl_encoder_dir={hubert_dir}", "guidance.ssl_layers=(1, 2)",
            f"guidance.lambda0={lambda0}", "guidance.hidden=32", "regime.mode=adaptive", "regime.every=2",
            f"regime.discrepancy={discrepancy}", "regime.monitor_size=4", "train.steps=6", "train.log_every=2",
            "train.ckpt_every=1000", "train.progress_bar=false"]
    result = train(load_config(TINY, sets), tmp_path / "run")
    assert result.compile_count == 1
    records = _records(tmp_path / "run")
    assert all(np.isfinite(r["discrepancy"]) for r in records)
    if lambda0 != "0":
        assert all(np.isfinite(r["loss_align"]) for r in records)


def test_encoder_source_needs_a_directory():
    with pytest.raises(ConfigError, match="ssl_encoder_dir"):
        load_config(TINY, ["guidance.ssl=encoder", "guidance.lambda0=0.5"])
    with pytest.raises(FileNotFoundError, match="ssl_encoder_dir"):
        from jaxstage.train.state import build_experiment

        build_experiment(load_config(TINY, ["guidance.ssl=encoder", "guidance.ssl_encoder_dir=/nonexistent",
                                            "guidance.lambda0=0.5"]))
