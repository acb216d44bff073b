"""Captions, bucket sampler and cache policy of the training data pipeline."""

from __future__ import annotations

import random
from pathlib import Path

from training_app.trainer import train
from training_app.trainer.config import TrainConfig
from training_app.trainer.data import (
    BucketBatchSampler,
    CaptionPolicy,
    prepare_images,
    tag_frequency,
    with_trigger,
)
from training_app.trainer.reporter import RecordingReporter


def test_trigger_word_goes_first_once() -> None:
    assert with_trigger("a cat, red", "zzt") == "zzt, a cat, red"
    assert with_trigger("red, zzt, cat", "zzt") == "zzt, red, cat"
    assert with_trigger("zzt, red", "zzt") == "zzt, red"
    assert with_trigger(" plain ", "") == "plain"


def test_caption_policy_keeps_head_and_shuffles_tail() -> None:
    cfg = TrainConfig(trigger_word="zzt", shuffle_tags=True, keep_tokens=1)
    policy = CaptionPolicy(cfg)
    rng = random.Random(0)
    seen = {policy.build("first, b, c, d, e", rng) for _ in range(30)}
    assert len(seen) > 5
    assert all(s.startswith("zzt, first, ") for s in seen)
    assert all(sorted(s.split(", ")) == sorted(["zzt", "first", "b", "c", "d", "e"]) for s in seen)
    assert not policy.is_static("first, b, c")
    assert policy.is_static("first, b")  # one shufflable tag cannot move


def test_caption_dropout_rate() -> None:
    policy = CaptionPolicy(TrainConfig(caption_dropout=0.25))
    rng = random.Random(1)
    out = [policy.build("a, b", rng) for _ in range(2000)]
    assert 0.2 < out.count("") / len(out) < 0.3
    assert policy.variants("a, b") == ["a, b", ""]


def test_bucket_sampler_batches_share_a_bucket_and_cover_repeats(tmp_path: Path, trainer_helpers) -> None:
    items = trainer_helpers.draw_dataset(tmp_path, sizes=[(64, 64), (128, 64), (64, 64), (64, 128)])
    cfg = TrainConfig(resolution=64, repeats=3)
    images = prepare_images(items, cfg)
    assert len({im.bucket for im in images}) == 3
    sampler = BucketBatchSampler(images, batch_size=2, seed=5)
    epoch = [sampler.next_batch() for _ in range(len(sampler))]
    assert sorted(i for b in epoch for i in b) == sorted([0, 1, 2, 3] * 3)
    for batch in epoch:
        assert len({images[i].bucket for i in batch}) == 1
    # state_dict/load_state_dict resume mid-epoch exactly.
    state = sampler.state_dict()
    upcoming = [sampler.next_batch() for _ in range(5)]
    fresh = BucketBatchSampler(images, batch_size=2, seed=5)
    fresh.load_state_dict(state)
    assert [fresh.next_batch() for _ in range(5)] == upcoming


def test_text_embeddings_cached_only_when_static(make_spec) -> None:
    static, shuffled, te = RecordingReporter(), RecordingReporter(), RecordingReporter()
    train(make_spec(max_steps=1, caption_dropout=0.5), static)
    train(make_spec(max_steps=1, shuffle_tags=True), shuffled)
    train(make_spec(max_steps=1, train_text_encoder=True), te)
    # 4 distinct captions + the empty (dropped) caption.
    assert "text cache: 5 caption embeddings" in static.lines
    assert "text cache: 0 caption embeddings" in shuffled.lines
    assert not any(line.startswith("text cache") for line in te.lines)


def test_tag_frequency_counts_images() -> None:
    from training_app.trainer.config import DatasetItem

    items = [DatasetItem(Path("a.png"), "cat, red"), DatasetItem(Path("b.png"), "cat, cat, blue")]
    assert tag_frequency(items, "zzt") == {"cat": 2, "zzt": 2, "blue": 1, "red": 1}
