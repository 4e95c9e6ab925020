"""Provider calls through the metering door of costs: the one place that tells the door how a
provider call went (settled with its usage, or failed as an outage or as a rate limit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from costs import metering

from .base import Provider, ProviderError, Usage

Result = TypeVar("Result")


def metered_call(
    *,
    provider: Provider,
    operation: str,
    model: str,
    estimate: Usage,
    call: Callable[[], Result],
    user_id: int | None,
    memory_id=None,
    counts_enrichment: bool = False,
    on_reserved: Callable[[], None] | None = None,
) -> Result:
    """Make `call()` (which returns something with `model` and `usage`) inside
    `costs.metering.meter`. Raises metering.Refused when refused, ProviderError when the call
    failed (billed tokens settled, the hold released otherwise). `on_reserved` runs once the
    budget holds the call, before it is made."""
    with metering.meter(
        operation=operation,
        provider=provider.name,
        model=model,
        user_id=user_id,
        memory_id=memory_id,
        input_tokens=estimate.input_tokens,
        max_output_tokens=estimate.output_tokens,
        counts_enrichment=counts_enrichment,
    ) as metered:
        if on_reserved is not None:
            on_reserved()
        try:
            result = call()
        except ProviderError as error:
            metered.fail(usage=error.usage, outage=not error.rate_limited)
            raise
        metered.settle(model=result.model, usage=result.usage)
    return result
