"""The pipeline fixtures live in enrichment.testing.fixtures, registered once for the whole suite
by the root conftest (a session fixture imported into two conftests would start two workers);
their helpers are importable from here as before."""

from enrichment.testing.fixtures import LOGS, wait_for  # noqa: F401
