"""How admin pages show a refusal or an outage of another service: next to the form, never lost."""

from __future__ import annotations

from flask import flash
from flask_wtf import FlaskForm

from nectar.core.contract import CoreRefused, CoreUnavailable


def show_core_error(error: CoreRefused | CoreUnavailable, form: FlaskForm | None = None) -> int:
    """Puts core's answer on the form (per field where core named one) or in a flash message, and
    returns the status the page should answer with."""
    if isinstance(error, CoreUnavailable):
        if error.outcome_unknown:
            flash(
                f"Core did not answer in time ({error}), so admin cannot tell whether the change was made. "
                "Check before trying again; your input is kept.",
                "error",
            )
            return 504
        flash(
            f"Core did not answer, so nothing was changed: {error}. Your input is kept; try again.", "error"
        )
        return 503
    placed = False
    if form is not None:
        for name, messages in error.errors.items():
            field = getattr(form, name, None)
            if field is not None and hasattr(field, "errors"):
                field.errors = [*field.errors, *messages]
                placed = True
    if not placed:
        flash(f"Core refused: {error.detail}", "error")
    return 422 if error.status in (409, 422) else error.status
