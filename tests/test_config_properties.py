"""Property-based tests of ``--set key=value`` over every config key (issue 17, "bad values everywhere").

Property 1: ``load_config(None, [f"{key}={text}"])`` either succeeds or raises :class:`ConfigError`
whose message is one line and names a key it is about. Any other exception (TypeError,
OverflowError, RecursionError, ...), a multi-line message or one that does not name the key fails.

The naming rule: the defaults are valid, so an error is always caused by an overridden key. A
single-field error names that field's full dotted key; a cross-field error names every key it
involves (``model.embed_dim=130 is not divisible by model.num_heads=4``). Hence the message names
at least one of the overridden keys, and with one override, that key.

Property 2: when it succeeds, the field holds exactly the value the text spells (type included:
``(1.5,)`` is not an int tuple, ``nan`` not a float), and ``save_json`` then ``load_json`` gives an
equal config (and ``to_dict``), written as strict JSON (no NaN/Infinity).

The texts: valid values of the field's type (drawn from its type hint, or its CHOICES), and
garbage of every other kind (numbers for strings, strings for numbers, unbalanced or deep
brackets, very long texts, null bytes, non-finite floats, huge integers). ``expected`` below is the
specification of what each type accepts. Hypothesis prints the seed and the falsifying example.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import typing

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from jaxstage import config as config_lib
from jaxstage.config import CHOICES, Config, ConfigError, all_keys, load_config, load_json, save_json, to_dict

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _hints(obj: typing.Any = None, prefix: str = "") -> dict[str, typing.Any]:
    obj = Config() if obj is None else obj
    hints = typing.get_type_hints(type(obj))
    out = {}
    for name in config_lib._fields(obj):
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            out.update(_hints(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = hints[name]
    return out


HINTS = _hints()
KEYS = all_keys()
assert set(HINTS) == set(KEYS)
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
INT64 = (-(2 ** 63), 2 ** 63 - 1)
INVALID = object()  # expected() of a text that is no value of the type


# --------------------------------------------------------------------------- the specification


def _element(value: typing.Any, hint: typing.Any) -> typing.Any:
    """A parsed literal as the type ``hint`` exactly (no truncation, no str() of numbers); INVALID if not."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return INVALID
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(args) != len(value):
            return INVALID
        items = tuple(_element(v, a) for a, v in zip(args, value))
        return INVALID if any(i is INVALID for i in items) else items
    if hint is int:
        return value if type(value) is int and INT64[0] <= value <= INT64[1] else INVALID
    if hint is float:
        try:
            value = float(value) if type(value) is int else value
        except OverflowError:
            return INVALID
        return value if type(value) is float and math.isfinite(value) else INVALID
    return value if type(value) is hint else INVALID


def expected(key: str, text: str) -> typing.Any:
    """The value ``--set key=text`` must give, or INVALID when ``text`` is not a value of the key's type
    (which must be a ConfigError). Range and cross-field rules are validate()'s, not checked here."""
    hint, text = HINTS[key], text.strip()
    if hint is bool:
        low = text.lower()
        return True if low in TRUE else False if low in FALSE else INVALID
    if hint is str:
        return text
    try:
        if hint is int:
            value = int(text)
        elif hint is float:
            value = float(text)
        else:  # tuples: JSON, or a Python literal
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
        return INVALID
    return _element(value, hint)


def names(message: str, key: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message) is not None


# ---------------------------------------------------------------------------------- strategies

UNICODE = st.text(st.characters(codec="utf-8"), max_size=20)
TRICKY_STR = st.sampled_from(["", " ", "a=b", "'", '"', "\"'", "a\nb", "\t", "(", ")", "[1,", "é", "日本",
                              "\U0001f600", "\\", "\\u0041", "a(b)c", "\x00", "null", "None", "true", "1"])
WORDS = sorted({c for v in CHOICES.values() for c in v} | {"data", "fsdp", "tensor", "data,fsdp", "butter"})
STR = st.one_of(UNICODE, TRICKY_STR, st.sampled_from(WORDS))
SMALL_INT = st.integers(-3, 64)
INT = st.one_of(SMALL_INT, st.integers(*INT64), st.sampled_from([INT64[0], INT64[1], 2 ** 31, 10 ** 9]))
FLOAT = st.one_of(st.floats(0, 1), st.floats(allow_nan=False, allow_infinity=False), SMALL_INT.map(float),
                  st.sampled_from([-0.0, 1e-300, 5e-324, 1.7e308, 0.5, 1.0, 8000.0]))


def value_of(hint: typing.Any) -> st.SearchStrategy:
    """A valid value of a field's type."""
    if hint is bool:
        return st.booleans()
    if hint is int:
        return INT
    if hint is float:
        return FLOAT
    if hint is str:
        return STR
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return st.lists(value_of(args[0]), max_size=5).map(tuple)
    return st.tuples(*(value_of(a) for a in args))


def _py(value: typing.Any) -> str:
    return repr(value)


@st.composite
def text_of(draw, hint: typing.Any, value: typing.Any) -> str:
    """Some spelling of ``value`` (a value of ``hint``) as an override text."""
    if hint is bool:
        word = draw(st.sampled_from(TRUE if value else FALSE))
        return draw(st.sampled_from([word, word.upper(), word.capitalize(), f" {word} "]))
    if hint is int:
        return draw(st.sampled_from([str(value), f" {value} ", f"{value:_}", f"+{value}" if value >= 0 else str(value)]))
    if hint is float:
        return draw(st.sampled_from([repr(value), f"{value:e}" if float(f"{value:e}") == value else repr(value),
                                     f"{value}".upper()]))
    if hint is str:
        return value
    listed = json.loads(json.dumps(value))  # tuples -> lists
    return draw(st.sampled_from([_py(value), json.dumps(listed), json.dumps(listed, ensure_ascii=False),
                                 _py(listed)]))


def _garbage_literal() -> st.SearchStrategy:
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner), max_leaves=8)


GARBAGE = st.one_of(
    st.text(max_size=30),
    st.text(st.sampled_from("()[],.'\"0123456789-+eE_ abxnNI\\"), max_size=30),
    st.sampled_from([
        "(1,", "((1, 2)", "[1, 2", ")", "(", "[", "]", "()", "[]", "{}", "{'a': 1}", "None", "null", "nan", "NaN",
        "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", "1.5", "-0.0", "0x10", "1_000", "٣", "1 2",
        "true", "maybe", "2.0", "[NaN]", "[Infinity]", "[1e400]", "(1.5,)", "(True,)", "[true]", "('a', 1)",
        '["a", 1]', "[1, 2, 3]", "[[1, 2], [3]]", "[[\"a\", \"b\", \"c\"]]", "(('a', 'b'),)", "b'x'", "1j",
        "{1, 2}", "'\\x00'", "a\x00b", "\x00", "[" * 5000, "(" * 5000, "[" * 100 + "]" * 100,
        "-" * 5000 + "1", "9" * 5000, "9" * 4000, str(2 ** 63), str(-(2 ** 63) - 1), "x" * 100_000,
        "[" + "1, " * 10_000 + "1]", "\n", "a\nb", "\u2028", "'", '"',
    ]),
    _garbage_literal().map(repr),
    _garbage_literal().map(lambda v: json.dumps(v, default=str)),
)


OTHER_TYPES = sorted({*HINTS.values(), tuple[float, ...], tuple[tuple[str, int], ...]}, key=repr)


@st.composite
def override(draw, keys=KEYS) -> tuple[str, str]:
    """(key, text): a valid value of the key's type in some spelling, a value of another type, or garbage."""
    key = draw(st.sampled_from(keys))
    hint = HINTS[key]
    kind = draw(st.sampled_from(["own", "own", "other", "garbage"]))
    if kind == "own":
        if key in CHOICES and draw(st.booleans()):
            return key, draw(st.sampled_from(CHOICES[key]))
        return key, draw(text_of(hint, draw(value_of(hint))))
    if kind == "other":
        other = draw(st.sampled_from(OTHER_TYPES))
        return key, draw(text_of(other, draw(value_of(other))))
    return key, draw(GARBAGE)


# ----------------------------------------------------------------------------------- checking


def load(overrides: list[tuple[str, str]], base: tuple[str, ...] = ()) -> Config | None:
    """Property 1 (a one-line ConfigError naming an overridden key, or a config) and, on success,
    property 2 (each key holds the value its text spells)."""
    try:
        cfg = load_config(None, [*base, *(f"{k}={t}" for k, t in overrides)])
    except ConfigError as err:
        _event("rejected")
        message = str(err)
        assert message and len(message.splitlines()) == 1 and "\n" not in message, f"not one line: {message!r}"
        assert any(names(message, k) for k, _ in overrides), f"names none of {[k for k, _ in overrides]}: {message!r}"
        return None
    _event("accepted")
    last = {k: t for k, t in overrides}
    for key, text in last.items():
        want = expected(key, text)
        got = config_lib.get_value(cfg, key)
        assert want is not INVALID, f"{key}={text!r} is no {HINTS[key]} but was accepted as {got!r}"
        assert got == want and type(got) is type(want), f"{key}={text!r} gave {got!r}, not {want!r}"
        if isinstance(want, tuple):
            assert repr(got) == repr(want), f"{key}={text!r} gave {got!r}, not {want!r}"
    return cfg


def _event(name: str) -> None:  # for --hypothesis-show-statistics
    if currently_in_test_context():
        event(name)


def invalid_must_fail(overrides: list[tuple[str, str]], base: tuple[str, ...] = ()) -> None:
    """A text that is no value of its key's type is rejected (load() checks the message)."""
    if any(expected(k, t) is INVALID for k, t in overrides):
        with pytest.raises(ConfigError):
            load_config(None, [*base, *(f"{k}={t}" for k, t in overrides)])


def round_trip(cfg: Config, path) -> None:
    save_json(cfg, path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"config.json holds {c}"))
    again = load_json(path)
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)


@pytest.fixture(scope="module")
def json_path(tmp_path_factory):
    return tmp_path_factory.mktemp("config_properties") / "config.json"


# -------------------------------------------------------------------------------- properties


@EXAMPLES
@given(item=override())
@example(item=("guidance.ssl_layers", "[" * 5000))
@example(item=("sr.orders", "(4.5,)"))
@example(item=("regime.monitor_levels", "(0.5, 0.5, 0.5)"))
@example(item=("mesh.rules", '[["a(b", "data"]]'))
@example(item=("sample.cfg_interval", "(0, 1e400)"))
@example(item=("train.seed", str(2 ** 64)))
def test_one_override(item, json_path):
    cfg = load([item])
    invalid_must_fail([item])
    if cfg is not None:
        round_trip(cfg, json_path)


SR_BASE = ("task=sr", "data.source=synthetic_speech", "sample.cfg_scale=1")
SR_KEYS = [k for k in KEYS if k.startswith(("sr.", "data.", "sample.", "codec."))]


@EXAMPLES
@given(item=override(SR_KEYS))
@example(item=("data.clip_seconds", "1e300"))
@example(item=("data.sample_rate", str(2 ** 63 - 1)))
@example(item=("sr.window_overlap_seconds", "1e308"))
def test_one_override_on_a_super_resolution_config(item, json_path):
    """On a valid task=sr config, where validate's sr.* rules run."""
    load_config(None, list(SR_BASE))
    cfg = load([item], SR_BASE)
    invalid_must_fail([item], SR_BASE)
    if cfg is not None:
        round_trip(cfg, json_path)


@EXAMPLES
@given(items=st.lists(override(), min_size=2, max_size=4))
def test_several_overrides(items, json_path):
    """``--set a=.. --set b=..``: the last value of a key wins; an error names one of the keys."""
    cfg = load(items)
    if cfg is not None:
        round_trip(cfg, json_path)


@pytest.mark.parametrize("overrides", [
    ["model.embed_dim=96", "model.num_heads=3", "text.width=96", "text.num_heads=3"],
    ["regime.mode=adaptive", "guidance.lambda0=0.5", "struct.enabled=true", "struct.num_groups=4"],
    ["mesh.data=1", "mesh.fsdp=-1", "mesh.rules=[[\"batch\", \"data,fsdp\"], [\"embed\", \"\"]]"],
    [*SR_BASE, "sr.orders=(2, 4)", "sr.methods=('butter',)", "sr.cutoff_max_hz=3500"],
    ["guidance.ssl_resolutions=((256, 128), (128, 64))", "guidance.ssl_layers=[]", "name=a=b 'c' é"],
])
def test_valid_override_sets_round_trip(overrides, json_path):
    cfg = load([tuple(o.split("=", 1)) for o in overrides])
    assert cfg is not None
    round_trip(cfg, json_path)


@pytest.mark.parametrize("overrides, culprit", [
    ([*SR_BASE, "data.clip_seconds=1e300"], "data.clip_seconds"),
    ([*SR_BASE, f"data.sample_rate={2 ** 70}"], "data.sample_rate"),
    (["model.depth=3", "guidance.layer=4"], "guidance.layer"),
    (["regime.monitor_levels=(0.5, 0.5, 0.5)", "regime.monitor_size=64"], "regime.monitor_levels"),
])
def test_bad_override_sets_name_the_key(overrides, culprit):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value) and names(str(info.value), culprit), str(info.value)


def test_load_json_rejects_hand_edited_types(json_path):
    """config.json is read on resume: a wrong type there is a one-line error, not a traceback later."""
    for section, key, value in [("model", "depth", "4"), ("model", "depth", 2.5), ("model", "qk_norm", 1),
                                ("sr", "orders", [2.5]), ("model", None, 3), (None, None, [])]:
        data = to_dict(Config())
        if section is None:
            data = value
        elif key is None:
            data[section] = value
        else:
            data[section][key] = value
        json_path.write_text(json.dumps(data))
        with pytest.raises(ConfigError) as info:
            load_json(json_path)
        assert "\n" not in str(info.value) and str(json_path) in str(info.value)


def test_cli_reports_a_bad_value_in_one_line(capsys):
    """aot-check loads the config before it starts JAX: a bad --set exits 2 with one line naming the key."""
    from jaxstage.cli import main

    for item, key in [("model.depth=abc", "model.depth"), ("sr.orders=" + "(" * 3000, "sr.orders")]:
        assert main(["aot-check", "--set", item]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("jaxstage aot-check: error: "), err
        assert names(err, key), err
