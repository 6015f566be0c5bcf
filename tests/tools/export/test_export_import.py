"""`jaxstage export` / `jaxstage import` on real run directories: torch parity of the exported files,
FSDP-sharded export, bit-exact round trips both ways, sharded files, init_from, named errors."""

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxstage.cli import main
from jaxstage.config import load_config, load_json
from jaxstage.tools.export import key_map, safetensors_io
from jaxstage.tools.export.exporter import export_run
from jaxstage.tools.export.sat_reference import build_wrapped_dit
from jaxstage.train.trainer import train
from jaxstage.inference.load import load_run
from sat_torch import require_reference, torch_forward

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
RUN_OVERRIDES = ["train.steps=2", "train.log_every=1", "train.progress_bar=false", "model.timestep_features_dim=256",
                 "mesh.data=1", "mesh.fsdp=8", "codec.stats_examples=4", "data.num_examples=64", "optim.lr=0.01",
                 "optim.warmup_steps=0", "model.global_cond_type=adaLN", "model.qk_norm=true"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny t2a run trained 2 steps with FSDP over 8 fake devices (so no weight is still at its init)."""
    path = tmp_path_factory.mktemp("export") / "run"
    train(load_config(TINY, RUN_OVERRIDES), path)
    return path


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    assert main(["export", "--workdir", str(run), "--out", str(out)]) == 0
    return out


def _tensors(folder: Path) -> dict[str, np.ndarray]:
    return safetensors_io.read_checkpoint(folder)


def test_export_loads_strict_in_stable_audio_tools_and_matches_jax(run, exported):
    torch, _ = require_reference()
    from safetensors.torch import load_file

    config = json.loads((exported / "model_config.json").read_text())
    assert config["model_type"] == "diffusion_cond" and config["model"]["diffusion"]["type"] == "dit"
    assert config["model"]["diffusion"]["diffusion_objective"] == "rectified_flow"
    wrapper = build_wrapped_dit(config)
    wrapper.load_state_dict(load_file(str(exported / "model.safetensors")), strict=True)

    exp, state = load_run(load_json(run / "config.json"), run)
    model = exp.model(state.params)
    dims = config["model"]["diffusion"]["config"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, dims["io_channels"])).astype(np.float32)
    t = np.array([0.2, 0.9], np.float32)
    cross = rng.normal(size=(2, 4, dims["cond_token_dim"])).astype(np.float32)
    ours = np.asarray(model.dit(x, t, cross_tokens=cross).out)
    theirs = torch_forward(torch, wrapper.model.model, x, t, cross=cross)
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_fsdp_export_equals_single_device_export(run, exported, tmp_path):
    exp, state = load_run(load_json(run / "config.json"), run)
    kernel = state.params["dit"]["transformer"]["layers"][0]["self_attn"]["to_qkv"]["kernel"]
    assert len(kernel.sharding.device_set) == 8 and "fsdp" in str(kernel.sharding.spec)  # really sharded
    single = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1],
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
    export_run(run, tmp_path / "single", mesh=single, show_progress=False)
    mixed = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    export_run(run, tmp_path / "mixed", mesh=mixed, show_progress=False)  # restored fsdp x tensor sharded
    a = _tensors(exported)
    for other in ("single", "mixed"):
        b = _tensors(tmp_path / other)
        assert list(a) == list(b)
        for key in a:
            assert a[key].tobytes() == b[key].tobytes(), (other, key)


def test_export_then_import_gives_the_same_jax_parameters(run, exported, tmp_path):
    assert main(["import", "--src", str(exported), "--out", str(tmp_path / "imported")]) == 0
    _, original = load_run(load_json(run / "config.json"), run)
    _, imported = load_run(load_json(tmp_path / "imported" / "config.json"), tmp_path / "imported")
    for tree in ("params", "ema_params"):
        ours = key_map.flatten(jax.device_get(original.params["dit"]))
        theirs = key_map.flatten(jax.device_get(getattr(imported, tree)["dit"]))
        assert ours.keys() == theirs.keys()
        for path in ours:
            assert ours[path].tobytes() == theirs[path].tobytes(), path
    assert load_json(tmp_path / "imported" / "config.json") == load_json(run / "config.json")  # the jaxstage block
    report = json.loads((tmp_path / "imported" / "import.json").read_text())
    assert report["from_jaxstage_export"] and report["fresh"] == ["text"]


def _sat_checkpoint(torch, folder: Path, *, suffix: str = ".safetensors") -> dict[str, np.ndarray]:
    """A stable-audio-tools checkpoint made by torch itself (torch init, no jaxstage involved)."""
    config = {
        "model_type": "diffusion_cond", "sample_size": 2048, "sample_rate": 8000, "audio_channels": 1,
        "model": {
            "io_channels": 16,
            "conditioning": {"configs": [{"id": "prompt", "type": "t5", "config": {}}], "cond_dim": 32},
            "diffusion": {
                "type": "dit", "diffusion_objective": "v", "cross_attention_cond_ids": ["prompt"],
                # head dim 96 -> rotary dim 48, where torch's inv_freq differs from jnp's by an ulp
                "config": {"io_channels": 16, "embed_dim": 96, "depth": 2, "num_heads": 1, "cond_token_dim": 32,
                           "project_cond_tokens": True, "transformer_type": "continuous_transformer",
                           "global_cond_type": "prepend", "attn_kwargs": {"qk_norm": "ln"},
                           "zero_init_branch_outputs": False},
            },
        },
        "training": {"learning_rate": 1e-4},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in build_wrapped_dit(config).state_dict().items()}
    state["conditioner.conditioners.prompt.proj_out.weight"] = torch.zeros(3, 3)  # not a DiT key: skipped
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save({"state_dict": state}, str(folder / f"model{suffix}"))
    return {k: v.numpy() for k, v in state.items() if k.startswith("model.model.")}


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_import_then_export_is_bit_exact(tmp_path, suffix):
    torch, _ = require_reference()
    source = _sat_checkpoint(torch, tmp_path / "sat", suffix=suffix)
    workdir = tmp_path / "imported"
    assert main(["import", "--src", str(tmp_path / "sat"), "--out", str(workdir), "--set", "codec.stats_examples=4",
                 "--set", "train.batch_size=8"]) == 0
    cfg = load_json(workdir / "config.json")
    assert (cfg.codec.kind, cfg.codec.n_mels, cfg.text.width, cfg.diffusion.objective) == ("mel", 16, 32, "v")
    assert cfg.model.qk_norm and (cfg.model.embed_dim, cfg.model.num_heads) == (96, 1)
    report = json.loads((workdir / "import.json").read_text())
    assert report["not_imported_config"] == ["training", "model.conditioning", "model.diffusion.cross_attention_cond_ids"]
    assert report["not_imported_prefixes"] == ["conditioner"]
    assert main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "back")]) == 0
    back = _tensors(tmp_path / "back")
    assert back.keys() == source.keys()
    for key, value in source.items():
        assert back[key].dtype == value.dtype and back[key].tobytes() == value.tobytes(), key


def test_init_from_starts_a_new_run_from_the_imported_weights(run, exported, tmp_path):
    from jaxstage.train.trainer import state_from_run
    from jaxstage.train.state import build_experiment

    cfg = load_config(TINY, RUN_OVERRIDES + [f"train.init_from={run}", "guidance.lambda0=0.5"])
    exp = build_experiment(cfg)
    state, note = state_from_run(exp, str(run))
    assert "weights of dit, text; fresh: projector" in note and "codec statistics copied" in note
    _, source = load_run(load_json(run / "config.json"), run)
    for a, b in zip(jax.tree.leaves(source.ema_params["dit"]), jax.tree.leaves(state.ema_params["dit"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(state.step) == 0
    wrong = load_config(TINY, RUN_OVERRIDES + ["model.depth=3"])
    with pytest.raises(ValueError, match=r"its dit differs from this config's \(transformer\.layers\.2"):
        state_from_run(build_experiment(wrong), str(run))


def test_sharded_export_with_index_and_bf16(run, tmp_path):
    export_run(run, tmp_path / "shards", dtype="bf16", max_shard_bytes=20_000, show_progress=False)
    index = json.loads((tmp_path / "shards" / safetensors_io.INDEX_NAME).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and not (tmp_path / "shards" / "model.safetensors").exists()
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp_path / "shards").iterdir():  # shareable files, not mkstemp's 0600
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    from safetensors.numpy import load_file  # the reference implementation reads our shards

    for name in files:
        assert set(load_file(str(tmp_path / "shards" / name))) <= set(index["weight_map"])
    bf16 = _tensors(tmp_path / "shards")
    full = _tensors_of(run, tmp_path / "fp32")
    assert bf16.keys() == full.keys()
    for key, value in full.items():
        if key.endswith((".inv_freq", ".beta")):
            assert bf16[key].dtype == np.float32
        else:
            assert bf16[key].dtype.name == "bfloat16"
            np.testing.assert_array_equal(bf16[key], value.astype(bf16[key].dtype))


def _tensors_of(run: Path, out: Path) -> dict[str, np.ndarray]:
    export_run(run, out, show_progress=False)
    return _tensors(out)


def _cli_error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_sources_fail_with_a_named_key(exported, tmp_path, capsys):
    def variant(name: str, edit_config=None, edit_tensors=None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        config = json.loads((exported / "model_config.json").read_text())
        if edit_config:
            edit_config(config)
        (folder / "model_config.json").write_text(json.dumps(config))
        tensors = _tensors(exported)
        if edit_tensors:
            edit_tensors(tensors)
        safetensors_io.write_file(folder / "model.safetensors", tensors)
        return folder

    def imp(folder):
        return _cli_error(["import", "--src", str(folder), "--out", str(tmp_path / f"out_{folder.name}")], capsys)

    missing = variant("missing", edit_tensors=lambda t: t.pop("model.model.transformer.layers.1.ff.ff.2.weight"))
    assert "missing key model.model.transformer.layers.1.ff.ff.2.weight" in imp(missing)
    shape = variant("shape", edit_tensors=lambda t: t.update(
        {"model.model.transformer.project_out.weight": np.zeros((5, 64), np.float32)}))
    assert "model.model.transformer.project_out.weight has shape [5, 64]" in imp(shape)
    unknown = variant("unknown", edit_config=lambda c: c["model"]["diffusion"]["config"].update(foo_bar=1))
    assert "unknown field model.diffusion.config.foo_bar" in imp(unknown)
    patch = variant("patch", edit_config=lambda c: c["model"]["diffusion"]["config"].update(patch_size=2))
    assert "model.diffusion.config.patch_size=2" in imp(patch)
    depth = variant("depth", edit_config=lambda c: c["model"]["diffusion"]["config"].update(depth=3))
    assert "model.depth=2 disagrees with the checkpoint's model.diffusion.config.depth=3" in imp(depth)
    corrupt = variant("corrupt")
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "model.safetensors: not a valid safetensors file" in imp(corrupt)
    assert "none.json: no stable-audio-tools model config" in _cli_error(
        ["import", "--src", str(corrupt / "model.safetensors"), "--config", str(tmp_path / "none.json"),
         "--out", str(tmp_path / "o")], capsys)


def test_unexportable_runs_are_refused_before_loading(tmp_path, capsys):
    run = tmp_path / "edm"
    run.mkdir()
    from jaxstage.config import save_json

    save_json(load_config(TINY, ["diffusion.objective=edm", "model.timestep_features_dim=256"]), run / "config.json")
    assert "diffusion.objective='edm'" in _cli_error(["export", "--workdir", str(run), "--out", str(tmp_path / "o")], capsys)
    save_json(load_config(TINY), run / "config.json")
    assert "model.timestep_features_dim=32" in _cli_error(["export", "--workdir", str(run), "--out", str(tmp_path / "o")],
                                                         capsys)
    assert "--max-shard-size 'lots'" in _cli_error(["export", "--workdir", str(run), "--out", str(tmp_path / "o"),
                                                    "--max-shard-size", "lots"], capsys)


def test_export_of_a_missing_step_names_the_available_ones(run, tmp_path, capsys):
    err = _cli_error(["export", "--workdir", str(run), "--out", str(tmp_path / "o"), "--step", "7"], capsys)
    assert "has no step 7 (available: [2])" in err
    assert not (tmp_path / "o").exists()  # nothing written on failure
