"""Dataset-wide caption tools: each change a new version, a whole run undone in one call."""

from __future__ import annotations

import pytest

from datasets_app.captions import ToolRequest, apply_tool, set_caption
from datasets_app.models import Caption, CaptionSource, DatasetImage
from lorasite.errors import InvalidInput
from tests.datasets.test_images_api import make_images


@pytest.mark.parametrize("request_,before,after", [
    (ToolRequest("add_trigger"), "a dog", "ohwx, a dog"),
    (ToolRequest("add_trigger"), "ohwx, a dog", "ohwx, a dog"),
    (ToolRequest("add_trigger"), "", "ohwx"),
    (ToolRequest("replace", find="dog", replace="cat"), "a dog and a dog", "a cat and a cat"),
    (ToolRequest("clean_whitespace"), "  a dog ,  running,,  fast  ", "a dog, running, fast"),
    (ToolRequest("truncate", max_length=14), "a dog, running fast", "a dog, running"),
    (ToolRequest("append_tags", tags="masterpiece, best quality"), "a dog", "a dog, masterpiece, best quality"),
    (ToolRequest("append_tags", tags="best quality"), "a dog, best quality", "a dog, best quality"),
    (ToolRequest("replace", find=r"\bdogs?\b", replace="cat", regex=True), "a dog, two dogs", "a cat, two cat"),
    (ToolRequest("strip_boilerplate"), "The image shows a dog", "a dog"),
    (ToolRequest("dedupe_tags"), "dog, cat, dog", "dog, cat"),
    (ToolRequest("underscores"), "long_hair", "long hair"),
    (ToolRequest("prefix", text="photo"), "a dog", "photo, a dog"),
    (ToolRequest("suffix", text="35mm"), "a dog", "a dog, 35mm"),
    (ToolRequest("truncate_words", max_words=2), "a big dog", "a big"),
])
def test_each_caption_tool_does_what_its_name_says(request_, before, after):
    assert apply_tool(request_, before, "ohwx") == after


def test_tool_with_missing_parameters_is_refused_before_anything_changes(dataset, member):
    make_images(dataset, 2)
    with pytest.raises(InvalidInput):
        apply_tool(ToolRequest("replace"), "x", "ohwx")


def test_a_bad_regex_in_the_tool_is_a_422_and_changes_nothing(dataset, member, api_for):
    image = make_images(dataset, 1)[0]
    set_caption(image, "a dog", member)
    response = api_for(member).post(f"/api/datasets/{dataset.uuid}/captions/tools",
                                    {"tool": "replace", "find": "(", "regex": True})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["find"]
    assert DatasetImage.objects.get(pk=image.pk).caption == "a dog"


def test_tool_run_then_undo_restores_every_caption(dataset, member, api_for):
    images = make_images(dataset, 3)
    for image, text in zip(images, ["a dog", "a cat", ""], strict=True):
        if text:
            set_caption(image, text, member)
    client = api_for(member)
    run = client.post(f"/api/datasets/{dataset.uuid}/captions/tools", {"tool": "add_trigger"}).json()
    assert run["changed"] == 3
    assert sorted(DatasetImage.objects.values_list("caption", flat=True)) == ["ohwx", "ohwx, a cat", "ohwx, a dog"]
    assert Caption.objects.filter(source=CaptionSource.TOOL, is_current=True).count() == 3
    # Edited by hand after the run: the undo leaves that one alone and says so.
    set_caption(DatasetImage.objects.get(pk=images[1].pk), "a tabby cat", member)
    undo = client.post(f"/api/datasets/{dataset.uuid}/captions/undo", {"batch": run["batch"]}).json()
    assert undo == {"restored": 2, "skipped_edited_since": 1}
    assert sorted(DatasetImage.objects.values_list("caption", flat=True)) == ["", "a dog", "a tabby cat"]
    assert Caption.objects.filter(image=images[0]).count() == 3  # the history only grows


def test_tool_can_target_one_review_state(dataset, member, api_for):
    pending = make_images(dataset, 1)[0]
    approved = make_images(dataset, 1, "approved")[0]
    api_for(member).post(f"/api/datasets/{dataset.uuid}/captions/tools",
                         {"tool": "append_tags", "tags": "photo", "review_state": "approved"})
    assert DatasetImage.objects.get(pk=approved.pk).caption == "photo"
    assert DatasetImage.objects.get(pk=pending.pk).caption == ""


def test_viewer_cannot_run_caption_tools(dataset, viewer, api_for):
    make_images(dataset, 1)
    client = api_for(viewer)
    assert client.post(f"/api/datasets/{dataset.uuid}/captions/tools", {"tool": "add_trigger"}).status_code == 403
    assert client.post(f"/api/datasets/{dataset.uuid}/captions/undo",
                       {"batch": "00000000-0000-0000-0000-000000000000"}).status_code == 403


def test_outsider_gets_404_for_caption_tools(dataset, outsider, api_for):
    make_images(dataset, 1)
    client = api_for(outsider)
    assert client.post(f"/api/datasets/{dataset.uuid}/captions/tools", {"tool": "add_trigger"}).status_code == 404
    assert client.post(f"/api/datasets/{dataset.uuid}/captions/undo",
                       {"batch": "00000000-0000-0000-0000-000000000000"}).status_code == 404
    assert not Caption.objects.exists()
