"""Athena's view of the archive, offline: DuckDB over the real archive objects.

Athena cannot run here, so this is the closest honest check that the Glue
table of `lambda/template.yaml` and the records the Lambda writes agree:

* the schema is read from the template (the table's columns, their Glue types
  mapped to DuckDB's, and the partition keys), never written a second time;
* the data are the `.jsonl.gz` objects the handler put into (moto's) S3,
  copied to a folder with their keys as paths, read with hive partitioning,
  so `dt` and `device` come from the key exactly as partition projection's
  `storage.location.template` gives them to Athena;
* a key in a record that the table lacks is reported (`unknown_keys`): Athena
  (the OpenX SerDe) would silently drop it, which is how data gets lost;
* the few Athena (Trino) functions the documented queries use are defined as
  DuckDB macros (`ATHENA_SHIMS`), and every query must hold the static
  equality on `device` that an `injected` partition key demands, or
  `check_injected` refuses it as Athena would (CONSTRAINT_VIOLATION).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from typing import Any, Optional

from devstack.template import TEMPLATE, load_template

GLUE_TO_DUCKDB = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "boolean": "BOOLEAN",
    "double": "DOUBLE",
    "timestamp": "TIMESTAMP",
}
#: Athena functions the documented queries use, as DuckDB macros (same meaning).
ATHENA_SHIMS = {
    "from_iso8601_timestamp": "(x) AS CAST(x AS TIMESTAMPTZ)",
    "date_format": "(d, f) AS strftime(d, f)",
}
_SQL_BLOCK_RE = re.compile(r"^```sql\n(.*?)^```", re.MULTILINE | re.DOTALL)


class QueryError(Exception):
    """A query Athena would refuse, or a schema the archive does not fit."""


def table_schema(
    template_path: str = TEMPLATE,
) -> tuple[str, str, list[tuple[str, str]], list[str]]:
    """(database, table, [(column, glue type)], partition keys) of the template's table."""
    template = load_template(template_path)
    resources = template["Resources"]
    table = next(r for r in resources.values() if r["Type"] == "AWS::Glue::Table")
    database = next(r for r in resources.values() if r["Type"] == "AWS::Glue::Database")
    params = template.get("Parameters", {})
    db_name = database["Properties"]["DatabaseInput"]["Name"]
    if isinstance(db_name, dict) and "Ref" in db_name:
        db_name = params[db_name["Ref"]]["Default"]
    inp = table["Properties"]["TableInput"]
    columns = [(c["Name"], c["Type"]) for c in inp["StorageDescriptor"]["Columns"]]
    partitions = [p["Name"] for p in inp.get("PartitionKeys", [])]
    return str(db_name), str(inp["Name"]), columns, partitions


def download_archive(s3: Any, bucket: str, prefix: str, dest: str) -> list[str]:
    """Copy every object under `prefix` to `dest`/KEY; the local paths, sorted."""
    paths = []
    token: Optional[str] = None
    while True:
        args = {"Bucket": bucket, "Prefix": prefix}
        if token:
            args["ContinuationToken"] = token
        page = s3.list_objects_v2(**args)
        for obj in page.get("Contents", []):
            path = os.path.join(dest, *obj["Key"].split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            paths.append(path)
        token = page.get("NextContinuationToken")
        if not token:
            return sorted(paths)


def unknown_keys(paths: list[str], columns: list[tuple[str, str]]) -> dict[str, int]:
    """Record keys the table has no column for, with how many records hold each."""
    known = {name for name, _ in columns}
    found: dict[str, int] = {}
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                for key in json.loads(line):
                    if key not in known:
                        found[key] = found.get(key, 0) + 1
    return found


class Archive:
    """A DuckDB connection with the archive as `DATABASE.TABLE`, Athena's functions shimmed."""

    def __init__(self, root: str, prefix: str, template_path: str = TEMPLATE) -> None:
        import duckdb

        self.database, self.table, self.columns, self.partitions = table_schema(template_path)
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        for name, body in ATHENA_SHIMS.items():
            self.con.execute(f"CREATE MACRO {name}{body}")
        glob = os.path.join(root, *prefix.strip("/").split("/"), "**", "*.jsonl.gz")
        types = {name: GLUE_TO_DUCKDB[glue] for name, glue in self.columns}
        spec = "{" + ", ".join(f"'{n}': '{t}'" for n, t in types.items()) + "}"
        self.con.execute(f'CREATE SCHEMA "{self.database}"')
        self.con.execute(
            f'CREATE VIEW "{self.database}"."{self.table}" AS SELECT * FROM read_json('
            f"'{glob}', format='newline_delimited', columns={spec}, "
            "hive_partitioning=true, hive_types_autocast=false)"
        )

    def check_injected(self, sql: str) -> None:
        """Athena refuses a query without a static `device = '…'` / `device IN (…)`."""
        for key in self.partitions:
            if key == "dt":
                continue
            pattern = rf"\b{key}\s*(=\s*'[^']*'|IN\s*\(\s*'[^']*'(\s*,\s*'[^']*')*\s*\))"
            if not re.search(pattern, sql, re.IGNORECASE):
                raise QueryError(
                    f"CONSTRAINT_VIOLATION: For the injected projected partition column {key}, "
                    "the WHERE clause must contain only static equality conditions"
                )

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows) of one query, refused first where Athena would refuse it."""
        self.check_injected(sql)
        result = self.con.execute(sql.strip().rstrip(";"))
        return [d[0] for d in result.description], result.fetchall()


def documented_queries(markdown_path: str) -> list[tuple[str, str]]:
    """The ```sql blocks of a document, each with the heading line above it."""
    with open(markdown_path, encoding="utf-8") as fh:
        text = fh.read()
    found = []
    for m in _SQL_BLOCK_RE.finditer(text):
        before = text[: m.start()].rstrip().splitlines()
        title = next((line.lstrip("#* ").strip() for line in reversed(before) if line), "")
        found.append((title, m.group(1)))
    return found


def format_rows(names: list[str], rows: list[tuple[Any, ...]], limit: int = 10) -> str:
    """A small text table."""
    shown = [tuple("" if v is None else str(v) for v in row) for row in rows[:limit]]
    widths = [
        max(len(n), *(len(r[i]) for r in shown)) if shown else len(n) for i, n in enumerate(names)
    ]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in shown]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows")
    return "\n".join(lines)
