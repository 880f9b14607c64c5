"""queries.sql as each connector loads it: variants, parameters, the transition rules."""

from __future__ import annotations

import pytest

from digest.state.base import Transition, allowed_sql
from digest.state.connector import QUERIES_FILE, load_queries
from digest.state.postgres import PostgresConnector
from digest.state.sqlite import SqliteConnector

TEXT = """-- a comment before the first statement
-- name: pick
SELECT payload::text FROM t WHERE a = :a AND b LIKE 'x%' AND c = ANY(:list)
-- name: pick.postgres
-- why: a variant of PostgreSQL's own
SELECT 2 WHERE a = :a
-- name: only.sqlite
-- why: SQLite's alone
SELECT 3
-- name: claim mark_sent
UPDATE deliveries SET x = 1 WHERE {allowed}{unlease}
"""


def test_each_database_gets_its_variant_and_the_others_keep_the_common_text() -> None:
    sqlite = load_queries(SqliteConnector, TEXT)
    postgres = load_queries(PostgresConnector, TEXT)
    assert sqlite["pick"].startswith("SELECT payload::text")
    assert postgres["pick"] == "SELECT 2 WHERE a = :a"  # its comment line is dropped
    assert sqlite["only"] == "SELECT 3" and "only" not in postgres


def test_a_statement_named_after_transitions_gets_each_ones_rule_and_the_lease_fragment() -> None:
    sqlite = load_queries(SqliteConnector, TEXT)
    postgres = load_queries(PostgresConnector, TEXT)
    for name in ("claim", "mark_sent"):
        rule = allowed_sql(Transition(name))
        assert sqlite[name] == f"UPDATE deliveries SET x = 1 WHERE {rule}"
        assert postgres[name] == f"UPDATE deliveries SET x = 1 WHERE {rule}, lease_until = NULL"
    assert "IN ('owed')" in sqlite["claim"] and sqlite["mark_sent"].endswith("WHERE TRUE")


def test_parameters_are_spelled_for_each_driver() -> None:
    text = load_queries(SqliteConnector, TEXT)["pick"]
    assert PostgresConnector.translate(text) == (
        "SELECT payload::text FROM t WHERE a = %(a)s AND b LIKE 'x%%' AND c = ANY(%(list)s)"
    )
    assert SqliteConnector.translate(text) == (
        "SELECT payload::text FROM t WHERE a = :a AND b LIKE 'x%' "
        "AND c IN (SELECT value FROM json_each(:list))"
    )


def test_an_unknown_placeholder_is_refused_at_load() -> None:
    with pytest.raises(KeyError, match="nope"):
        load_queries(SqliteConnector, "-- name: x\nSELECT {nope}")


@pytest.mark.parametrize("connector", [SqliteConnector, PostgresConnector], ids=str)
def test_the_shipped_file_loads_for_both_databases(connector: type) -> None:
    queries = load_queries(connector)
    assert QUERIES_FILE.name == "queries.sql"
    assert {"claim", "mark_sent", "mark_failed", "expire", "statuses_of"} <= set(queries)
    assert not [name for name, sql in queries.items() if "{" in sql], "a placeholder was left"
