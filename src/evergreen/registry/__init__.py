"""The model registry (`store`: versions, an atomic champion pointer and the shadow), the promotion gate
(`gate`) and the shadow gate (`shadow`: a challenger judged on live traffic)."""

__all__ = ["gate", "shadow", "store"]
