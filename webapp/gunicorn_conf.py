"""gunicorn settings for RadLoop (`gunicorn -c python:webapp.gunicorn_conf webapp.wsgi:application`).

Threaded workers keep HTTP connections alive: a viewer fetches hundreds of frames over a few
connections, and a sync worker would close each one after a single request.
"""
import os

wsgi_app = "webapp.wsgi:application"
bind = os.environ.get("RADLOOP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
keepalive = 30
timeout = 600  # large uploads and STOW-RS bodies stream for a while
graceful_timeout = 30
accesslog = os.environ.get("ACCESS_LOG", "-") or None
# The path without its query string and no referrer: queries (QIDO ?PatientName=..., the case
# browser's ?q=...) carry patient names and IDs, and the log holds ids only.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
