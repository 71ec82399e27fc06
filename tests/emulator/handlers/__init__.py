"""Endpoint handlers, one module per resource group, and the route table: operationId ->
handler. Each handler takes the account's ``Backend`` and an admitted ``Call`` and returns a
``Reply`` (or raises ``ApiResponseError``).
"""

from __future__ import annotations

from ..calls import Handler
from . import (
    accounts,
    catalogs,
    data_sources,
    events,
    import_jobs,
    lists,
    privacy,
    profiles,
    subscriptions,
    suppressions,
)

ROUTES: dict[str, Handler] = {
    "get_accounts": accounts.get_accounts,
    "create_or_update_profile": profiles.create_or_update_profile,
    "get_profiles": profiles.get_profiles,
    "bulk_import_profiles": import_jobs.bulk_import_profiles,
    "get_bulk_import_profiles_jobs": import_jobs.get_bulk_import_profiles_jobs,
    "get_bulk_import_profiles_job": import_jobs.get_bulk_import_profiles_job,
    "get_errors_for_bulk_import_profiles_job": import_jobs.get_errors_for_bulk_import_profiles_job,
    "get_lists": lists.get_lists,
    "create_list": lists.create_list,
    "get_profile_ids_for_list": lists.get_profile_ids_for_list,
    "add_profiles_to_list": lists.add_profiles_to_list,
    "remove_profiles_from_list": lists.remove_profiles_from_list,
    "create_event": events.create_event,
    "bulk_create_events": events.bulk_create_events,
    "bulk_subscribe_profiles": subscriptions.bulk_subscribe_profiles,
    "bulk_unsubscribe_profiles": subscriptions.bulk_unsubscribe_profiles,
    "bulk_suppress_profiles": suppressions.bulk_suppress_profiles,
    "get_bulk_suppress_profiles_jobs": suppressions.get_bulk_suppress_profiles_jobs,
    "get_bulk_suppress_profiles_job": suppressions.get_bulk_suppress_profiles_job,
    "bulk_unsuppress_profiles": suppressions.bulk_unsuppress_profiles,
    "get_bulk_unsuppress_profiles_jobs": suppressions.get_bulk_unsuppress_profiles_jobs,
    "get_bulk_unsuppress_profiles_job": suppressions.get_bulk_unsuppress_profiles_job,
    "request_profile_deletion": privacy.request_profile_deletion,
    **catalogs.ROUTES,
    "get_data_sources": data_sources.get_data_sources,
    "create_data_source": data_sources.create_data_source,
    "get_data_source": data_sources.get_data_source,
    "delete_data_source": data_sources.delete_data_source,
    "bulk_create_data_source_records": data_sources.bulk_create_data_source_records,
}
