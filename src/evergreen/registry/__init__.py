"""The model registry (`store`: versions and an atomic champion pointer) and the promotion gate (`gate`)."""

__all__ = ["gate", "store"]
