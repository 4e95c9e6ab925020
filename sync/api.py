"""The sync endpoints (WatermelonDB's protocol): pull, push and the client schema."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from common.parsers import JSONParser

from . import selectors, services
from .records import changes_parse, client_schema
from .serializers import (
    ClientSchemaSerializer,
    PullQuerySerializer,
    PullResponseSerializer,
    PushChangesSerializer,
    PushQuerySerializer,
    PushResponseSerializer,
    migration_needs_full_pull,
)


class PlainTextJSONParser(JSONParser):
    """WatermelonDB's documented pushChanges() posts `JSON.stringify(changes)` without a
    Content-Type, which fetch() sends as text/plain: read that as JSON too."""

    media_type = "text/plain"


_ERRORS = {
    400: OpenApiResponse(description="Bad parameters or changes; `details` names the record."),
    410: OpenApiResponse(
        description="`resync_required`: tombstones newer than `last_pulled_at` were purged; "
        "clear local data and pull with `last_pulled_at=null`."
    ),
}


class SyncApi(APIView):
    parser_classes = [JSONParser, PlainTextJSONParser]
    # Read by common.middleware.BodySizeLimitMiddleware: a push may be larger than other bodies.
    max_body_setting = "SYNC_PUSH_MAX_BYTES"

    @extend_schema(
        tags=["sync"],
        operation_id="sync_pull",
        parameters=[PullQuerySerializer],
        responses={200: PullResponseSerializer, **_ERRORS},
        summary="Pull: your memory changes since `last_pulled_at` (WatermelonDB protocol)",
        description=(
            "Live records come as `updated` (use `sendCreatedAsUpdated: true`), deleted ones "
            "as ids in `deleted`. A first sync (`last_pulled_at` null) gets every live memory."
        ),
    )
    def get(self, request):
        query = PullQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        result = selectors.sync_pull(
            user=request.user,
            last_pulled_at=params.get("last_pulled_at"),
            full=migration_needs_full_pull(params.get("migration")),
        )
        return Response(result.as_wire())

    @extend_schema(
        tags=["sync"],
        operation_id="sync_push",
        parameters=[PushQuerySerializer],
        request=PushChangesSerializer,
        responses={
            200: PushResponseSerializer,
            **_ERRORS,
            409: OpenApiResponse(
                description="A pushed record changed on the server since `last_pulled_at`; "
                "`details.conflicts.memories` lists the ids. Nothing was applied: pull, "
                "then push again."
            ),
            413: OpenApiResponse(description="The body is over SYNC_PUSH_MAX_BYTES."),
            429: OpenApiResponse(
                description="The daily memory limit would be passed; nothing was applied."
            ),
        },
        summary="Push: apply your device's changes, all or nothing (WatermelonDB protocol)",
        description=(
            "The body is the changes object of `pushChanges()`. Ids must be UUIDs. "
            "`text_content` and `type` are yours; every other column is the server's and "
            "is ignored. New records and new text are enriched in the background."
        ),
    )
    def post(self, request):
        query = PushQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        batch = changes_parse(request.data, max_records=settings.SYNC_PUSH_MAX_RECORDS)
        outcome = services.sync_push(
            user=request.user, batch=batch, last_pulled_at=query.validated_data["last_pulled_at"]
        )
        return Response(PushResponseSerializer(outcome).data)


class SyncSchemaApi(APIView):
    @extend_schema(
        tags=["sync"],
        responses={200: ClientSchemaSerializer},
        summary="The WatermelonDB client schema (version, table, columns) to sync with",
    )
    def get(self, request):
        return Response(client_schema())
