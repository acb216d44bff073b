// New-training form: presets fill the fields, estimates follow every change, errors show inline.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("train-form");
  if (!form) return;
  const data = JSON.parse(document.getElementById("train-data").textContent);
  const $ = (sel) => form.querySelector(sel);
  const fields = [...form.querySelectorAll("[data-key]")];
  const top = (name) => form.querySelector(`[data-top="${name}"]`);
  const headers = () => ({ "Content-Type": "application/json", "X-CSRFToken": lorasiteLive.csrfToken() });

  function readField(el) {
    const raw = el.value.trim();
    switch (el.dataset.type) {
      case "bool": return el.checked;
      case "lines": return el.value.split("\n").map((l) => l.trim()).filter(Boolean);
      case "int": return raw === "" ? ("nullable" in el.dataset ? null : raw) : Number.isInteger(Number(raw)) ? Number(raw) : raw;
      case "float": return raw === "" ? ("nullable" in el.dataset ? null : raw) : isNaN(Number(raw)) ? raw : Number(raw);
      default: return raw;
    }
  }
  function writeField(el, value) {
    if (el.dataset.type === "bool") el.checked = Boolean(value);
    else if (el.dataset.type === "lines") el.value = (value || []).join("\n");
    else el.value = value === null || value === undefined ? "" : value;
  }
  const readConfig = () => Object.fromEntries(fields.map((el) => [el.dataset.key, readField(el)]));
  const field = (key) => form.querySelector(`[data-key="${key}"]`);

  function applyPreset(name) {
    const preset = data.presets[name];
    form.querySelector("[data-preset-help]").textContent = preset ? preset.description : "Your own settings.";
    if (!preset) return;
    for (const [key, value] of Object.entries(preset.config)) if (field(key)) writeField(field(key), value);
  }

  let previousTrigger = "";
  let resolutionTouched = Boolean(data.initial && data.initial.config);
  field("resolution").addEventListener("input", () => { resolutionTouched = true; });
  async function datasetChanged() {
    const id = top("dataset_id").value;
    const dataset = data.datasets.find((d) => d.id === id);
    const trigger = field("trigger_word");
    if (dataset && (trigger.value === "" || trigger.value === previousTrigger)) trigger.value = dataset.trigger_word;
    previousTrigger = dataset ? dataset.trigger_word : "";
    // The dataset's resolution, unless the person typed their own.
    const resolution = field("resolution");
    if (dataset && (!resolutionTouched || resolution.value === "")) resolution.value = dataset.default_resolution;
    suggestResolutions();
    const out = form.querySelector("[data-dataset-stats]");
    if (!id) return;
    const response = await fetch(`/api/datasets/${id}/stats`, { credentials: "same-origin" });
    if (!response.ok) { out.textContent = ""; return; }
    const stats = await response.json();
    const warnings = [];
    const uncaptioned = stats.total_images - stats.images_with_captions;
    if (uncaptioned) warnings.push(`${uncaptioned} without a caption`);
    if (stats.review_states.pending) warnings.push(`${stats.review_states.pending} not reviewed yet`);
    if (stats.review_states.rejected) warnings.push(`${stats.review_states.rejected} rejected (left out)`);
    out.textContent = `${stats.total_images} images` + (warnings.length ? ` — ${warnings.join(", ")}` : "");
    out.classList.toggle("warn", warnings.length > 0);
    estimateSoon();
  }

  // Suggestions: the dataset's own resolution first, then the sizes the base model's family trains at.
  function suggestResolutions() {
    const list = form.querySelector("[data-resolution-choices]");
    if (!list) return;
    const dataset = data.datasets.find((d) => d.id === top("dataset_id").value);
    const model = data.base_models.find((m) => m.name === top("base_model").value);
    const sizes = [dataset ? dataset.default_resolution : null, ...((model && data.family_resolutions[model.family]) || [512, 768, 1024])];
    list.replaceChildren(...[...new Set(sizes.filter(Boolean))].map((size) => {
      const option = document.createElement("option");
      option.value = size;
      if (dataset && size === dataset.default_resolution) option.label = `${size} (this dataset)`;
      return option;
    }));
  }
  top("base_model").addEventListener("change", suggestResolutions);

  let timer = null;
  const estimateSoon = () => { clearTimeout(timer); timer = setTimeout(estimate, 300); };
  async function estimate() {
    const config = readConfig();
    const body = { dataset_id: top("dataset_id").value || null, base_model: top("base_model").value || null,
                   backend: top("backend").value, config, gpu: form.querySelector("[data-gpu]").value };
    const response = await fetch("/api/estimate", { method: "POST", headers: headers(), body: JSON.stringify(body),
                                                    credentials: "same-origin" });
    const out = (key) => form.querySelector(`[data-est="${key}"]`);
    const notes = form.querySelector("[data-est-notes]");
    notes.innerHTML = "";
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      for (const key of ["total_steps", "estimated_seconds", "backend_estimated_seconds", "peak_vram_gb", "file_size_mb", "estimated_cost_usd", "formula"]) out(key).textContent = "—";
      const li = document.createElement("li");
      li.textContent = typeof problem.detail === "string" ? problem.detail : "Fix the highlighted settings to see an estimate.";
      notes.append(li);
      return;
    }
    const est = await response.json();
    out("total_steps").textContent = est.total_steps;
    out("formula").textContent = config.max_steps
      ? "max_steps is set"
      : `${est.image_count} images × repeats → ${est.samples_per_epoch} per epoch × ${config.epochs} epochs ÷ batch ${config.batch_size}` +
        (config.gradient_accumulation_steps > 1 ? ` ÷ accumulation ${config.gradient_accumulation_steps}` : "");
    out("estimated_seconds").textContent = lorasiteLive.formatDuration(est.estimated_seconds);
    out("backend_estimated_seconds").textContent = lorasiteLive.formatDuration(est.backend_estimated_seconds);
    out("peak_vram_gb").textContent = `${est.peak_vram_gb} GB` + (est.fits_on_gpu ? "" : " (too much)");
    out("file_size_mb").textContent = est.file_size_mb === null ? "—" : `${est.file_size_mb} MB (${est.network})`;
    out("estimated_cost_usd").textContent = est.estimated_cost_usd === null ? "free (own GPUs)" : `$${est.estimated_cost_usd.toFixed(2)}`;
    for (const note of est.notes) { const li = document.createElement("li"); li.textContent = note; notes.append(li); }
  }

  function showErrors(detail, errors) {
    form.querySelectorAll("[data-error-for]").forEach((el) => { el.hidden = true; el.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    const box = document.querySelector("[data-form-error]");
    box.hidden = !detail;
    box.textContent = detail || "";
    let first = null;
    for (const error of errors || []) {
      const key = error.loc[error.loc.length - 1];
      const slot = form.querySelector(`[data-error-for="${key}"]`);
      if (slot) {
        slot.hidden = false;
        slot.textContent = error.msg;
        const input = field(key);
        if (input) { input.setAttribute("aria-invalid", "true"); first = first || input; }
        const details = slot.closest("details");
        if (details) details.open = true;
      }
    }
    (first || box).focus?.();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const payload = { dataset_id: top("dataset_id").value, base_model: top("base_model").value,
                      backend: top("backend").value, preset: top("preset").value || null,
                      name: top("name").value || null, config: readConfig() };
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const response = await fetch("/api/jobs", { method: "POST", headers: headers(), body: JSON.stringify(payload),
                                                  credentials: "same-origin" });
      const body = await response.json().catch(() => ({}));
      if (response.status === 201) { window.location.href = form.dataset.jobUrl + body.id + "/"; return; }
      const detail = typeof body.detail === "string" ? body.detail : "Some settings are not valid.";
      const errors = body.errors || (Array.isArray(body.detail) ? body.detail.map((e) => ({ loc: e.loc, msg: e.msg })) : []);
      showErrors(detail, errors);
    } finally {
      button.disabled = false;
    }
  });

  top("preset").addEventListener("change", () => { applyPreset(top("preset").value); estimateSoon(); });
  top("dataset_id").addEventListener("change", datasetChanged);
  form.addEventListener("input", estimateSoon);
  form.addEventListener("change", estimateSoon);

  const initial = data.initial || {};
  for (const key of ["dataset_id", "base_model", "backend", "preset", "name"]) if (initial[key] && top(key)) top(key).value = initial[key];
  if (initial.config) for (const [key, value] of Object.entries(initial.config)) { if (field(key)) writeField(field(key), value); }
  else applyPreset(top("preset").value);
  if (data.errors && data.errors.length) showErrors(document.querySelector("[data-form-error]").textContent, data.errors);
  datasetChanged();
  estimateSoon();
});
