"""One small registry: named items of one kind (datasets, models, organisms, judges, refusal-token families, ...),
in registration order. `register` refuses a name twice; `get` (and `[]`) refuses an unknown name with a message that
lists the known ones."""

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from workbench.errors import WorkbenchError

T = TypeVar("T")
_REQUIRED = object()


class Registry(Generic[T]):
    """Items of one `kind` by name. Reads like a read-only mapping (`name in reg`, `reg[name]`, `len`, iteration
    over the names, `items()`, `values()`); `hint` is added to the unknown-name message (e.g. where to look)."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add `item` under `name` (returned, so a module can keep it); a name already taken is an error."""
        if name in self._items:
            raise WorkbenchError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def add(self, item: T) -> T:
        """`register(item.name, item)`, for items that carry their name."""
        return self.register(item.name, item)  # type: ignore[attr-defined]

    def get(self, name: str, default: Any = _REQUIRED) -> T:
        """The item named `name`; an unknown name is an error listing the known ones (or, given one, `default`)."""
        try:
            return self._items[name]
        except KeyError:
            if default is not _REQUIRED:
                return default
            known = ", ".join(self._items) or "none registered"
            raise WorkbenchError(f"unknown {self.kind} {name!r}: use one of {known}"
                                 + (f" ({self.hint})" if self.hint else "")) from None

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def values(self) -> list[T]:
        return list(self._items.values())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, item: T) -> None:
        """Replace (or add) `name`'s item: an explicit override, for tests and screening scripts."""
        self._items[name] = item

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
