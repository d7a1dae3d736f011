"""Operator actions shared by the CLI and the HTTP API: submit, review, dead letters, replay, lag."""
