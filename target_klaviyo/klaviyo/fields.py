"""Klaviyo's standard profile fields: what a source column may map to without being listed.

From the profile attributes of Klaviyo's API (`POST /api/profile-import`, "ProfileUpsertQuery"
in the OpenAPI spec; https://developers.klaviyo.com/en/reference/create_or_update_profile).
"""

from __future__ import annotations

from collections.abc import Mapping

# The identifiers Klaviyo matches a profile on, strongest first (the order keys are made in).
IDENTIFIER_FIELDS = ("email", "phone_number", "external_id")

TOP_LEVEL_FIELDS = (
    *IDENTIFIER_FIELDS,
    "first_name",
    "last_name",
    "organization",
    "title",
    "image",
    "locale",
)
LOCATION_FIELDS = (
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "latitude",
    "longitude",
    "ip",
)
# Location fields Klaviyo also accepts as numbers.
NUMERIC_LOCATION_FIELDS = frozenset({"latitude", "longitude"})

# Klaviyo paths of the standard fields (`location.<field>` for location fields).
STANDARD_PATHS = frozenset(TOP_LEVEL_FIELDS) | {f"location.{name}" for name in LOCATION_FIELDS}
# Source column name -> the standard path it maps to without being listed in `fields`.
STANDARD_COLUMNS: dict[str, str] = {name: name for name in TOP_LEVEL_FIELDS} | {
    name: f"location.{name}" for name in LOCATION_FIELDS
}
# `fields` entries `properties.<name>` rename a column into a custom property.
PROPERTIES_PREFIX = "properties."


def property_renames(fields: Mapping[str, str]) -> dict[str, str]:
    """Custom property name -> source column, from a mapping's `fields`."""
    return {
        path[len(PROPERTIES_PREFIX) :]: column
        for path, column in fields.items()
        if path.startswith(PROPERTIES_PREFIX)
    }
