"""Dramatiq actors for training jobs (`gpu` queue for local, `remote` for remote backends)."""

from __future__ import annotations
