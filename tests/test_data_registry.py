"""Every dataset of the issue is registered, and a missing corpus says what to fetch."""

from __future__ import annotations

import pytest

from pyro_zforcing.config import DataConfig
from pyro_zforcing.data import DATASETS, DataError, load_dataset
from pyro_zforcing.data.cache import cache_folder

WHERE = {
    "timit": r"LDC93S1",
    "blizzard": r"Blizzard Challenge 2013",
    "mnist": r"yann\.lecun\.com",
    "imdb": r"ai\.stanford\.edu",
    "audio": r"asterisk",
    "text": r"fortunes",
}


def test_all_datasets_are_registered_by_name():
    assert set(WHERE) | {"digits"} <= set(DATASETS)


@pytest.mark.parametrize("name", sorted(WHERE))
def test_missing_data_dir_is_a_one_line_error_saying_where_to_obtain_it(name):
    with pytest.raises(DataError, match=rf"^{name}: no --data-dir given.*{WHERE[name]}.*expected under --data-dir") as err:
        load_dataset(DataConfig(dataset=name))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(WHERE))
def test_unknown_option_is_rejected_before_reading_anything(name, tmp_path):
    with pytest.raises(DataError, match=rf"{name}: unknown option\(s\) bogus; known: "):
        load_dataset(DataConfig(dataset=name, data_dir=str(tmp_path), options={"bogus": 1}))


def test_default_cache_is_the_user_cache_dir_never_the_data_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder(DataConfig(data_dir=str(data)), data) == tmp_path / "xdg" / "pyro-zforcing"
    assert list(data.iterdir()) == []
    explicit = tmp_path / "mine"
    assert cache_folder(DataConfig(data_dir=str(data), cache_dir=str(explicit)), data) == explicit
