"""What every method's settings share: named presets, checked overrides, a JSON round trip.

A method's config is a frozen dataclass that also derives from :class:`MethodSettings`, names
itself in ``METHOD`` (for error messages) and returns its presets from :meth:`presets`.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, TypeVar

S = TypeVar("S", bound="MethodSettings")


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (numpy integers included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class MethodSettings:
    """Mixin for a method's frozen-dataclass settings."""

    METHOD: ClassVar[str] = "method"
    #: Budget fields and the fields that switch them off: ``{budget: (field, ...)}``. A budget field
    #: scales its fields to the user's run (e.g. ReCAM's ``reference_steps`` its ``learning_rate``);
    #: one of them given as an override without the budget is taken as given (the budget becomes None).
    BUDGETS: ClassVar[Mapping[str, Tuple[str, ...]]] = {}

    @classmethod
    def presets(cls: type[S]) -> Mapping[str, S]:
        """``{name: settings}`` of this method (``"voc"``, ``"coco"``)."""
        raise NotImplementedError

    @classmethod
    def preset(cls: type[S], name: str = "voc", **overrides: Any) -> S:
        """The named preset with ``overrides`` applied."""
        presets = cls.presets()
        try:
            base = presets[name.lower()]
        except (KeyError, AttributeError):
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}") from None
        return base.replace(**overrides)

    @classmethod
    def resolve(cls: type[S], preset: str = "voc", config: Optional[S] = None, **overrides: Any) -> S:
        """What a method's constructor takes: ``config`` (or the named ``preset``) with ``overrides`` applied."""
        base = config if config is not None else cls.preset(preset)
        return base.replace(**overrides) if overrides else base

    def replace(self: S, **overrides: Any) -> S:
        """A copy with ``overrides`` applied; unknown names raise ``TypeError`` naming them. A field of
        :attr:`BUDGETS` given without its budget field sets that budget to None."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        if unknown:
            raise TypeError(f"unknown {self.METHOD} option(s): {sorted(unknown)}")
        for budget, scaled in self.BUDGETS.items():
            if set(scaled) & set(overrides) and budget not in overrides:
                overrides = {**overrides, budget: None}
        return dataclasses.replace(self, **overrides)  # type: ignore[type-var]

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict of every field (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """Inverse of :meth:`to_dict` (lists of tuple-valued fields become tuples again); unknown
        keys raise ``TypeError``."""
        defaults = cls()
        values = {key: tuple(value) if isinstance(getattr(defaults, key, None), tuple) and isinstance(value, list)
                  else value for key, value in data.items()}
        return defaults.replace(**values)
