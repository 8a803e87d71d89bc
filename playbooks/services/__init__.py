"""Services of the watch loop: incident ingest (poll findings and alerts) and the cluster poll."""
