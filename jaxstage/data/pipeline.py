"""grain input pipeline: per-process shards of a fixed global order, host batches of numpy arrays.

Global batch ``k`` is always the set of shuffled examples ``[k·B, (k+1)·B)``; process ``p`` of ``P``
reads only the ones whose position is ``≡ p (mod P)``. The iterator position (grain's JSON state)
is saved in every checkpoint beside the train state.

Prepared data (``data.source=prepared``): the last ``regime.monitor_size`` records of the directory
are held out of training (the regime's monitor batch and the periodic sample prompts read them);
training shuffles the records before them. The batch keys follow the config: ``text_ids`` (hash
tokens of the caption, ``text.kind=learned``; T5 tokens with ``text.kind=t5``) or ``text_emb`` (``text.kind=precomputed``), with
``text_mask``; one float per number conditioner (``conditioning.numbers``: the key is its id, e.g.
``seconds_total``); ``ssl_targets`` only with ``guidance.ssl=precomputed``; ``audio_mask`` (True = real
audio, False = zero padding of a short clip) when the records carry it (task=t2a only), so that the
losses and the monitor average over real frames only. Pre-encoded latents (``data.latents``):
``latents`` and ``latent_mask`` (the real latent frames) replace ``audio_mask``, and ``audio`` is
left out when nothing in the step reads it (:func:`batch_has_audio`).

Super-resolution (``task=sr``, ``data.source=synthetic_speech`` or ``prepared``): every example also
carries ``low`` (the low-band audio, same rate and length) and ``cutoff`` (float32 Hz), simulated by
:class:`LowBandSource` from a generator seeded by (data.seed, source index) only, so an example's
low band does not depend on the order, the epoch or a resume. The caption is always empty (hash
tokens of ""): SR conditions on audio only. Held-out clips (:func:`sr_held_out_batch`): for the
speech-like source, the indices just past ``data.num_examples`` (the monitor's first, then the
end-of-run evaluation's), which training never reads; for prepared data, the held-out tail records.
"""

from __future__ import annotations

from typing import Any, Iterator

import grain
import numpy as np

from jaxstage.config import Config
from jaxstage.data.prepared import PreparedSource, check_spec, read_spec
from jaxstage.data.lowpass import draw_low_band
from jaxstage.data.synthetic import SyntheticT2ASource
from jaxstage.data.synthetic_speech import SyntheticSpeechSource
from jaxstage.models.text import HashTokenizer

ExampleSpec = dict[str, tuple[tuple[int, ...], np.dtype]]  # batch key -> (per-example shape, dtype)


class CaptionTokenizer:
    """``captions -> (ids int32 [B, data.text_max_length], mask bool)``: hash tokens (text.kind=learned)
    or the T5 tokenizer of ``text.encoder_dir`` (text.kind=t5, read from that directory, no network)."""

    def __init__(self, cfg: Config):
        self.length = cfg.data.text_max_length
        self.t5 = None
        if cfg.text.kind == "t5":
            from jaxstage.models.convert_t5 import load_t5_tokenizer

            self.t5 = load_t5_tokenizer(cfg.text.encoder_dir)
        self.hash = HashTokenizer(cfg.text.vocab_size)

    def __call__(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.t5 is not None:
            from jaxstage.models.convert_t5 import tokenize

            return tokenize(self.t5, list(captions), self.length)
        return self.hash(list(captions), self.length)


class RandomCrop(grain.transforms.RandomMap):
    """A record longer than a training clip (``prepare --max-seconds``) -> a ``num_samples`` window at a
    random offset within its real audio, drawn from grain's per-element generator (seeded by
    ``data.seed`` and the element's position in the repeated stream: a new crop each epoch, the same
    one after a resume); ``seconds_start`` becomes the window's offset in the file."""

    def __init__(self, num_samples: int, sample_rate: int):
        self.num_samples = num_samples
        self.sample_rate = sample_rate

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        audio = element["audio"]
        if audio.shape[-1] <= self.num_samples:
            return element
        real = int(element["audio_mask"].sum()) if "audio_mask" in element else audio.shape[-1]
        offset = int(rng.integers(0, max(real - self.num_samples, 0) + 1))
        return crop_record(element, self.num_samples, offset, self.sample_rate)


def crop_record(element: dict[str, Any], num_samples: int, offset: int, sample_rate: int) -> dict[str, Any]:
    """``element`` with audio (and its mask) cut to ``[offset, offset + num_samples)`` and
    ``seconds_start`` moved by the offset."""
    out = dict(element)
    for key in ("audio", "audio_mask"):
        if key in out:
            out[key] = out[key][..., offset: offset + num_samples]
    if "seconds_start" in out:
        out["seconds_start"] = np.float32(float(out["seconds_start"]) + offset / sample_rate)
    return out


class TrainExample(grain.transforms.Map):
    """Source element -> the train step's arrays, the keys chosen by the config (see the module docstring)."""

    def __init__(self, cfg: Config):
        self.tokenizer = CaptionTokenizer(cfg)
        self.sr = cfg.task == "sr"
        self.precomputed_text = cfg.text.kind == "precomputed"
        self.precomputed_ssl = cfg.guidance.ssl == "precomputed"
        self.latents = cfg.data.latents
        self.audio = batch_has_audio(cfg)
        self.number_ids = tuple(n[0] for n in cfg.conditioning.numbers)
        self.num_samples, self.sample_rate = cfg.num_samples, cfg.data.sample_rate
        self.source_name = cfg.data.path if cfg.data.source == "prepared" else f"data.source={cfg.data.source}"

    def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        if "audio" in element and element["audio"].shape[-1] > self.num_samples:  # a long record not
            element = crop_record(element, self.num_samples, 0, self.sample_rate)  # cropped at random: its start
        out = {"audio": element["audio"].astype(np.float32)} if self.audio else {}
        if self.latents:
            out["latents"] = element["latents"].astype(np.float32)
            if "latent_mask" in element:
                out["latent_mask"] = element["latent_mask"].astype(bool)
        if self.precomputed_text:
            out["text_emb"] = element["text_emb"].astype(np.float32)
            out["text_mask"] = element["text_mask"].astype(bool)
        else:  # tokens of the caption (hash or T5); SR conditions on audio only, so its caption is always ""
            ids, mask = self.tokenizer(["" if self.sr else element["caption"]])
            out["text_ids"], out["text_mask"] = ids[0], mask[0]
        for cid in self.number_ids:  # a number conditioner reads the key of its id
            if cid not in element:
                raise ValueError(f"{self.source_name}: examples have no {cid!r} for the number conditioner of that "
                                 f"id (conditioning.numbers); sources provide seconds_start and seconds_total"
                                 f"{' (re-run jaxstage prepare to add them)' if cid.startswith('seconds_') else ''}")
            out[cid] = np.asarray(element[cid], np.float32)
        if self.precomputed_ssl:
            out["ssl_targets"] = element["ssl"].astype(np.float32)
        if self.sr:
            out["low"] = np.asarray(element["low"], np.float32)
            out["cutoff"] = np.asarray(element["cutoff"], np.float32)
        elif "audio_mask" in element and self.audio and not self.latents:
            out["audio_mask"] = element["audio_mask"].astype(bool)
        return out


def batch_has_audio(cfg: Config) -> bool:
    """Whether batches carry the waveform: always, except with pre-encoded latents (data.latents) when
    nothing in the step reads audio (SSL targets precomputed or alignment off, task=t2a)."""
    if not cfg.data.latents or cfg.task == "sr":
        return True
    g = cfg.guidance
    return g.ssl != "precomputed" and (g.lambda0 > 0 or cfg.regime.discrepancy == "output")


# Third entry of the low-band generator's seed, so its stream differs from the clip renderer's.
LOW_BAND_STREAM = 0x5352


class LowBandSource:
    """A source whose examples also carry ``low`` and ``cutoff`` (grain random-access protocol).

    Wraps any source with an ``audio`` key (the speech-like generator or prepared records). Example
    ``i``'s (cutoff, method, order) come from ``default_rng([seed, i, LOW_BAND_STREAM])``: a pure
    function of the data seed and the index.
    """

    def __init__(self, base: SyntheticSpeechSource | PreparedSource, cfg: Config):
        self.base = base
        self.seed = cfg.data.seed
        self.sample_rate = cfg.data.sample_rate
        self.cutoff_range = (cfg.sr.cutoff_min_hz, cfg.sr.cutoff_max_hz)
        self.methods = tuple(cfg.sr.methods)
        self.orders = tuple(cfg.sr.orders)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        element = dict(self.base[index])
        rng = np.random.default_rng([self.seed, index, LOW_BAND_STREAM])
        audio = np.asarray(element["audio"], np.float32)
        low, cutoff, method, order = draw_low_band(audio, self.sample_rate, self.cutoff_range,
                                                   self.methods, self.orders, rng)
        element.update(audio=audio, low=low.astype(np.float32), cutoff=np.float32(cutoff), method=method,
                       order=order)
        return element

    def __repr__(self) -> str:
        return f"LowBandSource({self.base!r}, cutoff_range={self.cutoff_range})"


def _sr_source(cfg: Config, extra: int = 0) -> LowBandSource:
    """The SR source; speech-like: ``extra`` indices past ``data.num_examples`` are held out (training
    never reads them). Prepared: the records, whose held-out tail :func:`num_training` excludes."""
    if cfg.data.source == "prepared":
        return LowBandSource(PreparedSource(cfg.data.path, cfg), cfg)
    base = SyntheticSpeechSource(seed=cfg.data.seed, num_examples=cfg.data.num_examples + extra,
                                 sample_rate=cfg.data.sample_rate, num_samples=cfg.num_samples)
    return LowBandSource(base, cfg)


def sr_held_out_batch(cfg: Config, count: int, offset: int = 0) -> dict[str, np.ndarray]:
    """``count`` held-out SR examples as one host batch, starting ``offset`` clips into the held-out set.

    Speech-like source: indices ``data.num_examples + offset + i`` (the monitor uses offset 0, the
    end-of-run evaluation offset ``regime.monitor_size``). Prepared: the held-out tail records
    (``regime.monitor_size`` of them; ``offset + count`` may not exceed that).
    """
    source = _sr_source(cfg, extra=offset + count)
    if cfg.data.source == "prepared":
        held = held_out_count(cfg)
        if offset + count > held:
            raise ValueError(f"{cfg.data.path}: {offset + count} held-out SR clips requested, the run holds out "
                             f"{held} (regime.monitor_size)")
        first = len(source) - held + offset
    else:
        first = cfg.data.num_examples + offset
    transform = TrainExample(cfg)
    examples = [transform.map(source[first + i]) for i in range(count)]
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def make_source(cfg: Config) -> SyntheticT2ASource | PreparedSource | LowBandSource:
    """The whole random-access data source named by ``data.source`` (held-out records included)."""
    if cfg.task == "sr":
        return _sr_source(cfg)
    if cfg.data.source == "prepared":
        return PreparedSource(cfg.data.path, cfg)
    if cfg.data.source != "synthetic":
        raise ValueError(f"data.source={cfg.data.source!r} is not supported")
    return SyntheticT2ASource(seed=cfg.data.seed, num_examples=cfg.data.num_examples, sample_rate=cfg.data.sample_rate,
                              num_samples=cfg.num_samples, mix_prob=cfg.data.mix_prob)


def held_out_count(cfg: Config) -> int:
    """Records at the end of a prepared directory kept out of training (0 for synthetic data)."""
    return cfg.regime.monitor_size if cfg.data.source == "prepared" else 0


def num_training(cfg: Config, source) -> int:
    """How many leading records of ``source`` training reads."""
    return len(source) - held_out_count(cfg)


def example_spec(cfg: Config) -> ExampleSpec:
    """Per-example shapes and dtypes of the batch keys (prepared: read from dataset.json once)."""
    spec: ExampleSpec = {"audio": ((cfg.num_samples,), np.dtype(np.float32))} if batch_has_audio(cfg) else {}
    prepared = None
    if cfg.data.source == "prepared":
        prepared = read_spec(cfg.data.path)
        check_spec(prepared, cfg)
    if cfg.data.latents:
        spec["latents"] = (prepared.shape("latents"), np.dtype(np.float32))
        if "latent_mask" in prepared.features:
            spec["latent_mask"] = (prepared.shape("latent_mask"), np.dtype(bool))
    if cfg.text.kind == "precomputed":
        spec["text_emb"] = (prepared.shape("text_emb"), np.dtype(np.float32))
        spec["text_mask"] = (prepared.shape("text_mask"), np.dtype(bool))
    else:
        spec["text_ids"] = ((cfg.data.text_max_length,), np.dtype(np.int32))
        spec["text_mask"] = ((cfg.data.text_max_length,), np.dtype(bool))
    for cid, _, _ in cfg.conditioning.numbers:
        spec[cid] = ((), np.dtype(np.float32))
    if cfg.guidance.ssl == "precomputed":
        spec["ssl_targets"] = (prepared.shape("ssl"), np.dtype(np.float32))
    if prepared is not None and cfg.task != "sr" and "audio_mask" in prepared.features and not cfg.data.latents:
        spec["audio_mask"] = ((cfg.num_samples,), np.dtype(bool))
    if cfg.task == "sr":
        spec["low"] = ((cfg.num_samples,), np.dtype(np.float32))
        spec["cutoff"] = ((), np.dtype(np.float32))
    return spec


def held_out_batch(cfg: Config, count: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The last ``count`` records of a prepared directory as one host batch, and their captions."""
    if cfg.data.source != "prepared":
        raise ValueError(f"held-out records exist only for data.source=prepared, not {cfg.data.source!r}")
    source = make_source(cfg)
    if count > len(source):
        raise ValueError(f"{cfg.data.path}: {count} held-out records requested, the dataset has {len(source)}")
    records = [source[i] for i in range(len(source) - count, len(source))]
    transform = TrainExample(cfg)
    examples = [transform.map(r) for r in records]
    batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
    return batch, [str(r.get("caption", "")) for r in records]


def make_dataset(cfg: Config, process_index: int, process_count: int) -> grain.IterDataset:
    """This process's infinite stream of local batches (global batch / process_count examples)."""
    if cfg.train.batch_size % process_count:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by {process_count} processes")
    local_batch = cfg.train.batch_size // process_count
    source = make_source(cfg)
    ds = grain.MapDataset.source(source)
    if held_out_count(cfg):
        ds = ds[: num_training(cfg, source)]  # the held-out tail never reaches training
    # Local batch k of the full stream holds stream positions [k L, (k + 1) L); global batch b is
    # local batches b P .. b P + P - 1, so process p reads every P-th local batch from p. The global
    # batch (process-local parts concatenated in process order) is then the same G consecutive
    # examples whatever the process count, and so is a process's k-th batch index (= global step).
    ds = ds.shuffle(seed=cfg.data.seed).repeat(None)
    if cfg.data.source == "prepared" and read_spec(cfg.data.path).cropped:  # prepare --max-seconds
        ds = ds.random_map(RandomCrop(cfg.num_samples, cfg.data.sample_rate), seed=cfg.data.seed)
    ds = (
        ds.map(TrainExample(cfg))
        .batch(local_batch, drop_remainder=True)
        .slice(slice(process_index, None, process_count))
    )
    options = grain.ReadOptions(num_threads=cfg.data.prefetch_threads, prefetch_buffer_size=cfg.data.prefetch_buffer)
    return ds.to_iter_dataset(options)


class BatchStream:
    """An iterator over local batches whose position can be saved and restored as JSON."""

    def __init__(self, cfg: Config, process_index: int, process_count: int):
        self._iter = iter(make_dataset(cfg, process_index, process_count))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iter)

    def get_state(self) -> dict[str, Any]:
        """JSON-serializable position (grain's iterator state)."""
        return self._iter.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by :meth:`get_state`."""
        self._iter.set_state(state)
