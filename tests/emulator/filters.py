"""Parser for Klaviyo's ``filter`` query parameter.

Klaviyo: API overview (Filtering): ``equals(email,"a@b.com")``,
``any(email,["a@b.com","c@d.com"])``,
``greater-than(updated,2024-01-01T00:00:00Z)`` (datetimes unquoted), ``and(f1,f2)`` or
comma-joined conditions. String values are quoted; inside quotes a backslash escapes the next
character (``\\"`` and ``\\\\``). The spec's own examples quote with single quotes
(``equals(name,['example'])``), so both quote characters are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .rules import parse_datetime


class FilterError(ValueError):
    """A filter Klaviyo would reject with 400 (``source.parameter: "filter"``)."""


@dataclass(frozen=True)
class Condition:
    operator: str
    field: str
    value: Any  # str, datetime, list[str], bool, number or None


@dataclass(frozen=True)
class Quoted:
    text: str


@dataclass(frozen=True)
class Bare:
    text: str


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> FilterError:
        return FilterError(f"Invalid filter at position {self.pos}: {message}.")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def expect(self, char: str) -> None:
        self.skip_space()
        if self.peek() != char:
            raise self.error(f"expected '{char}'")
        self.pos += 1

    def name(self) -> str:
        self.skip_space()
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() in "-_.$"):
            self.pos += 1
        if start == self.pos:
            raise self.error("expected a name")
        return self.text[start : self.pos]

    def conditions(self) -> list[Condition]:
        found = self.condition()
        self.skip_space()
        while self.peek() == ",":
            self.pos += 1
            found += self.condition()
            self.skip_space()
        return found

    def condition(self) -> list[Condition]:
        operator = self.name()
        self.expect("(")
        if operator == "and":
            found = self.conditions()
            self.expect(")")
            return found
        field = self.name()
        self.expect(",")
        value = self.value()
        self.expect(")")
        return [Condition(operator, field, value)]

    def value(self) -> Any:
        self.skip_space()
        char = self.peek()
        if char in ('"', "'"):
            return Quoted(self.quoted(char))
        if char == "[":
            self.pos += 1
            items: list[Any] = []
            self.skip_space()
            if self.peek() == "]":
                self.pos += 1
                return items
            while True:
                items.append(self.value())
                self.skip_space()
                if self.peek() == ",":
                    self.pos += 1
                    continue
                self.expect("]")
                return items
        start = self.pos
        while self.peek() and self.peek() not in ",()[]":
            self.pos += 1
        text = self.text[start : self.pos].strip()
        if not text:
            raise self.error("expected a value")
        return Bare(text)

    def quoted(self, quote: str) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise self.error("unterminated string")
            self.pos += 1
            if char == "\\":
                escaped = self.peek()
                if not escaped:
                    raise self.error("dangling backslash")
                out.append(escaped)
                self.pos += 1
            elif char == quote:
                return "".join(out)
            else:
                out.append(char)


# How each field's values must be written.
STRING, DATETIME, BOOLEAN = "string", "datetime", "boolean"


def parse_filter(text: str, allowed: dict[str, tuple[str, frozenset[str]]]) -> list[Condition]:
    """Parse and type-check a filter. ``allowed`` maps field -> (kind, operators).

    The result is a conjunction of conditions; values are plain ``str`` / ``datetime`` or lists.
    """
    parser = _Parser(text)
    conditions = parser.conditions()
    parser.skip_space()
    if parser.pos != len(text):
        raise parser.error("unexpected trailing characters")
    typed: list[Condition] = []
    for condition in conditions:
        if condition.field not in allowed:
            raise FilterError(f"'{condition.field}' is not a valid field for this filter.")
        kind, operators = allowed[condition.field]
        if condition.operator not in operators:
            raise FilterError(
                f"'{condition.operator}' is not a valid operator for '{condition.field}'."
            )
        if condition.operator == "any":
            if not isinstance(condition.value, list):
                raise FilterError(f"'any' on '{condition.field}' needs a list of values.")
            value: Any = [_typed(v, kind, condition.field) for v in condition.value]
        else:
            value = _typed(condition.value, kind, condition.field)
        typed.append(Condition(condition.operator, condition.field, value))
    return typed


def _typed(raw: Any, kind: str, field: str) -> str | datetime | bool:
    if kind == STRING:
        if not isinstance(raw, Quoted):
            raise FilterError(f"Values for '{field}' must be quoted strings.")
        return raw.text
    if kind == BOOLEAN:
        # Klaviyo: API overview: booleans are unquoted true / false.
        if not isinstance(raw, Bare) or raw.text not in ("true", "false"):
            raise FilterError(f"Values for '{field}' must be true or false.")
        return raw.text == "true"
    # Klaviyo: API overview: datetimes are unquoted.
    if not isinstance(raw, Bare):
        raise FilterError(f"Values for '{field}' must be unquoted datetimes.")
    moment = parse_datetime(raw.text)
    if moment is None:
        raise FilterError(f"'{raw.text}' is not a valid datetime for '{field}'.")
    return moment


def compare_datetimes(operator: str, left: datetime, right: datetime) -> bool:
    """Whether ``left`` satisfies a datetime condition against ``right``."""
    return {
        "greater-than": left > right,
        "greater-or-equal": left >= right,
        "less-than": left < right,
        "less-or-equal": left <= right,
    }[operator]
