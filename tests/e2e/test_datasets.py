"""A member builds a dataset in the browser: upload by file picker and drag-and-drop, caption inline,
review with the keyboard; an outsider's browser gets 404."""

from __future__ import annotations

import base64
import io
import zipfile

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings
from PIL import Image, ImageDraw

from datasets_app.models import Dataset, DatasetImage
from lorasite.accounts.models import Membership, Role, Team

PASSWORD = "browser-pass-123"


def make_png(i: int, size=(320, 200)) -> bytes:
    img = Image.new("RGB", size, [(30, 60, 160), (200, 60, 40), (40, 150, 80), (230, 190, 40), (120, 50, 150)][i % 5])
    draw = ImageDraw.Draw(img)
    draw.ellipse([40 + i * 13, 30, 160 + i * 13, 150], fill=(250, 250, 250))
    draw.rectangle([200 - i * 9, 90, 300 - i * 9, 190], fill=(20, 20, 20))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def cast():
    # The server is another process with production password hashers; the test settings use MD5.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]):
        User = get_user_model()
        member = User.objects.create_user("maya", password=PASSWORD)
    outsider = User.objects.create_user("otto")
    alpha = Team.objects.create(slug="alpha", name="Alpha")
    bravo = Team.objects.create(slug="bravo", name="Bravo")
    Membership.objects.create(team=alpha, user=member, role=Role.MEMBER)
    Membership.objects.create(team=bravo, user=outsider, role=Role.OWNER)
    return member, outsider


def session_cookie(user, url: str) -> dict:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.save()
    return {"name": "sessionid", "value": session.session_key, "url": url}


def drop_files(page, selector: str, files: dict[str, bytes]) -> None:
    """Dispatch a real drop event carrying File objects, as a file manager drag does."""
    payload = [{"name": n, "data": base64.b64encode(d).decode()} for n, d in files.items()]
    page.evaluate("""([selector, files]) => {
        const transfer = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], f.name));
        }
        const target = document.querySelector(selector);
        target.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        target.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", [selector, payload])


def test_member_uploads_captions_and_reviews_while_outsider_gets_404(browser, live_server_url, screenshot,
                                                                     tmp_path):
    _member, outsider = cast()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(live_server_url + "/accounts/login/")
    page.get_by_label("Username").fill("maya")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/teams/alpha/")
    page.get_by_role("link", name="Datasets").first.click()
    page.get_by_label("Name", exact=True).fill("Shapes")
    page.get_by_label("Trigger word").fill("ohwx")
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url("**/teams/alpha/datasets/*/")
    dataset = Dataset.objects.get(name="Shapes")

    # The file picker: two images, a caption beside one, and a text file pretending to be a PNG.
    for name, data in {"one.png": make_png(0), "one.txt": b"ohwx, a white circle",
                       "two.png": make_png(1), "fake.png": b"not an image at all"}.items():
        (tmp_path / name).write_bytes(data)
    page.locator("[data-file-input]").set_input_files([str(tmp_path / n) for n in
                                                       ("one.png", "one.txt", "two.png", "fake.png")])
    summary = page.locator("[data-summary]")
    summary.wait_for(state="visible", timeout=15_000)
    assert "2 added" in summary.inner_text() and "1 rejected" in summary.inner_text()
    assert "fake.png: not a PNG, JPEG, WebP, BMP, GIF or TIFF image" in summary.inner_text()

    # Drag-and-drop: a zip with captions, and a duplicate of an image already uploaded.
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i in (2, 3, 4):
            z.writestr(f"5_ohwx shape/s{i}.png", make_png(i))
            z.writestr(f"5_ohwx shape/s{i}.txt", f"ohwx, shape number {i}")
    drop_files(page, "[data-dropzone]", {"shapes.zip": archive.getvalue(), "again.png": make_png(0)})
    page.locator("[data-summary-added]", has_text="3 added").wait_for(timeout=15_000)
    assert "1 duplicates" in summary.inner_text()
    assert page.locator("[data-progress] li").count() == 2

    # The grid re-reads itself after the uploads: the five new cards appear without a reload, and
    # the "Show the new images" link goes away once they are there.
    page.locator(".ds-card").nth(4).wait_for(timeout=15_000)
    assert page.locator(".ds-card").count() == 5
    page.locator("[data-reload]").wait_for(state="hidden")

    # Inline caption edit: saved on blur, no reload.
    card = page.locator(".ds-card", has_text="two.png")
    card.locator("[data-caption]").fill("ohwx, a red square, studio light")
    card.locator("[data-caption]").press("Tab")
    card.locator("[data-save-state]", has_text="saved").wait_for()
    image = DatasetImage.objects.get(dataset=dataset, original_name="two.png")
    assert image.caption == "ohwx, a red square, studio light"
    page.locator("[data-crop-toggle]").check()
    page.locator(".ds-crop-box:not([hidden])").first.wait_for()
    screenshot(page, "datasets-page")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "datasets-page-dark")
    page.emulate_media(color_scheme="light")

    # Review mode with the keyboard.
    page.get_by_role("link", name="Review mode").click()
    page.locator("[data-review-position]", has_text="1 / 5").wait_for()
    page.locator("[data-review-image]").wait_for()
    first = page.locator("[data-review-name]").inner_text()
    page.keyboard.press("a")
    page.locator("[data-review-position]", has_text="2 / 5").wait_for()
    page.keyboard.press("k")
    page.locator("[data-review-position]", has_text="1 / 5").wait_for()
    page.keyboard.press("j")
    page.locator("[data-review-position]", has_text="2 / 5").wait_for()
    second = page.locator("[data-review-name]").inner_text()
    before = DatasetImage.objects.get(dataset=dataset, original_name=second).caption
    page.keyboard.press("e")
    page.keyboard.press("End")
    page.keyboard.type(", reviewed")
    page.keyboard.press("Escape")
    page.locator("[data-review-status]", has_text="caption saved").wait_for()
    page.keyboard.press("r")
    page.locator("[data-review-position]", has_text="3 / 5").wait_for()
    screenshot(page, "datasets-review")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "datasets-review-dark")
    states = dict(DatasetImage.objects.filter(dataset=dataset).values_list("original_name", "review_state"))
    assert states[first] == "approved" and states[second] == "rejected"
    assert DatasetImage.objects.get(dataset=dataset, original_name=second).caption == before + ", reviewed"
    context.close()

    # Another team's member: the same URLs answer 404.
    other = browser.new_context()
    other.add_cookies([session_cookie(outsider, live_server_url)])
    other_page = other.new_page()
    assert other_page.goto(f"{live_server_url}/teams/alpha/datasets/{dataset.uuid}/").status == 404
    assert other_page.goto(f"{live_server_url}/images/{image.uuid}/file").status == 404
    assert other_page.goto(f"{live_server_url}/api/datasets/{dataset.uuid}").status == 404
    other.close()
