"""The HTTP API, the review and dashboard pages, and the `lightbox` CLI."""
