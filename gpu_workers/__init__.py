"""The generation stage: batched inference, model registry, backends."""
