"""The Klaviyo operations this target calls, with their rate-limit tiers and scopes.

Values come from the official OpenAPI spec (revision 2026-07-15), `x-klaviyo-ratelimit` and
`x-klaviyo-scopes` of each operation; a test compares this table with the spec-derived file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    name: str
    burst_per_s: int
    steady_per_min: int


# https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling
XS = Tier("XS", 1, 15)
S = Tier("S", 3, 60)
M = Tier("M", 10, 150)
L = Tier("L", 75, 750)
XL = Tier("XL", 350, 3500)
# bulk_create_data_source_records is outside the named tiers: 3/s burst, 15/min steady (spec).
DATA_SOURCE_RECORDS = Tier("3/s, 15/min", 3, 15)


@dataclass(frozen=True)
class Operation:
    name: str  # the spec's operationId
    method: str
    path: str  # template with {id} placeholders
    tier: Tier
    scopes: tuple[str, ...]
    daily: int | None = None


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("get_accounts", "GET", "/api/accounts", XS, ("accounts:read",)),
        Operation(
            "create_or_update_profile", "POST", "/api/profile-import", L, ("profiles:write",)
        ),
        Operation("get_profiles", "GET", "/api/profiles", L, ("profiles:read",)),
        Operation(
            "bulk_import_profiles",
            "POST",
            "/api/profile-bulk-import-jobs",
            M,
            ("lists:write", "profiles:write"),
        ),
        Operation(
            "get_bulk_import_profiles_jobs",
            "GET",
            "/api/profile-bulk-import-jobs",
            M,
            ("lists:read", "profiles:read"),
        ),
        Operation(
            "get_bulk_import_profiles_job",
            "GET",
            "/api/profile-bulk-import-jobs/{id}",
            M,
            ("lists:read", "profiles:read"),
        ),
        Operation(
            "get_errors_for_bulk_import_profiles_job",
            "GET",
            "/api/profile-bulk-import-jobs/{id}/import-errors",
            M,
            ("profiles:read",),
        ),
        Operation("get_lists", "GET", "/api/lists", L, ("lists:read",)),
        Operation("create_list", "POST", "/api/lists", M, ("lists:write",), daily=150),
        Operation(
            "get_profile_ids_for_list",
            "GET",
            "/api/lists/{id}/relationships/profiles",
            L,
            ("lists:read", "profiles:read"),
        ),
        Operation(
            "add_profiles_to_list",
            "POST",
            "/api/lists/{id}/relationships/profiles",
            M,
            ("lists:write", "profiles:write"),
        ),
        Operation(
            "remove_profiles_from_list",
            "DELETE",
            "/api/lists/{id}/relationships/profiles",
            M,
            ("lists:write", "profiles:write"),
        ),
        Operation("create_event", "POST", "/api/events", XL, ("events:write",)),
        Operation(
            "bulk_create_events", "POST", "/api/event-bulk-create-jobs", M, ("events:write",)
        ),
        Operation(
            "bulk_subscribe_profiles",
            "POST",
            "/api/profile-subscription-bulk-create-jobs",
            L,
            ("lists:write", "profiles:write", "subscriptions:write"),
        ),
        Operation(
            "bulk_unsubscribe_profiles",
            "POST",
            "/api/profile-subscription-bulk-delete-jobs",
            L,
            ("lists:write", "profiles:write", "subscriptions:write"),
        ),
        Operation(
            "bulk_suppress_profiles",
            "POST",
            "/api/profile-suppression-bulk-create-jobs",
            L,
            ("profiles:write", "subscriptions:write"),
        ),
        Operation(
            "get_bulk_suppress_profiles_jobs",
            "GET",
            "/api/profile-suppression-bulk-create-jobs",
            L,
            ("subscriptions:read",),
        ),
        Operation(
            "get_bulk_suppress_profiles_job",
            "GET",
            "/api/profile-suppression-bulk-create-jobs/{id}",
            L,
            ("subscriptions:read",),
        ),
        Operation(
            "bulk_unsuppress_profiles",
            "POST",
            "/api/profile-suppression-bulk-delete-jobs",
            L,
            ("subscriptions:write",),
        ),
        Operation(
            "get_bulk_unsuppress_profiles_jobs",
            "GET",
            "/api/profile-suppression-bulk-delete-jobs",
            L,
            ("subscriptions:read",),
        ),
        Operation(
            "get_bulk_unsuppress_profiles_job",
            "GET",
            "/api/profile-suppression-bulk-delete-jobs/{id}",
            L,
            ("subscriptions:read",),
        ),
        Operation(
            "request_profile_deletion",
            "POST",
            "/api/data-privacy-deletion-jobs",
            S,
            ("data-privacy:write",),
        ),
        # Catalogs: bulk create / update / delete jobs of items, variants and categories, their
        # job lists and jobs (the spec names the variant and category jobs without "catalog_"),
        # and the lookups that tell create from update.
        *(
            op
            for plural, jobs, path in (
                ("items", "catalog_items", "catalog-item"),
                ("variants", "variants", "catalog-variant"),
                ("categories", "categories", "catalog-category"),
            )
            for action in ("create", "update", "delete")
            for op in (
                Operation(
                    f"bulk_{action}_catalog_{plural}",
                    "POST",
                    f"/api/{path}-bulk-{action}-jobs",
                    L,
                    ("catalogs:write",),
                ),
                Operation(
                    f"get_bulk_{action}_{jobs}_jobs",
                    "GET",
                    f"/api/{path}-bulk-{action}-jobs",
                    XL if action == "delete" or plural == "categories" else L,
                    ("catalogs:read",),
                ),
                Operation(
                    f"get_bulk_{action}_{jobs}_job",
                    "GET",
                    f"/api/{path}-bulk-{action}-jobs/{{id}}",
                    XL if action == "delete" or plural == "categories" else L,
                    ("catalogs:read",),
                ),
            )
        ),
        Operation("get_catalog_items", "GET", "/api/catalog-items", XL, ("catalogs:read",)),
        Operation("get_catalog_variants", "GET", "/api/catalog-variants", XL, ("catalogs:read",)),
        Operation(
            "get_catalog_categories", "GET", "/api/catalog-categories", XL, ("catalogs:read",)
        ),
        # Custom objects: the data source, and its records in bulk.
        Operation("get_data_sources", "GET", "/api/data-sources", S, ("custom-objects:read",)),
        Operation("create_data_source", "POST", "/api/data-sources", S, ("custom-objects:write",)),
        Operation(
            "bulk_create_data_source_records",
            "POST",
            "/api/data-source-record-bulk-create-jobs",
            DATA_SOURCE_RECORDS,
            ("custom-objects:write",),
        ),
    )
}
