"""`make run`'s demo users: random passwords, printed once, kept in var/ readable by the owner only."""
from __future__ import annotations

import io
import stat

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(tmp_path, settings):
    settings.VAR_DIR = tmp_path / "var"
    return settings.VAR_DIR


def run(*args, **env) -> str:
    out = io.StringIO()
    call_command("ensure_demo_users", *args, stdout=out)
    return out.getvalue()


def stored(var_dir) -> dict[str, str]:
    lines = (var_dir / "demo-passwords.txt").read_text().splitlines()
    return {parts[1]: parts[2] for parts in (line.split() for line in lines if not line.startswith("#"))}


def test_demo_users_get_random_passwords_printed_once_and_kept_0600(var_dir, monkeypatch):
    monkeypatch.delenv("RADLOOP_DEMO_PASSWORD", raising=False)
    first = run()
    passwords = stored(var_dir)

    assert set(passwords) == {"admin", "radiologist"}
    assert passwords["admin"] != passwords["radiologist"] and min(map(len, passwords.values())) >= 20
    assert passwords["admin"] in first and passwords["radiologist"] in first
    assert User.objects.get(username="admin").check_password(passwords["admin"])
    assert User.objects.get(username="radiologist").check_password(passwords["radiologist"])
    assert stat.S_IMODE((var_dir / "demo-passwords.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700

    second = run()

    assert passwords["admin"] not in second and passwords["radiologist"] not in second
    assert str(var_dir / "demo-passwords.txt") in second
    assert stored(var_dir) == passwords
    assert User.objects.get(username="admin").check_password(passwords["admin"])


def test_another_install_gets_other_passwords(var_dir, tmp_path, settings):
    run()
    first = stored(var_dir)
    User.objects.filter(username__in=["admin", "radiologist"]).delete()
    settings.VAR_DIR = tmp_path / "other-var"

    run()

    assert stored(settings.VAR_DIR)["admin"] != first["admin"]


def test_the_password_can_be_given_by_environment(var_dir, monkeypatch):
    monkeypatch.setenv("RADLOOP_DEMO_PASSWORD", "a-chosen-long-passphrase")

    output = run()

    assert "a-chosen-long-passphrase" not in output
    assert User.objects.get(username="admin").check_password("a-chosen-long-passphrase")


def test_a_short_given_password_is_refused(var_dir):
    with pytest.raises(CommandError, match="at least 12 characters"):
        run("--password", "short-pw")
    assert not User.objects.filter(username="admin").exists()


def test_a_demo_user_with_the_old_published_password_gets_a_random_one(var_dir):
    User.objects.create_user("admin", password="radloop-admin")

    output = run()

    admin = User.objects.get(username="admin")
    assert not admin.check_password("radloop-admin")
    assert admin.check_password(stored(var_dir)["admin"]) and "old published default" in output


def test_nothing_in_the_repository_holds_the_old_demo_passwords():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    places = [root / "README.md", root / "Makefile", *sorted((root / "bench").glob("*.py")),
              root / "webapp" / "accounts" / "management" / "commands" / "runstack.py"]
    for path in places:
        text = path.read_text()
        assert "radloop-admin" not in text and "radloop-reader" not in text, path
