import pytest


@pytest.fixture(autouse=True)
def _no_enrichment_changes(enrichment_paused):
    """Enrichment by the suite's session worker would add changes of its own to these pulls."""
