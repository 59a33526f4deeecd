"""Integer size expressions of scenario files: ``capacity/512``, ``4 * (capacity/512)``, ``1GiB - 2*64MiB``.

A tiny recursive-descent parser (never ``eval``) over integers, sizes with IEC units,
the names given (``capacity``, ``memory``), ``+ - * /`` (``/`` is integer division that
truncates toward zero, as shell arithmetic does), unary minus and parentheses::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := "-" unary | atom
    atom   := NUMBER [UNIT] | NAME | "(" expr ")"

``{...}`` inside a string is such an expression (``"sgx_epc {capacity/512}"``); ``{{`` and
``}}`` stand for literal braces.  An expression has at most MAX_TOKENS numbers, names and
operators, which bounds the parser's and the evaluator's recursion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.units import parse_size

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[KMGTPkmgtp][iI]?[bB]?|[bB])?(?![\w.])"
    r"|(?P<name>[A-Za-z_]\w*)|(?P<op>[-+*/()]))"
)


MAX_TOKENS = 200

Node = tuple[Any, ...]
"""("num", int) | ("name", str) | ("neg", Node) | ("bin", op, Node, Node)"""


class ExprError(ValueError):
    """An expression that cannot be parsed or evaluated; the message says what and where."""


@dataclass(frozen=True, slots=True)
class Expr:
    """A parsed expression: its source text, the names it uses, and its tree."""

    source: str
    names: frozenset[str]
    tree: Node

    def evaluate(self, env: Mapping[str, int | None]) -> int:
        """The value with ``env``'s names; ExprError for a missing name or a division by zero."""
        return _eval(self.tree, env, self.source)


def parse_expr(source: str, names: frozenset[str] = frozenset({"capacity", "memory"})) -> Expr:
    """Parse ``source``; ExprError naming the offending token and its position."""
    tokens = _tokenize(source)
    if len(tokens) > MAX_TOKENS:
        shown = source if len(source) <= 40 else source[:40] + "..."
        raise ExprError(f"{shown!r} is too long: at most {MAX_TOKENS} numbers, names, operators and parentheses")
    parser = _Parser(tokens, source, names)
    tree = parser.expr()
    if parser.pos < len(tokens):
        _, text, at = tokens[parser.pos]
        raise ExprError(f"unexpected {text!r} at column {at + 1} of {source!r}")
    return Expr(source, frozenset(parser.used), tree)


@dataclass(frozen=True, slots=True)
class Template:
    """A string with ``{expr}`` parts: literal pieces and expressions, alternating."""

    source: str
    parts: tuple[str | Expr, ...]

    @property
    def names(self) -> frozenset[str]:
        used: set[str] = set()
        for part in self.parts:
            if isinstance(part, Expr):
                used |= part.names
        return frozenset(used)

    def render(self, env: Mapping[str, int | None]) -> str:
        return "".join(part if isinstance(part, str) else str(part.evaluate(env)) for part in self.parts)


def parse_template(source: str) -> Template:
    """Split ``source`` at ``{...}``; ExprError for an unbalanced brace or a bad expression."""
    parts: list[str | Expr] = []
    literal: list[str] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if source.startswith("{{", i) or source.startswith("}}", i):
            literal.append(ch)
            i += 2
        elif ch == "{":
            end = source.find("}", i)
            if end < 0:
                raise ExprError(f"a '{{' without its '}}' in {source!r}")
            parts.append("".join(literal))
            literal = []
            parts.append(parse_expr(source[i + 1 : end]))
            i = end + 1
        elif ch == "}":
            raise ExprError(f"a '}}' without its '{{' in {source!r} (write '}}}}' for a literal one)")
        else:
            literal.append(ch)
            i += 1
    parts.append("".join(literal))
    return Template(source, tuple(p for p in parts if p != ""))


def _tokenize(source: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(source) and len(tokens) <= MAX_TOKENS:  # parse_expr rejects more
        if source[pos:].strip() == "":
            break
        m = _TOKEN.match(source, pos)
        if m is None:
            at = len(source) - len(source[pos:].lstrip())
            raise ExprError(f"unexpected {source[at]!r} at column {at + 1} of {source!r}")
        at = pos + len(m.group(0)) - len(m.group(0).lstrip())
        if m.group("num") is not None:
            text = m.group("num") + (m.group("unit") or "")
            tokens.append(("num", text, at))
        elif m.group("name") is not None:
            tokens.append(("name", m.group("name"), at))
        else:
            tokens.append(("op", m.group("op"), at))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], source: str, names: frozenset[str]) -> None:
        self.tokens, self.source, self.names = tokens, source, names
        self.pos = 0
        self.used: set[str] = set()

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _op(self, *ops: str) -> str | None:
        token = self._peek()
        if token is not None and token[0] == "op" and token[1] in ops:
            self.pos += 1
            return token[1]
        return None

    def expr(self) -> Node:
        tree = self.term()
        while (op := self._op("+", "-")) is not None:
            tree = ("bin", op, tree, self.term())
        return tree

    def term(self) -> Node:
        tree = self.unary()
        while (op := self._op("*", "/")) is not None:
            tree = ("bin", op, tree, self.unary())
        return tree

    def unary(self) -> Node:
        if self._op("-") is not None:
            return ("neg", self.unary())
        return self.atom()

    def atom(self) -> Node:
        token = self._peek()
        if token is None:
            raise ExprError(f"{self.source!r} ends where a number, a name or '(' should be")
        kind, text, at = token
        self.pos += 1
        if kind == "num":
            try:
                return ("num", parse_size(text))
            except ValueError as e:
                raise ExprError(f"bad size {text!r} at column {at + 1} of {self.source!r}: {e}") from None
        if kind == "name":
            if text not in self.names:
                known = ", ".join(sorted(self.names))
                raise ExprError(f"unknown name {text!r} in {self.source!r} (known: {known})")
            self.used.add(text)
            return ("name", text)
        if text == "(":
            tree = self.expr()
            if self._op(")") is None:
                raise ExprError(f"a '(' without its ')' in {self.source!r}")
            return tree
        raise ExprError(f"unexpected {text!r} at column {at + 1} of {self.source!r}")


def _eval(tree: Node, env: Mapping[str, int | None], source: str) -> int:
    tag = tree[0]
    if tag == "num":
        return int(tree[1])
    if tag == "name":
        value = env.get(str(tree[1]))
        if value is None:
            raise ExprError(f"{source!r} uses {tree[1]}, which this scenario does not set")
        return value
    if tag == "neg":
        return -_eval(tree[1], env, source)
    _, op, left_tree, right_tree = tree
    left = _eval(left_tree, env, source)
    right = _eval(right_tree, env, source)
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0:
        raise ExprError(f"division by zero in {source!r}")
    quotient = abs(left) // abs(right)
    return quotient if (left >= 0) == (right >= 0) else -quotient
