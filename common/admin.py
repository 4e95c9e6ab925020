"""Admin building blocks for big tables, shared by every app's admin.py: a paginator whose count
has a fixed cost however many rows the table holds, and a text-input list filter that needs no
query to render (unlike a filter that lists every user)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR
from django.core.paginator import Paginator
from django.utils.functional import cached_property

COUNT_CAP = 10_000
CENTS_PER_DOLLAR = Decimal(100)


def usd(cents: Decimal) -> str:
    """US cents as dollars for people: "$1,234.56"; amounts under a cent keep 4 places
    ("$0.0011") so that a day of cheap calls does not read "$0.00"."""
    dollars = Decimal(cents) / CENTS_PER_DOLLAR
    if dollars == 0 or abs(dollars) >= Decimal("0.01"):
        return f"${dollars:,.2f}"
    if abs(dollars) >= Decimal("0.0001"):
        return f"${dollars:.4f}"
    return "< $0.0001"


def cents_exact(cents: Decimal) -> str:
    """Exact cents without trailing zeros ("125.5", "0.11244"): the number the API sends."""
    text = format(Decimal(cents).normalize(), "f")
    return "0" if text in ("-0", "") else text


class CappedCountPaginator(Paginator):
    """Counts at most `cap` + 1 rows (`SELECT COUNT(*) FROM (... LIMIT cap + 1)`), so a page of a
    table with a million rows costs what a page of ten thousand does. Past the cap the
    changelist says "more than 10000" (templates/admin/pagination.html) and pages through the
    first `cap` rows; filters and search narrow the rest. Use with
    `show_full_result_count = False`, which drops the admin's second, unfiltered count."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        # Without ORDER BY, the database stops at the cap instead of sorting every match first.
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.capped = counted > self.cap
        return min(counted, self.cap)

    capped = False


class ReadOnlyAdminMixin:
    """Rows written only by the services: visible to staff, never added, edited or deleted by
    hand (put it before ModelAdmin)."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class BigTableAdminMixin:
    """A changelist that never counts every row of its table."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    # Facet counts are one COUNT per choice over the filtered table: never on a big table.
    show_facets = admin.ShowFacets.NEVER


class TextInputFilter(admin.SimpleListFilter):
    """A list filter typed into a text box (templates/admin/input_filter.html): no query to
    build a list of choices. Subclasses set `title`, `parameter_name` and `lookup`, the ORM
    lookup the typed value is matched with (e.g. "user__email__iexact")."""

    template = "admin/input_filter.html"
    lookup = ""

    def lookups(self, request, model_admin):
        return []

    def has_output(self) -> bool:
        return True  # a text box, although it has no list of choices

    def clean(self, value: str):
        """The typed value as the lookup needs it; raise ValueError when it cannot match."""
        return value

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        if not value:
            return queryset
        try:
            value = self.clean(value)
        except ValueError:
            return queryset.none()
        return queryset.filter(**{self.lookup: value})

    def choices(self, changelist):
        # What the template needs: the typed value, and every other parameter of the page
        # (search, ordering, other filters) as hidden inputs, so submitting keeps them.
        keep = [
            (key, value)
            for key, values in changelist.filter_params.items()
            if key not in (self.parameter_name, PAGE_VAR)
            for value in values
        ]
        yield {
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "keep": keep,
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
        }


class UUIDInputFilter(TextInputFilter):
    """A text-box filter on a UUID column (exact, so it uses the index); a malformed id
    matches nothing instead of failing."""

    def clean(self, value: str):
        return uuid.UUID(value)


class ReadOnlyBigTableAdmin(ReadOnlyAdminMixin, BigTableAdminMixin, admin.ModelAdmin):
    """A read-only admin of a big table."""
