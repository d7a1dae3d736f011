"""Helpers the tests share: tiny model pipelines, a sample catalogue, fixtures builders."""
