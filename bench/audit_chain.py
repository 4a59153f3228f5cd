"""Cost of the audit log's hash chain: audit() calls per second with 1 and 4 concurrent writers
(each entry locks the chain head), and how long verify_audit takes per 1,000 entries.

    .venv/bin/python bench/audit_chain.py                      # a temporary SQLite database
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/NAME .venv/bin/python bench/audit_chain.py

NAME is created if missing and its audit rows are added to (never use the app's database).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="audit events per run")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="radloop-audit-bench-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
    os.environ["RADLOOP_VAR_DIR"] = str(workdir / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.pop("REDIS_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    from django.db import connection, connections

    if connection.vendor == "postgresql":
        import psycopg

        name = connection.settings_dict["NAME"]
        admin = dict(connection.settings_dict, NAME="postgres")
        with psycopg.connect(host=admin["HOST"], port=admin["PORT"], user=admin["USER"], dbname="postgres",
                             autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    call_command("migrate", verbosity=0)
    from webapp.accounts.services import audit, verify_audit_chain

    print(f"database: {connection.vendor}; {args.events} audit() calls per run")
    # Baseline: the same rows inserted by the ORM without the chain (no head lock, no hash): what an
    # audit() call cost before the chain.
    from django.db import models, transaction

    from webapp.accounts.models import AuditEvent

    n = args.events // 4
    t0 = time.perf_counter()
    for i in range(n):
        with transaction.atomic():
            event = AuditEvent(action="bench.unchained", object_type="study", object_id=f"u.{i}", details={"i": i},
                               seq=-(time.time_ns() + i), prev_hash="-", entry_hash="-")
            models.Model.save(event)
    print(f"  baseline, the same insert without the chain: {(time.perf_counter() - t0) * 1e3 / n:.2f} ms each")
    with connection.cursor() as cursor:  # not part of the chain: leave the log verifiable
        cursor.execute("DELETE FROM accounts_auditevent WHERE action = 'bench.unchained'")
    for writers in (1, 4):
        per = args.events // writers

        def write(n):
            try:
                for i in range(per):
                    audit(None, "bench.audit", object_type="study", object_id=f"{n}.{i}", details={"i": i})
            finally:
                connections.close_all()

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        print(f"  {writers} writer(s): {per * writers / elapsed:8.0f} events/s ({elapsed * 1e3 / (per * writers):.2f} ms each)")
    t0 = time.perf_counter()
    result = verify_audit_chain()
    elapsed = time.perf_counter() - t0
    print(f"  verify_audit: {'OK' if result.ok else 'BROKEN'} {result.count} entries in {elapsed:.2f} s "
          f"({elapsed * 1e3 / max(result.count, 1) * 1000:.0f} ms per 1,000)")


if __name__ == "__main__":
    main()
