"""The HTTP gateway (aiohttp): app.py builds it from api.py (the JSON API) and review.py (the
review page), behind guards.py, with the lifetime resources of resources.py."""
