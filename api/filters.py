"""Filters shared by the API's lists."""

from __future__ import annotations

from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 instant, converted to UTC before it reaches the database.

    PostgreSQL refuses offsets beyond +-15:59 ("time zone displacement out of range", a
    DataError, so a 500); Python parses any offset under 24 h. Converted here, every offset
    Python accepts is a valid instant, and one that leaves the calendar is a 400 naming it.
    """

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError as error:
            raise forms.ValidationError("Enter a date and time within years 1-9999 in UTC.", code="overflow") from error


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField
