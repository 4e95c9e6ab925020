from django.urls import path

from . import api

urlpatterns = [
    path("memories", api.MemoryListCreateApi.as_view(), name="memory-list"),
    path("memories/<uuid:memory_id>", api.MemoryDetailApi.as_view(), name="memory-detail"),
]
