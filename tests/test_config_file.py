"""Unit tier: dataclass configs from TOML, with errors naming the key."""

from dataclasses import dataclass

import pytest

from workbench.errors import WorkbenchError
from workbench.stages.config_file import from_dict, load_toml, pop_model_keys


@dataclass(frozen=True)
class Inner:
    lams: tuple[float, ...] = (1.0,)
    limit: int | None = None
    name: str = "x"
    flag: bool = False


@dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    n: int = 3


def test_values_are_checked_and_converted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('n = 5\n[inner]\nlams = [1, 0.5]\nlimit = 8\nflag = true\n')
    config = from_dict(Outer, load_toml(path))
    assert config == Outer(Inner(lams=(1.0, 0.5), limit=8, flag=True), 5)
    assert from_dict(Inner, {}, base=Inner(name="kept")).name == "kept"


@pytest.mark.parametrize(("data", "message"), [
    ({"m": 1}, "config: unknown key 'm'"),
    ({"inner": {"lamz": [1.0]}}, "config.inner: unknown key 'lamz'"),
    ({"n": "3"}, "config.n: expected an integer, got str"),
    ({"n": True}, "config.n: expected an integer, got bool"),
    ({"inner": {"lams": 1.0}}, "config.inner.lams: expected a list"),
    ({"inner": {"lams": [1.0, "a"]}}, r"config.inner.lams\[1\]: expected a number"),
    ({"inner": {"limit": 2.5}}, "config.inner.limit: expected an integer"),
    ({"inner": 3}, "config.inner: expected a table"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(WorkbenchError, match=message):
        from_dict(Outer, data)


def test_bad_files(tmp_path):
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("n = = 3")
    with pytest.raises(WorkbenchError, match="not valid TOML"):
        load_toml(tmp_path / "bad.toml")


def test_shipped_configs_load():
    from pathlib import Path

    from workbench.stages.pipeline import PipelineConfig

    root = Path(__file__).resolve().parent.parent / "configs"
    for path in sorted(root.glob("*.toml")):
        data = load_toml(path)
        assert isinstance(pop_model_keys(data, path.name)["model"], str)
        config = from_dict(PipelineConfig, data, where=path.name)
        config.validate()
        config.sweep.validate()
    default = from_dict(PipelineConfig, {k: v for k, v in load_toml(root / "default.toml").items() if k != "model"})
    assert default == PipelineConfig(sweep=default.sweep) and default.sweep.lams == (1.0, 0.6, 0.2, 0.0)


def test_model_keys_of_a_run_config_are_checked():
    data = {"model": "m", "dtype": "bfloat16", "stages": ["extract"]}
    assert pop_model_keys(data, "f.toml") == {"model": "m", "dtype": "bfloat16"} and data == {"stages": ["extract"]}
    assert pop_model_keys({}, "f.toml") == {"model": None, "dtype": None}
    with pytest.raises(WorkbenchError, match="f.toml: dtype must be one of float32, bfloat16, float16, got 'int8'"):
        pop_model_keys({"dtype": "int8"}, "f.toml")
    with pytest.raises(WorkbenchError, match="f.toml: model must be a string"):
        pop_model_keys({"model": 3}, "f.toml")
