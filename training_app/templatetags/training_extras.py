from __future__ import annotations

from django import template
from django.template.defaultfilters import filesizeformat

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """12345 → '3h 25m'; None → '—'."""
    if seconds is None:
        return "—"
    seconds = max(0, round(float(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


@register.filter
def size(value) -> str:
    return filesizeformat(value)
