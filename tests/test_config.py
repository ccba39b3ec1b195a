"""Tests for carl.config: defaults, TOML loading, --set overrides, errors, round trip."""

from __future__ import annotations

import dataclasses
import re

import pytest
import tomllib

from carl.config import CarlConfig, ConfigError, config_defaults, load_config


def write_toml(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_defaults_validate():
    cfg = CarlConfig()
    assert cfg.validate() is cfg
    assert load_config() == cfg
    assert cfg.objective.name == "mcl"
    assert cfg.objective.mcl.temperature == 0.1
    assert cfg.objective.mcl.label_temperature == 0.5
    assert cfg.train.batch_size == 32


def test_load_toml_then_overrides(tmp_path):
    path = write_toml(
        tmp_path,
        """
[model]
encoder = "some/encoder"
pooling = "cls"

[train]
batch_size = 16
learning_rate = 3e-5
epochs = 2

[objective]
name = "mcl"

[objective.mcl]
queue_size = 256
temperature = 0.2
""",
    )
    cfg = load_config(path, ["train.batch_size=8", "objective.mcl.temperature=0.05"])
    assert cfg.model.encoder == "some/encoder"
    assert cfg.model.pooling == "cls"
    assert cfg.train.batch_size == 8  # override wins over the file
    assert cfg.train.learning_rate == 3e-5
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)  # TOML int -> float
    assert cfg.objective.name == "mcl"
    assert cfg.objective.mcl.queue_size == 256
    assert cfg.objective.mcl.temperature == 0.05
    # untouched keys keep their defaults
    assert cfg.objective.mcl.momentum == 0.999
    assert cfg.data.max_length == 128


def test_set_overrides_coerce_types():
    cfg = load_config(
        None,
        [
            "train.max_steps=7",
            "objective.mcl.label_temperature=1",  # int text for a float key
            "train.learning_rate=2e-4",
            "model.encoder=bert-base-uncased",
            "data.text_column = sentence",  # spaces around '=' tolerated
            "data.path=a=b.csv",  # only the first '=' splits
        ],
    )
    assert cfg.train.max_steps == 7 and type(cfg.train.max_steps) is int
    assert cfg.objective.mcl.label_temperature == 1.0
    assert type(cfg.objective.mcl.label_temperature) is float
    assert cfg.train.learning_rate == pytest.approx(2e-4)
    assert cfg.model.encoder == "bert-base-uncased"
    assert cfg.data.text_column == "sentence"
    assert cfg.data.path == "a=b.csv"


def test_string_key_keeps_numeric_looking_text():
    cfg = load_config(None, ["model.encoder=123", "data.scale=1-9"])
    assert cfg.model.encoder == "123"
    assert cfg.data.scale == "1-9"


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["objective.mcl.temprature=0.2"])
    message = str(info.value)
    assert "objective.mcl.temprature" in message
    assert "'objective.mcl.temperature'" in message


def test_unknown_section_suggests_closest_full_key():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["trian.batch_size=4"])
    assert "train.batch_size" in str(info.value)


def test_unknown_key_in_toml_names_file_and_suggests(tmp_path):
    path = write_toml(tmp_path, "[train]\nbatchsize = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "train.batch_size" in message


def test_wrong_type_names_key():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.batch_size=abc"])
    assert "train.batch_size" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.batch_size=2.5"])  # float for an int key
    assert "train.batch_size" in str(info.value)
    with pytest.raises(ConfigError):
        load_config(None, ["train.batch_size=true"])  # bool is not an int


def test_wrong_type_in_toml(tmp_path):
    path = write_toml(tmp_path, "[model]\nencoder = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "model.encoder" in str(info.value)


def test_invalid_enum_raises():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["objective.name=foo"])
    message = str(info.value)
    assert "objective.name" in message and "foo" in message
    for item in (
        "model.pooling=max",
        "objective.ptd.selection=all",
        "objective.ptd.replacement=delete",
        "train.mixed_precision=fp8",
    ):
        with pytest.raises(ConfigError):
            load_config(None, [item])


@pytest.mark.parametrize("name", ["carl", "mcl", "mse", "supcon-hard"])
def test_valid_objectives(name):
    assert load_config(None, [f"objective.name={name}"]).objective.name == name


@pytest.mark.parametrize(
    "item",
    [
        "objective.mcl.momentum=1.0",
        "objective.mcl.momentum=-0.1",
        "objective.ptd.ratio=0",
        "objective.ptd.ratio=1.5",
        "objective.mcl.temperature=0",
        "objective.mcl.label_temperature=-1",
        "train.batch_size=0",
        "train.learning_rate=0",
    ],
)
def test_range_checks(item):
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    assert item.split("=")[0] in str(info.value)


def test_edge_values_accepted():
    cfg = load_config(None, ["objective.mcl.momentum=0", "objective.ptd.ratio=1"])
    assert cfg.objective.mcl.momentum == 0.0 and cfg.objective.ptd.ratio == 1.0


def test_set_without_equals_and_section_assignment():
    with pytest.raises(ConfigError):
        load_config(None, ["train.batch_size"])
    with pytest.raises(ConfigError):
        load_config(None, ["objective.mcl=3"])
    with pytest.raises(ConfigError):
        load_config(None, ["train.batch_size.x=3"])


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError):
        load_config(write_toml(tmp_path, "[train\nbatch_size = 3\n"))


def test_to_toml_round_trip(tmp_path):
    cfg = load_config(
        None,
        [
            "model.encoder=some/path with spaces",
            'data.text_column=tëxt "quoted"',
            "objective.name=supcon-hard",
            "objective.mcl.hard_bins=4",
            "train.learning_rate=5e-05",
            "train.epochs=3",
            "objective.ptd.ratio=0.3",
        ],
    )
    text = cfg.to_toml()
    parsed = tomllib.loads(text)
    assert parsed["objective"]["mcl"]["hard_bins"] == 4
    path = tmp_path / "round.toml"
    path.write_text(text, encoding="utf-8")
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    # defaults round-trip too
    path.write_text(CarlConfig().to_toml(), encoding="utf-8")
    assert load_config(path) == CarlConfig()


def test_config_defaults_contains_every_key():
    defaults = config_defaults()
    expected = flatten(CarlConfig().to_dict())
    assert defaults == expected
    assert "objective.mcl.temperature" in defaults
    assert "objective.ptd.replacement" in defaults
    assert "train.batch_size" in defaults
    assert not any(dataclasses.is_dataclass(v) for v in defaults.values())
    # and every key can be set back to its default through --set
    items = [f"{k}={v}" for k, v in defaults.items()]
    assert load_config(None, items) == CarlConfig()


def test_overrides_do_not_leak_between_loads():
    load_config(None, ["train.batch_size=4", "objective.mcl.queue_size=8"])
    fresh = load_config()
    assert fresh.train.batch_size == 32
    assert fresh.objective.mcl.queue_size == 4096


@pytest.mark.parametrize(
    "item, bound",
    [
        ("train.keep_checkpoints=0", "at least 1"),
        ("train.checkpoint_every=-1", "at least 0"),
        ("train.num_threads=-3", "at least 0"),
        ("train.warmup_ratio=1.5", "[0, 1]"),
        ("train.seed=-1", "[0, 4294967295]"),
    ],
)
def test_train_setting_ranges(item, bound):
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    assert item.split("=")[0] in str(info.value) and bound in str(info.value)


def test_train_setting_edges_accepted():
    cfg = load_config(
        None,
        [
            "train.keep_checkpoints=1",
            "train.checkpoint_every=0",
            "train.num_threads=0",
            "train.warmup_ratio=1",
            "train.seed=0",
            "train.resume_mismatch=warn",
        ],
    )
    assert (cfg.train.keep_checkpoints, cfg.train.checkpoint_every, cfg.train.resume_mismatch) == (1, 0, "warn")
    with pytest.raises(ConfigError, match="train.resume_mismatch"):
        load_config(None, ["train.resume_mismatch=ignore"])


def test_every_numeric_setting_refuses_a_negative_or_nan_value():
    """No numeric key accepts -1 (or NaN for floats): each is named in a ConfigError."""
    for key, default in config_defaults().items():
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        for value in ("-1",) if isinstance(default, int) else ("-1", "nan"):
            with pytest.raises(ConfigError, match=re.escape(key.split(".")[-1])):
                load_config(None, [f"{key}={value}"])
