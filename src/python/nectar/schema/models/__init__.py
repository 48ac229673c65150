"""The one database's tables, by domain.

Every table states, in `__table_args__` info, which service owns it (`service`) and, for a tenant
table, the column that row-level security compares with the current organization
(`tenant_column`). `nectar.schema.access` turns those facts into grants and policies; the tests
derive the tenant tables from the live schema and check every one.
"""

from nectar.schema.models.accounts import (
    ApiKey,
    EmailSuppression,
    Invitation,
    Membership,
    Organization,
    User,
    UserSession,
)
from nectar.schema.models.alerts import AlertRule
from nectar.schema.models.billing import StripeEvent, Subscription, UsageReport
from nectar.schema.models.integrations import CatalogService, ImportedConnector, IntegrationConnection
from nectar.schema.models.marketing import (
    BlogPost,
    Campaign,
    EmailOutbox,
    EmailTemplate,
    Lead,
    LeadInquiry,
    LeadNote,
    NewsletterSubscriber,
)
from nectar.schema.models.platform import RateLimitBucket
from nectar.schema.models.staff import AuditEntry, StaffSession, StaffUser, SystemSetting
from nectar.schema.models.usage import UsageDay
from nectar.schema.models.variables import OrganizationSecret, OrganizationVariable
from nectar.schema.models.workflows import (
    Endpoint,
    Workflow,
    WorkflowApproval,
    WorkflowRun,
    WorkflowRunCheckpoint,
    WorkflowRunEvent,
    WorkflowSchedule,
    WorkflowVersion,
)

__all__ = [
    "AlertRule",
    "ApiKey",
    "AuditEntry",
    "BlogPost",
    "Campaign",
    "CatalogService",
    "EmailOutbox",
    "EmailSuppression",
    "EmailTemplate",
    "Endpoint",
    "ImportedConnector",
    "IntegrationConnection",
    "Invitation",
    "Lead",
    "LeadInquiry",
    "LeadNote",
    "Membership",
    "NewsletterSubscriber",
    "Organization",
    "OrganizationSecret",
    "OrganizationVariable",
    "RateLimitBucket",
    "StaffSession",
    "StaffUser",
    "StripeEvent",
    "Subscription",
    "SystemSetting",
    "UsageDay",
    "UsageReport",
    "User",
    "UserSession",
    "Workflow",
    "WorkflowApproval",
    "WorkflowRun",
    "WorkflowRunCheckpoint",
    "WorkflowRunEvent",
    "WorkflowSchedule",
    "WorkflowVersion",
]
