"""The read-only SQL surface of ``k2 sql`` (and later ``POST /v1/sql``).

``SETTINGS readonly = 1`` alone is not enough on ClickHouse/chdb (engine-notes.md and our own checks):
the scalar ``file()`` function still reads local files, a statement can carry its own ``SETTINGS readonly=0``,
and chdb executes several ``;``-separated statements. So a statement must pass, in order:

1. a lexer: exactly one statement (no ``;`` outside literals and comments, a single trailing one is dropped);
2. ClickHouse's own parser (``EXPLAIN AST``, which parses and runs nothing): the statement must be a
   ``SELECT``/``WITH``/``UNION`` query with no ``SETTINGS``, ``FORMAT`` or ``INTO OUTFILE`` clause, and it
   may call no function that reaches files, the network, other servers or the host (``file``, ``url``, ``s3``,
   ``remote``, ``mysql``, ``executable``, ``python`` ... matched by name prefix);
3. it then runs with ``readonly = 1`` and a time limit appended by K2, which the user cannot override because
   step 2 refused any SETTINGS clause of theirs.
"""

from __future__ import annotations

import re

from k2.errors import QueryFailed, QueryRefused

#: function-name prefixes (lower case) that reach outside the store
DENIED_PREFIXES = (
    "file", "url", "s3", "gcs", "oss", "cosn", "hdfs", "azure", "remote", "cluster", "mysql", "postgres",
    "mongo", "redis", "jdbc", "odbc", "sqlite", "executable", "python", "iceberg", "deltalake", "hudi",
    "paimon", "arrowflight", "ytsaurus", "kafka", "input", "dictionary", "generateserialid", "hive",
    "view",  # view() can wrap arbitrary statements; plain subqueries do the same job
)

_ALLOWED_ROOTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery")
_FUNC = re.compile(r"^\s*Function (\S+)")


def single_statement(sql: str) -> str:
    """The statement without a trailing ``;``; refuses several statements or an unterminated literal."""
    i, n = 0, len(sql)
    semis: list[int] = []
    while i < n:
        c = sql[i]
        if c in ("'", '"', "`"):
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise QueryRefused("unterminated quoted string or identifier")
            i = j + 1
            continue
        if c == "-" and sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise QueryRefused("unterminated /* comment")
            i = j + 2
            continue
        if c == ";":
            semis.append(i)
        i += 1
    if not semis:
        return sql
    if len(semis) == 1 and not _has_code(sql[semis[0] + 1 :]):
        return sql[: semis[0]]
    raise QueryRefused("only one statement is allowed (found ';' between statements)")


def _has_code(tail: str) -> bool:
    tail = re.sub(r"--[^\n]*|#[^\n]*|/\*.*?\*/", "", tail, flags=re.S)
    return bool(tail.strip())


def check_ast(ast: str) -> None:
    """Refuse anything but a plain read query, given ClickHouse's ``EXPLAIN AST`` text."""
    lines = [ln for ln in ast.splitlines() if ln.strip()]
    if not lines:
        raise QueryRefused("empty statement")
    root = lines[0].split()[0]
    if root not in _ALLOWED_ROOTS:
        kind = root.removesuffix("Query") or root
        raise QueryRefused(f"only SELECT queries are allowed (got a {kind.upper()} statement)")
    for ln in lines[1:]:
        depth = len(ln) - len(ln.lstrip(" "))
        node = ln.strip()
        if depth == 1 and not node.startswith("ExpressionList"):
            raise QueryRefused("FORMAT and INTO OUTFILE clauses are not allowed; choose the output format instead")
        if node == "Set" or node.startswith("Set "):
            raise QueryRefused("SETTINGS clauses are not allowed in read-only queries")
        m = _FUNC.match(ln)
        if m:
            name = m.group(1).lower()
            if name.startswith(DENIED_PREFIXES):
                raise QueryRefused(f"function {m.group(1)}() is not allowed: it reaches outside the store")
        if node.startswith(("InsertQuery", "AlterQuery", "CreateQuery", "DropQuery", "SystemQuery", "KillQuery")):
            raise QueryRefused("only SELECT queries are allowed")


class ReadOnlySQL:
    """Runs user SQL against a store after the checks above."""

    def __init__(
        self, store, *, timeout_s: float = 30.0, max_rows: int | None = None, output_settings: list[str] | None = None
    ) -> None:
        self.store = store
        self.output_settings = list(output_settings or [])
        self.timeout_s = timeout_s
        self.max_rows = max_rows

    def prepare(self, sql: str) -> str:
        if not sql or not sql.strip():
            raise QueryRefused("empty statement")
        stmt = single_statement(sql).strip()
        if not stmt:
            raise QueryRefused("empty statement")
        try:
            ast = self.store.query_text("EXPLAIN AST " + stmt, "TabSeparatedRaw")
        except QueryFailed as exc:
            raise QueryFailed(f"syntax error: {exc}") from None
        check_ast(ast)
        # output settings first: once readonly = 1 applies, no later setting may change
        settings = [*self.output_settings, "readonly = 1", f"max_execution_time = {max(int(self.timeout_s), 1)}"]
        if self.max_rows is not None:
            settings += [f"max_result_rows = {int(self.max_rows)}", "result_overflow_mode = 'break'"]
        return f"{stmt}\nSETTINGS {', '.join(settings)}"

    def text(self, sql: str, fmt: str) -> str:
        return self.store.query_text(self.prepare(sql), fmt)

    def arrow(self, sql: str):
        return self.store.query_arrow(self.prepare(sql))
