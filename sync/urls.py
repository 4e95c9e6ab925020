from django.urls import path

from . import api

urlpatterns = [
    path("sync", api.SyncApi.as_view(), name="sync"),
    path("sync/schema", api.SyncSchemaApi.as_view(), name="sync-schema"),
]
