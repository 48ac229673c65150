"""Core's contract: the part of core that marketing and admin may import.

`CoreClient` calls core's service API (/internal/v1) over HTTP with the shared service credential
(CORE_SERVICE_TOKEN). Every call is idempotent, so the client retries connection failures and 5xx
answers with backoff; when core stays unreachable it raises `CoreUnavailable` with a message a
person can read, and a refusal by core raises `CoreRefused` with core's own explanation.
"""

from nectar.core.contract.client import (
    CoreClient,
    CoreRefused,
    CoreUnavailable,
    CoreUser,
    OrganizationPlan,
    ProvisionedAccount,
)

__all__ = [
    "CoreClient",
    "CoreRefused",
    "CoreUnavailable",
    "CoreUser",
    "OrganizationPlan",
    "ProvisionedAccount",
]
