// Review mode: one image large with its caption; keys approve (A), reject (R), next (J/→),
// previous (K/←) and edit the caption (E). Images come from the API, a page at a time.
"use strict";

(function () {
  const root = document.querySelector("[data-review-page]");
  if (!root) return;
  const config = JSON.parse(root.dataset.config);
  const img = root.querySelector("[data-review-image]");
  const caption = root.querySelector("[data-review-caption]");
  const status = root.querySelector("[data-review-status]");
  const els = {
    position: root.querySelector("[data-review-position]"),
    state: root.querySelector("[data-review-state]"),
    name: root.querySelector("[data-review-name]"),
    size: root.querySelector("[data-review-size]"),
    empty: root.querySelector("[data-review-empty]"),
    tokens: root.querySelector("[data-review-tokens]"),
  };
  let images = [];
  let index = 0;
  let savedCaption = "";

  caption.readOnly = !config.canWrite;
  root.querySelectorAll("[data-action=approve], [data-action=reject]").forEach((b) => { b.hidden = !config.canWrite; });

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function send(method, url, body) {
    const response = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || `HTTP ${response.status}`);
    return data;
  }

  async function load() {
    const query = new URLSearchParams({ page_size: "200", review_state: config.state });
    if (config.run) query.set("caption_run", config.run);  // walk just the images one caption run captioned
    let page = 1, pages = 1;
    images = [];
    // Review works on a fixed list: approving an image must not shift the ones after it.
    do {
      query.set("page", String(page));
      const data = await send("GET", `/api/datasets/${config.dataset}/images?${query}`);
      images.push(...data.results);
      pages = data.pages;
      page += 1;
    } while (page <= pages && images.length < 5000);
    show(0);
  }

  function show(i) {
    if (!images.length) {
      img.hidden = true;
      els.empty.hidden = false;
      els.position.textContent = "0 / 0";
      caption.value = "";
      caption.disabled = true;
      return;
    }
    index = Math.max(0, Math.min(images.length - 1, i));
    const image = images[index];
    img.src = image.file_url;
    img.alt = image.name || "image under review";
    img.hidden = false;
    els.position.textContent = `${index + 1} / ${images.length}`;
    els.state.textContent = image.review_state;
    els.state.className = `state state-${image.review_state}`;
    els.name.textContent = image.name;
    els.size.textContent = `${image.width}×${image.height} ${image.format}` + (image.near_duplicate_of ? " · near-duplicate" : "");
    caption.value = image.caption;
    savedCaption = image.caption;
    status.textContent = "";
    showTokens(image);
    // Warm the next image so J feels instant.
    if (images[index + 1]) { const next = new Image(); next.src = images[index + 1].file_url; }
  }

  function showTokens(image) {
    const over = image.caption_tokens > config.tokenLimit;
    els.tokens.textContent = `${image.caption_tokens_exact ? "" : "≥"}${image.caption_tokens} CLIP tokens` +
      (over ? ` — over ${config.tokenLimit}: SD 1.5 and SDXL ignore the rest` : "");
    els.tokens.className = `small ${over ? "warn" : "muted"}`;
  }

  async function saveCaption() {
    if (!images.length || caption.value === savedCaption || !config.canWrite) return;
    const image = images[index];
    status.textContent = "saving…";
    try {
      const updated = await send("PATCH", `/api/images/${image.id}`, { caption: caption.value });
      Object.assign(image, updated);
      savedCaption = updated.caption;
      showTokens(image);
      status.textContent = "caption saved";
    } catch (error) {
      status.textContent = error.message;
    }
  }

  async function review(state) {
    if (!images.length || !config.canWrite) return;
    await saveCaption();
    const image = images[index];
    try {
      const updated = await send("PATCH", `/api/images/${image.id}`, { review_state: state });
      Object.assign(image, updated);
      status.textContent = `${state}`;
      if (index < images.length - 1) show(index + 1);
      else { show(index); status.textContent = `${state} · that was the last one`; }
    } catch (error) {
      status.textContent = error.message;
    }
  }

  async function move(step) {
    await saveCaption();
    show(index + step);
  }

  const actions = { approve: () => review("approved"), reject: () => review("rejected"),
                    next: () => move(1), prev: () => move(-1) };
  root.querySelectorAll("[data-action]").forEach((button) => {
    button.addEventListener("click", () => actions[button.dataset.action]());
  });

  caption.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { event.preventDefault(); caption.blur(); }
    else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); saveCaption(); caption.blur(); }
  });
  caption.addEventListener("blur", saveCaption);

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target.matches("textarea, input, select") || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    const handler = { a: actions.approve, r: actions.reject, j: actions.next, arrowright: actions.next,
                      k: actions.prev, arrowleft: actions.prev }[key];
    if (handler) { event.preventDefault(); handler(); }
    else if (key === "e" && config.canWrite && images.length) { event.preventDefault(); caption.focus(); caption.select(); }
  });

  load().catch((error) => { status.textContent = error.message; });
})();
