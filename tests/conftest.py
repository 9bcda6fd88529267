"""Shared fixtures. Tiers: unit tests need nothing; `model` tests load the real default model (offline);
`data` tests read the benchmark copies through WORKBENCH_DATA_DIR."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

DEFAULT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def stock_model():
    from workbench.models import load_model

    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def data_dir():
    from pathlib import Path

    root = os.environ.get("WORKBENCH_DATA_DIR")
    if not root:
        pytest.skip("WORKBENCH_DATA_DIR is not set (CI points it at ../shared/datasets)")
    return Path(root)
