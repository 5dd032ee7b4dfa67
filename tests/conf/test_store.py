"""The config store: every group's options registered in Hydra's ConfigStore, once, with the
primary config's defaults naming options that exist."""

from __future__ import annotations

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from esper.conf import GROUPS, ConfigError, EsperConfig, options
from esper.conf.store import PRIMARY, register


def test_every_group_has_options_and_each_is_in_hydras_store() -> None:
    register()
    repo = ConfigStore.instance().repo
    assert f"{PRIMARY}.yaml" in repo
    for group in GROUPS:
        names = options(group)
        assert names and names == sorted(names)
        assert {f"{n}.yaml" for n in names} == set(repo[group]), group


def test_registering_twice_keeps_the_first_nodes() -> None:
    register()
    repo = ConfigStore.instance().repo
    before = {g: {k: id(v.node) for k, v in repo[g].items()} for g in GROUPS}
    register()
    assert {g: {k: id(v.node) for k, v in repo[g].items()} for g in GROUPS} == before


def test_the_primary_defaults_name_registered_options() -> None:
    chosen = {k: v for d in EsperConfig().defaults if isinstance(d, dict) for k, v in d.items()}
    assert set(chosen) == set(GROUPS)
    for group, name in chosen.items():
        assert name in options(group), f"{group}={name}"


def test_a_stored_option_is_its_dataclass() -> None:
    register()
    node = ConfigStore.instance().repo["experiment"]["smoke.yaml"].node
    smoke = OmegaConf.to_object(OmegaConf.merge(node))
    assert smoke.name == "smoke" and smoke.steps == 60  # type: ignore[union-attr]


def test_an_unknown_group_is_refused_listing_the_groups() -> None:
    with pytest.raises(ConfigError, match=r"unknown config group 'host'; valid groups: workload"):
        options("host")
