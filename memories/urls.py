from django.urls import path

from . import api

urlpatterns = [
    path("memories", api.MemoryListCreateApi.as_view(), name="memory-list"),
    path("memories/search", api.MemorySearchApi.as_view(), name="memory-search"),
    path(
        "memories/<uuid:memory_id>/related",
        api.MemoryRelatedApi.as_view(),
        name="memory-related",
    ),
    path("memories/<uuid:memory_id>", api.MemoryDetailApi.as_view(), name="memory-detail"),
]
