"""singer-sdk's standard target tests, run against the Klaviyo emulator.

Every standard test that applies is listed explicitly below, with a comment on the ones left
out. The SDK's test streams are not Klaviyo-shaped: `streams: {"*": {"object": "profile"}}`
routes them all to profile upserts, and the records without an email, phone number or
external_id are rejected with a reason, which is the correct behaviour. Each sync must still end
cleanly, with every record accounted for (README); the `validate()` steps check that.

Two custom tests with Klaviyo-shaped input (`tests/data/*.singer`) check what reaches the
emulator and that STATE messages are relayed in order once their records are accounted for.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from singer_sdk.testing import SuiteConfig, get_target_test_class
from singer_sdk.testing.runners import TargetTestRunner
from singer_sdk.testing.suites import SingerTestSuite
from singer_sdk.testing.target_tests import (
    TargetArrayData,
    TargetCamelcaseComplexSchema,
    TargetCamelcaseTest,
    TargetCliPrintsTest,
    TargetDuplicateRecords,
    TargetEncodedStringData,
    TargetInvalidSchemaTest,
    TargetNoPrimaryKeys,
    TargetOptionalAttributes,
    TargetPrimaryKeyUpdates,
    TargetRecordBeforeSchemaTest,
    TargetRecordMissingKeyProperty,
    TargetRecordMissingOptionalFields,
    TargetRecordMissingRequiredProperty,
    TargetSchemaNoProperties,
    TargetSchemaUpdates,
    TargetSpecialCharsInAttributes,
)
from singer_sdk.testing.templates import TargetFileTestTemplate

from target_klaviyo.target import TargetKlaviyo
from tests.emulator import Emulator

DATA = Path(__file__).parent / "data"

# The run's config; the `runner` fixture adds the emulator's URL and key and a fresh state_dir.
BASE_CONFIG: dict[str, t.Any] = {
    "streams": {"*": {"object": "profile"}},
    "progress_interval_s": 0,
}


class AccountedSync:
    """validate(): the sync ended cleanly and every record read has exactly one outcome."""

    resource: Emulator
    runner: TargetTestRunner

    @property
    def state_dir(self) -> Path:
        return Path(self.runner.config["state_dir"])

    def summary(self) -> dict[str, t.Any]:
        return json.loads((self.state_dir / "last_run.json").read_text())

    def rejects(self) -> list[dict[str, t.Any]]:
        path = self.state_dir / "rejects.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def validate(self) -> None:
        summary = self.summary()
        rejected = 0
        for name, stats in summary["streams"].items():
            outcomes = stats["loaded"] + stats["unchanged"] + stats["rejected"] + stats["on_hold"]
            assert stats["read"] == outcomes, f"{name}: {stats}"
            assert stats["on_hold"] == 0, f"{name}: records on hold with a healthy API: {stats}"
            rejected += stats["rejected"]
        rejects = self.rejects()
        assert len(rejects) == rejected, (rejected, rejects[:3])
        for line in rejects:
            assert json.dumps(line) and any(
                isinstance(value, str) and value for key, value in line.items() if "reason" in key
            ), f"a reject without a reason: {line}"
        assert self.resource.wait_idle(30)
        problem = self.resource.unexpected_violations()
        assert problem is None, problem


# -- the SDK's standard target tests ---------------------------------------------------------
# No I/O (they fail, or print, before a sink exists; kept as they are):
#   cli_prints                  --version / --about in text and JSON
#   invalid_schema              SCHEMA without properties must raise
#   record_before_schema        RECORD before its SCHEMA must raise RecordsWithoutSchemaException
#   record_missing_key_property must raise MissingKeyPropertiesError
# Syncs that must succeed; with validate(): clean end, every record accounted for, rejects
# carry a reason, the emulator saw no malformed request.


class ArrayData(AccountedSync, TargetArrayData):
    pass


class CamelcaseComplexSchema(AccountedSync, TargetCamelcaseComplexSchema):
    pass


class Camelcase(AccountedSync, TargetCamelcaseTest):
    pass


class DuplicateRecords(AccountedSync, TargetDuplicateRecords):
    pass


class EncodedStringData(AccountedSync, TargetEncodedStringData):
    pass


class NoPrimaryKeys(AccountedSync, TargetNoPrimaryKeys):
    pass


class OptionalAttributes(AccountedSync, TargetOptionalAttributes):
    pass


class PrimaryKeyUpdates(AccountedSync, TargetPrimaryKeyUpdates):
    """pk_updates carries emails: those profiles must reach the emulator."""

    def validate(self) -> None:
        super().validate()
        emails = {p["attributes"]["email"] for p in self.resource.dump()["profiles"]}
        assert {"alice@example.com", "bob@example.com"} <= emails, emails


class RecordMissingOptionalFields(AccountedSync, TargetRecordMissingOptionalFields):
    pass


class RecordMissingRequiredProperty(AccountedSync, TargetRecordMissingRequiredProperty):
    """Not in the SDK's own suite, which has no expectation for it. Ours: a record that does
    not match its schema is rejected with the reason, and the run goes on."""

    def validate(self) -> None:
        super().validate()
        stats = self.summary()["streams"]["test_record_missing_required_property"]
        assert stats["read"] == 1, stats
        assert stats["rejected"] == 1, stats
        assert self.resource.dump()["profiles"] == []


class SchemaNoProperties(AccountedSync, TargetSchemaNoProperties):
    pass


class SchemaUpdates(AccountedSync, TargetSchemaUpdates):
    pass


class SpecialCharsInAttributes(AccountedSync, TargetSpecialCharsInAttributes):
    pass


# -- custom tests with Klaviyo-shaped input --------------------------------------------------


class KlaviyoProfiles(AccountedSync, TargetFileTestTemplate):
    """Customers with emails and phones (some unusable) become E.164 profiles; bad rows rejected."""

    name = "klaviyo_profiles"

    @property
    def singer_filepath(self) -> Path:
        return DATA / f"{self.name}.singer"

    def validate(self) -> None:
        super().validate()
        stats = self.summary()["streams"]["customers"]
        assert stats == {**stats, "read": 5, "loaded": 3, "rejected": 2}, stats
        profiles = {p["attributes"]["external_id"]: p for p in self.resource.dump()["profiles"]}
        assert sorted(profiles) == ["1", "2", "3"], sorted(profiles)
        assert profiles["1"]["attributes"]["email"] == "ada@example.com"
        assert profiles["1"]["attributes"]["phone_number"] == "+442079460018"
        assert profiles["2"]["attributes"]["phone_number"] == "+14155552671"
        assert profiles["3"]["attributes"]["phone_number"] is None
        assert profiles["1"]["attributes"]["location"]["city"] == "London"
        assert profiles["1"]["properties"].get("loyalty_tier") == "gold"


class MultipleStateMessages(AccountedSync, TargetFileTestTemplate):
    """Replaces the SDK's TargetMultipleStateMessages (see below): the target relays STATE
    messages in the order received, each only after its records are accounted for, and always
    the last one at the end."""

    name = "multiple_state_messages"

    @property
    def singer_filepath(self) -> Path:
        return DATA / f"{self.name}.singer"

    def validate(self) -> None:
        super().validate()
        sent = [
            json.loads(line)["value"]
            for line in self.singer_filepath.read_text().splitlines()
            if json.loads(line)["type"] == "STATE"
        ]
        relayed = self.runner.state_messages
        assert relayed, "no STATE relayed"
        assert relayed[-1] == sent[-1], relayed
        positions = [sent.index(state) for state in relayed]  # only states that were sent
        assert positions == sorted(set(positions)), relayed  # in order, none twice
        assert len(self.resource.dump()["profiles"]) == 6


STANDARD_TESTS = [
    TargetCliPrintsTest,
    TargetInvalidSchemaTest,
    TargetRecordBeforeSchemaTest,
    TargetRecordMissingKeyProperty,
    ArrayData,
    CamelcaseComplexSchema,
    Camelcase,
    DuplicateRecords,
    EncodedStringData,
    NoPrimaryKeys,
    OptionalAttributes,
    PrimaryKeyUpdates,
    RecordMissingOptionalFields,
    RecordMissingRequiredProperty,
    SchemaNoProperties,
    SchemaUpdates,
    SpecialCharsInAttributes,
]
# Left out of the SDK's own `target_tests`:
#   TargetMultipleStateMessages - left out here too. "TODO: fix behavior in SDK": as written it
#     compares the parsed state dicts with JSON strings, so no target can pass it (and 0.54.9's
#     drain_all emits one state at the end); MultipleStateMessages above checks the contract
#     against our STATE gate instead.
#   TargetRecordMissingRequiredProperty - included above (RecordMissingRequiredProperty), with our
#     expectation: the record is rejected with a reason, the run ends cleanly.
CUSTOM_TESTS = [KlaviyoProfiles, MultipleStateMessages]

standard_suite = SingerTestSuite(kind="target", tests=STANDARD_TESTS)
custom_suite = SingerTestSuite(kind="target", tests=CUSTOM_TESTS)


# A class built at import time (mypy cannot check it as a base class, hence Any).
StandardTargetTests: t.Any = get_target_test_class(
    TargetKlaviyo,
    config=BASE_CONFIG,
    custom_suites=[standard_suite, custom_suite],
    include_target_tests=False,
    suite_config=SuiteConfig(),
    parse_env_config=False,  # a developer's TARGET_KLAVIYO_* variables must not leak in
)


class TestTargetKlaviyoStandard(StandardTargetTests):
    """The standard and custom target tests, each against a fresh emulator and state_dir."""

    @pytest.fixture
    def resource(self) -> t.Iterator[Emulator]:
        with Emulator(window_scale=0.01, job_delay_s=0.01) as emulator:
            yield emulator

    @pytest.fixture
    def runner(self, resource: Emulator, tmp_path: Path) -> TargetTestRunner:
        config = {
            **BASE_CONFIG,
            "api_base_url": resource.base_url,
            "private_api_key": resource.private_key,
            "state_dir": str(tmp_path / "state"),
        }
        return TargetTestRunner(
            target_class=TargetKlaviyo,
            config=config,
            suite_config=SuiteConfig(),
            parse_env_config=False,
        )
