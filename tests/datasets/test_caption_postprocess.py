"""Post-processing caption text: each pure function, and the ordered steps a run or a tool applies."""

from __future__ import annotations

import pytest

from datasets_app.captioning import postprocess as pp
from datasets_app.captioning import tokens
from lorasite.errors import InvalidInput


@pytest.mark.parametrize("before,after", [
    ("  a dog ,  running,,  fast  ", "a dog, running, fast"),
    ('"a red circle."', "a red circle."),
    (", a cat ; sleeping", "a cat; sleeping"),
    ("a cat..", "a cat."),
    ("wait...", "wait..."),
    ("a,b", "a, b"),
])
def test_clean_text_tidies_whitespace_and_stray_punctuation(before, after):
    assert pp.clean_text(before) == after


@pytest.mark.parametrize("before,after", [
    ("The image shows a red circle on a blue background", "a red circle on a blue background"),
    ("This is a picture of a dog", "a dog"),
    ("arafed man in a suit", "man in a suit"),
    ("araffe woman sitting", "woman sitting"),
    ("Sure! Here is a caption for the image: a cat on a sofa", "a cat on a sofa"),
    ("I'm not sure, but it looks like a bridge. A bridge at dusk", "A bridge at dusk"),
    ("In this image, a boy runs", "a boy runs"),
    ("a photo of the image shows", "a photo of the image shows"),  # only openings are removed
])
def test_strip_boilerplate_removes_openings_that_say_nothing(before, after):
    assert pp.strip_boilerplate(before) == after


@pytest.mark.parametrize("before,after", [
    ("a dog", "ohwx, a dog"),
    ("ohwx, a dog", "ohwx, a dog"),
    ("", "ohwx"),
    ("a photo of [trigger] dog", "a photo of ohwx dog"),
    ("[trigger], a dog, [trigger]", "ohwx, a dog"),
    ("ohwx dog, ohwx, running", "ohwx dog, running"),
    ("a photo of [trigger], ohwx style", "a photo of ohwx, style"),
    ("ohwxyz pattern", "ohwx, ohwxyz pattern"),  # a longer word is not the trigger
])
def test_place_trigger_puts_it_there_exactly_once(before, after):
    assert pp.place_trigger(before, "ohwx") == after


def test_trigger_first_moves_every_mention_to_one_at_the_start():
    assert pp.trigger_first("old words, ohwx, a shape", "ohwx") == "ohwx, old words, a shape"
    assert pp.trigger_first("ohwx", "ohwx") == "ohwx"


def test_place_trigger_without_a_trigger_word_is_refused():
    with pytest.raises(InvalidInput, match="no trigger word"):
        pp.place_trigger("a dog", "")


def test_prefix_and_suffix_are_added_once():
    assert pp.add_prefix("a dog", "photo") == "photo, a dog"
    assert pp.add_prefix("photo, a dog", "photo") == "photo, a dog"
    assert pp.add_suffix("a dog,", "film grain") == "a dog, film grain"
    assert pp.add_suffix("a dog, film grain", "film grain") == "a dog, film grain"
    assert pp.add_prefix("", "photo") == "photo"


def test_find_replace_plain_and_regex():
    assert pp.find_replace("a dog and a dog.", "dog", "cat") == "a cat and a cat."
    assert pp.find_replace("a (dog)", "(dog)", "cat") == "a cat"  # plain: no regex meaning
    assert pp.find_replace("3 dogs, 12 cats", r"\d+ ", "", regex=True) == "dogs, cats"
    assert pp.find_replace("red circle", r"(\w+) (\w+)", r"\2 \1", regex=True) == "circle red"


def test_a_bad_regex_is_refused_with_the_reason():
    with pytest.raises(InvalidInput, match="does not compile") as caught:
        pp.find_replace("x", "(", "", regex=True)
    assert caught.value.errors[0]["loc"] == ["find"]
    with pytest.raises(InvalidInput, match="not valid for that pattern"):
        pp.find_replace("x", "x", r"\9", regex=True)


def test_dedupe_tags_keeps_the_first_of_each_in_order():
    assert pp.dedupe_tags("1girl, solo, Solo, smile, 1girl,, smile") == "1girl, solo, smile"


def test_underscores_become_spaces_but_emoticons_stay():
    assert pp.underscores_to_spaces("long_hair, blue_eyes, ^_^") == "long hair, blue eyes, ^_^"


def test_truncate_words_cuts_at_a_word_boundary():
    assert pp.truncate_words("a red circle, on a blue background", 3) == "a red circle"
    assert pp.truncate_words("short", 3) == "short"


def test_truncate_tokens_keeps_whole_words_within_the_budget():
    text = "a red circle, on a blue background, " * 20
    cut = pp.truncate_tokens(text, 75, tokens.lower_bound)
    assert tokens.lower_bound(cut) <= 75
    assert tokens.lower_bound(" ".join(text.split()[:len(cut.split()) + 1])) > 75
    assert text.startswith(cut)


def test_truncate_chars_prefers_a_tag_boundary():
    assert pp.truncate_chars("a dog, running fast", 14) == "a dog, running"


def test_append_tags_adds_only_missing_ones():
    assert pp.append_tags("a dog", "masterpiece, best quality") == "a dog, masterpiece, best quality"
    assert pp.append_tags("a dog, best quality", "best quality") == "a dog, best quality"


def test_steps_apply_in_the_order_given():
    context = pp.Context(trigger="shp")
    raw = "The image shows  a red_circle ,on a blue background"
    steps = [pp.Step("strip_boilerplate"), pp.Step("underscores"), pp.Step("clean"), pp.Step("trigger"),
             pp.Step("append_tags", tags="flat colours")]
    assert pp.apply_steps(raw, steps, context) == "shp, a red circle, on a blue background, flat colours"
    # Order matters: the trigger first, then the boilerplate stripper sees "shp, The image shows…".
    assert pp.apply_steps("The image shows a cat", [pp.Step("trigger"), pp.Step("strip_boilerplate")],
                          context) == "shp, The image shows a cat"


def test_an_unknown_step_or_bad_parameter_is_refused_before_a_run():
    with pytest.raises(InvalidInput, match="Unknown post-processing step"):
        pp.check_steps([pp.Step("sparkle")], pp.Context())
    with pytest.raises(InvalidInput, match="words above zero"):
        pp.check_steps([pp.Step("truncate_words")], pp.Context())
