"""Core's contract: the part of core that marketing and admin may import.

`CoreClient` calls core's service API (/internal/v1) over HTTP with the caller's own credential:
marketing's CORE_SERVICE_TOKEN (provision accounts, read and set plans) or admin's CORE_ADMIN_TOKEN
(every call; another caller's credential on an admin call gets a 403). Idempotent calls (a
request_id, or setting a state) are retried with backoff on connection failures, time-outs and 5xx
answers; a call that acts each time (a password-reset email) only when core was never reached. When
core stays unreachable the client raises `CoreUnavailable` with a message a person can read (and
`outcome_unknown` when core may have acted), and a refusal by core raises `CoreRefused` with core's
own explanation.
"""

from nectar.core.contract.client import (
    PLANS,
    CoreClient,
    CoreRefused,
    CoreUnavailable,
    CoreUser,
    OrganizationPlan,
    ProvisionedAccount,
)

__all__ = [
    "PLANS",
    "CoreClient",
    "CoreRefused",
    "CoreUnavailable",
    "CoreUser",
    "OrganizationPlan",
    "ProvisionedAccount",
]
