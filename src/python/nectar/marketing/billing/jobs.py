"""Placeholder: billing's background jobs (filled in by the marketing issue)."""

import procrastinate

blueprint = procrastinate.Blueprint()
