"""Lightbox stage runtime and the CPU stages built on it."""
