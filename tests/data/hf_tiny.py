"""Tiny random-weight Hugging Face models saved to disk, for tests without network access.

    t5_dir = save_tiny_t5(tmp_path / "t5")          # T5EncoderModel + word-level fast tokenizer
    hubert_dir = save_tiny_hubert(tmp_path / "hb")  # HubertModel, 2 layers, hidden 32, no preprocessor

Both need torch and transformers (callers should `pytest.importorskip("torch")`). Weights are seeded,
so the same call gives the same model.
"""

from __future__ import annotations

from pathlib import Path

TINY_WORDS = ("a the and of with dog dogs bark barks barking cat meows bird birds sing chirp rain "
              "wind water engine car siren people speak talking music piano loud quiet low high "
              "noise sine tone hum buzz click beep pulse pulses steady slow fast fade in out").split()

T5_DIM = 16
HUBERT_DIM = 32
HUBERT_LAYERS = 2


def save_tiny_t5(directory: str | Path, seed: int = 0) -> Path:
    """A 1-layer T5 encoder (d_model 16) and a whitespace word-level tokenizer in `directory`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    directory = Path(directory)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in TINY_WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(vocab), d_model=T5_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5EncoderModel(config).save_pretrained(directory)
    return directory


def save_tiny_hubert(directory: str | Path, seed: int = 0) -> Path:
    """A 2-layer HuBERT (hidden 32; conv strides 5*2 = 10 samples per frame) in `directory`."""
    import torch
    from transformers import HubertConfig, HubertModel

    directory = Path(directory)
    torch.manual_seed(seed)
    config = HubertConfig(hidden_size=HUBERT_DIM, num_hidden_layers=HUBERT_LAYERS, num_attention_heads=2,
                          intermediate_size=37, conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    HubertModel(config).save_pretrained(directory)
    return directory


def hubert_frames(num_samples: int) -> int:
    """Frames the tiny HuBERT gives for `num_samples` input samples (valid convolutions)."""
    n = (num_samples - 10) // 5 + 1
    return (n - 3) // 2 + 1


def _tiny_audio_kwargs() -> dict:
    """The conv front end shared by the tiny audio encoders (same frames as `hubert_frames`)."""
    return dict(hidden_size=HUBERT_DIM, num_hidden_layers=HUBERT_LAYERS, num_attention_heads=2,
                intermediate_size=37, conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def save_tiny_wavlm(directory: str | Path, seed: int = 0) -> Path:
    """A 2-layer WavLM (relative position buckets, gated bias) with the tiny HuBERT's front end."""
    import torch
    from transformers import WavLMConfig, WavLMModel

    directory = Path(directory)
    torch.manual_seed(seed)
    WavLMModel(WavLMConfig(num_buckets=16, max_bucket_distance=40, **_tiny_audio_kwargs())).save_pretrained(directory)
    return directory


def save_tiny_wav2vec2(directory: str | Path, seed: int = 0) -> Path:
    """A 2-layer wav2vec2 (layer-norm conv front end, pre-LN transformer)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    directory = Path(directory)
    torch.manual_seed(seed)
    config = Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                            **_tiny_audio_kwargs())
    Wav2Vec2Model(config).save_pretrained(directory)
    return directory


AST_DIM = 32
AST_LABELS = ("speech", "music", "dog", "rain", "siren")
AST_MEL_BINS = 32    # >= patch_size 16; (32 - 16) // 10 + 1 = 2 frequency patches
AST_MAX_LENGTH = 64  # frames of 10 ms: 0.64 s; (64 - 16) // 10 + 1 = 5 time patches
CLAP_DIM = 16        # projection dim (the embedding size of `CLAPModel`)
CLAP_RATE = 48000


def save_tiny_ast(directory: str | Path, seed: int = 0) -> Path:
    """A 1-layer AST classifier (hidden 32, 5 labels, 32 mel bins x 64 frames) and its feature extractor."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    directory = Path(directory)
    torch.manual_seed(seed)
    config = ASTConfig(hidden_size=AST_DIM, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       num_mel_bins=AST_MEL_BINS, max_length=AST_MAX_LENGTH,
                       id2label=dict(enumerate(AST_LABELS)), label2id={k: i for i, k in enumerate(AST_LABELS)})
    ASTForAudioClassification(config).save_pretrained(directory)
    ASTFeatureExtractor(sampling_rate=16000, num_mel_bins=AST_MEL_BINS,
                        max_length=AST_MAX_LENGTH).save_pretrained(directory)
    return directory


def save_tiny_clap(directory: str | Path, seed: int = 0) -> Path:
    """A tiny CLAP: 1-layer Roberta-like text tower (hidden 32), 2-stage HTSAT (16 mel bins, 64x64 "image",
    4x4 patches, window 4), projection 16; a 48 kHz, 1 s ClapFeatureExtractor and a word-level tokenizer.

    HTSAT constraints respected: spec_size % num_mel_bins == 0 (freq_ratio 4); the mel frames
    (1 s / 480 hop + 1 = 101) <= spec_size * freq_ratio = 256; the patch grid (64 / 4 = 16) halves per
    stage and stays divisible by the window; audio hidden_size = patch_embeds_hidden_size * 2**(stages-1).
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig,
                              PreTrainedTokenizerFast)

    directory = Path(directory)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}  # Roberta's special ids
    for word in TINY_WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0),
                                                                                                  ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", model_max_length=64)
    tokenizer.save_pretrained(directory)
    text = ClapTextConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=37, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                          eos_token_id=2)
    audio = ClapAudioConfig(num_mel_bins=16, spec_size=64, patch_size=4, patch_stride=(4, 4), window_size=4,
                            depths=(1, 1), num_attention_heads=(2, 2), patch_embeds_hidden_size=16,
                            hidden_size=32, num_hidden_layers=2, enable_fusion=False)
    torch.manual_seed(seed)
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(),
                         projection_dim=CLAP_DIM)).save_pretrained(directory)
    ClapFeatureExtractor(feature_size=16, sampling_rate=CLAP_RATE, hop_length=480, max_length_s=1,
                         fft_window_size=1024, frequency_max=14000, truncation="rand_trunc",
                         padding="repeatpad").save_pretrained(directory)
    return directory
