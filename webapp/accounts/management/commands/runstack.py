"""Run the whole app in the foreground, supervised together: gunicorn (web), a Celery worker for the
cpu and gpu queues, a training worker for the train queue (one run at a time, niced, torch threads
capped by RETRAIN_TORCH_THREADS, so inference keeps its cores), and celery beat (the nightly
retraining schedule, stored in the database and editable in /django-admin/).

Ctrl-C (or SIGTERM) stops them all; if one dies, the others are stopped and the command fails.
"""
import os
import signal
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand

from .ensure_demo_users import DEMO_USERS, password_file


class Command(BaseCommand):
    help = "Start the web server (gunicorn), the Celery workers and celery beat, and keep them running."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.environ.get("RADLOOP_BIND", "127.0.0.1:8000"))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "3")))
        parser.add_argument("--worker-concurrency", type=int, default=2)
        parser.add_argument("--demo-logins", action="store_true", help="print the demo users' logins when ready")

    def _wait_until_healthy(self, url: str, web: subprocess.Popen, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and web.poll() is None:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                time.sleep(0.3)
        return False

    def handle(self, *args, **options):
        bin_dir = os.path.dirname(sys.executable)
        commands = {
            "web": [
                os.path.join(bin_dir, "gunicorn"), "-c", "python:webapp.gunicorn_conf",
                "--bind", options["bind"], "--workers", str(options["web_workers"]),
            ],
            "worker": [
                os.path.join(bin_dir, "celery"), "-A", "workers", "worker", "-Q", "cpu,gpu",
                "--concurrency", str(options["worker_concurrency"]), "--loglevel", "INFO",
                "--hostname", "radloop@%h",
            ],
            "trainer": [
                "nice", "-n", "10", os.path.join(bin_dir, "celery"), "-A", "workers", "worker", "-Q", "train",
                "--concurrency", "1", "--prefetch-multiplier", "1", "--loglevel", "INFO", "--hostname", "train@%h",
            ],
            "beat": [
                os.path.join(bin_dir, "celery"), "-A", "workers", "beat", "--loglevel", "INFO",
                "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
                "--pidfile", str(settings.VAR_DIR / "celerybeat.pid"),
            ],
        }
        env = dict(os.environ)
        env.setdefault("DICOMWEB_BASE_URL", f"http://{options['bind']}/dicomweb")
        procs = {name: subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env) for name, cmd in commands.items()}
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        url = f"http://{options['bind']}/"
        if self._wait_until_healthy(url, procs["web"]):
            self.stdout.write(self.style.SUCCESS(f"\nRadLoop is running at {url}  (Ctrl-C to stop)"))
            self.stdout.write(
                f"  broker: {settings.CELERY_BROKER_URL}   "
                f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
            )
            if options["demo_logins"]:
                names = ", ".join(f"{username} ({role.value})" for username, role in DEMO_USERS)
                self.stdout.write(f"  demo logins: {names}; their passwords are in {password_file()}")
        exit_code = 0
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    self.stderr.write(f"{name} exited with code {proc.returncode}; stopping")
                    exit_code = proc.returncode or 1
                    stopping = True
            time.sleep(0.5)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if exit_code:
            sys.exit(exit_code)
