"""Fixtures of tests/data: tiny datasets in their official layouts, built by :mod:`data_fixtures`."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import Built, build_cvc, build_folder, build_isic, build_kvasir, build_montgomery, build_ph2


@pytest.fixture
def isic2016(tmp_path: Path) -> Built:
    return build_isic(tmp_path, "isic2016")


@pytest.fixture
def isic2017(tmp_path: Path) -> Built:
    return build_isic(tmp_path, "isic2017")


@pytest.fixture
def isic2018(tmp_path: Path) -> Built:
    return build_isic(tmp_path, "isic2018")


@pytest.fixture
def cvc(tmp_path: Path) -> Built:
    return build_cvc(tmp_path / "CVC-ClinicDB")


@pytest.fixture
def montgomery(tmp_path: Path) -> Built:
    return build_montgomery(tmp_path / "MontgomerySet")


@pytest.fixture
def ph2(tmp_path: Path) -> Built:
    return build_ph2(tmp_path / "ph2")


@pytest.fixture
def kvasir(tmp_path: Path) -> Built:
    return build_kvasir(tmp_path / "kvasir_seg")


@pytest.fixture
def folder(tmp_path: Path) -> Built:
    return build_folder(tmp_path / "generic")
