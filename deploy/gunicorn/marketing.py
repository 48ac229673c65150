# Gunicorn settings for the marketing service in production: `marketing.pex serve --config deploy/gunicorn/marketing.py`.
# The binary's defaults (bind $HOST:$PORT, gthread workers, logs to stdout) apply unless set here.
import multiprocessing
import os

# HOST: the host's own address (its private network), as `serve` does without this file.
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5001')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 5000  # recycle workers now and then, so a slow leak never becomes an outage
max_requests_jitter = 500
accesslog = "-"
errorlog = "-"
# Trust X-Forwarded-* only from the load balancer.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "nectar-marketing"
