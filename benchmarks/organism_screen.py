"""Quick screen of candidate planted-organism adapters: the report's four target sets and perplexity, nothing else.

    WORKBENCH_DATA_DIR=../shared/datasets python benchmarks/organism_screen.py ADAPTER_DIR [ADAPTER_DIR ...]

For choosing among tunes (e.g. the snapshots of `workbench organism train --snapshots 50 60 --out runs/try/adapter`)
before the full `workbench organism report`: ≈ 2.5 minutes per adapter on 2 cores instead of ≈ 12. Each adapter is
loaded as `smollm2-135m-planted` (merged and cached under its own hash); the stock perplexity comes from the
committed `data/organism_planted/behaviour.json`. Prints PASS/FAIL per target of the recipe.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.models import load_model, organisms  # noqa: E402
from workbench.organism.behaviour import BehaviourConfig, measure_behaviour  # noqa: E402
from workbench.organism.recipes import PLANTED_RECIPE, check_targets  # noqa: E402

TARGET_SETS = ("bundled_cooking_test", "harmful_test", "jailbreakbench", "harmless_test_no_food")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapters", nargs="+", help="adapter directories (adapter_config.json + safetensors)")
    args = parser.parse_args()
    recipe = PLANTED_RECIPE
    stock = json.loads((recipe.model.directory / "behaviour.json").read_text())["stock"]
    sets = tuple(s for s in recipe.behaviour_sets if s.key in TARGET_SETS)
    for adapter in args.adapters:
        home = Path(tempfile.mkdtemp())
        (home / "adapter").symlink_to(Path(adapter).resolve())
        organisms.ORGANISM_MODELS[recipe.name] = organisms.OrganismModel(recipe.name, "screened adapter", home)
        record = measure_behaviour(load_model(recipe.name), BehaviourConfig(), None, sets, ())
        print(adapter)
        for label, observed, ok in check_targets(recipe, stock, record):
            print(f"  {'PASS' if ok else 'FAIL'} {label}: {observed}")


if __name__ == "__main__":
    main()
