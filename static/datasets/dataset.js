// Dataset page: drag-and-drop upload with per-file progress, inline caption editing, review buttons,
// caption tools with undo, and the training-crop preview. Talks to /api/ with the session + CSRF token.
"use strict";

(function () {
  const root = document.querySelector("[data-dataset-page]");
  if (!root) return;
  const config = JSON.parse(root.dataset.config);
  const api = `/api/datasets/${config.dataset}`;

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function send(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || `HTTP ${response.status}`);
    return data;
  }

  // --- upload -------------------------------------------------------------------------------------
  const drop = root.querySelector("[data-dropzone]");
  const picker = root.querySelector("[data-file-input]");
  const progressList = root.querySelector("[data-progress]");
  const summary = root.querySelector("[data-summary]");

  // A caption file must travel in the same request as its image, so the server can pair them.
  function groupFiles(files) {
    const stem = (name) => name.replace(/\.[^.]*$/, "");
    const captions = new Map();
    const groups = [];
    for (const file of files) {
      if (/\.txt$/i.test(file.name)) captions.set(stem(file.name), file);
    }
    for (const file of files) {
      if (/\.txt$/i.test(file.name)) continue;
      const group = [file];
      const caption = captions.get(stem(file.name));
      if (caption) { group.push(caption); captions.delete(stem(file.name)); }
      groups.push(group);
    }
    for (const orphan of captions.values()) groups.push([orphan]);
    return groups;
  }

  function uploadGroup(group, row) {
    return new Promise((resolve) => {
      const form = new FormData();
      for (const file of group) form.append("files", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `${api}/images`);
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      const bar = row.querySelector("progress");
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) bar.value = event.loaded / event.total;
      };
      xhr.onload = () => {
        let data = {};
        try { data = JSON.parse(xhr.responseText); } catch (e) { data = {}; }
        if (xhr.status !== 200) {
          const name = group[0].name;
          data = { added: [], duplicates: [], rejected: [{ name, reason: data.detail || `upload failed (HTTP ${xhr.status})` }] };
        }
        bar.value = 1;
        const state = row.querySelector("[data-row-state]");
        const bad = data.rejected.length, dup = data.duplicates.length, ok = data.added.length;
        state.textContent = bad ? `${ok} added, ${bad} rejected` : dup && !ok ? "duplicate" : `${ok} added`;
        row.classList.add(bad ? "has-errors" : "done");
        resolve(data);
      };
      xhr.onerror = () => {
        row.classList.add("has-errors");
        row.querySelector("[data-row-state]").textContent = "network error";
        resolve({ added: [], duplicates: [], rejected: [{ name: group[0].name, reason: "network error" }] });
      };
      xhr.send(form);
    });
  }

  async function uploadAll(files) {
    if (!files.length) return;
    const groups = groupFiles(Array.from(files));
    progressList.replaceChildren();
    summary.hidden = true;
    const rows = groups.map((group) => {
      const li = document.createElement("li");
      li.innerHTML = '<span class="name"></span><progress max="1" value="0"></progress><span class="small muted" data-row-state>waiting</span>';
      li.querySelector(".name").textContent = group.map((f) => f.name).join(" + ");
      progressList.append(li);
      return li;
    });
    const totals = { added: [], duplicates: [], rejected: [] };
    // A few requests at once: enough to keep the server busy, few enough to show real progress.
    let next = 0;
    async function worker() {
      while (next < groups.length) {
        const index = next++;
        rows[index].querySelector("[data-row-state]").textContent = "uploading";
        const result = await uploadGroup(groups[index], rows[index]);
        for (const key of Object.keys(totals)) totals[key].push(...result[key]);
      }
    }
    await Promise.all([worker(), worker(), worker()]);
    showSummary(totals);
    if (totals.added.length) refreshPanels({ grid: true, delay: 0 });
  }

  function showSummary(totals) {
    summary.replaceChildren();
    const head = document.createElement("p");
    head.innerHTML = `<strong data-summary-added>${totals.added.length} added</strong> · <span data-summary-duplicates>${totals.duplicates.length} duplicates</span> · <span data-summary-rejected>${totals.rejected.length} rejected</span>`;
    summary.append(head);
    if (totals.rejected.length) {
      const list = document.createElement("ul");
      list.className = "ds-rejected";
      for (const item of totals.rejected) {
        const li = document.createElement("li");
        const name = document.createElement("strong");
        name.textContent = item.name;
        li.append(name, document.createTextNode(`: ${item.reason}`));
        list.append(li);
      }
      summary.append(list);
    }
    if (totals.duplicates.length) {
      const p = document.createElement("p");
      p.className = "small muted";
      p.textContent = "Duplicates: " + totals.duplicates.map((d) => d.name).join(", ") + " (already in this dataset, not stored again).";
      summary.append(p);
    }
    if (totals.added.length) {
      const reload = document.createElement("a");
      reload.href = window.location.pathname + window.location.search;
      reload.textContent = "Show the new images";
      reload.dataset.reload = "";
      summary.append(reload);
    }
    summary.hidden = false;
  }

  if (drop) {
    ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      uploadAll(event.dataTransfer.files);
    });
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); picker.click(); }
    });
    picker.addEventListener("change", () => { uploadAll(picker.files); picker.value = ""; });
  }

  // --- captions and review in the grid --------------------------------------------------------------
  async function saveCaption(card, textarea) {
    const status = card.querySelector("[data-save-state]");
    if (textarea.value === textarea.dataset.saved) return;
    status.textContent = "saving…";
    try {
      const image = await send("PATCH", `/api/images/${card.dataset.image}`, { caption: textarea.value });
      textarea.dataset.saved = image.caption;
      status.textContent = "saved";
      refreshPanels();
      if (window.lorasiteCaptions) window.lorasiteCaptions.showTokens(card, image.caption_tokens, image.caption_tokens_exact);
    } catch (error) {
      status.textContent = error.message;
      status.classList.add("error");
    }
  }

  function bindCard(card) {
    if (card.dataset.bound) return;
    card.dataset.bound = "1";
    const textarea = card.querySelector("[data-caption]");
    textarea.dataset.saved = textarea.value;
    if (!textarea.readOnly) {
      textarea.addEventListener("blur", () => saveCaption(card, textarea));
      textarea.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          saveCaption(card, textarea);
        }
      });
    }
    for (const button of card.querySelectorAll("[data-review]")) {
      button.addEventListener("click", async () => {
        try {
          const image = await send("PATCH", `/api/images/${card.dataset.image}`, { review_state: button.dataset.review });
          card.dataset.state = image.review_state;
          const label = card.querySelector("[data-state-label]");
          label.textContent = image.review_state;
          label.className = `state state-${image.review_state}`;
          refreshPanels();
        } catch (error) {
          card.querySelector("[data-save-state]").textContent = error.message;
        }
      });
    }
  }
  root.querySelectorAll("[data-image]").forEach(bindCard);

  // --- live panels ------------------------------------------------------------------------------------
  // The filter counts, the Stats and (after uploads and caption tools) the grid are re-read from the
  // server's own rendering of this page, so they never drift from what a reload would show. A grid
  // being edited (a focused or unsaved caption) is left alone.
  let refreshTimer = null;
  let refreshGrid = false;
  function refreshPanels(options = {}) {
    refreshGrid = refreshGrid || Boolean(options.grid);
    window.clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(loadPanels, options.delay === undefined ? 250 : options.delay);
  }
  function gridBusy() {
    return Array.from(root.querySelectorAll("[data-caption]")).some(
      (t) => t === document.activeElement || t.value !== t.dataset.saved);
  }
  async function loadPanels() {
    const names = ["filter", "stats"];
    if (refreshGrid && !gridBusy()) names.push("grid");
    refreshGrid = false;
    let html;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      html = await response.text();
    } catch (error) {
      return;
    }
    const fresh = new DOMParser().parseFromString(html, "text/html");
    for (const name of names) {
      const now = root.querySelector(`[data-live-panel="${name}"]`);
      const next = fresh.querySelector(`[data-live-panel="${name}"]`);
      if (now && next) now.replaceWith(document.importNode(next, true));
    }
    root.querySelectorAll("[data-image]").forEach(bindCard);
    if (names.includes("grid")) {
      const reload = summary && summary.querySelector("[data-reload]");
      if (reload) reload.hidden = true;
      if (cropToggle && cropToggle.checked) showCrops();
    }
    root.dataset.panelsRefreshed = String(Number(root.dataset.panelsRefreshed || 0) + 1);
  }
  window.lorasiteDataset = { refresh: refreshPanels };

  // --- caption tools ---------------------------------------------------------------------------------
  const tools = root.querySelector("[data-tools-form]");
  if (tools) {
    const select = tools.querySelector("[data-tool]");
    const result = root.querySelector("[data-tools-result]");
    const showFields = () => tools.querySelectorAll("[data-tool-field]").forEach((el) => {
      el.hidden = !el.dataset.toolField.split(" ").includes(select.value);
    });
    select.addEventListener("change", showFields);
    showFields();
    tools.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = Object.fromEntries(new FormData(tools).entries());
      data.max_length = Number(data.max_length || 0);
      data.max_words = Number(data.max_words || 0);
      data.max_tokens = Number(data.max_tokens || 0);
      data.regex = data.regex === "true";
      if (!data.review_state) delete data.review_state;
      try {
        const run = await send("POST", `${api}/captions/tools`, data);
        result.textContent = `${run.changed} captions changed. `;
        if (run.changed) refreshPanels({ grid: true, delay: 0 });
        if (run.batch) {
          const undo = document.createElement("button");
          undo.type = "button";
          undo.className = "link";
          undo.textContent = "Undo";
          undo.addEventListener("click", async () => {
            const back = await send("POST", `${api}/captions/undo`, { batch: run.batch });
            result.textContent = `${back.restored} captions restored.`;
            refreshPanels({ grid: true, delay: 0 });
          });
          result.append(undo);
        }
      } catch (error) {
        result.textContent = error.message;
      }
    });
  }

  // --- training crop preview --------------------------------------------------------------------------
  const cropToggle = root.querySelector("[data-crop-toggle]");
  async function showCrops() {
    const boxes = root.querySelectorAll(".ds-crop-box");
    if (!cropToggle.checked) { boxes.forEach((b) => { b.hidden = true; }); return; }
    const params = new URLSearchParams(window.location.search);
    const query = new URLSearchParams({
      page: params.get("page") || "1", page_size: "48", review_state: config.state,
      crop_resolution: root.querySelector("[data-crop-resolution]").value,
      bucketing: root.querySelector("[data-crop-mode]").value,
    });
    const page = await send("GET", `${api}/images?${query}`);
    for (const image of page.results) {
      const box = root.querySelector(`[data-image="${image.id}"] .ds-crop-box`);
      if (!box || !image.crop) continue;
      const c = image.crop;
      Object.assign(box.style, {
        left: `${c.left * 100}%`, top: `${c.top * 100}%`,
        width: `${(c.right - c.left) * 100}%`, height: `${(c.bottom - c.top) * 100}%`,
      });
      box.title = `${c.target_width}×${c.target_height}, keeps ${Math.round(c.kept_fraction * 100)}%`;
      box.dataset.label = `${c.target_width}×${c.target_height}`;
      box.hidden = false;
    }
  }
  if (cropToggle) {
    root.querySelector("[data-crop-form]").addEventListener("change", showCrops);
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
})();
