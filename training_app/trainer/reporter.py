"""How the trainer talks to whoever runs it (the portal's job runner, the CLI, tests).

The trainer only calls the methods of :class:`Reporter`; it never imports the
portal. ``should_stop`` and ``pending_actions`` are polled once per optimizer
step, so a "stop", "sample now" or "save now" button takes effect at the next
step boundary. The trainer says what it wrote (each sample with its prompt,
each LoRA file with its layout), so a reporter never has to guess file names.
Before the first step it says which phase it is in (``phase``): loading and
caching can take longer than the training itself, and a page should say so.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

ACTIONS = frozenset({"sample", "save"})
# Layouts of the LoRA files the trainer writes, as passed to ``Reporter.lora_saved``.
LORA_KOHYA = "kohya"
LORA_DIFFUSERS = "diffusers"
LORA_LAYOUTS = (LORA_KOHYA, LORA_DIFFUSERS)
# The phases of a run, in order, as passed to ``Reporter.phase``.
PHASE_LOADING_MODEL = "loading model"
PHASE_CACHING_LATENTS = "caching latents"
PHASE_CACHING_TEXT = "caching text"
PHASE_TRAINING = "training"
PHASES = (PHASE_LOADING_MODEL, PHASE_CACHING_LATENTS, PHASE_CACHING_TEXT, PHASE_TRAINING)


def step_line(step: int, total_steps: int, loss: float, lr: float, steps_per_second: float) -> str:
    """``steps: 45% 450/1000, loss 0.123, lr 1.0e-4, 2.1 it/s``: what a kohya user reads in sd-scripts' bar.

    The percentage is floored like tqdm's; below one step a second the speed reads ``3.2 s/it``, as there.
    """
    mantissa, exponent = f"{lr:.1e}".split("e")
    speed = f"{steps_per_second:.1f} it/s" if steps_per_second >= 1 else f"{1 / max(steps_per_second, 1e-9):.1f} s/it"
    percent = 100 * step // max(total_steps, 1)
    return f"steps: {percent}% {step}/{total_steps}, loss {loss:.3f}, lr {mantissa}e{int(exponent)}, {speed}"


@runtime_checkable
class Reporter(Protocol):
    """Callbacks a training run makes; implementations must be cheap (they run on the hot path)."""

    def phase(self, name: str, done: int = 0, total: int = 0) -> None:
        """The run is in phase ``name`` (:data:`PHASES`), ``done`` of ``total`` items (0 of 0: not counted).
        Called when a phase starts and as it advances; ``training`` starts at the first step's count."""
        ...

    def step(self, step: int, total_steps: int, loss: float, lr: float) -> None: ...

    def log(self, line: str) -> None: ...

    def sample(self, step: int, prompt: str, path: Path) -> None: ...

    def checkpoint(self, step: int, path: Path) -> None: ...

    def lora_saved(self, kind: str, path: Path, step: int) -> None:
        """A LoRA file of layout ``kind`` (:data:`LORA_LAYOUTS`) was (re)written at ``path``."""
        ...

    def should_stop(self) -> bool: ...

    def pending_actions(self) -> frozenset[str]: ...


class BaseReporter:
    """A :class:`Reporter` that does nothing; subclass and override what you need."""

    def phase(self, name: str, done: int = 0, total: int = 0) -> None:
        pass

    def step(self, step: int, total_steps: int, loss: float, lr: float) -> None:
        pass

    def log(self, line: str) -> None:
        pass

    def sample(self, step: int, prompt: str, path: Path) -> None:
        pass

    def checkpoint(self, step: int, path: Path) -> None:
        pass

    def lora_saved(self, kind: str, path: Path, step: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def pending_actions(self) -> frozenset[str]:
        return frozenset()


class NullReporter(BaseReporter):
    """Discards everything."""


class PrintReporter(BaseReporter):
    """Writes progress lines to stderr (used by the CLI)."""

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self._phase = ""

    def phase(self, name: str, done: int = 0, total: int = 0) -> None:
        if name != self._phase:  # its start only: the step lines show how training goes
            self._phase = name
            print(f"{name} {done}/{total}..." if total else f"{name}...", file=sys.stderr, flush=True)

    def step(self, step: int, total_steps: int, loss: float, lr: float) -> None:
        if step % self.every == 0 or step == total_steps:
            print(f"step {step}/{total_steps} loss {loss:.5f} lr {lr:.3g}", file=sys.stderr, flush=True)

    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def sample(self, step: int, prompt: str, path: Path) -> None:
        print(f"sample at step {step} ({prompt!r}): {path}", file=sys.stderr, flush=True)

    def checkpoint(self, step: int, path: Path) -> None:
        print(f"checkpoint at step {step}: {path}", file=sys.stderr, flush=True)

    def lora_saved(self, kind: str, path: Path, step: int) -> None:
        print(f"{kind} LoRA saved at step {step}: {path}", file=sys.stderr, flush=True)


@dataclass
class RecordingReporter(BaseReporter):
    """Keeps every callback for tests and benchmarks; can stop or request actions at given steps."""

    stop_at: int | None = None
    actions_at: dict[int, frozenset[str]] = field(default_factory=dict)
    phases: list[tuple[str, int, int]] = field(default_factory=list)
    steps: list[tuple[int, int, float, float]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    samples: list[tuple[int, str, Path]] = field(default_factory=list)
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)
    lora_files: list[tuple[str, Path, int]] = field(default_factory=list)
    stop_checks: int = 0

    @property
    def losses(self) -> list[float]:
        return [s[2] for s in self.steps]

    @property
    def last_step(self) -> int:
        return self.steps[-1][0] if self.steps else 0

    def phase(self, name: str, done: int = 0, total: int = 0) -> None:
        self.phases.append((name, done, total))

    def step(self, step: int, total_steps: int, loss: float, lr: float) -> None:
        self.steps.append((step, total_steps, loss, lr))

    def log(self, line: str) -> None:
        self.lines.append(line)

    def sample(self, step: int, prompt: str, path: Path) -> None:
        self.samples.append((step, prompt, path))

    def checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, path))

    def lora_saved(self, kind: str, path: Path, step: int) -> None:
        self.lora_files.append((kind, path, step))

    def should_stop(self) -> bool:
        self.stop_checks += 1
        return self.stop_at is not None and self.last_step >= self.stop_at

    def pending_actions(self) -> frozenset[str]:
        return self.actions_at.pop(self.last_step, frozenset())
