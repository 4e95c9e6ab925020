"""Enrichment follows memories through their signal: memories never import enrichment."""

from django.dispatch import receiver

from memories.services import memory_text_changed

from . import services


@receiver(memory_text_changed, dispatch_uid="enrichment.job_for_new_text")
def _job_for_new_text(sender, memory, created=False, **kwargs):
    services.job_create_for_memory(memory=memory, created=created)
