"""The gateway's dashboard pages: the model catalog, usage (with its CSV export) and batches.
The inference surfaces' views are in gateway/views/; every gateway route is in gateway/urls.py."""
