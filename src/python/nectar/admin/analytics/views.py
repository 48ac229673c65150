"""The analytics dashboard, admin's start page: figures across every organization, and 30-day trends
drawn as server-rendered SVG."""

from __future__ import annotations

from flask import Blueprint, render_template

from nectar.admin.analytics import charts, service
from nectar.admin.billing.service import MRR_STATUSES
from nectar.shared.database import db

analytics = Blueprint("analytics", __name__, url_prefix="")


@analytics.get("/")
def dashboard():
    figures = service.dashboard(db.session)
    days = [point.day for point in figures.runs]
    runs_chart = charts.bar_chart(
        f"Workflow runs per day, last {len(days)} days",
        days,
        [
            charts.Series("succeeded", [p.succeeded for p in figures.runs], "chart-ok"),
            charts.Series("failed", [p.failed for p in figures.runs], "chart-bad"),
            charts.Series("other", [p.queued - p.finished for p in figures.runs], "chart-other"),
        ],
    )
    error_chart = charts.line_chart(
        "Error rate per day (failed / finished)",
        days,
        [float(p.error_rate) if p.error_rate is not None else None for p in figures.runs],
        y_max=1.0,
        y_label=charts.percent_label,
        css_class="chart-line-bad",
    )
    signups_chart = charts.bar_chart(
        "New users per day",
        [p.day for p in figures.signups],
        [charts.Series("new users", [p.count for p in figures.signups], "chart-ok")],
        width=charts.NARROW,
    )
    leads_chart = charts.bar_chart(
        "New leads per day",
        [p.day for p in figures.new_leads],
        [charts.Series("new leads", [p.count for p in figures.new_leads], "chart-accent")],
        width=charts.NARROW,
    )
    return render_template(
        "admin/analytics/dashboard.html",
        figures=figures,
        totals=figures.totals,
        percent=service.percent,
        mrr_statuses=MRR_STATUSES,
        window=service.WINDOW_DAYS,
        runs_chart=runs_chart,
        error_chart=error_chart,
        signups_chart=signups_chart,
        leads_chart=leads_chart,
    )
