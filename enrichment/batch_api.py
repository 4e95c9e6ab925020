"""OpenAI's Batch API for embeddings that can wait (re-embedding after a model change, backfills):
sent as one JSONL file, answered within 24 h, at the batch prices of the price table.

Submit: the memories (selectors.embeddings_batchable) become an AIBatch with one AIBatchItem
each, and each item holds its own budget reservation at the batch prices (costs.metering's batch
door), in one transaction under the re-embedding lock, so the synchronous re-embedding never
takes them too; then the file is uploaded and the batch created.

Poll (beat, every OPENAI_BATCH_POLL_SECONDS): each open batch is retrieved; once it ended, its
output and error files are read and its pending items are finished in chunks, one transaction
each: an answered item is applied (its embedding written) and settled; one whose memory was
edited or deleted meanwhile is settled (it was billed) but not applied; a refused line is
settled if it billed tokens, else released; an item without an answer (the batch failed,
expired or was cancelled) is released. The batch ends when no item is pending.

Safe to run twice and at once: items are taken FOR UPDATE SKIP LOCKED and finished only while
pending; a poller killed mid-chunk rolls its chunk back; the settle is idempotent per
reservation. Nothing is applied or charged twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal

import openai
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from costs import metering
from costs.money import ZERO
from costs.pricing import price_quote
from memories.services import memories_embedding_refresh

from .models import (
    BATCH_UNFINISHED,
    AIBatch,
    AIBatchItem,
    BatchItemState,
    BatchStatus,
)
from .providers import active_embedding, get_provider
from .providers.base import EmbeddingResult, Usage, estimate_tokens, truncate_to_tokens
from .selectors import embeddings_batchable, embeddings_stale, embeddings_stale_among
from .services import REEMBED_LOCK, text_hash

logger = logging.getLogger(__name__)

ENDPOINT = "/v1/embeddings"
COMPLETION_WINDOW = "24h"
OPERATION = "embedding"
PURPOSES = ("reembed", "backfill")
# Items finished per transaction while applying an ended batch.
FINISH_CHUNK = 200
# A batch still "submitting" this long after it was written lost its submitter (a crash between
# the holds and the provider's answer): adopted if the provider has a batch of its file, else
# its holds are given back.
SUBMIT_TIMEOUT = dt.timedelta(minutes=15)
# Reading a finished batch's files can take longer than an ordinary call.
DOWNLOAD_TIMEOUT_SECONDS = 300.0
# Where the provider's ended batch statuses lead (any other status: still running).
PROVIDER_ENDED = {
    "completed": BatchStatus.COMPLETED,
    "failed": BatchStatus.FAILED,
    "expired": BatchStatus.EXPIRED,
    "cancelled": BatchStatus.CANCELLED,
}
MODEL_MISMATCH = "the provider answered another model or size than configured"


class BatchApiUnavailable(Exception):
    """The Batch API needs the OpenAI provider (AI_PROVIDER=openai and OPENAI_API_KEY)."""


def _provider():
    provider = get_provider()
    if provider.name != "openai":
        raise BatchApiUnavailable("the Batch API needs AI_PROVIDER=openai")
    return provider


def _client() -> openai.OpenAI:
    """The OpenAI client: the active provider's, or (batches still open after a switch to another
    provider) one of its own, while OPENAI_API_KEY is set."""
    provider = get_provider()
    if provider.name == "openai":
        return provider.client
    if not settings.OPENAI_API_KEY:
        raise BatchApiUnavailable("open batches need OPENAI_API_KEY to be polled")
    from .providers.openai_provider import OpenAIProvider

    return OpenAIProvider().client


def _text(text: str) -> str:
    return truncate_to_tokens(text, settings.OPENAI_EMBEDDING_MAX_INPUT_TOKENS)


def _when(timestamp: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC) if timestamp else None


# --- what a batch would send -------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPlan:
    memories: int
    input_tokens: int
    estimate_cents: Decimal  # at the batch prices
    synchronous_cents: Decimal  # the same calls made one by one
    model: str
    dimensions: int | None
    memory_ids: list = field(default_factory=list)


def batch_plan(*, limit: int, purpose: str = "backfill") -> BatchPlan:
    """What `batch_submit` would send now (dry run): memories, estimated tokens and cost."""
    provider = _provider()
    rows = list(embeddings_batchable(purpose=purpose).values_list("pk", "text_content")[:limit])
    tokens = sum(estimate_tokens(_text(text)) for _, text in rows)
    quote = price_quote(provider=provider.name, model=provider.embedding_model, batch=True)
    full = price_quote(provider=provider.name, model=provider.embedding_model)
    return BatchPlan(
        memories=len(rows),
        input_tokens=tokens,
        estimate_cents=quote.cost(input_tokens=tokens),
        synchronous_cents=full.cost(input_tokens=tokens),
        model=provider.embedding_model,
        dimensions=provider.dimensions,
        memory_ids=[pk for pk, _ in rows],
    )


# --- submitting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitResult:
    batch_id: int | None
    sent: int
    refused: int = 0
    stopped: str = ""  # why nothing (or less) was sent: a refusal, "running elsewhere", an error
    estimate_cents: Decimal = ZERO


def batch_submit(*, limit: int, purpose: str = "backfill") -> SubmitResult:
    """Send up to `limit` memories (at most OPENAI_BATCH_MAX_REQUESTS) in one batch."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    provider = _provider()
    limit = min(limit, settings.OPENAI_BATCH_MAX_REQUESTS)
    batch, texts, refused, reason = _batch_create(provider, limit=limit, purpose=purpose)
    if batch is None:
        return SubmitResult(None, 0, refused, reason)
    lines = [
        json.dumps(
            {
                "custom_id": item.custom_id,
                "method": "POST",
                "url": ENDPOINT,
                "body": {
                    "model": batch.model,
                    "input": _text(texts[item.pk]),
                    "encoding_format": "float",
                    **({"dimensions": batch.dimensions} if batch.dimensions else {}),
                },
            }
        )
        for item in batch.items.filter(state=BatchItemState.PENDING).order_by("pk")
    ]
    client = provider.client
    try:
        uploaded = client.files.create(
            file=(
                f"memoryconnector-batch-{batch.pk}.jsonl",
                "\n".join(lines).encode(),
                "application/jsonl",
            ),
            purpose="batch",
        )
        AIBatch.objects.filter(pk=batch.pk).update(input_file_id=uploaded.id)
        created = client.batches.create(
            input_file_id=uploaded.id,
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata={"memoryconnector_batch": str(batch.pk), "purpose": purpose},
        )
    except openai.OpenAIError as exc:
        error = f"submission failed: {type(exc).__name__}"
        _batch_abandon(batch.pk, error=error)
        logger.error("batch %s: %s; its holds are given back", batch.pk, error)
        return SubmitResult(batch.pk, 0, refused, error)
    if not AIBatch.objects.filter(pk=batch.pk, status=BatchStatus.SUBMITTING).update(
        status=BatchStatus.OPEN,
        provider_batch_id=created.id,
        provider_status=created.status,
        submitted_at=timezone.now(),
        expires_at=_when(created.expires_at),
    ):
        # Given up as lost meanwhile (its holds released): the provider must not run it.
        logger.error(
            "batch %s was abandoned while it was sent; cancelling %s", batch.pk, created.id
        )
        try:
            client.batches.cancel(created.id)
        except openai.OpenAIError:
            logger.exception("cancelling %s failed", created.id)
        return SubmitResult(batch.pk, 0, refused, "abandoned while it was sent")
    logger.info(
        "batch %s sent as %s: %s memories, %s¢ held at the batch prices",
        batch.pk, created.id, len(lines), batch.estimate_cents,
    )  # fmt: skip
    return SubmitResult(batch.pk, len(lines), refused, reason, batch.estimate_cents)


def _batch_create(provider, *, limit: int, purpose: str):
    """The batch, its items and their holds, in one transaction under the re-embedding lock (so
    the synchronous re-embedding and another submitter never take the same memories).
    Returns (batch or None, {item id: text}, refused count, reason)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [REEMBED_LOCK])
            if not cursor.fetchone()[0]:
                return None, {}, 0, "running elsewhere"
        rows = list(
            embeddings_batchable(purpose=purpose).values_list("pk", "user_id", "text_content")[
                :limit
            ]
        )
        if not rows:
            return None, {}, 0, ""
        batch = AIBatch.objects.create(
            purpose=purpose,
            operation=OPERATION,
            provider=provider.name,
            model=provider.embedding_model,
            dimensions=provider.dimensions,
            item_count=len(rows),
        )
        items = AIBatchItem.objects.bulk_create(
            [
                AIBatchItem(
                    batch=batch,
                    memory_id=memory_id,
                    user_id=user_id,
                    text_hash=text_hash(text),
                    input_tokens=estimate_tokens(_text(text)),
                )
                for memory_id, user_id, text in rows
            ]
        )
        texts = {item.pk: text for item, (_, _, text) in zip(items, rows, strict=True)}
        hold = metering.batch_hold(
            operation=OPERATION,
            provider=provider.name,
            model=provider.embedding_model,
            items=[
                metering.Item(
                    key=item.pk,
                    user_id=item.user_id,
                    memory_id=item.memory_id,
                    input_tokens=item.input_tokens,
                )
                for item in items
            ],
            batch_api=True,
            hold_seconds=settings.OPENAI_BATCH_HOLD_SECONDS,
        )
        reasons = sorted({refusal.reason for refusal in hold.refused.values()})
        reason = ", ".join(reasons)
        if not hold.reservations:
            batch.delete()  # nothing admitted: nothing to send (the refusals stand)
            return None, {}, len(hold.refused), reason
        now = timezone.now()
        for item in items:
            if item.pk in hold.reservations:
                item.reservation_id = hold.reservations[item.pk].id
            else:
                item.state = BatchItemState.REFUSED
                item.error = hold.refused[item.pk].reason[:300]
                item.finished_at = now
        AIBatchItem.objects.bulk_update(items, ["reservation_id", "state", "error", "finished_at"])
        batch.item_count = len(hold.reservations)
        batch.estimate_cents = sum(
            (reservation.amount_cents for reservation in hold.reservations.values()), ZERO
        )
        batch.save(update_fields=["item_count", "estimate_cents"])
    return batch, texts, len(hold.refused), reason


def _batch_abandon(batch_id: int, *, error: str) -> None:
    """A batch that never reached the provider: its holds are given back, its items released."""
    with transaction.atomic():
        if not AIBatch.objects.filter(pk=batch_id, status=BatchStatus.SUBMITTING).update(
            status=BatchStatus.FAILED, error=error, finished_at=timezone.now()
        ):
            return
        items = AIBatchItem.objects.filter(batch_id=batch_id, state=BatchItemState.PENDING)
        reservation_ids = [pk for pk in items.values_list("reservation_id", flat=True) if pk]
        items.update(state=BatchItemState.RELEASED, finished_at=timezone.now(), error=error[:300])
        if reservation_ids:
            metering.batch_release(reservation_ids=reservation_ids)


# --- polling and finishing -------------------------------------------------------------------


@dataclass
class PollResult:
    polled: int = 0
    finished: int = 0
    applied: int = 0
    abandoned: int = 0
    submitted: int = 0
    errors: list = field(default_factory=list)


def batches_poll(*, now: dt.datetime | None = None) -> PollResult:
    """One poll (beat): adopt or give up lost submissions, poll every open batch, finish ended
    ones, and with OPENAI_BATCH_REEMBED submit the next re-embedding batch when none is
    unfinished."""
    now = now or timezone.now()
    result = PollResult()
    for batch in AIBatch.objects.filter(
        status=BatchStatus.SUBMITTING, created_at__lt=now - SUBMIT_TIMEOUT
    ):
        if not _batch_adopt(batch):
            _batch_abandon(batch.pk, error="submission interrupted (its submitter was lost)")
            result.abandoned += 1
    open_ids = list(
        AIBatch.objects.filter(status__in=[BatchStatus.OPEN, BatchStatus.FINISHING])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if open_ids:
        client = _client()
        for batch_id in open_ids:
            outcome = batch_poll(batch_id=batch_id, client=client)
            result.polled += 1
            if outcome.finished:
                result.finished += 1
            result.applied += outcome.applied
            if outcome.error:
                result.errors.append(f"batch {batch_id}: {outcome.error}")
    if settings.OPENAI_BATCH_REEMBED and _reembed_due():
        submitted = batch_submit(limit=settings.OPENAI_BATCH_MAX_REQUESTS, purpose="reembed")
        result.submitted = submitted.sent
    if result.polled or result.abandoned or result.submitted:
        logger.info("batch api poll: %s", result)
    return result


def _batch_adopt(batch: AIBatch) -> bool:
    """A submission whose submitter died after uploading its file: if the provider has a batch
    of that file, it is ours and goes on (its items are held); True also when the provider could
    not be asked (ask again at the next poll). False: nothing was created, give it up."""
    if not batch.input_file_id:
        return False
    try:
        found = next(
            (
                remote
                for remote in _client().batches.list(limit=100).data
                if remote.input_file_id == batch.input_file_id
            ),
            None,
        )
    except openai.OpenAIError as exc:
        logger.warning("batch %s: listing batches failed: %s", batch.pk, type(exc).__name__)
        return True
    if found is None:
        return False
    if AIBatch.objects.filter(pk=batch.pk, status=BatchStatus.SUBMITTING).update(
        status=BatchStatus.OPEN,
        provider_batch_id=found.id,
        provider_status=found.status,
        submitted_at=_when(found.created_at),
        expires_at=_when(found.expires_at),
    ):
        logger.warning("batch %s: its submitter was lost; found it as %s", batch.pk, found.id)
    return True


def _reembed_due() -> bool:
    if (
        settings.AI_PROVIDER != "openai"
        or AIBatch.objects.filter(status__in=BATCH_UNFINISHED).exists()
    ):
        return False
    last = AIBatch.objects.filter(purpose="reembed").order_by("-pk").first()
    if (
        last is not None
        and last.error.startswith(MODEL_MISMATCH)
        and (last.model, last.dimensions) == active_embedding()
    ):
        # Sending more would pay for the same memories again and again; a change of the
        # configured model or dimensions lets re-embedding go on.
        return False
    return embeddings_stale().exists()


@dataclass(frozen=True)
class BatchPollOutcome:
    provider_status: str = ""
    finished: bool = False
    applied: int = 0
    error: str = ""


def batch_poll(*, batch_id: int, client: openai.OpenAI | None = None) -> BatchPollOutcome:
    """Ask the provider about one batch; if it ended, apply and settle its results."""
    client = client or _client()
    batch = AIBatch.objects.get(pk=batch_id)
    if batch.status not in (BatchStatus.OPEN, BatchStatus.FINISHING):
        return BatchPollOutcome(batch.provider_status, finished=True)
    try:
        remote = client.batches.retrieve(batch.provider_batch_id)
    except openai.OpenAIError as exc:
        logger.warning("batch %s: polling failed: %s", batch.pk, type(exc).__name__)
        return BatchPollOutcome(batch.provider_status, error=type(exc).__name__)
    counts = remote.request_counts
    AIBatch.objects.filter(
        pk=batch.pk, status__in=[BatchStatus.OPEN, BatchStatus.FINISHING]
    ).update(
        provider_status=remote.status,
        requests_completed=counts.completed if counts else 0,
        requests_failed=counts.failed if counts else 0,
        last_polled_at=timezone.now(),
        expires_at=_when(remote.expires_at) or batch.expires_at,
    )
    final = PROVIDER_ENDED.get(remote.status)
    if final is None:
        return BatchPollOutcome(remote.status)
    errors = "; ".join(
        f"{error.code}: {error.message}" for error in (remote.errors.data or [])
    ) if remote.errors else ""  # fmt: skip
    AIBatch.objects.filter(pk=batch.pk, status=BatchStatus.OPEN).update(
        status=BatchStatus.FINISHING,
        output_file_id=remote.output_file_id or "",
        error_file_id=remote.error_file_id or "",
        error=errors[:2000],
    )
    try:
        answers = {}
        for file_id in (remote.output_file_id, remote.error_file_id):
            if file_id:
                answers.update(_answers(client, file_id))
    except (openai.OpenAIError, ValueError) as exc:
        logger.warning("batch %s: reading its results failed: %s", batch.pk, type(exc).__name__)
        return BatchPollOutcome(remote.status, error=f"download: {type(exc).__name__}")
    applied = batch_finish(batch_id=batch.pk, answers=answers, final=final)
    finished = AIBatch.objects.filter(pk=batch.pk, status=final).exists()
    return BatchPollOutcome(remote.status, finished=finished, applied=applied)


def _answers(client: openai.OpenAI, file_id: str) -> dict[str, dict]:
    """custom_id -> the answer line of a batch output or error file."""
    text = client.files.content(file_id, timeout=DOWNLOAD_TIMEOUT_SECONDS).text
    answers = {}
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                answers[record["custom_id"]] = record
    return answers


@dataclass
class _Outcome:
    state: str
    error: str = ""
    settle: tuple | None = None  # (reservation id, model, usage)
    embedding: EmbeddingResult | None = None


def _line_usage(body: dict) -> Usage | None:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        return None
    return Usage(input_tokens=max(0, usage["prompt_tokens"]))


def _outcome(item: AIBatchItem, batch: AIBatch, answer: dict | None) -> _Outcome:
    """What one item's answer line means: applied (pending the text check), failed, released."""
    if answer is None:
        return _Outcome(BatchItemState.RELEASED, f"no answer (batch {batch.provider_status})")
    response = answer.get("response") or {}
    body = response.get("body") if isinstance(response, dict) else None
    body = body if isinstance(body, dict) else {}
    usage = _line_usage(body)
    model = body.get("model") if isinstance(body.get("model"), str) else batch.model
    settle = (item.reservation_id, model, usage) if usage and item.reservation_id else None
    if response.get("status_code") != 200:
        error = answer.get("error") or body.get("error") or {}
        code = error.get("code") or error.get("type") if isinstance(error, dict) else None
        message = f"{response.get('status_code') or 'error'} {code or 'failed'}"
        return _Outcome(BatchItemState.FAILED, message, settle)
    try:
        vector = [float(v) for v in body["data"][0]["embedding"]]
    except (KeyError, IndexError, TypeError, ValueError):
        vector = []
    if not vector or usage is None:
        return _Outcome(BatchItemState.FAILED, "malformed answer", settle)
    return _Outcome(
        BatchItemState.APPLIED,
        settle=settle,
        embedding=EmbeddingResult(vector=vector, model=model, usage=usage),
    )


def batch_finish(*, batch_id: int, answers: dict[str, dict], final: str) -> int:
    """Finish the pending items of an ended batch from its answers, a chunk per transaction;
    end the batch (`final`) once none is pending. Returns how many embeddings were written.
    Items another poller holds are skipped (it finishes them)."""
    batch = AIBatch.objects.get(pk=batch_id)
    pending = list(
        AIBatchItem.objects.filter(batch_id=batch_id, state=BatchItemState.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    applied = 0
    for start in range(0, len(pending), FINISH_CHUNK):
        applied += _finish_chunk(batch, pending[start : start + FINISH_CHUNK], answers)
    with transaction.atomic():
        if not AIBatchItem.objects.filter(batch_id=batch_id, state=BatchItemState.PENDING).exists():
            error = batch.error
            if _applied_still_stale(batch_id):
                error = f"{MODEL_MISMATCH}; {error}".rstrip("; ")
                logger.error("batch %s: %s", batch_id, MODEL_MISMATCH)
            if AIBatch.objects.filter(pk=batch_id, status=BatchStatus.FINISHING).update(
                status=final, finished_at=timezone.now(), error=error[:2000]
            ):
                logger.info("batch %s %s", batch_id, final)
    return applied


def _applied_still_stale(batch_id: int) -> bool:
    applied = AIBatchItem.objects.filter(batch_id=batch_id, state=BatchItemState.APPLIED)
    return embeddings_stale_among(applied.values("memory_id"))


def _finish_chunk(batch: AIBatch, ids: list[int], answers: dict[str, dict]) -> int:
    """One transaction: lock the chunk's still-pending items, write the embeddings of the
    current texts, settle what was billed, release the rest, mark each item finished. Embeddings
    first and the budget last, so the day's row is locked only for the end of it."""
    applied = 0
    now = timezone.now()
    with transaction.atomic():
        items = list(
            AIBatchItem.objects.select_for_update(skip_locked=True)
            .filter(pk__in=ids, state=BatchItemState.PENDING)
            .order_by("pk")
        )
        outcomes = [(item, _outcome(item, batch, answers.get(item.custom_id))) for item in items]
        stored = memories_embedding_refresh(
            refreshes=[
                (
                    item.memory_id,
                    lambda text, sent=item.text_hash: text_hash(text) == sent,
                    outcome.embedding,
                )
                for item, outcome in outcomes
                if outcome.embedding is not None
            ]
        )
        settle, release = [], []
        for item, outcome in outcomes:
            if outcome.embedding is not None:
                if item.memory_id in stored:
                    applied += 1
                else:
                    outcome.state = BatchItemState.STALE
                    outcome.error = "memory edited or deleted meanwhile"
            if outcome.settle is not None:
                settle.append(outcome.settle)
            elif item.reservation_id:
                release.append(item.reservation_id)
            item.state, item.error, item.finished_at = outcome.state, outcome.error[:300], now
        if settle:
            metering.batch_settle(results=settle)
        if release:
            metering.batch_release(reservation_ids=release)
        AIBatchItem.objects.bulk_update(items, ["state", "error", "finished_at"])
    return applied


# --- staff ----------------------------------------------------------------------------------------


def batch_cancel(*, batch_id: int) -> bool:
    """Ask the provider to cancel an open batch; the poll then settles what it answered and
    releases the rest. Returns whether the provider took the request."""
    batch = AIBatch.objects.get(pk=batch_id)
    if batch.status != BatchStatus.OPEN or not batch.provider_batch_id:
        return False
    try:
        _client().batches.cancel(batch.provider_batch_id)
    except openai.OpenAIError as exc:
        logger.warning("batch %s: cancel refused: %s", batch_id, type(exc).__name__)
        return False
    return True
