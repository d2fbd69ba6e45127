"""`mcscale fit` reads a study's trials/ folder (one Parquet file per trial) as one table."""

import pandas as pd
import pytest

from scaling.errors import UserInputError
from scaling.fit.io import read_table


def test_folder_of_parquet_files_is_one_table(tmp_path):
    folder = tmp_path / "trials"
    folder.mkdir()
    for i in range(3):
        pd.DataFrame({"params_nonembed": [10 ** (4 + i)], "val_loss": [3.0 - i * 0.3]}).to_parquet(folder / f"t{i}.parquet")
    table = read_table(folder)
    assert sorted(table["params_nonembed"]) == [10_000, 100_000, 1_000_000]


def test_folder_without_parquet_is_a_clear_error(tmp_path):
    with pytest.raises(UserInputError) as err:
        read_table(tmp_path)
    assert err.value.field == "DATA"
