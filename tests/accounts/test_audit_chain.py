"""The audit log is a hash chain: verify_audit finds a changed, removed or forged entry."""
from __future__ import annotations

import io
import threading

import pytest
from django.core.management import call_command
from django.db import connection, connections

from webapp.accounts.models import AuditChainHead, AuditEvent
from webapp.accounts.services import audit


def verify() -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, err.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def events(db, cast):
    made = [audit(cast.radiologist, "archive.study.viewed", object_type="study", object_id=f"1.2.{i}",
                  details={"n": i, "note": "ünïcode", "score": 0.1 + i / 3}) for i in range(5)]
    return made


def sql(statement, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_an_untouched_log_verifies(events):
    code, output = verify()

    count = AuditEvent.objects.count()
    assert code == 0 and output.startswith(f"OK: {count} audit entries")
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, count + 1))
    assert AuditChainHead.objects.get().last_seq == count


def test_each_entry_carries_the_previous_hash(events):
    rows = list(AuditEvent.objects.order_by("seq"))

    assert all(b.prev_hash == a.entry_hash for a, b in zip(rows, rows[1:]))
    assert len({r.entry_hash for r in rows}) == len(rows)


@pytest.mark.parametrize("change", [
    "details = '{\"n\": 99}'",
    "action = 'archive.study.created'",
    "actor_username = 'someone-else'",
    "created_at = created_at - interval '1 hour'",
    "ip_address = '10.0.0.9'",
])
def test_a_row_changed_in_the_database_is_named(events, change):
    victim = events[2]
    sql(f"UPDATE accounts_auditevent SET {change} WHERE id = %s", [victim.pk])

    code, output = verify()

    assert code == 1
    assert f"entry id={victim.pk} (#{victim.seq}" in output and "changed after it was written" in output


def test_a_row_rehashed_by_a_forger_breaks_the_next_link(events):
    from webapp.accounts import audit_chain

    victim, after = events[2], events[3]
    victim.details = {"n": 99}
    forged = audit_chain.hash_of(victim, victim.prev_hash)
    sql("UPDATE accounts_auditevent SET details = '{\"n\": 99}', entry_hash = %s WHERE id = %s", [forged, victim.pk])

    code, output = verify()

    assert code == 1 and f"entry id={after.pk} (#{after.seq}" in output and "does not follow" in output


def test_a_removed_row_is_named(events):
    sql("DELETE FROM accounts_auditevent WHERE id = %s", [events[1].pk])

    code, output = verify()

    assert code == 1 and f"#{events[1].seq} to #{events[1].seq} are missing" in output


def test_rows_removed_from_the_end_are_noticed(events):
    sql("DELETE FROM accounts_auditevent WHERE id = %s", [events[-1].pk])

    code, output = verify()

    assert code == 1 and "chain head" in output


def test_concurrent_writers_do_not_fork_the_chain(transactional_db, cast):
    def write(n):
        try:
            for i in range(15):
                audit(None, "test.concurrent", object_id=f"{n}-{i}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    code, output = verify()
    assert code == 0, output
    assert AuditEvent.objects.filter(action="test.concurrent").count() == 60


def test_entries_from_before_the_chain_are_chained_by_the_migration(transactional_db):
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0002_api_tokens_and_uploader_role")])
    with connection.cursor() as cursor:
        for i in range(3):
            cursor.execute(
                "INSERT INTO accounts_auditevent (created_at, actor_username, action, object_type, object_id, details) "
                "VALUES (now(), 'old-admin', %s, 'study', %s, %s)", [f"old.event.{i}", f"1.9.{i}", '{"k": [1, 2]}'])
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    code, output = verify()

    assert code == 0, output
    old = AuditEvent.objects.filter(action__startswith="old.event.").order_by("seq")
    assert list(old.values_list("action", flat=True)) == ["old.event.0", "old.event.1", "old.event.2"]
    assert all(e.seq and len(e.entry_hash) == 64 for e in old)
