"""Core's runs as the admin worker may act on them through the database. Imports nothing of core.

Every run that should be going has a job of core's queue coming for it: its activation, the
wake-up of its wait, or (when it waits for a run it called) the activation that run's end queues. Should one be lost (a job deleted by hand, or given up after its retries),
the run would wait for ever. Admin's worker, which alone sees every organization's runs, looks
for such runs every minute and hands each back to core as a RECOVER_TASK job; core looks again,
in the run's organization, and queues its activation.
"""

QUEUE = "core"
RUN_TASK = "core.run_workflow"
WAKE_TASK = "core.wake_run"
RECOVER_TASK = "core.recover_run"

# How long a run may go without its next activation before it counts as lost: longer than a wake-up
# is late or a dead worker's job takes to be handed on (about twenty seconds).
LOST_AFTER = "interval '2 minutes'"

# Runs `r` that are lost: waiting past their time, waiting for a called run that ended, or queued or
# running, for longer than LOST_AFTER, and no job of core's queue (but a recovery) to do or being done
# for them. The partial indexes of migration 0019 serve it.
LOST_RUN = f"""(
    ((r.status = 'waiting' AND r.wake_at < now() - {LOST_AFTER})
     OR (r.status = 'waiting' AND r.wake_at IS NULL AND r.waiting_for->>'type' = 'workflow' AND EXISTS (
         SELECT FROM workflow_runs c WHERE c.id = CAST(r.waiting_for->>'run_id' AS uuid)
         AND c.status IN ('succeeded', 'failed', 'cancelled') AND c.finished_at < now() - {LOST_AFTER}))
     OR (r.status IN ('queued', 'running') AND r.queued_at < now() - {LOST_AFTER}))
    AND NOT EXISTS (
        SELECT FROM procrastinate_jobs j
        WHERE j.status IN ('todo', 'doing') AND j.args->>'run_id' = r.id::text AND j.task_name <> '{RECOVER_TASK}'
    )
)"""  # noqa: S608 - constants only
