"""The library/CLI boundary: library errors name the parameter (``lr``), commands show flags."""

import pytest

from i2e_neuro.commands import train as cmd
from i2e_neuro.datasets.sources import SourceError, dataset_source
from i2e_neuro.errors import flag_wording
from i2e_neuro.train import TrainError, resolve_config


@pytest.mark.parametrize(
    "given, library, cli",
    [
        ({"lr": 0.0}, "lr 0.0: must be a positive number", "--lr 0.0: must be a positive number"),
        ({"qat_lr": -1.0}, "qat_lr -1.0: must be", "--qat-lr -1.0: must be"),
        ({"batch_size": 0}, "batch_size 0: must be >= 1", "--batch-size 0: must be >= 1"),
        (
            {"epochs": 0, "qat_epochs": 0},
            "epochs and qat_epochs are both 0",
            "--epochs and --qat-epochs are both 0",
        ),
        ({"dataset": "events", "size": 32}, "size applies", "--size applies"),
    ],
)
def test_library_errors_name_the_parameter_and_the_cli_words_it_as_a_flag(given, library, cli):
    with pytest.raises(TrainError) as e:
        resolve_config(**given)
    assert library in str(e.value) and "--" not in str(e.value)
    assert cli in flag_wording(e.value)


def test_a_source_without_its_root_names_the_parameter():
    with pytest.raises(SourceError) as e:
        dataset_source("mnist")
    assert "give root" in str(e.value) and e.value.params == ("root",)
    assert "give --root" in flag_wording(e.value)


def test_the_train_command_prints_the_flag(capsys):
    assert cmd.main(["--lr", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["i2e-neuro train: error: --lr 0.0: must be a positive number"]
