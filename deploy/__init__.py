"""Deployment: docker compose, Kubernetes manifests and the Docker-free local stack."""
