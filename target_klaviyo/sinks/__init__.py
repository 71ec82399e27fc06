"""One sink class per Klaviyo object and behaviour; the routing table picks it by the stream's
mapping."""

from __future__ import annotations

from target_klaviyo.sinks.base import KlaviyoSink
from target_klaviyo.sinks.catalogs import (
    CatalogCategoryDeleteSink,
    CatalogCategoryUpsertSink,
    CatalogItemDeleteSink,
    CatalogItemUpsertSink,
    CatalogVariantDeleteSink,
    CatalogVariantUpsertSink,
)
from target_klaviyo.sinks.custom_objects import CustomObjectUpsertSink
from target_klaviyo.sinks.deletions import DeletionSink
from target_klaviyo.sinks.events import EventInsertSink
from target_klaviyo.sinks.lists import ListDeleteSink, ListInsertSink, ListMirrorSink
from target_klaviyo.sinks.profiles import ProfileUpsertSink
from target_klaviyo.sinks.subscriptions import SubscribeSink, UnsubscribeSink
from target_klaviyo.sinks.suppressions import SuppressSink, UnsuppressSink

SINK_CLASSES: dict[tuple[str, str], type[KlaviyoSink]] = {
    (sink.OBJECT, sink.BEHAVIOR): sink
    for sink in (
        ProfileUpsertSink,
        ListInsertSink,
        ListDeleteSink,
        ListMirrorSink,
        EventInsertSink,
        SubscribeSink,
        UnsubscribeSink,
        SuppressSink,
        UnsuppressSink,
        DeletionSink,
        CatalogItemUpsertSink,
        CatalogVariantUpsertSink,
        CatalogCategoryUpsertSink,
        CatalogItemDeleteSink,
        CatalogVariantDeleteSink,
        CatalogCategoryDeleteSink,
        CustomObjectUpsertSink,
    )
}
