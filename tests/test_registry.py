"""The one generic registry (`workbench.registry.Registry`) and the registries built on it."""

from dataclasses import dataclass

import pytest

from workbench.errors import WorkbenchError
from workbench.registry import Registry

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Item:
    name: str
    value: int = 0


def test_register_get_names_and_iteration_keep_order():
    reg: Registry[Item] = Registry("widget")
    first = reg.register("b", Item("b", 1))
    assert first == Item("b", 1)  # returned, so a module can keep it
    reg.add(Item("a", 2))
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"] and len(reg) == 2
    assert reg.get("a") == reg["a"] == Item("a", 2)
    assert "a" in reg and "c" not in reg
    assert reg.get("c", None) is None  # with a default, as a mapping's get
    assert reg.items() == [("b", Item("b", 1)), ("a", Item("a", 2))]
    assert reg.values() == [Item("b", 1), Item("a", 2)]


def test_a_name_registered_twice_is_refused():
    reg: Registry[Item] = Registry("widget")
    reg.add(Item("a"))
    with pytest.raises(WorkbenchError, match=r"^widget 'a' is registered twice$"):
        reg.register("a", Item("a", 5))
    assert reg["a"] == Item("a")  # the first registration stands


def test_an_unknown_name_lists_the_known_ones():
    reg: Registry[Item] = Registry("widget", "see `workbench widgets`")
    for name in ("x", "y"):
        reg.add(Item(name))
    with pytest.raises(WorkbenchError, match=r"^unknown widget 'z': use one of x, y \(see `workbench widgets`\)$"):
        reg.get("z")
    with pytest.raises(WorkbenchError, match="unknown widget 'z'"):
        reg["z"]
    with pytest.raises(WorkbenchError, match=r"^unknown gadget 'q': use one of none registered$"):
        Registry("gadget").get("q")


def test_an_explicit_override_replaces_and_restores(monkeypatch):
    reg: Registry[Item] = Registry("widget")
    reg.add(Item("a", 1))
    with monkeypatch.context() as patch:
        patch.setitem(reg, "a", Item("a", 9))
        patch.setitem(reg, "new", Item("new"))
        assert reg["a"].value == 9 and "new" in reg
    assert reg.names() == ["a"] and reg["a"].value == 1


def test_the_workbench_registries_are_registries():
    from workbench.data import REGISTRY
    from workbench.eval.judges import JUDGES
    from workbench.models.organisms import ORGANISM_MODELS
    from workbench.models.refusal_tokens import KNOWN
    from workbench.models.sources import BUILTIN_MODELS, SOURCES
    from workbench.organism.recipes import RECIPES, REPORTED

    for registry in (REGISTRY, JUDGES, ORGANISM_MODELS, KNOWN, BUILTIN_MODELS, SOURCES, RECIPES, REPORTED):
        assert isinstance(registry, Registry)
    assert SOURCES.names() == ["builtin", "local", "gguf", "hub"]  # tried in this order
    assert KNOWN.names() == ["llama-2", "llama-3", "gemma", "qwen", "yi"]
    with pytest.raises(WorkbenchError, match="unknown judge 'nope': use one of substring, keywords, model, endpoint"):
        JUDGES.get("nope")
