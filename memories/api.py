"""The memories API: create (idempotent), list, read, update, delete."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.pagination import NewestFirstCursorPagination

from . import search, selectors, services
from .idempotency import idempotency_key_validate, idempotent_execute, request_fingerprint
from .serializers import (
    MemoryCreateSerializer,
    MemoryListQuerySerializer,
    MemoryRelatedQuerySerializer,
    MemoryRelatedSerializer,
    MemorySearchQuerySerializer,
    MemorySearchSerializer,
    MemorySerializer,
    MemoryUpdateSerializer,
)

IDEMPOTENCY_HEADER = OpenApiParameter(
    name="Idempotency-Key",
    type={"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Up to 255 printable ASCII characters. The first answer is kept for 24 h and replayed "
        "(with `Idempotent-Replayed: true`) for a repeat with the same body; a different body "
        "gets 422, a repeat while the first is still running gets 409."
    ),
)

MemoryPageSerializer = inline_serializer(
    name="MemoryPage",
    fields={
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": MemorySerializer(many=True),
    },
)


class MemoryListCreateApi(APIView):
    @extend_schema(
        tags=["memories"],
        operation_id="memories_list",
        parameters=[MemoryListQuerySerializer],
        responses={200: MemoryPageSerializer},
        summary="List your memories, newest first (cursor-paginated)",
    )
    def get(self, request):
        query = MemoryListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        memories = selectors.memory_list(
            user=request.user,
            type=params.get("type"),
            enrichment_status=params.get("enrichmentStatus"),
            created_after=params.get("createdAfter"),
            created_before=params.get("createdBefore"),
        )
        paginator = NewestFirstCursorPagination()
        page = paginator.paginate_queryset(memories, request, view=self)
        return paginator.get_paginated_response(MemorySerializer(page, many=True).data)

    @extend_schema(
        tags=["memories"],
        request=MemoryCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: MemorySerializer,
            409: OpenApiResponse(description="The same Idempotency-Key is still in flight."),
            422: OpenApiResponse(description="Idempotency-Key reused with another body."),
        },
        summary="Save a memory; it is enriched in the background",
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            idempotency_key_validate(key)
        serializer = MemoryCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        def create() -> tuple[int, dict]:
            memory = services.memory_create(
                user=request.user, text_content=data["textContent"], type=data["type"]
            )
            return status.HTTP_201_CREATED, MemorySerializer(memory).data

        if key is None:
            with transaction.atomic():  # one transaction; in an outer one, a savepoint of ours
                code, body = create()
            return Response(body, status=code)
        # The key's lock, the create and the stored answer: one transaction.
        stored, replayed = idempotent_execute(
            user=request.user,
            key=key,
            fingerprint=request_fingerprint(
                method=request.method, path=request.path, data=request.data
            ),
            handler=create,
        )
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return Response(stored.body, status=stored.status, headers=headers)


class MemoryDetailApi(APIView):
    @extend_schema(tags=["memories"], responses={200: MemorySerializer}, summary="One memory")
    def get(self, request, memory_id):
        memory = selectors.memory_get(user=request.user, memory_id=memory_id)
        return Response(MemorySerializer(memory).data)

    @extend_schema(
        tags=["memories"],
        request=MemoryUpdateSerializer,
        responses={200: MemorySerializer},
        summary="Change a memory; new text is enriched again",
    )
    def patch(self, request, memory_id):
        memory = selectors.memory_get(user=request.user, memory_id=memory_id)
        serializer = MemoryUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        memory = services.memory_update(
            memory=memory, text_content=data.get("textContent"), type=data.get("type")
        )
        return Response(MemorySerializer(memory).data)

    @extend_schema(tags=["memories"], responses={204: None}, summary="Delete a memory")
    def delete(self, request, memory_id):
        memory = selectors.memory_get(user=request.user, memory_id=memory_id)
        services.memory_delete(memory=memory)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemorySearchApi(APIView):
    @extend_schema(
        tags=["memories"],
        operation_id="memories_search",
        parameters=[MemorySearchQuerySerializer],
        responses={
            200: MemorySearchSerializer,
            503: OpenApiResponse(
                description="mode=semantic while the query cannot be embedded; "
                "`details.reason` is budget, provider or user_limit."
            ),
        },
        summary="Search your memories by meaning and by words (hybrid, semantic or keyword)",
    )
    def get(self, request):
        query = MemorySearchQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        result = search.memories_search(
            user=request.user,
            query=params["q"],
            mode=params["mode"],
            limit=params["limit"],
            filters=search.Filters(
                type=params.get("type"),
                category=params.get("category"),
                tag=params.get("tag"),
                created_after=params.get("createdAfter"),
                created_before=params.get("createdBefore"),
            ),
        )
        return Response(MemorySearchSerializer(result).data)


class MemoryRelatedApi(APIView):
    @extend_schema(
        tags=["memories"],
        operation_id="memories_related",
        parameters=[MemoryRelatedQuerySerializer],
        responses={200: MemoryRelatedSerializer},
        summary="Your memories nearest in meaning to this one (no AI call)",
    )
    def get(self, request, memory_id):
        query = MemoryRelatedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        memory = selectors.memory_get(user=request.user, memory_id=memory_id)
        hits = search.memories_related(
            user=request.user, memory=memory, limit=query.validated_data["limit"]
        )
        return Response(MemoryRelatedSerializer({"results": hits}).data)
