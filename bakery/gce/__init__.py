"""The Compute Engine target: API clients (``client``), retries (``retry``) and the image store (``store``)."""
