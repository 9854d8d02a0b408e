from __future__ import annotations

from pathlib import Path

import pytest

from bidfilter.scoring import ServingModel


@pytest.fixture(scope="module")
def version_dir(trained_store: tuple[Path, str]) -> Path:
    store_dir, version = trained_store
    return store_dir / "versions" / version


@pytest.fixture(scope="module")
def model(version_dir: Path) -> ServingModel:
    return ServingModel.load(version_dir)
