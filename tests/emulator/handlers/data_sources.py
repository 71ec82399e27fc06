"""Custom objects: data sources (list, create, get, delete) and bulk record ingestion
(Klaviyo: custom objects).
"""

from __future__ import annotations

import time
from typing import Any

from .. import paging
from ..calls import ApiResponseError, Backend, Call, Reply, bad_parameter, not_found
from ..resources import ApiError, data_source_resource
from ..state import DataSource, Store, iso, new_ulid, now_utc
from ..work import Work

# Klaviyo's OpenAPI spec: DataSourceCreateQueryResourceObject's defaults.
DEFAULT_VISIBILITY = "private"
DEFAULT_NAMESPACE = "custom-objects"


def get_data_sources(backend: Backend, call: Call) -> Reply:
    if "filter" in call.query:
        # Klaviyo's OpenAPI spec: get_data_sources has no filter parameter.
        raise bad_parameter("filter", "Filtering is not supported by this endpoint.")
    size = paging.page_size(call)
    start = paging.cursor_given(call)
    store = backend.store
    with store.lock:
        order = store.data_source_order
        positions, next_position, prev_position = paging.page(
            range(len(order)), start, size, lambda position: order[position] is not None
        )
        data = [
            data_source_resource(store.data_sources[str(order[p])], call.base_url)
            for p in positions
        ]
    return Reply(200, {"data": data, "links": paging.links(call, next_position, prev_position)})


def create_data_source(backend: Backend, call: Call) -> Reply:
    attributes = call.body["data"]["attributes"]
    namespace = attributes.get("namespace") or DEFAULT_NAMESPACE
    store = backend.store
    with store.lock:
        title = attributes["title"]
        if any(s.title == title and s.namespace == namespace for s in store.data_sources.values()):
            # Klaviyo's OpenAPI spec: the title is "unique within the namespace". The status of
            # a clash is not documented: 409 like Klaviyo's other conflicts.
            raise ApiResponseError(
                [
                    ApiError(
                        409,
                        "conflict",
                        f"A data source titled '{title}' already exists in namespace "
                        f"'{namespace}'.",
                        pointer="/data/attributes/title",
                    )
                ]
            )
        source = DataSource(
            id=new_ulid(),
            title=title,
            visibility=attributes.get("visibility") or DEFAULT_VISIBILITY,
            description=attributes.get("description") or "",
            namespace=namespace,
            position=len(store.data_source_order),
        )
        store.data_sources[source.id] = source
        store.data_source_order.append(source.id)
        document = {
            "data": data_source_resource(source, call.base_url),
            "links": {"self": call.url},
        }
    return Reply(201, document)


def _source(store: Store, source_id: str) -> DataSource:
    source = store.data_sources.get(source_id)
    if source is None:
        raise not_found(f"Data source '{source_id}' does not exist.")
    return source


def get_data_source(backend: Backend, call: Call) -> Reply:
    with backend.store.lock:
        source = _source(backend.store, call.params["id"])
        document = {
            "data": data_source_resource(source, call.base_url),
            "links": {"self": call.url},
        }
    return Reply(200, document)


def delete_data_source(backend: Backend, call: Call) -> Reply:
    store = backend.store
    with store.lock:
        source = _source(store, call.params["id"])
        del store.data_sources[source.id]
        store.data_source_order[source.position] = None
    # Klaviyo's OpenAPI spec: 204 with no body; its records go with it.
    return Reply(204)


def bulk_create_data_source_records(backend: Backend, call: Call) -> Reply:
    data = call.body["data"]
    source_id = data["relationships"]["data-source"]["data"]["id"]  # required by the rules
    records: list[dict[str, Any]] = [
        row["attributes"]["record"] for row in data["attributes"]["data-source-records"]["data"]
    ]
    with backend.store.lock:
        if source_id not in backend.store.data_sources:
            # As for an unknown list in a bulk import: the request names what does not exist.
            raise ApiResponseError(
                [
                    ApiError(
                        400,
                        "invalid",
                        f"Data source '{source_id}' does not exist.",
                        pointer="/data/relationships/data-source/data/id",
                    )
                ]
            )
    payload = {"data_source_id": source_id, "records": records}
    backend.submit(Work("records", time.monotonic(), payload, iso(now_utc())))
    # Klaviyo's OpenAPI spec: 204 with no body: records are ingested asynchronously and nothing
    # reports an outcome per record.
    return Reply(204)
