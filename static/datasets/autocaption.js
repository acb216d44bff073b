// Dataset page, auto-captioning: pick a captioner, prompt, mode and clean-up steps, start a run,
// watch it on the dataset websocket (progress bar, captions changing in the grid), then filter,
// review or undo what it did. Also keeps each card's CLIP token count up to date.
"use strict";

(function () {
  const root = document.querySelector("[data-dataset-page]");
  if (!root) return;
  const config = JSON.parse(root.dataset.config);
  const panel = document.querySelector("[data-autocaption]");
  const limit = config.tokenLimit;
  const ACTIVE = ["queued", "running", "cancelling"];
  // The order the clean-up steps run in, whatever order the boxes are ticked.
  const STEP_ORDER = ["strip_boilerplate", "underscores", "clean", "dedupe_tags", "trigger"];

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
    if (!response.ok) {
      const detail = Array.isArray(data.detail) ? data.detail.map((d) => `${d.loc.slice(2).join(".")}: ${d.msg}`).join("; ") : data.detail;
      throw new Error(detail || `HTTP ${response.status}`);
    }
    return data;
  }

  function showTokens(card, count, exact) {
    const badge = card.querySelector("[data-tokens]");
    if (!badge) return;
    const over = count > limit;
    badge.dataset.count = String(count);
    badge.textContent = `${exact ? "" : "≥"}${count} tok${over ? ` · over ${limit}` : ""}`;
    badge.classList.toggle("warn", over);
  }
  window.lorasiteCaptions = { showTokens };

  if (!panel) return;
  const form = panel.querySelector("[data-autocaption-form]");
  const runBox = panel.querySelector("[data-ac-run]");
  const els = {
    status: panel.querySelector("[data-ac-status]"), counts: panel.querySelector("[data-ac-counts]"),
    bar: panel.querySelector("[data-ac-bar]"), error: panel.querySelector("[data-ac-error]"),
    errors: panel.querySelector("[data-ac-errors]"), cancel: panel.querySelector("[data-ac-cancel]"),
    filter: panel.querySelector("[data-ac-filter]"), review: panel.querySelector("[data-ac-review]"),
    undo: panel.querySelector("[data-ac-undo]"), result: panel.querySelector("[data-ac-result]"),
  };
  let current = null; // the run shown in the panel

  function showRun(run) {
    current = run;
    runBox.hidden = false;
    const finished = (run.done || 0) + (run.failed || 0);
    const percent = run.total ? Math.round((1000 * finished) / run.total) / 10 : 100;
    els.status.textContent = run.status;
    els.status.className = `state state-${run.status}`;
    els.counts.textContent = `${finished} / ${run.total} images${run.failed ? ` · ${run.failed} failed` : ""}`;
    els.bar.querySelector("span").style.width = `${percent}%`;
    els.bar.setAttribute("aria-valuenow", String(percent));
    els.error.textContent = run.error || "";
    if (run.errors) {
      els.errors.replaceChildren(...run.errors.map((e) => {
        const li = document.createElement("li");
        li.textContent = `${e.name || e.image}: ${e.error}`;
        return li;
      }));
    }
    const active = ACTIVE.includes(run.status);
    els.cancel.hidden = !active || run.status === "cancelling";
    if (form) form.querySelector("[data-ac-start]").disabled = active;
    const done = !active && run.done > 0;
    els.filter.hidden = els.review.hidden = !done;
    els.undo.hidden = !done || Boolean(run.undone_at);
    els.filter.href = `?run=${run.id}`;
    els.review.href = `${config.reviewUrl}?run=${run.id}`;
  }

  function applyCaptions(captions) {
    for (const item of captions) {
      const card = root.querySelector(`[data-image="${item.image}"]`);
      if (!card) continue;
      const textarea = card.querySelector("[data-caption]");
      // Never overwrite what someone is typing; their save makes a newer version anyway.
      if (document.activeElement !== textarea) {
        textarea.value = item.caption;
        textarea.dataset.saved = item.caption;
      }
      card.classList.add("ds-recaptioned");
      showTokens(card, item.tokens, item.tokens_exact);
    }
  }

  function onMessage(msg) {
    if (msg.type === "snapshot") {
      if (msg.caption_run) showRun(msg.caption_run);
    } else if (msg.type === "caption_run") {
      if (!current || current.id === msg.id || ACTIVE.includes(msg.status)) showRun(msg);
    } else if (msg.type === "caption_progress") {
      if (current && current.id === msg.run) {
        showRun({ ...current, done: msg.done, failed: msg.failed, total: msg.total,
                  errors: (current.errors || []).concat(msg.errors.map((e) => ({ ...e, name: e.image }))) });
      }
      applyCaptions(msg.captions);
      if (window.lorasiteDataset) window.lorasiteDataset.refresh();
    }
  }
  window.lorasiteLive.connect(`/ws/datasets/${config.dataset}/`, { onMessage });
  if (config.latestRun) showRun(config.latestRun);

  if (form) {
    const provider = form.querySelector("[data-ac-provider]");
    const prompt = form.querySelector("[data-ac-prompt]");
    const availability = form.querySelector("[data-ac-availability]");
    let checked = null;
    const fillPrompt = () => {
      prompt.value = provider.selectedOptions[0].dataset.prompt || "";
      const found = checked && checked.find((p) => p.id === provider.value);
      availability.textContent = found ? `${found.available ? "✓" : "✗"} ${found.availability}` : "";
      availability.className = `small ${found && !found.available ? "warn" : "muted"}`;
    };
    provider.addEventListener("change", fillPrompt);
    fillPrompt();
    send("GET", `/api/caption-providers?team=${encodeURIComponent(config.team)}`)
      .then((list) => { checked = list; fillPrompt(); })
      .catch(() => { availability.textContent = ""; });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const ticked = new Set([...form.querySelectorAll("[data-step]:checked")].map((box) => box.dataset.step));
      const steps = STEP_ORDER.filter((op) => ticked.has(op)).map((op) => ({ op }));
      const tags = form.querySelector("[data-ac-tags]").value.trim();
      if (tags) steps.push({ op: "append_tags", tags });
      if (ticked.has("truncate_tokens")) steps.push({ op: "truncate_tokens", max_tokens: limit });
      els.result.textContent = "";
      try {
        const run = await send("POST", `/api/datasets/${config.dataset}/caption`, {
          provider: provider.value, prompt: prompt.value === "" ? null : prompt.value,
          mode: form.querySelector("[data-ac-mode]").value, postprocess: steps,
        });
        els.errors.replaceChildren();
        showRun(run);
      } catch (error) {
        els.result.textContent = error.message;
      }
    });
  }

  els.cancel.addEventListener("click", async () => {
    if (!current) return;
    try { showRun(await send("POST", `/api/caption-runs/${current.id}/cancel`)); } catch (error) { els.result.textContent = error.message; }
  });
  els.undo.addEventListener("click", async () => {
    if (!current) return;
    try {
      const back = await send("POST", `/api/caption-runs/${current.id}/undo`);
      els.result.textContent = `${back.restored} captions restored${back.skipped_edited_since ? `, ${back.skipped_edited_since} edited since and left alone` : ""}.`;
      if (window.lorasiteDataset) window.lorasiteDataset.refresh({ grid: true, delay: 0 });
      else window.setTimeout(() => window.location.reload(), 800);
    } catch (error) {
      els.result.textContent = error.message;
    }
  });
})();
