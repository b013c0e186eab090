"""Tokenizer and named-parameter binding for the Delta utility statements (pure text, no I/O)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from retail_lakehouse.core.errors import SqlError

# ---------------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------------

TokenKind = Literal["word", "qident", "string", "number", "param", "punct"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_PUNCT = ("<=", ">=", "!=", "<>", "==", "(", ")", ",", ".", "=", "<", ">", ";", "@", "*")
_IDENT_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|`(?:[^`]|``)+`")


@dataclass(frozen=True)
class Token:
    """One lexical token; `value` is decoded (string contents, backquoted name without quotes)."""

    kind: TokenKind
    value: str
    start: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.value.upper() in words


def _skip_comment(text: str, i: int) -> int:
    """Return the index after a comment starting at i, or i when there is none."""
    if text.startswith("--", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end + 1
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        if end < 0:
            raise SqlError("unterminated /* comment")
        return end + 2
    return i


def _scan_quoted(text: str, i: int) -> tuple[str, int]:
    """Decode the quoted string or backquoted name at i; return (value, index after it)."""
    quote = text[i]
    out: list[str] = []
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == quote:
            if j + 1 < len(text) and text[j + 1] == quote:  # doubled quote escapes itself
                out.append(quote)
                j += 2
                continue
            return "".join(out), j + 1
        if ch == "\\" and quote != "`" and j + 1 < len(text):
            nxt = text[j + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r", "0": "\0"}.get(nxt, nxt))
            j += 2
            continue
        out.append(ch)
        j += 1
    kind = "backquoted name" if quote == "`" else "string literal"
    raise SqlError(f"unterminated {kind} starting at character {i}")


def tokenize(text: str, *, lenient: bool = False) -> list[Token]:
    """Split a statement into tokens, dropping whitespace and comments.

    Args:
        text: the statement.
        lenient: for classifying any SQL: unknown characters become punctuation tokens and an
            unterminated literal or comment ends the token list instead of raising.

    Raises:
        SqlError: (not lenient) on an unterminated string, name or comment, or an unexpected character.
    """
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        try:
            after = _skip_comment(text, i)
            if ch in "'\"`":
                value, i_next = _scan_quoted(text, i)
        except SqlError:
            if lenient:
                return tokens
            raise
        if after != i:
            i = after
            continue
        if ch in "'\"`":
            tokens.append(Token("qident" if ch == "`" else "string", value, i))
            i = i_next
            continue
        if ch == ":" and (m := _WORD.match(text, i + 1)):
            tokens.append(Token("param", m.group(), i))
            i = m.end()
            continue
        if m := _WORD.match(text, i):
            tokens.append(Token("word", m.group(), i))
            i = m.end()
            continue
        if ch.isdigit() or (ch in "+-." and (m := _NUMBER.match(text, i))):
            m = _NUMBER.match(text, i)
            assert m is not None
            tokens.append(Token("number", m.group(), i))
            i = m.end()
            continue
        for p in _PUNCT:
            if text.startswith(p, i):
                tokens.append(Token("punct", p, i))
                i += len(p)
                break
        else:
            if not lenient:
                raise SqlError(f"unexpected character {ch!r} at position {i}")
            tokens.append(Token("punct", ch, i))
            i += 1
    return tokens


# ---------------------------------------------------------------------------------------------------
# Parameter binding
# ---------------------------------------------------------------------------------------------------


def validate_identifier(value: object) -> str:
    """Return value if it is a (dotted) SQL identifier, else raise SqlError."""
    if not isinstance(value, str):
        raise SqlError(f"IDENTIFIER() needs a string naming a table or column, got {type(value).__name__}")
    pos = 0
    while True:
        m = _IDENT_PART.match(value, pos)
        if not m:
            break
        pos = m.end()
        if pos == len(value):
            return value
        if value[pos] != ".":
            break
        pos += 1
    raise SqlError(
        f"IDENTIFIER() value {value!r} is not a valid identifier: use dotted parts of "
        "letters, digits and underscores (catalog.schema.table) or backquote a part (`my table`)"
    )


def sql_literal(value: object) -> str:
    """Render a Python value as a Databricks SQL literal (strings are escaped, never executed)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | Decimal):
        if isinstance(value, Decimal) and not value.is_finite():
            raise SqlError(f"cannot bind non-finite decimal {value}")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SqlError(f"cannot bind non-finite float {value}; use CAST('NaN' AS DOUBLE) in the SQL text")
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        # Spark SQL escapes with backslashes inside literals (a doubled quote would concatenate literals).
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise SqlError(f"cannot bind a value of type {type(value).__name__}: use str, int, float, Decimal, "
                   "bool, None, date or datetime")


_IDENTIFIER_CALL = re.compile(r"IDENTIFIER\s*\(\s*:([A-Za-z_][A-Za-z0-9_]*)\s*\)", re.IGNORECASE)


def bind_parameters(statement: str, args: Mapping[str, object] | None) -> str:
    """Substitute Databricks named parameter markers with literals.

    `IDENTIFIER(:name)` becomes the (validated) identifier, `:name` a SQL literal. Text inside string
    literals, backquoted names and comments is left alone, `::` casts are not markers, and neither is
    `col:field` (JSON path: a colon glued to the name before it).

    Args:
        statement: SQL text with optional `:name` markers.
        args: values by name; unused names are ignored.

    Returns:
        The statement with every marker replaced.

    Raises:
        SqlError: a marker has no value, an IDENTIFIER value is not an identifier, or a value has a
            type that cannot be a literal.
    """
    args = args or {}
    out: list[str] = []
    i = 0
    n = len(statement)

    def value_of(name: str) -> object:
        if name not in args:
            known = ", ".join(sorted(args)) or "none"
            raise SqlError(f"parameter :{name} has no value (given: {known}) in statement {statement!r}")
        return args[name]

    while i < n:
        ch = statement[i]
        after = _skip_comment(statement, i)
        if after != i:
            out.append(statement[i:after])
            i = after
            continue
        if ch in "'\"`":
            _, end = _scan_quoted(statement, i)
            out.append(statement[i:end])
            i = end
            continue
        if ch in "Ii" and (m := _IDENTIFIER_CALL.match(statement, i)) and (
            i == 0 or not (statement[i - 1].isalnum() or statement[i - 1] == "_")
        ):
            out.append(validate_identifier(value_of(m.group(1))))
            i = m.end()
            continue
        if ch == ":":
            if statement.startswith("::", i):
                out.append("::")
                i += 2
                continue
            prev = statement[i - 1] if i else " "
            m = _WORD.match(statement, i + 1)
            if m and not (prev.isalnum() or prev in "_`])"):
                out.append(sql_literal(value_of(m.group())))
                i = m.end()
                continue
        if m := _WORD.match(statement, i):  # copy whole words so IDENTIFIER inside a name is not matched
            out.append(m.group())
            i = m.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)
