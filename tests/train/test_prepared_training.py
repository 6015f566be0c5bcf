"""Training on a prepared directory: PreparedSource, precomputed text embeddings and SSL targets.

The prepared directory is written here record by record (``encode_record`` + ArrayRecordWriter and
a hand-written dataset.json), independent of the ``jaxstage prepare`` implementation.
"""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from jaxstage.config import ConfigError, load_config
from jaxstage.data.pipeline import BatchStream
from jaxstage.data.prepared import PreparedSource
from jaxstage.data.records import DATASET_JSON, FORMAT_VERSION, encode_record
from jaxstage.parallel import global_batch
from jaxstage.train.trainer import fresh_state, train
from jaxstage.train.state import build_experiment
from jaxstage.train.step import compile_train_step

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SR, N, TEXT_LEN, TEXT_DIM, SSL_FRAMES, SSL_DIM = 8000, 8000, 8, 16, 20, 24
COUNT = 20


def write_prepared(directory: Path, *, ssl_seed: int = 0, count: int = COUNT, shard_sizes=(12, 8)) -> Path:
    """A prepared directory of random 1 s clips at 8 kHz with text_emb [8, 16] and ssl [20, 24]."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ssl_rng = np.random.default_rng(100 + ssl_seed)
    shards, index = [], 0
    for shard, size in enumerate(shard_sizes):
        name = f"shard-{shard:05d}.array_record"
        writer = ArrayRecordWriter(str(directory / name), "group_size:1")
        for _ in range(size):
            length = int(rng.integers(2, TEXT_LEN + 1))
            example = {
                "audio": (0.3 * rng.standard_normal(N)).astype(np.float32),
                "audio_mask": np.ones(N, bool),
                "text_emb": rng.standard_normal((TEXT_LEN, TEXT_DIM)).astype(np.float32),
                "text_mask": np.arange(TEXT_LEN) < length,
                "ssl": ssl_rng.standard_normal((SSL_FRAMES, SSL_DIM)).astype(np.float32),
                "caption": f"clip number {index}",
                "id": f"item-{index}",
            }
            writer.write(encode_record(example))
            index += 1
        writer.close()
        shards.append({"file": name, "count": size})
    meta = {
        "version": FORMAT_VERSION, "count": count, "sample_rate": SR, "num_samples": N, "shards": shards,
        "features": {
            "audio": {"shape": [N], "dtype": "float32"}, "audio_mask": {"shape": [N], "dtype": "bool"},
            "text_emb": {"shape": [TEXT_LEN, TEXT_DIM], "dtype": "float32"},
            "text_mask": {"shape": [TEXT_LEN], "dtype": "bool"},
            "ssl": {"shape": [SSL_FRAMES, SSL_DIM], "dtype": "float32"},
        },
        "encoders": {"text": "test-random", "ssl": "test-random"}, "skipped": [],
    }
    (directory / DATASET_JSON).write_text(json.dumps(meta))
    return directory


def prepared_config(path: Path, *extra: str):
    return load_config(TINY, [
        "data.source=prepared", f"data.path={path}", "data.clip_seconds=1.0", "text.kind=precomputed",
        "guidance.ssl=precomputed", "guidance.lambda0=0.5", "guidance.hidden=32", "regime.mode=adaptive",
        "regime.every=2", "regime.monitor_size=4", "train.steps=6", "train.log_every=1", "train.ckpt_every=1000",
        "train.progress_bar=false", "train.async_checkpoint=false", "sample.num=2", "sample.steps=2", *extra])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prepared") / "data")


def test_source_reads_every_shard_in_order(prepared):
    source = PreparedSource(prepared, prepared_config(prepared))
    assert len(source) == COUNT
    first, last = source[0], source[COUNT - 1]  # first shard, second shard
    assert first["caption"] == "clip number 0" and last["id"] == f"item-{COUNT - 1}"
    assert first["audio"].shape == (N,) and first["audio"].dtype == np.float32
    assert first["text_emb"].shape == (TEXT_LEN, TEXT_DIM) and first["ssl"].shape == (SSL_FRAMES, SSL_DIM)
    with pytest.raises(IndexError):
        source[COUNT]


def test_config_mismatch_names_dataset_json_and_key(prepared, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset\.json: sample_rate=8000 but data\.sample_rate=16000"):
        PreparedSource(prepared, prepared_config(prepared, "data.sample_rate=16000"))
    with pytest.raises(ConfigError, match=r"dataset\.json: num_samples=8000 but .*=4000"):
        PreparedSource(prepared, prepared_config(prepared, "data.clip_seconds=0.5"))
    meta = json.loads((prepared / DATASET_JSON).read_text())
    del meta["features"]["ssl"]
    (tmp_path / DATASET_JSON).write_text(json.dumps(meta))
    for shard in meta["shards"]:
        (tmp_path / shard["file"]).symlink_to(prepared / shard["file"])
    with pytest.raises(ConfigError, match=r"dataset\.json: features has no 'ssl'"):
        PreparedSource(tmp_path, prepared_config(tmp_path))
    with pytest.raises(ConfigError, match=r"text\.kind=precomputed .* data\.source=prepared"):
        load_config(TINY, ["text.kind=precomputed"])


def test_batches_carry_precomputed_keys_and_hold_out_the_monitor(prepared):
    cfg = prepared_config(prepared)
    stream = BatchStream(cfg, 0, 1)
    batch = next(stream)
    assert batch["text_emb"].shape == (8, TEXT_LEN, TEXT_DIM) and batch["text_mask"].shape == (8, TEXT_LEN)
    assert batch["ssl_targets"].shape == (8, SSL_FRAMES, SSL_DIM) and "text_ids" not in batch
    source = PreparedSource(prepared)
    by_audio = {source[i]["audio"].tobytes(): source[i] for i in range(COUNT)}
    for audio, emb, ssl in zip(batch["audio"], batch["text_emb"], batch["ssl_targets"]):
        record = by_audio[audio.tobytes()]
        np.testing.assert_array_equal(emb, record["text_emb"])
        np.testing.assert_array_equal(ssl, record["ssl"])
    held_out = {source[i]["audio"][:4].tobytes() for i in range(COUNT - 4, COUNT)}
    for _ in range(5):  # 40 examples: every training record at least once, never a held-out one
        assert not held_out & {a[:4].tobytes() for a in next(stream)["audio"]}
    saved = json.loads(json.dumps(stream.get_state()))
    want = next(stream)["audio"]
    resumed = BatchStream(cfg, 0, 1)
    resumed.set_state(saved)
    np.testing.assert_array_equal(next(resumed)["audio"], want)


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_train_on_precomputed_text_and_ssl_compiles_once_and_resumes(prepared, tmp_path):
    """Six steps with a checkpoint at 3, then a resume from it: steps 4-6 come out the same."""
    run = tmp_path / "run"
    result = train(prepared_config(prepared, "train.ckpt_every=3"), run)
    assert result.final_step == 6 and result.compile_count == 1
    records = _metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["loss_align"]) for r in records)
    assert records[-1]["discrepancy"] is not None  # the monitor ran on the held-out records
    assert sorted(p.name for p in (run / "samples").glob("*.wav")) == [
        "step0000006_0_clip-number-18.wav", "step0000006_1_clip-number-19.wav"]  # the held-out captions

    # resume from the step-3 checkpoint (data position included): steps 4-6 come out the same
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(run, resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "6")
    resumed = train(prepared_config(prepared, "train.ckpt_every=1000"), resumed_dir)
    assert resumed.final_step == 6 and resumed.compile_count == 1
    # one trajectory: the rows 4-6 of the first attempt moved aside, the resumed ones in their place
    aside = [json.loads(line)["step"] for line in (resumed_dir / "metrics.discarded.jsonl").read_text().splitlines()]
    assert aside == [4, 5, 6]
    again = _metrics(resumed_dir)[3:]
    assert [r["step"] for r in _metrics(resumed_dir)] == [1, 2, 3, 4, 5, 6]
    for want, got in zip(records[3:], again):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)



def test_alignment_follows_the_precomputed_targets(prepared):
    """The compiled step (a persistent-cache hit of the run above) on one batch, with the batch's
    SSL targets replaced: the alignment loss moves, the diffusion loss does not."""
    cfg = prepared_config(prepared)
    exp = build_experiment(cfg)
    state = fresh_state(exp)
    step = compile_train_step(exp, state)
    host = next(BatchStream(cfg, 0, 1))
    other = dict(host, ssl_targets=np.random.default_rng(5).standard_normal(host["ssl_targets"].shape).astype(np.float32))
    twin = jax.tree.map(jnp.copy, state)  # the step donates its state argument
    _, m1 = step(state, global_batch(host, exp.batch_sharding))
    _, m2 = step(twin, global_batch(other, exp.batch_sharding))
    assert float(m1["loss_diff"]) == pytest.approx(float(m2["loss_diff"]), rel=1e-6)
    assert float(m1["loss_align"]) != pytest.approx(float(m2["loss_align"]), rel=1e-4, abs=0)


def test_prepared_captions_with_the_learned_encoder_and_spectral_targets(prepared):
    """text.kind=learned hashes the records' captions; guidance.ssl=spectral leaves their ssl unused."""
    cfg = prepared_config(prepared, "text.kind=learned", "guidance.ssl=spectral")
    batch = next(BatchStream(cfg, 0, 1))
    assert set(batch) == {"audio", "audio_mask", "text_ids", "text_mask"}
    assert batch["text_ids"].shape == (8, cfg.data.text_max_length)
