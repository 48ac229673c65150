"""HTTP client for core's service API. Imported by marketing and admin; imports nothing of core
but the contract."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError
from urllib3.util.retry import Retry

from nectar.core.contract import plans
from nectar.shared.rejection import Problem
from nectar.shared.tracing import service_call

API_PREFIX = "/internal/v1"
# The plans an organization can be on: what create_account and set_plan accept (their definitions
# are nectar.core.contract.plans).
PLANS = tuple(plans.PLANS)


class CoreUnavailable(Exception):
    """Core did not answer (down, unreachable, timed out, or failing) after the retries.

    `outcome_unknown` is True when the request reached core and the answer never came (a read time-out
    or a dropped connection): core may have made the change, so the caller must not say it did not."""

    def __init__(self, message: str, *, outcome_unknown: bool = False):
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class CoreRefused(Exception):
    """Core answered and said no (4xx): `status` and core's `detail`."""

    def __init__(self, status: int, detail: str, errors: dict[str, list[str]] | None = None):
        super().__init__(f"core refused ({status}): {detail}")
        self.status, self.detail = status, detail
        # Per-field messages when core names the input at fault, e.g. {"email": ["..."]}.
        self.errors = errors or {}


def _messages_by_field(errors: object) -> dict[str, list[str]]:
    """A problem document's `errors` (entries with `path` or `field`, and `message`: see
    nectar.shared.rejection) as messages per top-level field, for forms to show."""
    by_field: dict[str, list[str]] = {}
    for entry in errors if isinstance(errors, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("message"), str):
            where = Problem(entry.get("path"), entry["message"], entry.get("field")).name
            by_field.setdefault(where, []).append(entry["message"])
    return by_field


@dataclass(frozen=True)
class ProvisionedAccount:
    user_id: uuid.UUID
    organization_id: uuid.UUID
    created_user: bool
    created_organization: bool


@dataclass(frozen=True)
class CoreUser:
    """A customer account as core reports it after a change."""

    user_id: uuid.UUID
    email: str
    display_name: str | None
    is_active: bool
    email_verified: bool
    created: bool = False


@dataclass(frozen=True)
class OrganizationPlan:
    organization_id: uuid.UUID
    plan: str
    status: str


def _session(retry: Retry) -> requests.Session:
    http = requests.Session()
    http.mount("http://", HTTPAdapter(max_retries=retry))
    http.mount("https://", HTTPAdapter(max_retries=retry))
    return http


def _never_reached_core(error: requests.RequestException) -> bool:
    """True when no connection was made (refused, unreachable, connect time-out): core saw nothing."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    cause = error.args[0] if error.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    # urllib3's NewConnectionError (refused, no route, no such host) is a ConnectTimeoutError.
    return isinstance(cause, ConnectTimeoutError)


class CoreClient:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 5.0, retries: int = 3):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        # Idempotent calls (a request_id, or setting a state) are retried on any failure, POST included.
        self._http = _session(
            Retry(
                total=retries,
                connect=retries,
                read=retries,
                status=retries,
                backoff_factor=0.3,
                status_forcelist=(502, 503, 504),
                allowed_methods=None,
                raise_on_status=False,
            )
        )
        # Calls that act each time (queue an email) are retried only when the connection was never
        # made: after a read time-out or a 5xx core may have acted, and a retry would act twice.
        self._http_once = _session(
            Retry(total=retries, connect=retries, read=False, status=0, other=0, backoff_factor=0.3)
        )

    def create_account(
        self,
        *,
        email: str,
        organization_name: str,
        request_id: str,
        plan: str = "free",
        display_name: str | None = None,
    ) -> ProvisionedAccount:
        """Creates (or finds) the user and a new organization they own. `request_id` makes the call
        idempotent: the same id returns the organization the first call made. A new user gets an
        email to set their password."""
        body = self._call(
            "POST",
            "/accounts",
            {
                "email": email,
                "organization_name": organization_name,
                "plan": plan,
                "display_name": display_name,
                "request_id": request_id,
            },
        )
        return ProvisionedAccount(
            user_id=uuid.UUID(body["user_id"]),
            organization_id=uuid.UUID(body["organization_id"]),
            created_user=body["created_user"],
            created_organization=body["created_organization"],
        )

    def create_user(self, *, email: str, request_id: str, display_name: str | None = None) -> CoreUser:
        """Creates a customer account with no password; core emails the person a link to choose
        one. `request_id` makes the call idempotent: a retry returns the account the first made
        (`created` False). An email already in use is a CoreRefused (409) with errors["email"]."""
        body = self._call(
            "POST", "/users", {"email": email, "display_name": display_name, "request_id": request_id}
        )
        return self._user(body)

    def update_user(
        self, user_id: uuid.UUID, *, email: str | None = None, display_name: str | None = None
    ) -> CoreUser:
        """Changes the fields given (None leaves one as it is; "" clears the display name). A new
        email is validated like at sign-up, must be free, and gets a confirmation email."""
        changes = {
            name: value
            for name, value in (("email", email), ("display_name", display_name))
            if value is not None
        }
        return self._user(self._call("PATCH", f"/users/{user_id}", changes))

    def deactivate_user(self, user_id: uuid.UUID) -> CoreUser:
        """Stops the account signing in and ends every session it has."""
        return self._user(self._call("POST", f"/users/{user_id}/deactivate", {}))

    def reactivate_user(self, user_id: uuid.UUID) -> CoreUser:
        return self._user(self._call("POST", f"/users/{user_id}/reactivate", {}))

    def send_password_reset(self, user_id: uuid.UUID) -> None:
        """Queues core's password-reset email to the account (core's per-address email limit applies).
        Not idempotent: retried only when core was never reached, so one call queues at most one email."""
        self._call("POST", f"/users/{user_id}/password-reset", {}, idempotent=False)

    @staticmethod
    def _user(body: dict) -> CoreUser:
        return CoreUser(
            user_id=uuid.UUID(body["user_id"]),
            email=body["email"],
            display_name=body.get("display_name"),
            is_active=body["is_active"],
            email_verified=body["email_verified"],
            created=body.get("created", False),
        )

    def suspend_organization(self, organization_id: uuid.UUID, reason: str) -> OrganizationPlan:
        return self._plan(self._call("POST", f"/organizations/{organization_id}/suspend", {"reason": reason}))

    def reactivate_organization(self, organization_id: uuid.UUID) -> OrganizationPlan:
        return self._plan(self._call("POST", f"/organizations/{organization_id}/reactivate", {}))

    def organization_plan(self, organization_id: uuid.UUID) -> OrganizationPlan:
        return self._plan(self._call("GET", f"/organizations/{organization_id}/plan"))

    def set_plan(self, organization_id: uuid.UUID, plan: str) -> OrganizationPlan:
        return self._plan(self._call("PUT", f"/organizations/{organization_id}/plan", {"plan": plan}))

    @staticmethod
    def _plan(body: dict) -> OrganizationPlan:
        return OrganizationPlan(uuid.UUID(body["organization_id"]), body["plan"], body["status"])

    def _call(self, method: str, path: str, body: dict | None = None, *, idempotent: bool = True) -> dict:
        url = f"{self.base_url}{API_PREFIX}{path}"
        http = self._http if idempotent else self._http_once
        try:
            # The request id and trace context go along, so core's lines and spans join the caller's.
            with service_call(f"core {method} {path.split('/')[1]}") as headers:
                if self._token:
                    headers["Authorization"] = f"Bearer {self._token}"
                response = http.request(method, url, json=body, headers=headers, timeout=self._timeout)
        except requests.RequestException as error:
            if _never_reached_core(error):
                raise CoreUnavailable(
                    f"core is unreachable at {self.base_url} ({type(error).__name__}); try again later"
                ) from None
            raise CoreUnavailable(
                f"core did not answer in time at {self.base_url} ({type(error).__name__})",
                outcome_unknown=method != "GET",
            ) from None
        if response.status_code >= 500:
            raise CoreUnavailable(
                f"core answered {response.status_code} at {self.base_url}; try again later",
                # A gateway's 502/504 may come after core acted; core's own 500 and 503 roll back.
                outcome_unknown=method != "GET" and response.status_code in (502, 504),
            )
        if response.status_code >= 400:
            try:
                problem = response.json()
                detail, errors = problem.get("detail") or response.reason, problem.get("errors")
            except (ValueError, AttributeError):
                detail, errors = response.reason, None
            raise CoreRefused(response.status_code, detail, _messages_by_field(errors))
        return response.json()
