"""Our config onto Replicate's trainer inputs, trainer logs back into step and loss, and cost estimates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes.replicate_trainers import FLUX_TRAINER, SDXL_TRAINER, progress_line, validate_input
from training_app.backends.replicate_api import ReplicateError
from training_app.backends.replicate_inputs import (
    UnmappableConfig,
    actual_cost,
    estimate_cost,
    input_problems,
    map_inputs,
    parse_progress,
)
from training_app.config import TrainingConfig
from training_app.presets import PRESETS
from training_app.trainer.config import OPTIMIZERS, RANKS

FLUX_PRESET = PRESETS["flux"]["config"]


def problems_of(config, family="flux", **kwargs):
    with pytest.raises(UnmappableConfig) as caught:
        map_inputs(config, family, "TOK", True, **kwargs)
    return {tuple(problem["loc"]): problem["msg"] for problem in caught.value.problems}


# -- Flux ---------------------------------------------------------------------------------------------
def test_flux_preset_maps_onto_the_flux_trainer_inputs():
    mapped = map_inputs(FLUX_PRESET, "flux", "ZXQ", True, input_images="https://x/data.zip")
    assert mapped.inputs == {
        "trigger_word": "ZXQ", "autocaption": False, "steps": 1000, "learning_rate": 4e-4, "batch_size": 1,
        "resolution": "1024", "lora_rank": 16, "caption_dropout_rate": 0.0, "optimizer": "adamw",
        "gradient_checkpointing": True, "cache_latents_to_disk": False, "input_images": "https://x/data.zip"}
    assert not mapped.caption_csv
    assert validate_input(FLUX_TRAINER, mapped.inputs) == []


def test_uncaptioned_dataset_turns_the_trainers_autocaption_on_and_says_so():
    mapped = map_inputs(FLUX_PRESET, "flux", "TOK", False)
    assert mapped.inputs["autocaption"] is True
    assert any("autocaption" in note for note in mapped.notes)


def test_steps_come_from_epochs_images_repeats_and_batch_when_max_steps_is_empty():
    config = {"epochs": 4, "repeats": 3, "batch_size": 2, "max_steps": None}
    assert map_inputs(config, "flux", "TOK", True, image_count=10).inputs["steps"] == 60
    assert map_inputs(config, "flux", "TOK", True, image_count=10).inputs["steps"] == TrainingConfig(
        **config).total_steps(10)


def test_without_max_steps_or_an_image_count_the_steps_problem_is_named():
    assert ("config", "max_steps") in problems_of({})


@pytest.mark.parametrize(("change", "key"), [
    ({"alpha": 8}, "alpha"), ({"dropout": 0.1}, "dropout"), ({"lr_scheduler": "cosine"}, "lr_scheduler"),
    ({"lr_warmup_steps": 50}, "lr_warmup_steps"), ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps"),
    ({"train_text_encoder": True}, "train_text_encoder"), ({"shuffle_tags": True}, "shuffle_tags"),
    ({"noise_offset": 0.05}, "noise_offset"), ({"min_snr_gamma": 5.0}, "min_snr_gamma"),
    ({"sample_every_n_steps": 100, "sample_prompts": ["TOK"]}, "sample_every_n_steps"),
    ({"max_steps": 10_000}, "max_steps"), ({"max_steps": 2}, "max_steps"),
])
def test_flux_setting_the_trainer_cannot_honour_is_refused_by_key(change, key):
    found = problems_of({**FLUX_PRESET, **change})
    assert list(found) == [("config", key)]


def test_every_unmappable_key_is_listed_at_once_and_the_error_is_not_retryable():
    with pytest.raises(UnmappableConfig) as caught:
        map_inputs({**FLUX_PRESET, "alpha": 4, "noise_offset": 0.1, "lr_warmup_steps": 5}, "flux", "TOK", True)
    error = caught.value
    assert {problem["loc"][-1] for problem in error.problems} == {"alpha", "noise_offset", "lr_warmup_steps"}
    assert isinstance(error, ReplicateError) and not error.retryable and error.field == "alpha"
    assert "alpha" in error.message and "noise_offset" in error.message


def test_alpha_equal_to_the_rank_maps():
    assert map_inputs({**FLUX_PRESET, "rank": 32, "alpha": 32}, "flux", "TOK", True).inputs["lora_rank"] == 32


def test_settings_the_trainer_ignores_are_noted_only_when_changed():
    assert map_inputs({"max_steps": 100}, "flux", "TOK", True).notes == ()
    notes = map_inputs({"max_steps": 100, "seed": 7, "bucketing": False}, "flux", "TOK", True).notes
    assert any(note.startswith("seed = 7") for note in notes) and any("bucketing" in note for note in notes)


def test_unknown_key_and_unknown_family_are_refused():
    assert ("config", "learning_rte") in problems_of({"learning_rte": 1e-4, "max_steps": 10})
    assert ("base_model",) in problems_of({"max_steps": 10}, family="sd15")


def test_input_problems_is_empty_for_the_flux_preset_and_lists_what_map_inputs_refuses():
    assert input_problems(FLUX_PRESET, "flux") == []
    assert input_problems({**FLUX_PRESET, "dropout": 0.2}, "flux") == [
        {"loc": ["config", "dropout"], "msg": "the Flux trainer on Replicate has no dropout; set it to 0"}]


_FLUX_SAFE = st.fixed_dictionaries({
    "rank": st.sampled_from(RANKS), "learning_rate": st.floats(1e-6, 1e-2), "batch_size": st.integers(1, 64),
    "max_steps": st.integers(3, 6000), "resolution": st.integers(8, 256).map(lambda n: n * 8),
    "optimizer": st.sampled_from(OPTIMIZERS), "caption_dropout": st.floats(0, 0.99),
    "gradient_checkpointing": st.booleans(), "seed": st.integers(0, 2**32 - 1),
})


@given(config=_FLUX_SAFE, trigger=st.text("abcXYZ_ ", max_size=20), captions=st.booleans())
def test_any_flux_config_that_maps_passes_the_trainers_own_schema(config, trigger, captions):
    TrainingConfig(**config)  # a config the portal accepts
    mapped = map_inputs(config, "flux", trigger, captions, input_images="https://x/data.zip")
    assert validate_input(FLUX_TRAINER, mapped.inputs) == []


# -- SDXL ---------------------------------------------------------------------------------------------
def test_sdxl_config_maps_onto_cog_sdxl_inputs_with_caption_csv_when_captioned():
    mapped = map_inputs({"rank": 32, "learning_rate": 1e-4, "lr_scheduler": "linear", "lr_warmup_steps": 20,
                         "batch_size": 2, "max_steps": 800, "resolution": 1024, "seed": 5}, "sdxl", "zxq", True)
    assert mapped.inputs == {
        "token_string": "zxq", "caption_prefix": "a photo of zxq, ", "resolution": 1024, "train_batch_size": 2,
        "max_train_steps": 800, "num_train_epochs": 800, "is_lora": True, "lora_lr": 1e-4, "lora_rank": 32,
        "lr_scheduler": "linear", "lr_warmup_steps": 20, "seed": 5, "input_images_filetype": "zip"}
    assert mapped.caption_csv is True
    assert validate_input(SDXL_TRAINER, {**mapped.inputs, "input_images": "https://x/d.zip"}) == []
    assert map_inputs({"max_steps": 10}, "sdxl", "", False).caption_csv is False


def test_sdxl_refuses_schedulers_and_optimizers_it_does_not_offer():
    found = problems_of({"max_steps": 10, "lr_scheduler": "cosine", "optimizer": "prodigy"}, family="sdxl")
    assert set(found) == {("config", "lr_scheduler"), ("config", "optimizer")}


# -- logs ---------------------------------------------------------------------------------------------
FLUX_LOG = "\n".join([
    "Extracted 12 files from zip to input_images",
    "Caching latents to memory: 100%|██████████| 12/12 [00:01<00:00, 9.87it/s]",
    "flux_train_replicate:  10%|█         | 100/1000 [01:45<15:45,  1.05s/it, lr: 4.0e-04 loss: 4.123e-01]",
    "flux_train_replicate:  83%|████████▎ | 830/1000 [14:31<02:58,  1.05s/it, lr: 4.0e-04 loss: 2.472e-01]",
]) + "\n"


def test_step_and_loss_come_from_the_training_bar_not_from_other_bars():
    progress = parse_progress(FLUX_LOG, 1000)
    assert (progress.step, progress.loss) == (830, 0.2472)
    assert progress.points == ((100, 0.4123), (830, 0.2472))
    assert len(progress.lines) == 4 and progress.cursor == len(FLUX_LOG)


def test_only_lines_after_the_cursor_are_new():
    first = parse_progress(FLUX_LOG, 1000)
    grown = FLUX_LOG + "flux_train_replicate: 100%|██████████| 1000/1000 [17:30<00:00, lr: 4.0e-04 loss: 1.9e-01]\n"
    second = parse_progress(grown, 1000, first.cursor)
    assert second.lines == (grown.splitlines()[-1],) and (second.step, second.loss) == (1000, 0.19)
    assert parse_progress(grown, 1000, second.cursor).lines == ()


def test_an_unended_line_waits_until_it_ends_or_the_training_is_over():
    text = FLUX_LOG + "flux_train_replicate:  84%|████████▍ | 840/1000 [14:42<02:47"
    assert parse_progress(text, 1000).step == 830
    assert parse_progress(text, 1000, final=True).step == 840


def test_carriage_returns_end_lines_like_tqdm_writes_them():
    text = "".join(progress_line(FLUX_TRAINER, step, 5, 1.0, 4e-4) + "\r" for step in range(1, 6))
    progress = parse_progress(text, 5)
    assert [step for step, _ in progress.points] == [1, 2, 3, 4, 5] and all(loss for _, loss in progress.points)


def test_sdxl_bar_without_loss_still_gives_the_step():
    line = progress_line(SDXL_TRAINER, 40, 100, 0.5, 1e-4)
    progress = parse_progress(line + "\n", 100)
    assert (progress.step, progress.loss) == (40, None)


@given(steps=st.integers(1, 40), cuts=st.lists(st.integers(0, 5000), max_size=8), crlf=st.booleans())
def test_reading_the_log_in_any_pieces_gives_what_one_read_gives(steps, cuts, crlf):
    ending = "\r\n" if crlf else "\n"
    text = ending.join(["Starting train job"] + [progress_line(FLUX_TRAINER, s, steps, 1.0, 4e-4)
                                                 for s in range(1, steps + 1)] + ["Saved LoRA"])
    whole = parse_progress(text, steps, final=True)
    cursor, lines, points = 0, [], []
    for cut in sorted(cut % (len(text) + 1) for cut in cuts):
        progress = parse_progress(text[:cut], steps, cursor)
        cursor, lines, points = progress.cursor, lines + list(progress.lines), points + list(progress.points)
    rest = parse_progress(text, steps, cursor, final=True)
    assert lines + list(rest.lines) == list(whole.lines)
    assert points + list(rest.points) == list(whole.points)
    assert whole.step == steps


# -- cost ---------------------------------------------------------------------------------------------
def test_estimated_cost_is_steps_times_seconds_plus_overhead_times_price():
    assert estimate_cost(1000, 1.0, 0.001525) == 1.525
    assert estimate_cost(1000, 1.0, 0.001525, overhead_s=120) == round(1120 * 0.001525, 4)
    assert actual_cost(502.7, 0.001525) == round(502.7 * 0.001525, 4) and actual_cost(None, 0.001) is None


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True, "10"])
def test_estimated_cost_refuses_a_nonsense_number(bad):
    with pytest.raises(ValueError, match="non-negative"):
        estimate_cost(bad, 1.0, 0.001)
