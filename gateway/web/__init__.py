"""The HTTP gateway (aiohttp): the API, its guards, and the pages served beside it."""
