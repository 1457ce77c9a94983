"""The settings table (clients/schema.py) and what it drives: config fields, client settings, parsers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clients.schema import (
    CLIENT_SETTINGS,
    EXPERIMENT_SETTINGS,
    SETTINGS,
    SETTINGS_BY_KEY,
    format_params,
    parse_bool,
    parse_params,
)
from clients.settings import ClientSettings, resolve_settings
from simulations.config import CLIENT_KEYS, ExperimentConfig
from simulations.sweeps.files import merge_settings, read_sweep


def test_the_table_drives_the_experiment_config_and_the_client_settings() -> None:
    fields = dataclasses.fields(ExperimentConfig)
    assert [f.name for f in fields] == [s.attr for s in EXPERIMENT_SETTINGS]  # result files list them in this order
    assert all(f.default == s.default or f.default_factory() == s.default for f, s in zip(fields, EXPERIMENT_SETTINGS))
    assert {f.name for f in dataclasses.fields(ClientSettings)} == {s.attr for s in CLIENT_SETTINGS} == {
        "task", "data_dir", "download", "partition", "partition_s", "dirichlet_alpha", "dirichlet_min_size", "seed",
        "client_mode", "batch_size", "local_epochs", "local_lr", "device",
    }
    assert resolve_settings({}) == ClientSettings()
    assert ExperimentConfig().defense_params is not ExperimentConfig().defense_params  # a dict each


def test_the_clients_get_the_keys_they_read() -> None:
    assert set(CLIENT_KEYS) == {
        "task", "num-clients", "num-byzantine", "byzantine-placement", "attack", "attack-params", "partition",
        "partition-s", "dirichlet-alpha", "client-mode", "batch-size", "local-epochs", "local-lr", "seed", "data-dir",
        "download", "device",
    }
    client_only = {s.key for s in SETTINGS if s.scope == "client"}
    assert client_only == {"dirichlet-min-size"} and not client_only & set(CLIENT_KEYS)


def test_keys_and_attributes_are_one_spelling() -> None:
    assert len(SETTINGS_BY_KEY) == len(SETTINGS)
    assert all(s.key == s.key.lower() and "_" not in s.key and s.attr == s.key.replace("-", "_") for s in SETTINGS)


@pytest.mark.parametrize("value", [True, 1, np.int64(1), "true", " True ", "1", "yes", "YES"])
def test_parse_bool_true(value) -> None:
    assert parse_bool("x", value) is True


@pytest.mark.parametrize("value", [False, 0, "false", "0", "no"])
def test_parse_bool_false(value) -> None:
    assert parse_bool("x", value) is False


@pytest.mark.parametrize("value", [2, "maybe", "", None, 1.0])
def test_parse_bool_refuses_other_values(value) -> None:
    with pytest.raises(ValueError, match="^--download: expected true or false, got"):
        parse_bool("--download", value)


def test_parse_params_strings_and_tables() -> None:
    text = "preset='reference', lower=0.1, tv-attacks=['none','lie'], name=plain, flag=False"
    parsed = parse_params(text)
    assert parsed == {"preset": "reference", "lower": 0.1, "tv_attacks": ["none", "lie"], "name": "plain", "flag": False}
    assert parse_params({"tv-period": "epoch", "scale": 100.0}) == {"tv_period": "epoch", "scale": 100.0}
    assert parse_params("") == parse_params(None) == {}
    assert parse_params(format_params({"z": 0.3, "variant": "reference"})) == {"z": 0.3, "variant": "reference"}
    with pytest.raises(ValueError, match="^attack-params: entry 'nonsense' is not of the form key=value$"):
        parse_params("z=1,nonsense", "attack-params")
    with pytest.raises(ValueError, match="expected a string of key=value entries"):
        parse_params(3)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("rounds", "30", 30),
        ("rounds", 30.0, 30),
        ("momentum", 0, 0.0),
        ("momentum", "0.5", 0.5),
        ("task", " mnist ", "mnist"),
        ("download", "yes", True),
        ("lr-milestones", "100,150", (100, 150)),
        ("lr-milestones", [100, 150], (100, 150)),
        ("lr-milestones", 100, (100,)),
        ("lr-milestones", "", ()),
        ("declared-f", -1, None),
        ("declared-f", "", None),
        ("declared-f", 3, 3),
        ("attack-params", "z=0.3", {"z": 0.3}),
        ("attack-params", {"z": 0.3}, {"z": 0.3}),
    ],
)
def test_coerce_converts_each_kind(key, value, expected) -> None:
    out = SETTINGS_BY_KEY[key].coerce(value)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rounds", 2.5, "rounds: expected an integer, got 2.5"),
        ("rounds", True, "rounds: expected an integer, got True"),
        ("momentum", "fast", "momentum: expected a number, got 'fast'"),
        ("task", 5, "task: expected a string, got 5"),
        ("attack-params", "z", "attack-params: expected \"key=value,...\", got 'z' (entry 'z' is not of the form key=value)"),
    ],
)
def test_coerce_names_the_key(key, value, message) -> None:
    with pytest.raises(ValueError) as info:
        SETTINGS_BY_KEY[key].coerce(value)
    assert str(info.value) == message


def test_run_config_parsing_checks_values_and_names_the_key() -> None:
    cfg = ExperimentConfig.from_run_config({"rounds": "7", "momentum": 0, "declared_f": -1, "byzantine-fraction": 0.3})
    assert (cfg.rounds, cfg.momentum, cfg.declared_f, cfg.num_byzantine) == (7, 0.0, None, 15)
    assert ExperimentConfig.from_run_config(cfg.to_run_config()) == cfg
    with pytest.raises(ValueError, match="^run-config key 'eval-every' must be >= 1, got 0$"):
        ExperimentConfig.from_run_config({"eval-every": 0})
    with pytest.raises(ValueError, match="^run-config key 'download': expected true or false, got 'maybe'$"):
        ExperimentConfig.from_run_config({"download": "maybe"})
    with pytest.raises(ValueError, match=r"^x.toml: unknown key\(s\) \['rouns'\]"):
        ExperimentConfig.from_run_config({"rouns": 3}, where="x.toml")


def test_sweep_file_blocks_dedupe_and_byzantine_share(tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'description = "d"\n[base]\nrounds = 2\nnum-byzantine = 3\n'
        '[[grid]]\nbyzantine-fraction = [0.1, 0.2]\ndefense = ["mean", "median"]\n'
        '[[grid]]\ndefense = ["mean", "krum"]\nbyzantine-fraction = [0.1]\nattack-params = ["z=0.5", {z = 0.5}]\n'
    )
    spec = read_sweep(path)
    assert (spec.name, spec.description) == ("s", "d")
    runs = [(c.num_byzantine, c.defense, c.attack_params) for c in spec()]
    assert runs == [(5, "mean", {}), (5, "median", {}), (10, "mean", {}), (10, "median", {}),
                    (5, "mean", {"z": 0.5}), (5, "krum", {"z": 0.5})]  # the string and the table are one run
    assert merge_settings({"num-byzantine": 3, "rounds": 2}, {"byzantine-fraction": 0.1}) == {"rounds": 2, "byzantine-fraction": 0.1}
