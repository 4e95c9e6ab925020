"""The ingest benchmark's floor: a minimal DRF endpoint (same JWT auth) that inserts one row.

Served only by the benchmark, through `bench.floor.urlpatterns` as ROOT_URLCONF."""

from django.urls import path
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from memories.models import Memory
from memoryconnector.urls import urlpatterns as app_urlpatterns


class FloorApi(APIView):
    def post(self, request):
        memory = Memory.objects.create(user=request.user, text_content=request.data["textContent"])
        return Response({"id": str(memory.pk)}, status=status.HTTP_201_CREATED)


urlpatterns = [path("bench/floor", FloorApi.as_view()), *app_urlpatterns]
