"""The dataset registry is the one list of datasets: the CLI choices, help texts, recipes and
default ratios all come from it."""

import argparse

import pytest

from i2e_neuro.cli import build_parser
from i2e_neuro.datasets import registry, sources, train_data
from i2e_neuro.train import RECIPES, TrainError, resolve_config


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_convert_choices_are_the_registry_s_convertible_datasets():
    convert = _subparser("convert")
    choices = tuple(_option(convert, "--dataset").choices)
    assert choices == registry.names(convert=True) == sources.DATASETS
    assert set(choices) < set(registry.REGISTRY)
    help_text = convert.format_help()
    for name in choices:
        assert registry.REGISTRY[name].layout is None or name in help_text


def test_train_help_and_recipes_cover_exactly_the_registry():
    train = _subparser("train")
    help_text = " ".join(train.format_help().split())
    listed = _option(train, "--dataset").help.split(" (default")[0].split(", ")
    assert listed == list(registry.REGISTRY)
    for d in registry.REGISTRY.values():
        if d.layout:
            assert " ".join(d.layout.split()) in help_text, d.name
    assert list(RECIPES) == list(registry.REGISTRY)
    assert train_data.ALL_DATASETS == tuple(registry.REGISTRY)
    assert set(train_data.IMAGE_DATASETS) | set(train_data.EVENT_DATASETS) == set(registry.REGISTRY)


@pytest.mark.parametrize("name", list(registry.REGISTRY))
def test_every_entry_resolves_and_has_a_builder(name):
    entry = registry.REGISTRY[name]
    assert entry.kind in ("images", "events")
    cfg = resolve_config(dataset=name)
    assert cfg.dataset == name and cfg.epochs == entry.recipe["epochs"]
    assert cfg.ratio == entry.recipe["ratio"]
    assert train_data.BUILDERS[entry.builder] is getattr(train_data, entry.builder)
    if entry.ratio is not None:
        assert sources.DEFAULT_RATIOS[name] == entry.ratio


def test_an_unknown_dataset_lists_the_registry():
    with pytest.raises(TrainError, match="dataset nope: unknown") as e:
        resolve_config(dataset="nope")
    assert all(name in str(e.value) for name in registry.REGISTRY)
    assert e.value.params == ("dataset",)
