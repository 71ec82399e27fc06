"""Klaviyo's official Python SDK (``klaviyo-api``) against the emulator: its pydantic models
accept every answer an integration meets, and its errors and retries behave as against Klaviyo.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from klaviyo_api import KlaviyoAPI
from openapi_client.exceptions import ApiException
from openapi_client.models import (
    EventsBulkCreateJob,
    ListCreateQuery,
    ListMembersAddQuery,
    ListMembersDeleteQuery,
    ProfileImportJobCreateQuery,
    ProfileLocation,
    ProfileUpsertQuery,
    ProfileUpsertQueryResourceObject,
    ProfileUpsertQueryResourceObjectAttributes,
    SubscriptionCreateJobCreateQuery,
    SubscriptionDeleteJobCreateQuery,
)

from tests.emulator import Emulator


@pytest.fixture
def klaviyo(emulator: Emulator) -> KlaviyoAPI:
    return KlaviyoAPI(
        emulator.private_key, max_delay=0.1, max_retries=2, test_host=emulator.base_url
    )


def upsert_body(**attributes: Any) -> ProfileUpsertQuery:
    """Built from the SDK's models, which send only the fields given (``from_dict`` would send
    every other field as null, and profile-import clears a field sent as null)."""
    if "location" in attributes:
        attributes["location"] = ProfileLocation(**attributes["location"])
    return ProfileUpsertQuery(
        data=ProfileUpsertQueryResourceObject(
            type="profile", attributes=ProfileUpsertQueryResourceObjectAttributes(**attributes)
        )
    )


def import_body(rows: list[dict[str, Any]], list_id: str | None = None) -> Any:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {
            "profiles": {"data": [{"type": "profile", "attributes": row} for row in rows]}
        },
    }
    if list_id:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return ProfileImportJobCreateQuery.from_dict({"data": data})


def cursor_of(link: str | None) -> str | None:
    """The page[cursor] of a links.next / links.prev URL."""
    if not link:
        return None
    return parse_qs(urlsplit(link).query)["page[cursor]"][0]


def error_body(error: ApiException) -> dict[str, Any]:
    return dict(json.loads(error.body))


def new_list(klaviyo: KlaviyoAPI, name: str) -> str:
    query = ListCreateQuery.from_dict({"data": {"type": "list", "attributes": {"name": name}}})
    return str(klaviyo.Lists.create_list(query).data.id)


# -- accounts and profiles ----------------------------------------------------------------------


@pytest.mark.emulator(throttle=False)
def test_accounts(emulator: Emulator, klaviyo: KlaviyoAPI) -> None:
    (account,) = klaviyo.Accounts.get_accounts().data
    assert account.id == emulator.public_key
    assert account.attributes.public_api_key == emulator.public_key
    assert account.attributes.contact_information.default_sender_email


@pytest.mark.emulator(throttle=False)
def test_create_or_update_profile_creates_then_updates(klaviyo: KlaviyoAPI) -> None:
    created = klaviyo.Profiles.create_or_update_profile_with_http_info(
        upsert_body(email="ann@example.com", first_name="Ann", location={"city": "Oslo"})
    )
    assert created.status_code == 201
    profile = created.data.data
    assert profile.attributes.email == "ann@example.com"
    assert profile.attributes.location.city == "Oslo"
    updated = klaviyo.Profiles.create_or_update_profile_with_http_info(
        upsert_body(email="ann@example.com", last_name="Lee", properties={"tier": "gold"})
    )
    assert updated.status_code == 200
    assert updated.data.data.id == profile.id
    assert updated.data.data.attributes.first_name == "Ann"
    assert updated.data.data.attributes.properties == {"tier": "gold"}


@pytest.mark.emulator(throttle=False)
def test_get_profiles_filters_and_pages_with_cursors(klaviyo: KlaviyoAPI) -> None:
    emails = [f"p{n}@example.com" for n in range(7)]
    ids = [
        klaviyo.Profiles.create_or_update_profile(upsert_body(email=email)).data.id
        for email in emails
    ]
    found = klaviyo.Profiles.get_profiles(filter='any(email,["p1@example.com","p4@example.com"])')
    assert [p.id for p in found.data] == [ids[1], ids[4]]

    pages: list[list[str]] = []
    cursor = None
    while True:
        page = klaviyo.Profiles.get_profiles(page_size=3, page_cursor=cursor)
        pages.append([p.id for p in page.data])
        assert (page.links.prev is None) == (len(pages) == 1)
        cursor = cursor_of(page.links.next)
        if cursor is None:
            break
    assert pages == [ids[0:3], ids[3:6], ids[6:7]]
    back = klaviyo.Profiles.get_profiles(page_size=3, page_cursor=cursor_of(page.links.prev))
    assert [p.id for p in back.data] == ids[3:6]


@pytest.mark.emulator(throttle=False)
def test_get_profiles_sorts_as_the_spec_allows(emulator: Emulator, klaviyo: KlaviyoAPI) -> None:
    for email in ("b@example.com", "c@example.com", "a@example.com"):
        klaviyo.Profiles.create_or_update_profile(upsert_body(email=email))
    by_email = klaviyo.Profiles.get_profiles(sort="email")
    assert [p.attributes.email for p in by_email.data] == [
        "a@example.com", "b@example.com", "c@example.com",
    ]  # fmt: skip
    newest_first = klaviyo.Profiles.get_profiles(sort="-created")
    assert [p.attributes.email for p in newest_first.data] == [
        "a@example.com", "c@example.com", "b@example.com",
    ]  # fmt: skip
    emulator.expect_violations(1)
    with pytest.raises(ApiException) as refused:
        klaviyo.Profiles.get_profiles(sort="first_name")
    assert refused.value.status == 400
    assert error_body(refused.value)["errors"][0]["source"] == {"parameter": "sort"}


@pytest.mark.emulator(throttle=False)
def test_sparse_fieldsets_trim_the_attributes(emulator: Emulator, klaviyo: KlaviyoAPI) -> None:
    klaviyo.Profiles.create_or_update_profile(
        upsert_body(email="ann@example.com", first_name="Ann", location={"city": "Oslo"})
    )
    # With fields[...] the SDK hands back the JSON document as a dict.
    page = klaviyo.Profiles.get_profiles(fields_profile=["email", "location.city"])
    assert page["data"][0]["attributes"] == {
        "email": "ann@example.com",
        "location": {"city": "Oslo"},
    }
    answer = klaviyo.Profiles.create_or_update_profile(
        upsert_body(email="ann@example.com"), fields_profile=["first_name"]
    )
    assert answer["data"]["attributes"] == {"first_name": "Ann"}
    emulator.expect_violations(1)
    with pytest.raises(ApiException) as refused:
        klaviyo.Profiles.get_profiles(fields_profile=["shoe_size"])
    assert error_body(refused.value)["errors"][0]["source"] == {"parameter": "fields[profile]"}


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_profile_subscriptions_have_the_spec_shape(emulator: Emulator, klaviyo: KlaviyoAPI) -> None:
    list_id = new_list(klaviyo, "Newsletter")
    subscribe = SubscriptionCreateJobCreateQuery.from_dict(
        {
            "data": {
                "type": "profile-subscription-bulk-create-job",
                "attributes": {
                    "custom_source": "checkout",
                    "profiles": {
                        "data": [
                            {
                                "type": "profile",
                                "attributes": {
                                    "email": "ann@example.com",
                                    "phone_number": "+14155550101",
                                    "subscriptions": {
                                        "email": {"marketing": {"consent": "SUBSCRIBED"}},
                                        "sms": {"marketing": {"consent": "SUBSCRIBED"}},
                                    },
                                },
                            }
                        ]
                    },
                },
                "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
            }
        }
    )
    assert klaviyo.Profiles.bulk_subscribe_profiles(subscribe) is None
    assert emulator.wait_idle(10)
    (profile,) = klaviyo.Profiles.get_profiles(additional_fields_profile=["subscriptions"]).data
    subscriptions = profile.attributes.subscriptions
    email = subscriptions.email.marketing
    assert (email.consent, email.can_receive_email_marketing) == ("SUBSCRIBED", True)
    assert email.custom_method_detail == "checkout" and email.suppression == []
    assert email.consent_timestamp is not None
    sms = subscriptions.sms
    assert (sms.marketing.consent, sms.marketing.can_receive_sms_marketing) == ("SUBSCRIBED", True)
    assert sms.transactional.can_receive_sms_transactional is False
    assert subscriptions.mobile_push.marketing.consent == "NEVER_SUBSCRIBED"

    unsubscribe = SubscriptionDeleteJobCreateQuery.from_dict(
        {
            "data": {
                "type": "profile-subscription-bulk-delete-job",
                "attributes": {
                    "profiles": {
                        "data": [
                            {
                                "type": "profile",
                                "attributes": {
                                    "email": "ann@example.com",
                                    "subscriptions": {
                                        "email": {"marketing": {"consent": "UNSUBSCRIBED"}}
                                    },
                                },
                            }
                        ]
                    }
                },
                "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
            }
        }
    )
    assert klaviyo.Profiles.bulk_unsubscribe_profiles(unsubscribe) is None
    assert emulator.wait_idle(10)
    answer = klaviyo.Profiles.create_or_update_profile(
        upsert_body(email="ann@example.com"), additional_fields_profile=["subscriptions"]
    )
    email = answer.data.attributes.subscriptions.email.marketing
    assert (email.consent, email.can_receive_email_marketing) == ("UNSUBSCRIBED", False)
    assert [entry.reason for entry in email.suppression] == ["UNSUBSCRIBE"]


# -- bulk import jobs ---------------------------------------------------------------------------


def wait_complete(emulator: Emulator, klaviyo: KlaviyoAPI, job_id: str) -> Any:
    assert emulator.wait_idle(10)
    job = klaviyo.Profiles.get_bulk_import_profiles_job(job_id)
    assert job.data.attributes.status == "complete"
    return job


@pytest.mark.emulator(throttle=False, job_delay_s=0, supported_regions={"US"})
def test_bulk_import_jobs_their_list_and_their_import_errors(
    emulator: Emulator, klaviyo: KlaviyoAPI
) -> None:
    list_id = new_list(klaviyo, "VIP")
    rows = [{"email": f"v{n}@example.com"} for n in range(4)]
    rows += [
        {"email": f"uk{n}@example.com", "phone_number": f"+4479111234{n:02}"} for n in range(3)
    ]
    created = klaviyo.Profiles.bulk_import_profiles(import_body(rows, list_id))
    assert created.data.attributes.status == "queued"
    assert created.data.attributes.total_count == 7
    job = wait_complete(emulator, klaviyo, created.data.id)
    attributes = job.data.attributes
    assert (attributes.completed_count, attributes.failed_count) == (4, 3)
    assert attributes.completed_at is not None

    with_list = klaviyo.Profiles.get_bulk_import_profiles_job(created.data.id, include=["lists"])
    assert [item.id for item in with_list.included] == [list_id]
    assert with_list.included[0].attributes.name == "VIP"

    pointers: list[str] = []
    cursor = None
    while True:
        page = klaviyo.Profiles.get_errors_for_bulk_import_profiles_job(
            created.data.id, page_size=2, page_cursor=cursor
        )
        pointers += [error.attributes.source.pointer for error in page.data]
        cursor = cursor_of(page.links.next)
        if cursor is None:
            break
    assert pointers == [
        f"/data/attributes/profiles/data/{row}/attributes/phone_number" for row in (4, 5, 6)
    ]
    members = klaviyo.Lists.get_profile_ids_for_list(list_id)
    assert len(members.data) == 4


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_job_list_through_the_sdk(emulator: Emulator, klaviyo: KlaviyoAPI) -> None:
    ids = [
        klaviyo.Profiles.bulk_import_profiles(import_body([{"email": f"j{n}@example.com"}])).data.id
        for n in range(3)
    ]
    assert emulator.wait_idle(10)
    newest = klaviyo.Profiles.get_bulk_import_profiles_jobs(
        filter='equals(status,"complete")', sort="-created_at", page_size=2
    )
    assert [job.id for job in newest.data] == [ids[2], ids[1]]
    rest = klaviyo.Profiles.get_bulk_import_profiles_jobs(
        filter='equals(status,"complete")',
        sort="-created_at",
        page_size=2,
        page_cursor=cursor_of(newest.links.next),
    )
    assert [job.id for job in rest.data] == [ids[0]] and rest.links.next is None
    assert (
        klaviyo.Profiles.get_bulk_import_profiles_jobs(filter='equals(status,"queued")').data == []
    )


# -- lists and members --------------------------------------------------------------------------


@pytest.mark.emulator(throttle=False)
def test_lists_and_members(klaviyo: KlaviyoAPI) -> None:
    list_id = new_list(klaviyo, "Members")
    new_list(klaviyo, "Other")
    found = klaviyo.Lists.get_lists(filter='equals(name,"Members")')
    assert [item.id for item in found.data] == [list_id]
    tagged = klaviyo.Lists.get_lists(include=["tags"], sort="name")
    assert [item.attributes.name for item in tagged.data] == ["Members", "Other"]
    assert tagged.included == []

    ids = [
        klaviyo.Profiles.create_or_update_profile(upsert_body(email=f"m{n}@example.com")).data.id
        for n in range(5)
    ]
    add = ListMembersAddQuery.from_dict({"data": [{"type": "profile", "id": i} for i in ids]})
    assert klaviyo.Lists.add_profiles_to_list(list_id, add) is None

    seen: list[str] = []
    cursor = None
    while True:
        page = klaviyo.Lists.get_profile_ids_for_list(list_id, page_size=2, page_cursor=cursor)
        seen += [member.id for member in page.data]
        cursor = cursor_of(page.links.next)
        if cursor is None:
            break
    assert seen == ids
    by_email = klaviyo.Lists.get_profile_ids_for_list(
        list_id, filter='equals(email,"m3@example.com")'
    )
    assert [member.id for member in by_email.data] == [ids[3]]

    remove = ListMembersDeleteQuery.from_dict(
        {"data": [{"type": "profile", "id": i} for i in ids[:2]]}
    )
    assert klaviyo.Lists.remove_profiles_from_list(list_id, remove) is None
    left = klaviyo.Lists.get_profile_ids_for_list(list_id)
    assert [member.id for member in left.data] == ids[2:]


# -- events -------------------------------------------------------------------------------------


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_bulk_create_events(emulator: Emulator, klaviyo: KlaviyoAPI) -> None:
    body = EventsBulkCreateJob.from_dict(
        {
            "data": {
                "type": "event-bulk-create-job",
                "attributes": {
                    "events-bulk-create": {
                        "data": [
                            {
                                "type": "event-bulk-create",
                                "attributes": {
                                    "profile": {
                                        "data": {
                                            "type": "profile",
                                            "attributes": {"email": "buyer@example.com"},
                                        }
                                    },
                                    "events": {
                                        "data": [
                                            {
                                                "type": "event",
                                                "attributes": {
                                                    "properties": {"OrderId": n},
                                                    "metric": {
                                                        "data": {
                                                            "type": "metric",
                                                            "attributes": {"name": "Placed Order"},
                                                        }
                                                    },
                                                    "unique_id": f"order-{n}",
                                                    "value": 9.5,
                                                },
                                            }
                                            for n in range(3)
                                        ]
                                    },
                                },
                            }
                        ]
                    }
                },
            }
        }
    )
    assert klaviyo.Events.bulk_create_events(body) is None
    assert emulator.wait_idle(10)
    events = emulator.dump()["events"]
    assert sorted(event["unique_id"] for event in events) == ["order-0", "order-1", "order-2"]


# -- errors -------------------------------------------------------------------------------------


def test_errors_are_api_exceptions_with_json_api_bodies(
    emulator: Emulator, klaviyo: KlaviyoAPI
) -> None:
    emulator.expect_violations(1)
    with pytest.raises(ApiException) as invalid:
        klaviyo.Profiles.create_or_update_profile(upsert_body(email="not-an-email"))
    assert invalid.value.status == 400
    (error,) = error_body(invalid.value)["errors"]
    assert error["code"] == "invalid"
    assert error["source"] == {"pointer": "/data/attributes/email"}

    with pytest.raises(ApiException) as missing:
        klaviyo.Profiles.get_bulk_import_profiles_job("01NOTAJOB")
    assert missing.value.status == 404
    assert error_body(missing.value)["errors"][0]["code"] == "not_found"

    first = klaviyo.Profiles.create_or_update_profile(upsert_body(email="a@example.com")).data.id
    klaviyo.Profiles.create_or_update_profile(upsert_body(phone_number="+14155550199"))
    with pytest.raises(ApiException) as conflict:
        klaviyo.Profiles.create_or_update_profile(
            upsert_body(email="a@example.com", phone_number="+14155550199")
        )
    assert conflict.value.status == 409
    duplicate = error_body(conflict.value)["errors"][0]
    assert duplicate["code"] == "duplicate_profile" and duplicate["meta"]["duplicate_profile_id"]
    assert duplicate["meta"]["duplicate_profile_id"] != first

    stranger = KlaviyoAPI("pk_not_a_key", max_retries=0, test_host=emulator.base_url)
    with pytest.raises(ApiException) as unauthorised:
        stranger.Accounts.get_accounts()
    assert unauthorised.value.status == 401

    with pytest.raises(ApiException) as not_emulated:
        klaviyo.Lists.get_list("AbC123")
    assert not_emulated.value.status == 501
    assert "get_list" in error_body(not_emulated.value)["errors"][0]["detail"]


def test_sdk_retries_a_429_after_its_retry_after(emulator: Emulator, klaviyo: KlaviyoAPI) -> None:
    emulator.add_fault("429", operation="get_accounts", retry_after=1)
    assert klaviyo.Accounts.get_accounts().data[0].id == emulator.public_key
    calls = [entry for entry in emulator.request_log if entry.operation == "get_accounts"]
    assert [entry.status for entry in calls] == [429, 200]
    assert not calls[1].retry_after_violation  # the SDK waited out the Retry-After


def test_sdk_gives_up_on_429_after_its_retries(emulator: Emulator, klaviyo: KlaviyoAPI) -> None:
    emulator.add_fault("429", operation="create_list", count=None, retry_after=1)
    with pytest.raises(ApiException) as throttled:
        new_list(klaviyo, "VIP")  # two attempts (max_retries=2), both throttled
    assert throttled.value.status == 429
    assert throttled.value.headers["Retry-After"] == "1"
    assert error_body(throttled.value)["errors"][0]["code"] == "throttled"
    attempts = emulator.request_log
    assert [entry.status for entry in attempts] == [429, 429]
    assert not attempts[1].retry_after_violation
