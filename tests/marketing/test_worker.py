"""`marketing worker`: the real command, as deployed, sends a scheduled campaign and queued mail
through SMTP, and the links it signs open on the marketing site."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy.orm import Session

from nectar.marketing import jobs
from nectar.shared.jobs import enqueue

pytestmark = [pytest.mark.usefixtures("empty_outbox"), pytest.mark.timeout(120)]


def _run_worker(database, mail_server) -> subprocess.CompletedProcess:
    env = {**os.environ, **database.environ(**mail_server.environ()), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "nectar.marketing.main", "worker", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_the_worker_sends_a_scheduled_campaign_and_its_unsubscribe_link_works(
    database, marketing_engine, mail_server, admin_db, marketing_app
):
    readers = [f"worker-{uuid.uuid4().hex[:8]}@example.com" for _ in range(3)]
    for address in readers:
        admin_db.execute(
            "INSERT INTO newsletter_subscribers (email, status, confirmed_at) VALUES (%s, 'confirmed', now())",
            (address,),
        )
    campaign = admin_db.execute(
        "INSERT INTO campaigns (name, subject, body_markdown, status, scheduled_at) "
        "VALUES ('Now', 'Sent by the worker', 'Hello *readers*', 'scheduled', now()) RETURNING id"
    ).fetchone()[0]
    with Session(marketing_engine) as session, session.begin():
        # What the periodic schedule would add: a dispatch, then a flush of the outbox.
        enqueue(session, "marketing.dispatch_campaigns", {"timestamp": 0}, queue=jobs.QUEUE)
        enqueue(session, "marketing.flush_outbox", {"timestamp": 0}, queue=jobs.QUEUE)
        enqueue(session, "marketing.remove_old_jobs", {"timestamp": 0}, queue=jobs.QUEUE)

    finished = _run_worker(database, mail_server)
    assert finished.returncode == 0, finished.stderr
    assert "worker: running jobs from queue marketing" in finished.stdout

    statuses = admin_db.execute(
        # Only the jobs enqueued here (the worker's own periodic ones carry real timestamps).
        "SELECT DISTINCT task_name, status FROM procrastinate_jobs WHERE args = '{\"timestamp\": 0}' "
        "AND task_name IN ('marketing.dispatch_campaigns', 'marketing.flush_outbox', 'marketing.remove_old_jobs')"
    ).fetchall()
    assert {status for _task, status in statuses} == {"succeeded"} and len(statuses) == 3
    assert admin_db.execute("SELECT status FROM campaigns WHERE id = %s", (campaign,)).fetchone()[0] == "sent"
    for address in readers:
        [received] = mail_server.to(address)
        assert received.message["Subject"] == "Sent by the worker"
        url = received.message["List-Unsubscribe"].strip("<>")
        path = url[len(marketing_app.config["NECTAR_SETTINGS"].public_url) :]
        # The worker and the site share SECRET_KEY, so the link it signed opens there.
        assert marketing_app.test_client(use_cookies=False).post(path).status_code == 200
        status = admin_db.execute("SELECT status FROM newsletter_subscribers WHERE email = %s", (address,))
        assert status.fetchone()[0] == "unsubscribed"


def test_the_worker_refuses_bad_smtp_settings_with_one_line(database, mail_server):
    smtp = {**mail_server.environ(), "SMTP_SECURITY": "tls-please"}
    env = {**os.environ, **database.environ(**smtp), "PYTHONPATH": os.pathsep.join(sys.path)}
    finished = subprocess.run(
        [sys.executable, "-m", "nectar.marketing.main", "worker", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert finished.stderr.strip() == (
        "marketing: error: SMTP_SECURITY must be one of starttls, ssl, none, not 'tls-please'"
    )


def test_the_worker_runs_billings_tasks_too():
    from nectar.marketing.billing import jobs as billing_jobs

    assert set(billing_jobs.blueprint.tasks) <= set(jobs.blueprint.tasks)
    assert {"marketing.flush_outbox", "marketing.dispatch_campaigns"} <= set(jobs.blueprint.tasks)
