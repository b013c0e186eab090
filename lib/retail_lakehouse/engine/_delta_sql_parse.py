"""Parser for the Delta utility statements served by delta-rs.

Pure text in, dataclasses out: nothing here touches a table. `delta_sql` runs the parsed statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from retail_lakehouse.core.errors import SqlError
from retail_lakehouse.engine._delta_sql_lex import Token, tokenize, validate_identifier

# ---------------------------------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRef:
    """A table as written: a name (`a.b.c`) or a path (delta.`/abs/path`)."""

    name: str
    path: str | None = None


@dataclass(frozen=True)
class DescribeHistory:
    table: TableRef
    limit: int | None


@dataclass(frozen=True)
class DescribeDetail:
    table: TableRef


@dataclass(frozen=True)
class Predicate:
    column: str
    op: str  # delta-rs partition filter operator: = != < <= > >= in not in
    value: str | list[str]


@dataclass(frozen=True)
class Optimize:
    table: TableRef
    where: list[Predicate]
    zorder: list[str]


@dataclass(frozen=True)
class Vacuum:
    table: TableRef
    retain_hours: float | None
    dry_run: bool
    full: bool


@dataclass(frozen=True)
class Restore:
    table: TableRef
    version: int | None
    timestamp: str | None


@dataclass(frozen=True)
class ShowTblProperties:
    table: TableRef
    key: str | None


@dataclass(frozen=True)
class SetTblProperties:
    table: TableRef
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UnsetTblProperties:
    table: TableRef
    keys: list[str]
    if_exists: bool


@dataclass(frozen=True)
class AddColumns:
    table: TableRef
    columns: list[tuple[str, str]]


Statement = (
    DescribeHistory | DescribeDetail | Optimize | Vacuum | Restore | ShowTblProperties
    | SetTblProperties | UnsetTblProperties | AddColumns
)

SYNTAX = {
    "DESCRIBE HISTORY": "DESCRIBE HISTORY table_name [LIMIT n]",
    "DESCRIBE DETAIL": "DESCRIBE DETAIL table_name",
    "OPTIMIZE": "OPTIMIZE table_name [WHERE partition_col = 'v' [AND ...]] [ZORDER BY (col1, col2)]",
    "VACUUM": "VACUUM table_name [LITE | FULL] [RETAIN n HOURS] [DRY RUN]",
    "RESTORE": "RESTORE [TABLE] table_name [TO] {VERSION AS OF n | TIMESTAMP AS OF 'yyyy-MM-dd HH:mm:ss'}",
    "SHOW TBLPROPERTIES": "SHOW TBLPROPERTIES table_name [('key')]",
    "ALTER TABLE": "ALTER TABLE table_name {SET TBLPROPERTIES ('k' = 'v', ...) | "
                   "UNSET TBLPROPERTIES [IF EXISTS] ('k', ...) | ADD COLUMNS (name type, ...)}",
}


def command_of(tokens: list[Token]) -> str | None:
    """Name the Delta utility command the tokens start with (a SYNTAX key), or None."""
    words = [t.value.upper() if t.kind == "word" else None for t in tokens[:2]]
    first = words[0] if words else None
    second = words[1] if len(words) > 1 else None
    if first in ("DESCRIBE", "DESC") and second in ("HISTORY", "DETAIL"):
        return f"DESCRIBE {second}"
    if first in ("OPTIMIZE", "VACUUM", "RESTORE"):
        return first
    if first == "SHOW" and second == "TBLPROPERTIES":
        return "SHOW TBLPROPERTIES"
    if first == "ALTER" and second == "TABLE":
        # ALTER TABLE <name> SET|UNSET TBLPROPERTIES: look past the name for the keyword pair.
        for a, b in zip(tokens[2:], tokens[3:], strict=False):
            if a.is_word("SET", "UNSET") and b.is_word("TBLPROPERTIES") or a.is_word("ADD") and b.is_word(
                "COLUMNS", "COLUMN"
            ):
                return "ALTER TABLE"
            if a.kind not in ("word", "qident", "param") and a.value not in (".", "(", ")"):
                break
    return None


class _Parser:
    def __init__(self, statement: str, tokens: list[Token], command: str) -> None:
        self.statement = statement
        self.tokens = tokens
        self.command = command
        self.pos = 0

    def fail(self, reason: str) -> SqlError:
        return SqlError(f"cannot parse {self.statement.strip()!r}: {reason}. "
                        f"Expected syntax: {SYNTAX[self.command]}")

    def peek(self, offset: int = 0) -> Token | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def describe_next(self) -> str:
        tok = self.peek()
        return "end of statement" if tok is None else repr(tok.value)

    def next(self, what: str) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.fail(f"expected {what}, found end of statement")
        self.pos += 1
        return tok

    def accept(self, *words: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.is_word(*words):
            self.pos += 1
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            raise self.fail(f"expected {' or '.join(words)}, found {self.describe_next()}")

    def accept_punct(self, p: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.value == p:
            self.pos += 1
            return True
        return False

    def expect_punct(self, p: str) -> None:
        if not self.accept_punct(p):
            raise self.fail(f"expected {p!r}, found {self.describe_next()}")

    def end(self) -> None:
        self.accept_punct(";")
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.describe_next()}")

    def table(self) -> TableRef:
        tok = self.peek()
        if tok is not None and tok.is_word("IDENTIFIER") and (nxt := self.peek(1)) and nxt.value == "(":
            self.pos += 2
            lit = self.next("a string naming the table")
            if lit.kind != "string":
                raise self.fail("IDENTIFIER() takes a string literal or a :parameter")
            self.expect_punct(")")
            sub = _Parser(lit.value, tokenize(validate_identifier(lit.value)), self.command)
            return sub.table()
        parts = [self.name_part("a table name")]
        while self.accept_punct("."):
            parts.append(self.name_part("a name part after '.'"))
        if len(parts) == 2 and parts[0][0].lower() == "delta" and parts[1][1] == "qident":
            path = parts[1][0]
            if not path.startswith("/") and "://" not in path:
                raise self.fail(f"delta.`{path}` needs an absolute path")
            return TableRef(name=f"delta.`{path}`", path=path)
        return TableRef(name=".".join(p[0] for p in parts))

    def name_part(self, what: str) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or tok.kind not in ("word", "qident"):
            raise self.fail(f"expected {what}, found {self.describe_next()}")
        self.pos += 1
        return tok.value, tok.kind

    def integer(self, what: str) -> int:
        tok = self.next(what)
        if tok.kind != "number" or not re.fullmatch(r"\d+", tok.value):
            raise self.fail(f"expected {what} (a non-negative integer), found {tok.value!r}")
        return int(tok.value)

    def literal(self, what: str) -> str:
        """A string, number or boolean literal, as the string delta-rs wants."""
        tok = self.next(what)
        if tok.kind in ("string", "number"):
            return tok.value
        if tok.is_word("TRUE", "FALSE"):
            return tok.value.lower()
        if tok.is_word("DATE", "TIMESTAMP") and (nxt := self.peek()) is not None and nxt.kind == "string":
            self.pos += 1
            return nxt.value
        raise self.fail(f"expected {what} (a quoted string or a number), found {tok.value!r}")

    def property_key(self) -> str:
        tok = self.next("a property key")
        if tok.kind == "string":
            return tok.value
        if tok.kind in ("word", "qident"):
            parts = [tok.value]
            while self.accept_punct("."):
                parts.append(self.name_part("a key part after '.'")[0])
            return ".".join(parts)
        raise self.fail(f"expected a property key, found {tok.value!r}")


def parse(statement: str) -> Statement:
    """Parse one Delta utility statement (parameters already bound).

    Raises:
        SqlError: the statement is not a Delta utility statement or is malformed; the message quotes
            the statement and shows the expected syntax.
    """
    try:
        tokens = tokenize(statement)
    except SqlError as exc:
        raise SqlError(f"cannot parse {statement.strip()!r}: {exc}") from None
    command = command_of(tokens)
    if command is None:
        raise SqlError(f"{statement.strip()!r} is not a Delta utility statement; supported: "
                       + "; ".join(SYNTAX.values()))
    p = _Parser(statement, tokens, command)
    result = _PARSERS[command](p)
    p.end()
    return result


def _parse_history(p: _Parser) -> Statement:
    p.pos = 2
    table = p.table()
    limit = p.integer("the LIMIT row count") if p.accept("LIMIT") else None
    return DescribeHistory(table, limit)


def _parse_detail(p: _Parser) -> Statement:
    p.pos = 2
    return DescribeDetail(p.table())


_OPS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _parse_optimize(p: _Parser) -> Statement:
    p.pos = 1
    table = p.table()
    where: list[Predicate] = []
    if p.accept("WHERE"):
        while True:
            column = p.property_key()
            tok = p.next("a comparison operator")
            if tok.kind == "punct" and tok.value in _OPS:
                where.append(Predicate(column, _OPS[tok.value], p.literal("a value")))
            elif tok.is_word("IN", "NOT"):
                negate = tok.is_word("NOT")
                if negate:
                    p.expect("IN")
                p.expect_punct("(")
                values = [p.literal("a value")]
                while p.accept_punct(","):
                    values.append(p.literal("a value"))
                p.expect_punct(")")
                where.append(Predicate(column, "not in" if negate else "in", values))
            else:
                raise p.fail(f"unsupported operator {tok.value!r} in WHERE (use =, !=, <, <=, >, >=, IN)")
            if not p.accept("AND"):
                break
        if p.peek() is not None and p.peek().is_word("OR"):  # type: ignore[union-attr]
            raise p.fail("OR is not supported in OPTIMIZE ... WHERE; run one OPTIMIZE per condition")
    zorder: list[str] = []
    if p.accept("ZORDER"):
        p.expect("BY")
        paren = p.accept_punct("(")
        if paren and p.accept_punct(")"):
            raise p.fail("ZORDER BY needs at least one column")
        zorder.append(p.property_key())
        while p.accept_punct(","):
            zorder.append(p.property_key())
        if paren:
            p.expect_punct(")")
    return Optimize(table, where, zorder)


def _parse_vacuum(p: _Parser) -> Statement:
    p.pos = 1
    table = p.table()
    retain: float | None = None
    dry_run = False
    full = True
    while p.peek() is not None and p.peek().kind == "word":  # type: ignore[union-attr]
        if p.accept("LITE", "FULL"):
            full = p.tokens[p.pos - 1].value.upper() == "FULL"
        elif p.accept("RETAIN"):
            tok = p.next("the retention in hours")
            if tok.kind != "number" or tok.value.startswith(("-", "+")):
                raise p.fail(f"RETAIN needs a non-negative number of hours, found {tok.value!r}")
            retain = float(tok.value)
            p.expect("HOURS")
        elif p.accept("DRY"):
            p.expect("RUN")
            dry_run = True
        else:
            break
    return Vacuum(table, retain, dry_run, full)


def _parse_restore(p: _Parser) -> Statement:
    p.pos = 1
    p.accept("TABLE")
    table = p.table()
    p.accept("TO")
    if p.accept("VERSION"):
        p.expect("AS")
        p.expect("OF")
        return Restore(table, p.integer("a version number"), None)
    if p.accept("TIMESTAMP"):
        p.expect("AS")
        p.expect("OF")
        tok = p.next("a timestamp")
        if tok.is_word("TIMESTAMP", "DATE"):
            tok = p.next("a quoted timestamp")
        if tok.kind != "string":
            raise p.fail(f"TIMESTAMP AS OF needs a quoted timestamp, found {tok.value!r}")
        return Restore(table, None, tok.value)
    raise p.fail(f"expected VERSION AS OF or TIMESTAMP AS OF, found {p.describe_next()}")


def _parse_show(p: _Parser) -> Statement:
    p.pos = 2
    table = p.table()
    key = None
    if p.accept_punct("("):
        key = p.property_key()
        p.expect_punct(")")
    return ShowTblProperties(table, key)


def _parse_alter(p: _Parser) -> Statement:
    p.pos = 2
    table = p.table()
    if p.accept("ADD"):
        p.expect("COLUMNS", "COLUMN")
        wrapped = p.accept_punct("(")
        columns = [_column_def(p)]
        while p.accept_punct(","):
            columns.append(_column_def(p))
        if wrapped:
            p.expect_punct(")")
        return AddColumns(table, columns)
    if p.accept("SET"):
        p.expect("TBLPROPERTIES")
        p.expect_punct("(")
        props: dict[str, str] = {}
        while True:
            key = p.property_key()
            p.accept_punct("=")  # Spark makes '=' optional
            props[key] = p.literal("a property value")
            if not p.accept_punct(","):
                break
        p.expect_punct(")")
        return SetTblProperties(table, props)
    p.expect("UNSET")
    p.expect("TBLPROPERTIES")
    if_exists = False
    if p.accept("IF"):
        p.expect("EXISTS")
        if_exists = True
    p.expect_punct("(")
    keys = [p.property_key()]
    while p.accept_punct(","):
        keys.append(p.property_key())
    p.expect_punct(")")
    return UnsetTblProperties(table, keys, if_exists)


def _column_def(p: _Parser) -> tuple[str, str]:
    """`name type` of ADD COLUMNS, the type with its (precision, scale) if any."""
    name, _ = p.name_part("a column name")
    type_name, _ = p.name_part("a column type")
    type_name = type_name.lower()
    if p.accept_punct("("):
        precision = p.integer("a precision")
        scale = p.integer("a scale") if p.accept_punct(",") else 0
        p.expect_punct(")")
        type_name = f"{type_name}({precision},{scale})"
    if p.accept("COMMENT"):
        p.literal("a comment")
    return name, type_name


def table_properties_in(statement: str) -> dict[str, str]:
    """Every `TBLPROPERTIES (k = v, ...)` pair a statement sets (CREATE, REPLACE or ALTER), keys as written.

    Lenient: a property list that does not parse is skipped (whoever runs the statement reports
    it); UNSET TBLPROPERTIES sets nothing. Values come back as `literal()` gives them (booleans lowercased).
    """
    tokens = tokenize(statement, lenient=True)
    found: dict[str, str] = {}
    for i, tok in enumerate(tokens[:-1]):
        if not tok.is_word("TBLPROPERTIES") or tokens[i + 1].value != "(" or tokens[i + 1].kind != "punct":
            continue
        if i and tokens[i - 1].is_word("UNSET"):
            continue
        p = _Parser(statement, tokens, "ALTER TABLE")
        p.pos = i + 2
        pairs: dict[str, str] = {}
        try:
            while True:
                key = p.property_key()
                p.accept_punct("=")
                pairs[key] = p.literal("a property value")
                if not p.accept_punct(","):
                    break
            p.expect_punct(")")
        except SqlError:
            continue
        found.update(pairs)
    return found


def calls_function(statement: str, name: str) -> bool:
    """True when the statement calls `name(` outside strings, backquoted names and comments."""
    tokens = tokenize(statement, lenient=True)
    return any(
        a.kind == "word" and a.value.lower() == name.lower() and b.kind == "punct" and b.value == "("
        for a, b in zip(tokens, tokens[1:], strict=False)
    )


_PARSERS = {
    "DESCRIBE HISTORY": _parse_history,
    "DESCRIBE DETAIL": _parse_detail,
    "OPTIMIZE": _parse_optimize,
    "VACUUM": _parse_vacuum,
    "RESTORE": _parse_restore,
    "SHOW TBLPROPERTIES": _parse_show,
    "ALTER TABLE": _parse_alter,
}
