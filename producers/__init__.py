"""Producers: how training code reaches the bus."""

__all__: list[str] = []
