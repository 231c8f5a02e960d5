"""Evergreen: continuous training for deep-learning models."""

__version__ = "0.1.0"
