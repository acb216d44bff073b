"""Dramatiq actors for datasets (thumbnails, auto-captioning on the `captioning` queue)."""

from __future__ import annotations
