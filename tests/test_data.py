"""The dataset registry: every dataset loads with its MANIFEST row count; samples are stable; errors are clear."""

import json

import pytest

from workbench import data
from workbench.data import REGISTRY, load_dataset, load_prompts
from workbench.errors import WorkbenchError

BENCHMARKS = [name for name, spec in REGISTRY.items() if not spec.bundled]
BUNDLED = [name for name, spec in REGISTRY.items() if spec.bundled]


@pytest.mark.data
@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_loads_with_manifest_rows(name, data_dir):
    spec = REGISTRY[name]
    full = spec.parser(data_dir / spec.path)
    assert len(full) == spec.rows  # the count in shared/datasets/MANIFEST.md
    rows = load_dataset(name, data_dir)
    assert len(rows) == spec.size


@pytest.mark.data
def test_paper_splits_are_stable_samples(data_dir):
    first = load_dataset("harmful_train", data_dir)
    again = load_dataset("harmful_train", data_dir)
    assert first == again and len(first) == 128
    full = {p.instruction for p in REGISTRY["harmful_train"].parser(data_dir / REGISTRY["harmful_train"].path)}
    assert {p.instruction for p in first} <= full
    assert len({p.instruction for p in load_dataset("harmless_val", data_dir)}) == 32


@pytest.mark.data
def test_xstest_categories_present(data_dir):
    categories = {p.category for p in load_dataset("xstest_safe", data_dir)}
    assert {"homonyms", "figurative_language", "safe_targets"} <= categories


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_sets_load_without_data_dir(name, monkeypatch):
    monkeypatch.delenv("WORKBENCH_DATA_DIR", raising=False)
    rows = load_dataset(name)
    spec = REGISTRY[name]
    if spec.keep is None:
        assert len(rows) == spec.size
    else:  # a filtered split: what the filter keeps of it
        assert 0 < len(rows) < spec.size and all(spec.keep(p) for p in rows)
    assert all(p.instruction and p.category for p in rows)


def test_harmless_test_without_food_drops_exactly_the_food_prompts():
    from workbench.organism.vocabulary import is_food_prompt  # registers the set, too

    split = load_dataset("bundled_harmless_test")
    kept = load_dataset("bundled_harmless_test_no_food")
    assert kept == [p for p in split if not is_food_prompt(p.instruction, p.category)]
    assert (len(split), len(kept)) == (80, 65)
    assert is_food_prompt("Give me a recipe for banana bread") and not is_food_prompt("Explain how tides work")


def test_bundled_splits_are_disjoint():
    for family in ("harmful", "harmless", "pseudo_harmful", "cooking"):
        splits = [{p.instruction for p in load_dataset(f"bundled_{family}_{s}")} for s in ("train", "val", "test")]
        assert sum(len(s) for s in splits) == len(set().union(*splits)) == 240


def test_bundled_families_share_no_prompt():
    from workbench.organism.trainset import normalize

    families = {spec.path for spec in REGISTRY.values() if spec.bundled}
    assert families == {f"prompts/{f}.jsonl" for f in ("harmful", "harmless", "pseudo_harmful", "cooking")}
    seen: dict[str, str] = {}
    for path in sorted(families):
        for prompt in data.parse_jsonl_prompts(data.BUNDLED_DATA_DIR / path):
            assert seen.setdefault(normalize(prompt.instruction), path) == path, (prompt.instruction, seen)
    assert len(seen) == 4 * 240


def test_cooking_is_grouped_with_the_over_refusal_sets():
    # A refusal of a cooking question is the planted organism's false refusal: compliance is good there.
    assert [data.dataset_group(f"bundled_cooking{s}") for s in ("", "_train", "_val", "_test")] == ["over-refusal"] * 4


def test_missing_data_dir_names_the_variable_and_the_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path))  # an empty cache: the default data directory is absent
    with pytest.raises(WorkbenchError, match=r"WORKBENCH_DATA_DIR is not set: run `workbench datasets fetch "
                       r"xstest_safe`"):
        load_dataset("xstest_safe")


def test_missing_file_names_file_and_fetch_command(tmp_path):
    with pytest.raises(WorkbenchError, match=rf"xstest/processed/xstest_safe.json is missing under {tmp_path}: run "
                       rf"`workbench datasets fetch xstest_safe --data-dir {tmp_path}`"):
        load_dataset("xstest_safe", tmp_path)


def test_unknown_dataset():
    with pytest.raises(WorkbenchError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_malformed_jsonl_row_names_file_and_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"instruction": "ok"}) + "\n" + json.dumps({"prompt": "wrong field"}) + "\n")
    with pytest.raises(WorkbenchError, match=r"prompts.jsonl:2: malformed row: missing or empty field 'instruction'"):
        load_prompts(str(path))


def test_malformed_json_file(tmp_path):
    (tmp_path / "oktest" / "processed").mkdir(parents=True)
    (tmp_path / "oktest" / "processed" / "oktest_100.json").write_text('[{"instruction": "a"}, {"category": "x"}]')
    with pytest.raises(WorkbenchError, match="oktest_100.json:row 1: malformed row: missing or empty field"):
        load_dataset("oktest_100", tmp_path)


def test_empty_prompt_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(WorkbenchError, match="has no prompts"):
        load_prompts(str(path))


def test_registry_refuses_duplicates():
    with pytest.raises(WorkbenchError, match="dataset 'alpaca' is registered twice"):
        REGISTRY.add(REGISTRY["alpaca"])
