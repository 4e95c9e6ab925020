"""Staff-only monitoring endpoints under /api/v1/admin/."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from memories.selectors import memory_counts


class StaffApi(APIView):
    permission_classes = [IsAdminUser]


class StatsSerializer(serializers.Serializer):
    users = serializers.IntegerField()
    memories = serializers.IntegerField()
    memoriesToday = serializers.IntegerField()  # noqa: N815
    embeddings = serializers.IntegerField()
    timestamp = serializers.DateTimeField()


class StatsApi(StaffApi):
    @extend_schema(tags=["admin"], responses={200: StatsSerializer}, summary="System counts")
    def get(self, request):
        return Response(
            {
                "users": get_user_model().objects.count(),
                **memory_counts(),
                "timestamp": timezone.now(),
            }
        )
