"""Cleaning caption text: small pure functions, and the ordered list of steps that chooses which
apply. A caption run's `postprocess` and the dataset page's bulk caption tools both go through
`apply_step`, so a tool and a run never disagree about what "clean" means."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from datasets_app.captioning import tokens
from lorasite.errors import InvalidInput

MAX_PATTERN_CHARS = 500

# Openings captioners add that say nothing about the picture. Matched at the start, repeatedly,
# case-insensitively; "arafed"/"araffe" are BLIP's well-known artefacts.
_OPENINGS = [
    r"(?:sure|certainly|of course|okay|ok)[!,.]*\s*",
    r"here(?:'s| is) (?:a |the |an )?(?:detailed |short |brief )?(?:caption|description)(?: of| for)?"
    r"(?: (?:the|this) (?:image|picture|photo|photograph))?\s*[:.-]*\s*",
    r"(?:caption|description)\s*:\s*",
    r"(?:in )?(?:this|the) (?:image|picture|photo|photograph|illustration|artwork|scene)"
    r"(?: (?:shows|depicts|features|contains|displays|presents|captures|is of))?\s*[,:]?\s*",
    r"(?:this|it) is (?:a |an )?(?:close-up |closeup )?(?:image|picture|photo|photograph|illustration) of\s+",
    r"(?:there is|there are)\s+",
    r"ara+f+e+d?\s+",
    r"araf+e\s+",
]
_OPENING = re.compile("^(?:" + "|".join(_OPENINGS) + ")", re.IGNORECASE)
# Hedging or refusing preambles up to the end of their sentence ("I'm not sure, but ...").
_PREAMBLE = re.compile(r"^(?:i(?:'m| am) (?:not sure|unable to|sorry)|as an ai)[^.:!]*[.:!]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Context:
    """What a step may need besides the text: the dataset's trigger word and a token counter."""

    trigger: str = ""
    count_tokens: Callable[[str], int] = field(default=tokens.count)


def clean_text(text: str) -> str:
    """Collapse whitespace, tidy spaces around punctuation, drop repeated and stray separators and
    wrapping quotes."""
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;])(?=\S)", r"\1 ", text)
    text = re.sub(r"([,;])(\s*[,;])+", r"\1", text)
    text = re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)  # a doubled full stop; an ellipsis stays
    text = re.sub(r"^[.,;:!?\s]+", "", text)
    return text.strip(" ,;:").strip()


def strip_boilerplate(text: str) -> str:
    """Remove openings like "The image shows", "This is a picture of", "arafed" and refusal or
    hedging preambles; what is left keeps its wording."""
    text = text.strip()
    for _ in range(5):  # several openings can be stacked ("Sure! Here is a caption: The image shows")
        stripped = _PREAMBLE.sub("", text)
        stripped = _OPENING.sub("", stripped).lstrip(" ,:;-")
        if stripped == text:
            break
        text = stripped
    return text


def place_trigger(text: str, trigger: str) -> str:
    """The trigger word exactly once: at each `[trigger]` placeholder's first place if there is one,
    else where it already is, else first."""
    if not trigger:
        raise InvalidInput("This dataset has no trigger word yet; set one first.")
    word = re.compile(rf"(?<![\w]){re.escape(trigger)}(?![\w])")
    if "[trigger]" in text:
        text = word.sub("[trigger]", text)  # an existing mention counts as a second one
        first = text.index("[trigger]")
        text = text[:first] + trigger + text[first + len("[trigger]"):].replace("[trigger]", "")
        return clean_text(text)
    matches = list(word.finditer(text))
    if not matches:
        return f"{trigger}, {text}" if text.strip() else trigger
    if len(matches) == 1:
        return text
    keep = matches[0].end()
    return clean_text(text[:keep] + word.sub("", text[keep:]))


def trigger_first(text: str, trigger: str) -> str:
    """The trigger word once, at the very start (for a caption joined from two)."""
    word = re.compile(rf"(?<![\w]){re.escape(trigger)}(?![\w])")
    rest = clean_text(word.sub("", text.replace("[trigger]", "")))
    return f"{trigger}, {rest}" if rest else trigger


def add_prefix(text: str, prefix: str, separator: str = ", ") -> str:
    prefix = prefix.strip()
    if not prefix or text.startswith(prefix):
        return text
    return f"{prefix}{separator}{text}" if text else prefix


def add_suffix(text: str, suffix: str, separator: str = ", ") -> str:
    suffix = suffix.strip()
    if not suffix or text.endswith(suffix):
        return text
    return f"{text.rstrip(' ,')}{separator}{suffix}" if text else suffix


def compile_pattern(find: str, regex: bool) -> re.Pattern:
    if not find:
        raise InvalidInput("Say what to find.", [{"loc": ["find"], "msg": "required"}])
    if len(find) > MAX_PATTERN_CHARS:
        raise InvalidInput(f"The pattern may have at most {MAX_PATTERN_CHARS} characters.",
                           [{"loc": ["find"], "msg": "too long"}])
    if not regex:
        return re.compile(re.escape(find))
    try:
        return re.compile(find)
    except re.error as exc:
        raise InvalidInput(f"The regular expression does not compile: {exc}.",
                           [{"loc": ["find"], "msg": f"invalid regular expression: {exc}"}]) from None


def find_replace(text: str, find: str, replace: str, regex: bool = False) -> str:
    pattern = compile_pattern(find, regex)
    if not regex:
        return text.replace(find, replace)
    try:
        return pattern.sub(replace, text)
    except (re.error, IndexError) as exc:
        raise InvalidInput(f"The replacement is not valid for that pattern: {exc}.",
                           [{"loc": ["replace"], "msg": str(exc)}]) from None


def split_tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",")]


def dedupe_tags(text: str) -> str:
    """Comma-separated tags once each (case-insensitive), the first occurrence keeping its place."""
    seen: set[str] = set()
    kept = []
    for tag in split_tags(text):
        key = tag.lower()
        if tag and key not in seen:
            seen.add(key)
            kept.append(tag)
    return ", ".join(kept)


def underscores_to_spaces(text: str) -> str:
    """Booru-style `long_hair` → `long hair`; emoticons like `^_^` keep theirs."""
    return re.sub(r"(?<=[^\W_])_+(?=[^\W_])", " ", text)


def truncate_words(text: str, max_words: int) -> str:
    if max_words <= 0:
        raise InvalidInput("Give a number of words above zero.", [{"loc": ["max_words"], "msg": "required"}])
    words = text.split()
    if len(words) <= max_words:
        return text
    return " ".join(words[:max_words]).rstrip(" ,;:")


def truncate_tokens(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """The longest run of whole words whose token count is at most `max_tokens`."""
    if max_tokens <= 0:
        raise InvalidInput("Give a number of tokens above zero.", [{"loc": ["max_tokens"], "msg": "required"}])
    if count_tokens(text) <= max_tokens:
        return text
    words = text.split()
    low, high = 0, len(words)  # invariant: words[:low] fits, words[:high + 1] does not
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(" ".join(words[:middle])) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low]).rstrip(" ,;:")


def truncate_chars(text: str, max_length: int) -> str:
    """At most `max_length` characters, cut at a tag or word boundary when one is in the second half."""
    if max_length <= 0:
        raise InvalidInput("Give a maximum length above zero.", [{"loc": ["max_length"], "msg": "required"}])
    if len(text) <= max_length:
        return text
    cut = text[:max_length]
    boundary = max(cut.rfind(","), cut.rfind(" "))
    return (cut[:boundary] if boundary > max_length // 2 else cut).rstrip(" ,")


def append_tags(text: str, tags: str) -> str:
    """Append each tag not already there (style tags like `film grain, 35mm`)."""
    new = [t for t in split_tags(tags) if t]
    if not new:
        raise InvalidInput("Give the tags to append.", [{"loc": ["tags"], "msg": "required"}])
    existing = split_tags(text)
    missing = [t for t in new if t not in existing]
    if not missing:
        return text
    return ", ".join([text.rstrip(" ,"), *missing]) if text.strip() else ", ".join(missing)


@dataclass(frozen=True)
class Step:
    """One post-processing operation and its parameters (unused ones are ignored)."""

    op: str
    find: str = ""
    replace: str = ""
    regex: bool = False
    text: str = ""
    tags: str = ""
    max_words: int = 0
    max_tokens: int = 0
    max_length: int = 0


OPERATIONS: dict[str, Callable[[str, Step, Context], str]] = {
    "clean": lambda t, s, c: clean_text(t),
    "strip_boilerplate": lambda t, s, c: strip_boilerplate(t),
    "trigger": lambda t, s, c: place_trigger(t, c.trigger),
    "prefix": lambda t, s, c: add_prefix(t, s.text),
    "suffix": lambda t, s, c: add_suffix(t, s.text),
    "replace": lambda t, s, c: find_replace(t, s.find, s.replace, s.regex),
    "dedupe_tags": lambda t, s, c: dedupe_tags(t),
    "underscores": lambda t, s, c: underscores_to_spaces(t),
    "truncate_words": lambda t, s, c: truncate_words(t, s.max_words),
    "truncate_tokens": lambda t, s, c: truncate_tokens(t, s.max_tokens, c.count_tokens),
    "truncate_chars": lambda t, s, c: truncate_chars(t, s.max_length),
    "append_tags": lambda t, s, c: append_tags(t, s.tags),
}
# A captioner's raw answer usually wants these, in this order.
DEFAULT_STEPS = (Step("strip_boilerplate"), Step("clean"), Step("trigger"))


def apply_step(text: str, step: Step, context: Context) -> str:
    operation = OPERATIONS.get(step.op)
    if operation is None:
        raise InvalidInput(f"Unknown post-processing step {step.op!r}; use one of {', '.join(OPERATIONS)}.",
                           [{"loc": ["op"], "msg": "unknown"}])
    return operation(text, step, context)


def apply_steps(text: str, steps: Iterable[Step], context: Context) -> str:
    for step in steps:
        text = apply_step(text, step, context)
    return text


def check_steps(steps: Iterable[Step], context: Context) -> None:
    """Bad parameters fail before a run starts, not on its first image."""
    for step in steps:
        apply_step("check", step, context)
