"""Shared fixtures: the cast (an admin, two radiologists, an outsider) and a private archive."""
from __future__ import annotations

import pytest
from django.db import connection

from webapp.accounts.models import Role
from webapp.accounts.services import ensure_role_groups, ensure_user

PASSWORD = "correct-horse-battery"




@pytest.fixture(autouse=True)
def _real_postgres(request):
    if "django_db_setup" in request.fixturenames and connection.vendor != "postgresql":
        pytest.fail("tests run on PostgreSQL: use the README's test command (make test), which sets DATABASE_URL")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def archive_dir(tmp_path, settings):
    """Every test gets its own archive folder."""
    root = tmp_path / "archive"
    settings.MEDIA_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {"BACKEND": "webapp.archive.storage.AtomicFileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    return root


class Cast:
    def __init__(self):
        ensure_role_groups()
        self.admin, _ = ensure_user("alice-admin", PASSWORD, Role.ADMIN)
        self.radiologist, _ = ensure_user("rita-radiologist", PASSWORD, Role.RADIOLOGIST)
        self.radiologist2, _ = ensure_user("ravi-radiologist", PASSWORD, Role.RADIOLOGIST)
        from django.contrib.auth.models import User

        self.outsider = User.objects.create_user("oscar-outsider", password=PASSWORD)


@pytest.fixture
def cast(db) -> Cast:
    return Cast()


@pytest.fixture
def admin_client(client, cast):
    client.force_login(cast.admin)
    return client


@pytest.fixture
def radiologist_client(client, cast):
    client.force_login(cast.radiologist)
    return client
