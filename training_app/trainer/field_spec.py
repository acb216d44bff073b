"""One config key described once (:class:`FieldSpec`): its type, default, rule, message and help text.

The trainer's checks and the portal's schema and form are built from these. No torch, no Django.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldSpec:
    """One config key described once: type, default, allowed values, help text, whether the portal offers it.

    The trainer's checks and the portal's schema and form are all built from these, so a range, a message
    or a help text changes in one place. Bounds use pydantic's names: ``ge``/``le`` are inclusive,
    ``gt``/``lt`` exclusive.
    """

    name: str
    type: Any  # a real type such as int or float | None (None allowed: "off" or "same as ...")
    default: Any
    help: str = ""
    choices: tuple[Any, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    multiple_of: int | None = None
    max_length: int | None = None
    forbidden: str = ""  # characters a string must not contain
    hint: str = ""  # appended to the generated message, e.g. "(typical: 1e-4)"
    message: str = ""  # replaces the generated message where that would read badly
    exposed: bool = True  # False: a trainer-only key the portal does not offer

    @property
    def nullable(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def value_type(self) -> Any:
        """The type without None: float for ``float | None``."""
        if not self.nullable:
            return self.type
        rest = [arg for arg in typing.get_args(self.type) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else self.type

    @property
    def error_message(self) -> str:
        """What people read when a value breaks this field's rule."""
        if self.message:
            return self.message
        if self.choices:
            rule = f"one of {', '.join(str(choice) for choice in self.choices)}"
        elif self.value_type in (int, float):
            rule = _range_words(self)
        elif self.max_length is not None:
            rule = f"at most {self.max_length} characters"
        else:
            rule = "valid"
        return f"{self.name} must be {rule}" + (f" {self.hint}" if self.hint else "")

    def problem(self, value: Any) -> str | None:
        """The error message when ``value`` breaks this field's rule; None when it is allowed."""
        if (value is None and self.nullable) or self._allows(value):
            return None
        return self.error_message

    def _allows(self, value: Any) -> bool:
        kind = self.value_type
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if kind is float and not _finite(value):
            return False
        if kind is str and not isinstance(value, str):
            return False
        if self.choices and value not in self.choices:
            return False
        if kind in (int, float):
            return (
                (self.ge is None or value >= self.ge)
                and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le)
                and (self.lt is None or value < self.lt)
                and (self.multiple_of is None or value % self.multiple_of == 0)
            )
        if kind is str:
            too_long = self.max_length is not None and len(value) > self.max_length
            return not too_long and not any(char in value for char in self.forbidden)
        return True


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _range_words(spec: FieldSpec) -> str:
    """``between 1 and 64``, ``at least 0 and below 1``, ``above 0 and at most 1``, ``a multiple of 8 ...``."""
    if spec.ge is not None and spec.le is not None:
        words = f"between {_number(spec.ge)} and {_number(spec.le)}"
    else:
        low = (f"at least {_number(spec.ge)}" if spec.ge is not None
               else f"above {_number(spec.gt)}" if spec.gt is not None else "")
        high = (f"at most {_number(spec.le)}" if spec.le is not None
                else f"below {_number(spec.lt)}" if spec.lt is not None else "")
        words = " and ".join(part for part in (low, high) if part)
    if spec.multiple_of is not None:
        return f"a multiple of {spec.multiple_of}" + (f" {words}" if words else "")
    return words or ("a whole number" if spec.value_type is int else "a number")


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
