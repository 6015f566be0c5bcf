"""AST classifier and CLAP wrappers on tiny random-weight models saved to disk (no network)."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from jaxstage.eval.hf_audio_models import ASTClassifier, CLAPModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from hf_tiny import AST_DIM, AST_LABELS, CLAP_DIM, CLAP_RATE, save_tiny_ast, save_tiny_clap  # noqa: E402


def noise(batch: int, rate: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal((batch, int(rate * seconds))).astype(np.float32)


def tone(batch: int, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * (220.0 * (k + 1)) * t) for k in range(batch)]).astype(np.float32)


@pytest.fixture(scope="module")
def ast(tmp_path_factory) -> ASTClassifier:
    return ASTClassifier(save_tiny_ast(tmp_path_factory.mktemp("ast")), batch_size=2)


@pytest.fixture(scope="module")
def clap(tmp_path_factory) -> CLAPModel:
    return CLAPModel(save_tiny_clap(tmp_path_factory.mktemp("clap")), batch_size=2)


# ------------------------------------------------------------------------------ AST

def test_ast_shapes_probs_and_embedding(ast):
    out = ast(noise(3, 16000), 16000)  # 3 clips in batches of 2
    assert ast.sample_rate == 16000 and ast.num_classes == len(AST_LABELS)
    assert out["logits"].shape == out["probs"].shape == (3, len(AST_LABELS))
    assert out["embedding"].shape == (3, AST_DIM)
    assert all(v.dtype == np.float64 for v in out.values())
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0, atol=1e-12)
    assert (out["probs"] > 0).all() and np.isfinite(out["embedding"]).all()
    assert not np.allclose(out["embedding"][0], out["embedding"][1])  # clips differ -> embeddings differ


def test_ast_is_deterministic_and_batch_independent(ast):
    audio = noise(3, 16000, seed=1)
    first, second = ast(audio, 16000), ast(audio, 16000)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    single = ast(audio[2:], 16000)
    np.testing.assert_allclose(single["logits"][0], first["logits"][2], rtol=1e-5, atol=1e-6)


def test_ast_resamples_8khz_input(ast):
    from jaxstage.data.audio_io import resample

    audio = tone(2, 8000)
    out = ast(audio, 8000)
    assert out["logits"].shape == (2, len(AST_LABELS)) and np.isfinite(out["logits"]).all()
    np.testing.assert_array_equal(out["logits"], ast(resample(audio, 8000, 16000), 16000)["logits"])


# ------------------------------------------------------------------------------ CLAP

def test_clap_audio_embeddings_are_unit_rows(clap):
    assert clap.sample_rate == CLAP_RATE
    emb = clap.audio_embeddings(noise(3, CLAP_RATE), CLAP_RATE)
    assert emb.shape == (3, CLAP_DIM) and emb.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-9)
    # longer than the 1 s window: randomly cropped by transformers, but from a fixed seed
    long = noise(2, CLAP_RATE, seconds=2.5, seed=3)
    np.testing.assert_array_equal(clap.audio_embeddings(long, CLAP_RATE), clap.audio_embeddings(long, CLAP_RATE))


def test_clap_resamples_16khz_input(clap):
    emb = clap.audio_embeddings(tone(2, 16000), 16000)
    assert emb.shape == (2, CLAP_DIM)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-9)


def test_clap_text_embeddings_and_score(clap):
    prompts = ["a dog barks", "rain and wind", "loud piano music with a slow steady pulse"]
    text = clap.text_embeddings(prompts)  # batches of 2
    assert text.shape == (3, CLAP_DIM) and text.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, atol=1e-9)
    padded = clap.text_embeddings(["a dog barks", prompts[2]])[0]  # padded to the long prompt
    np.testing.assert_allclose(padded, text[0], atol=1e-6)
    assert np.abs(text[0] - text[1]).max() > 1e-3 and np.abs(text[1] - text[2]).max() > 1e-3
    audio = clap.audio_embeddings(noise(2, CLAP_RATE), CLAP_RATE)
    scores = text @ audio.T  # the CLAP score: cosine of unit rows
    assert np.all(scores >= -1.0) and np.all(scores <= 1.0)
    assert not np.allclose(scores[0], scores[1])  # the score depends on the prompt


# ------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("cls, what", [(ASTClassifier, "AST classifier"), (CLAPModel, "CLAP model")])
def test_missing_directory_gives_a_one_line_error(tmp_path, cls, what):
    missing = tmp_path / "models" / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        cls(missing)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(missing)) and what in message


def test_folder_without_model_files_gives_a_one_line_error(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError)) as info:
        ASTClassifier(tmp_path)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_clap_folder_without_tokenizer_is_refused(clap, tmp_path):
    import shutil

    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        shutil.copy(clap.model_dir / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        CLAPModel(tmp_path)


def test_wrong_model_type_is_refused(clap, tmp_path):
    with pytest.raises(ValueError, match="model_type is 'clap'"):
        ASTClassifier(clap.model_dir)
