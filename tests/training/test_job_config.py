"""The portal's training config: key names, human messages, presets and planned steps."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from pydantic import ValidationError

from lorasite.errors import InvalidInput
from training_app.config import TrainingConfig, schema_from_table, validation_errors
from training_app.estimates import estimate, planned_total_steps
from training_app.presets import PRESETS
from training_app.services import build_config
from training_app.trainer.config import CONFIG_FIELDS, FieldSpec, TrainConfig, TrainerConfigError

EXPOSED = tuple(spec for spec in CONFIG_FIELDS if spec.exposed)


def messages(**values) -> list[str]:
    with pytest.raises(ValidationError) as info:
        TrainingConfig(**values)
    return [e["msg"] for e in validation_errors(info.value)]


def test_rank_message_lists_the_allowed_values():
    assert messages(rank=5) == ["rank must be one of 4, 8, 16, 32, 64, 128"]


@pytest.mark.parametrize("field,value,fragment", [
    ("learning_rate", 0, "learning_rate must be above 0"),
    ("optimizer", "sgd", "optimizer must be one of adamw, adamw8bit, prodigy, lion"),
    ("lr_scheduler", "step", "lr_scheduler must be one of constant"),
    ("batch_size", 0, "batch_size must be between 1 and 64"),
    ("resolution", 500, "resolution must be a multiple of 8"),
    ("caption_dropout", 1.5, "caption_dropout must be at least 0 and below 1"),
    ("min_snr_gamma", -1, "min_snr_gamma must be above 0"),
    ("trigger_word", "a,b", "trigger_word must be at most 100 characters and contain no comma"),
    ("epochs", 0, "epochs must be between 1 and 1000"),
])
def test_each_bad_value_gets_a_message_naming_the_field(field, value, fragment):
    assert any(fragment in m for m in messages(**{field: value}))


PORTAL_DEFAULTS = {
    "network": "lora", "dora": False, "target_layers": "attention", "rank": 16, "alpha": None, "conv_rank": None,
    "conv_alpha": None, "factor": -1, "dropout": 0.0, "learning_rate": 1e-4, "text_encoder_lr": None, "optimizer": "adamw",
    "lr_scheduler": "constant", "lr_warmup_steps": 0, "batch_size": 1, "gradient_accumulation_steps": 1,
    "epochs": 10, "max_steps": None, "resolution": 512, "bucketing": True, "repeats": 1, "trigger_word": "",
    "caption_dropout": 0.0, "shuffle_tags": False, "keep_tokens": 0, "noise_offset": 0.0, "min_snr_gamma": None,
    "mixed_precision": "no", "gradient_checkpointing": False, "train_text_encoder": False, "clip_skip": 1,
    "seed": 42, "save_every_n_steps": 0, "sample_every_n_steps": 0, "sample_prompts": [], "log_every_n_steps": 50,
}


@pytest.mark.parametrize("values,message", [
    ({"network": "lokr", "dora": True}, "dora works with network lora or locon, not lokr"),
    ({"target_layers": "all_linear_conv"}, "training the convolutions with LoRA is LoCon: choose network locon"),
])
def test_the_portal_refuses_inconsistent_networks_with_the_trainer_message(values, message):
    assert any(message in m for m in messages(**values))


def test_portal_keys_and_defaults_are_the_public_contract():
    assert TrainingConfig().model_dump() == PORTAL_DEFAULTS
    assert list(TrainingConfig.model_fields) == list(PORTAL_DEFAULTS)


# Every message the portal gives for a value out of range, word for word: scripts and the form show them.
@pytest.mark.parametrize("field,value,message", [
    ("rank", 5, "rank must be one of 4, 8, 16, 32, 64, 128"),
    ("alpha", 0, "alpha must be a positive number up to 1024 (or empty to use the rank)"),
    ("alpha", 1025, "alpha must be a positive number up to 1024 (or empty to use the rank)"),
    ("dropout", 1, "dropout must be at least 0 and below 1"),
    ("dropout", -0.1, "dropout must be at least 0 and below 1"),
    ("learning_rate", 0, "learning_rate must be above 0 and at most 1 (typical: 1e-4)"),
    ("learning_rate", 1.5, "learning_rate must be above 0 and at most 1 (typical: 1e-4)"),
    ("text_encoder_lr", 0, "text_encoder_lr must be above 0 and at most 1 (typical: 1e-4)"),
    ("optimizer", "sgd", "optimizer must be one of adamw, adamw8bit, prodigy, lion"),
    ("lr_scheduler", "step", "lr_scheduler must be one of constant, constant_with_warmup, linear, cosine, "
                             "cosine_with_restarts, polynomial"),
    ("lr_warmup_steps", -1, "lr_warmup_steps must be 0 (off) or a positive number of steps"),
    ("lr_warmup_steps", 1_000_001, "lr_warmup_steps must be 0 (off) or a positive number of steps"),
    ("batch_size", 65, "batch_size must be between 1 and 64"),
    ("gradient_accumulation_steps", 0, "gradient_accumulation_steps must be between 1 and 128"),
    ("epochs", 1001, "epochs must be between 1 and 1000"),
    ("max_steps", 0, "max_steps must be between 1 and 1,000,000 (or empty to use epochs)"),
    ("resolution", 500, "resolution must be a multiple of 8 between 64 and 2048"),
    ("resolution", 56, "resolution must be a multiple of 8 between 64 and 2048"),
    ("resolution", 2056, "resolution must be a multiple of 8 between 64 and 2048"),
    ("repeats", 101, "repeats must be between 1 and 100"),
    ("trigger_word", "x" * 101, "trigger_word must be at most 100 characters and contain no comma"),
    ("caption_dropout", 1.5, "caption_dropout must be at least 0 and below 1"),
    ("keep_tokens", 33, "keep_tokens must be between 0 and 32"),
    ("noise_offset", 1.1, "noise_offset must be between 0 and 1 (typical: 0.05-0.1)"),
    ("min_snr_gamma", 0, "min_snr_gamma must be above 0 and at most 100 (typical: 5), or empty for off"),
    ("min_snr_gamma", 101, "min_snr_gamma must be above 0 and at most 100 (typical: 5), or empty for off"),
    ("mixed_precision", "fp8", "mixed_precision must be one of no, fp16, bf16"),
    ("seed", 2**32, "seed must be between 0 and 4294967295"),
    ("seed", -1, "seed must be between 0 and 4294967295"),
    ("save_every_n_steps", -1, "save_every_n_steps must be 0 (off) or a positive number of steps"),
    ("sample_every_n_steps", -1, "sample_every_n_steps must be 0 (off) or a positive number of steps"),
    ("sample_prompts", [f"p{i}" for i in range(9)], "at most 8 sample_prompts"),
    ("sample_prompts", ["x" * 1001], "each sample prompt must be at most 1000 characters"),
])
def test_each_portal_message_is_kept_word_for_word(field, value, message):
    assert messages(**{field: value}) == [message]


@pytest.mark.parametrize("field,value", [
    ("alpha", 1024), ("dropout", 0), ("learning_rate", 1), ("lr_warmup_steps", 1_000_000), ("batch_size", 64),
    ("gradient_accumulation_steps", 128), ("epochs", 1000), ("max_steps", 1_000_000), ("resolution", 64),
    ("resolution", 2048), ("repeats", 100), ("trigger_word", "x" * 100), ("keep_tokens", 32), ("noise_offset", 1),
    ("min_snr_gamma", 100), ("seed", 2**32 - 1), ("caption_dropout", 0.99),
])
def test_portal_accepts_each_inclusive_bound(field, value):
    assert getattr(TrainingConfig(**{field: value}), field) == value


def test_trigger_word_is_stripped_before_its_length_is_checked():
    assert TrainingConfig(trigger_word="  " + "x" * 100 + " ").trigger_word == "x" * 100


def test_sample_prompts_are_stripped_and_blank_ones_dropped():
    config = TrainingConfig(sample_prompts=[" a cat ", "", "   "] + ["p"] * 7)
    assert config.sample_prompts == ["a cat"] + ["p"] * 7


def test_unknown_keys_are_refused_by_name():
    assert messages(learning_rat=1e-4) == ["unknown setting 'learning_rat'"]


def test_sampling_without_prompts_is_refused():
    assert any("sample prompt" in m for m in messages(sample_every_n_steps=10))


def test_trainer_accepts_every_portal_key():
    from training_app.trainer import TrainConfig

    config = TrainingConfig(rank=8, alpha=4, sample_every_n_steps=5, sample_prompts=["a cat"], max_steps=10)
    trainer_config = TrainConfig.from_dict(config.to_trainer_dict())
    assert trainer_config.rank == 8 and trainer_config.alpha == 4 and trainer_config.sample_prompts == ("a cat",)


def test_every_preset_is_a_valid_config():
    for name, preset in PRESETS.items():
        assert TrainingConfig(**preset["config"]), name


def test_caller_values_override_the_preset():
    config = build_config("sd15", {"rank": 4, "epochs": 2})
    assert (config.rank, config.epochs, config.resolution) == (4, 2, 512)


def test_unknown_preset_is_a_422():
    with pytest.raises(InvalidInput, match="Unknown preset"):
        build_config("turbo", {})


def test_max_steps_wins_over_epochs():
    assert TrainingConfig(max_steps=7, epochs=100).total_steps(50) == 7


def test_planned_steps_cut_batches_per_bucket_like_the_trainer():
    config = TrainingConfig(resolution=64, batch_size=2, epochs=3, repeats=1)
    square = {"width": 64, "height": 64, "repeats": 1}
    wide = {"width": 128, "height": 64, "repeats": 3}
    # 1 square (1 batch) + 3 wide in their own bucket (2 batches) = 3 batches per epoch.
    assert planned_total_steps(config, [square, wide]) == 9


def test_estimate_scales_with_gpu_and_flags_memory():
    config = TrainingConfig(resolution=1024, batch_size=4, rank=32)
    fast = estimate(config, 20, "sdxl", gpu="h100")
    slow = estimate(config, 20, "sdxl", gpu="t4")
    assert slow.estimated_seconds > 5 * fast.estimated_seconds
    assert not slow.fits_on_gpu and "gradient checkpointing" in slow.notes[0]
    assert fast.estimated_cost_usd is None
    paid = estimate(config, 20, "sdxl", gpu="h100", paid=True)
    assert paid.estimated_cost_usd and paid.estimated_cost_usd > 0


def test_estimates_follow_the_network_file_size_memory_and_time():
    def est(**values):
        return estimate(TrainingConfig(**values), 20, "sdxl", gpu="h100")

    lora, loha, lokr, locon, dora = est(), est(network="loha", rank=8), est(network="lokr"), est(network="locon"), \
        est(dora=True)
    # LoHa stores two factor pairs: rank 8 is exactly the numbers of LoRA rank 16; LoKr's Kronecker factors are tiny.
    assert loha.file_size_mb == lora.file_size_mb and lokr.file_size_mb < lora.file_size_mb / 10
    assert locon.file_size_mb > lora.file_size_mb and lora.file_size_mb < dora.file_size_mb < 1.05 * lora.file_size_mb
    # LoHa rebuilds a full-size update per layer each step: more memory and time than LoRA at the same size.
    assert loha.peak_vram_gb > lora.peak_vram_gb and loha.seconds_per_step > lora.seconds_per_step
    assert dora.seconds_per_step > lora.seconds_per_step
    assert (lora.network, locon.network, dora.network) == ("LoRA", "LoCon", "LoRA + DoRA")
    assert estimate(TrainingConfig(), 20, "flux").file_size_mb is None


def test_the_style_preset_is_locon_at_a_higher_rank_and_the_others_stay_loras():
    style = TrainingConfig(**PRESETS["style"]["config"])
    assert (style.network, style.rank) == ("locon", 32) and style.rank > TrainingConfig().rank
    assert all("network" not in preset["config"] for name, preset in PRESETS.items() if name != "style")


def test_sd15_anchor_matches_the_published_figure():
    config = TrainingConfig(resolution=512, batch_size=1, rank=16, mixed_precision="bf16")
    assert estimate(config, 10, "sd15", gpu="h100").seconds_per_step == pytest.approx(0.181 * 1.0125, rel=1e-3)


def test_openapi_shows_each_estimate_field_with_its_type():
    from lorasite.api import api

    schema = api.get_openapi_schema()["components"]["schemas"]["EstimateOut"]
    types = {name: prop.get("type") or [t["type"] for t in prop["anyOf"]] for name, prop in schema["properties"].items()}
    assert types == {
        "total_steps": "integer", "image_count": "integer", "samples_per_epoch": "integer", "family": "string",
        "gpu": "string", "seconds_per_step": "number", "estimated_seconds": "number",
        "backend_estimated_seconds": "number", "peak_vram_gb": "number", "network": "string",
        "file_size_mb": ["number", "null"], "fits_on_gpu": "boolean",
        "estimated_cost_usd": ["number", "null"], "notes": "array",
    }
    assert schema["properties"]["notes"]["items"] == {"type": "string"}
    assert set(schema["required"]) == set(types)


# One source: the trainer's table (CONFIG_FIELDS) is what the portal schema, its checks and the form are made of.


def test_the_table_describes_every_trainer_key_once_with_help():
    assert [spec.name for spec in CONFIG_FIELDS] == [f.name for f in dataclasses.fields(TrainConfig)]
    assert all(spec.help for spec in CONFIG_FIELDS)
    trainer = TrainConfig()
    assert all(getattr(trainer, spec.name) == spec.default for spec in CONFIG_FIELDS)


def test_every_exposed_trainer_key_is_a_portal_field_with_the_same_default():
    portal = TrainingConfig().model_dump()
    assert list(portal) == [spec.name for spec in EXPOSED]
    for spec in EXPOSED:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        assert portal[spec.name] == default, spec.name
        assert TrainingConfig.model_fields[spec.name].description == spec.help


def test_trainer_only_keys_are_unknown_to_the_portal():
    hidden = [spec for spec in CONFIG_FIELDS if not spec.exposed]
    assert {spec.name for spec in hidden} == {"prediction_type", "flip_aug", "target_modules", "sample_steps",
                                              "sample_guidance_scale", "cache_latents", "cache_to_disk",
                                              "max_grad_norm"}
    for spec in hidden:
        assert messages(**{spec.name: spec.default}) == [f"unknown setting {spec.name!r}"]


def outside(spec: FieldSpec) -> list:
    """A value just past each limit the table sets for a field."""
    values: list = []
    if spec.choices:
        values.append("nope" if isinstance(spec.choices[0], str) else max(spec.choices) + 1)
    if spec.ge is not None:
        values.append(spec.ge - 1)
    if spec.gt is not None:
        values.append(spec.gt)
    if spec.le is not None:
        values.append(spec.le + 1)
    if spec.lt is not None:
        values.append(spec.lt)
    if spec.multiple_of:
        values.append((spec.ge or 0) + spec.multiple_of + 1)
    if spec.max_length is not None:
        values.append("x" * (spec.max_length + 1))
    values.extend(f"a{char}b" for char in spec.forbidden)
    return values


def inclusive_bounds(spec: FieldSpec) -> list:
    return [bound for bound in (spec.ge, spec.le) if bound is not None] + list(spec.choices)


RULES = [(spec, value) for spec in CONFIG_FIELDS for value in outside(spec)]
BOUNDS = [(spec, value) for spec in CONFIG_FIELDS for value in inclusive_bounds(spec)]


def test_every_numeric_or_choice_key_has_a_rule_in_the_table():
    ruled = {spec.name for spec, _ in RULES}
    unruled = {spec.name for spec in CONFIG_FIELDS if spec.value_type in (int, str) and spec.name not in ruled}
    # Floats without limits still must be finite numbers; bools and lists have no range.
    assert unruled == set()


@pytest.mark.parametrize("spec,value", RULES, ids=[f"{spec.name}={value!r}"[:60] for spec, value in RULES])
def test_each_table_rule_is_enforced_by_trainer_and_portal_with_one_message(spec, value):
    with pytest.raises(TrainerConfigError) as trainer_error:
        TrainConfig.from_dict({spec.name: value})
    assert str(trainer_error.value).startswith(f"{spec.error_message}, not ")
    if spec.exposed:
        assert messages(**{spec.name: value}) == [spec.error_message]


@pytest.mark.parametrize("spec,value", BOUNDS, ids=[f"{spec.name}={value!r}"[:60] for spec, value in BOUNDS])
def test_each_inclusive_bound_in_the_table_is_accepted_by_trainer_and_portal(spec, value):
    # Keys whose every value is allowed only together with another key's value (a cross-field rule).
    needs = {"sample_every_n_steps": {"sample_prompts": ["a cat"]}, "target_layers": {"network": "locon"}}
    context = needs.get(spec.name, {})
    assert getattr(TrainConfig.from_dict({spec.name: value, **context}), spec.name) == value
    if spec.exposed:
        assert getattr(TrainingConfig(**{spec.name: value}, **context), spec.name) == value


def test_a_key_added_to_a_table_becomes_a_portal_field_with_its_rule():
    table = (
        FieldSpec("colour", str, "red", help="Paint colour.", choices=("red", "blue")),
        FieldSpec("size", int, 3, help="How big.", ge=1, le=5),
        FieldSpec("scale", float | None, None, help="Empty: natural size.", gt=0, hint="(typical: 2)"),
        FieldSpec("secret", int, 7, help="Trainer only.", exposed=False),
    )
    paint = schema_from_table(table, "Paint")
    assert paint().model_dump() == {"colour": "red", "size": 3, "scale": None}
    assert paint.model_fields["size"].description == "How big."

    def refused(**values) -> list[str]:
        with pytest.raises(ValidationError) as info:
            paint(**values)
        return [e["msg"] for e in validation_errors(info.value)]

    assert refused(size=6) == ["size must be between 1 and 5"]
    assert refused(colour="green") == ["colour must be one of red, blue"]
    assert refused(scale=0) == ["scale must be above 0 (typical: 2)"]
    assert refused(secret=1) == ["unknown setting 'secret'"]
    with pytest.raises(ValidationError):
        paint().size = 4  # frozen, like TrainingConfig


def test_estimate_out_has_exactly_the_estimate_fields_and_types():
    from training_app.estimates import Estimate
    from training_app.schemas import EstimateOut

    hints = typing.get_type_hints(Estimate)
    assert {name: f.annotation for name, f in EstimateOut.model_fields.items()} == {
        f.name: hints[f.name] for f in dataclasses.fields(Estimate)}
    assert all(f.is_required() for f in EstimateOut.model_fields.values())


def test_an_out_schema_follows_its_dataclass():
    from training_app.schemas import schema_from_dataclass

    @dataclasses.dataclass(frozen=True)
    class Reading:
        value: float
        unit: str
        note: str | None

    out = schema_from_dataclass(Reading, "ReadingOut")
    assert list(out.model_fields) == ["value", "unit", "note"]
    assert out(**dataclasses.asdict(Reading(1.5, "s", None))).model_dump() == {"value": 1.5, "unit": "s", "note": None}


def test_the_form_offers_every_portal_key_once_with_the_table_help_and_choices():
    from training_app.form_fields import form_groups

    fields = [f for _, group in form_groups() for f in group]
    assert sorted(f["key"] for f in fields) == sorted(spec.name for spec in EXPOSED)
    specs = {spec.name: spec for spec in EXPOSED}
    defaults = TrainingConfig().model_dump()
    for f in fields:
        spec = specs[f["key"]]
        assert (f["help"], tuple(f.get("choices", ())), f["default"]) == (spec.help, spec.choices, defaults[spec.name])
