"""Money: exact Decimal cents with 6 places, and the model field that stores them as integers.

CentsField stores integer micro-cents: every sum and comparison the database makes (such as
`spent + reserved + estimate <= limit` in the reserving UPDATE) is exact integer arithmetic,
while Python code only ever sees Decimal cents.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django import forms
from django.core import exceptions
from django.db import models
from django.db.models import Value
from django.utils.functional import cached_property

CENT_PLACES = Decimal("0.000001")
MICROS_PER_CENT = 1_000_000
ZERO = Decimal("0.000000")


def cents(value: Decimal | int | str) -> Decimal:
    """`value` as Decimal cents with 6 places (ROUND_HALF_EVEN). Floats are refused: a float has
    already lost the exact amount."""
    if isinstance(value, (bool, float)):
        raise TypeError(f"money must be Decimal, int or str, not {type(value).__name__}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"not an amount of money: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not an amount of money: {value!r}")
    return amount.quantize(CENT_PLACES, rounding=ROUND_HALF_EVEN)


class CentsField(models.BigIntegerField):
    """Decimal cents (6 places) in Python; integer micro-cents in the database."""

    description = "Cents as a Decimal with 6 places (stored as integer micro-cents)"

    @cached_property
    def validators(self):
        # IntegerField's range validators are in micro-cents; ours are in cents.
        return [*self.default_validators, *self._validators]

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return (Decimal(value) / MICROS_PER_CENT).quantize(CENT_PLACES)

    def to_python(self, value):
        if value is None or value == "":
            return None
        try:
            return cents(value if not isinstance(value, float) else str(value))
        except (TypeError, ValueError) as exc:
            raise exceptions.ValidationError(
                "Enter an amount of cents.", code="invalid", params={"value": value}
            ) from exc

    def get_prep_value(self, value):
        value = models.Field.get_prep_value(self, value)
        if value is None:
            return None
        return int(cents(value) * MICROS_PER_CENT)

    def formfield(self, **kwargs):
        return models.Field.formfield(
            self,
            **{"form_class": forms.DecimalField, "max_digits": 19, "decimal_places": 6, **kwargs},
        )

    def value_to_string(self, obj):
        value = self.value_from_object(obj)
        return "" if value is None else str(value)


def cents_value(amount: Decimal | int | str) -> Value:
    """An SQL literal of `amount` cents, for F() arithmetic on CentsFields."""
    return Value(cents(amount), output_field=CentsField())
