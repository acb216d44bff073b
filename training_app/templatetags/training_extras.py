"""Template filters of the training pages: durations, file sizes, short job ids, ETAs."""

from __future__ import annotations

from django import template
from django.template.defaultfilters import filesizeformat

from training_app.models import JobStatus

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


@register.filter
def learning_rate(value) -> str:
    """3e-4 → '3.00e-4', as the page's script writes it live; None → '—'."""
    if value is None:
        return "—"
    mantissa, exponent = f"{float(value):.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


@register.filter
def short_id(job) -> str:
    """The first 8 hex digits of a job's id: tells apart jobs of the same name (LoRA files carry it too)."""
    return job.uuid.hex[:8]


@register.filter
def eta_label(job) -> str:
    """What a running job's ETA says: 'estimating…' until the reporter has measured enough steps;
    '' for a job that is not running (a cancelled or finished job has no ETA)."""
    if job.status != JobStatus.RUNNING:
        return ""
    return "estimating…" if job.eta_seconds is None else duration(job.eta_seconds)
