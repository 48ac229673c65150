"""The dashboard's counts are each organization's own, exactly."""

from nectar.shared.config import Role

SEEDED = {
    # org label: (extra members, services, endpoints, workflows, runs this week, runs older)
    "a": (2, 1, 3, 2, 5, 4),
    "b": (0, 2, 1, 1, 7, 1),
}


def _seed(conn, org, extra_members, services, endpoints, workflows, recent_runs, old_runs):
    conn.execute(
        "INSERT INTO catalog_services (key, name, description, config_schema, credentials_schema) "
        "VALUES ('rest', 'REST', 'REST API', '{}', '{}') ON CONFLICT DO NOTHING"
    )
    for n in range(extra_members):
        user = conn.execute(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"m{n}-{org.hex[:8]}@example.com",)
        ).fetchone()[0]
        conn.execute("INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'member')", (org, user))
    for n in range(services):
        conn.execute(
            "INSERT INTO integration_connections (org_id, service_key, name) VALUES (%s, 'rest', %s)",
            (org, f"c{n}"),
        )
    flows = [
        conn.execute(
            "INSERT INTO workflows (org_id, name) VALUES (%s, %s) RETURNING id", (org, f"w{n}")
        ).fetchone()[0]
        for n in range(workflows)
    ]
    version = conn.execute(
        "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) VALUES (%s, %s, 1, '{}') RETURNING id",
        (org, flows[0]),
    ).fetchone()[0]
    for n in range(endpoints):
        conn.execute(
            "INSERT INTO endpoints (org_id, method, path, workflow_id) VALUES (%s, 'GET', %s, %s)",
            (org, f"/e{n}", flows[0]),
        )
    for age, count in (("1 day", recent_runs), ("9 days", old_runs)):
        for _ in range(count):
            conn.execute(
                "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, queued_at) "
                f"VALUES (%s, %s, %s, 'manual', now() - interval '{age}')",
                (org, flows[0], version),
            )


def test_each_organization_sees_its_own_exact_counts(new_browser, database):
    browsers = {label: new_browser() for label in SEEDED}
    orgs = {}
    for label, browser in browsers.items():
        browser.sign_up()
        orgs[label] = browser.create_org(f"Counting {label}")
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        for label, numbers in SEEDED.items():
            _seed(conn, orgs[label], *numbers)
    for label, browser in browsers.items():
        extra_members, services, endpoints, workflows, recent_runs, _old = SEEDED[label]
        page = browser.get("/dashboard").get_data(as_text=True)
        expected = {
            "members": extra_members + 1,
            "services": services,
            "endpoints": endpoints,
            "workflows": workflows,
            "runs_this_week": recent_runs,
        }
        for name, value in expected.items():
            assert f'data-stat="{name}">{value}<' in page, f"org {label}: {name} should be {value}"
        api = browser.api("GET", "/api/v1/dashboard").json
        assert api == expected
