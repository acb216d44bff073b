// Job page: live status, phase, progress, loss/LR charts, log tail, samples and files from the job
// websocket; the buttons act in place (the forms still post and redirect without this script).
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("job");
  const initial = JSON.parse(document.getElementById("chart-data").textContent);
  const q = (sel) => document.querySelector(sel);
  const FINISHED = ["completed", "cancelled", "failed"];
  let steps = [], losses = [], lrs = [];
  let logScale = false;
  let status = initial.status;
  const lossEl = q("[data-loss-chart]"), lrEl = q("[data-lr-chart]");
  let lossPlot = null, lrPlot = null;

  // -- charts --------------------------------------------------------------------------------------
  function setPoints(points) {
    steps = points.map((p) => p[0]); losses = points.map((p) => p[1]); lrs = points.map((p) => p[2]);
  }
  function addPoints(points) {
    for (const [step, loss, lr] of points) {
      if (steps.length && step <= steps[steps.length - 1]) continue;
      steps.push(step); losses.push(loss); lrs.push(lr);
    }
  }
  function redraw() {
    // Exposed for people and tests: how many points the chart holds, up to which step.
    lossEl.dataset.points = steps.length;
    lossEl.dataset.lastStep = steps.length ? steps[steps.length - 1] : 0;
    if (!window.uPlot) return;
    if (!lossPlot) lossPlot = lorasiteCharts.lossChart(lossEl, { logScale });
    if (!lrPlot) {
      lrPlot = lorasiteCharts.lossChart(lrEl, { series: [{ label: "learning rate", stroke: "#e3a008", width: 2 }],
                                                yFormat: (v) => v.toExponential(1), height: 160 });
    }
    lossPlot.setData([steps, losses, lorasiteCharts.ema(losses)]);
    lrPlot.setData([steps, lrs]);
  }
  q("[data-log-scale]").addEventListener("change", (event) => {
    logScale = event.target.checked;
    if (lossPlot) { lossPlot.destroy(); lossPlot = null; }
    redraw();
  });

  // -- status line ---------------------------------------------------------------------------------
  function setEta(seconds) {
    // Only a running job has an ETA; until the reporter has measured enough steps it is estimating.
    q("[data-eta-box]").hidden = status !== "running";
    q("[data-eta]").textContent = seconds === null || seconds === undefined ? "estimating…"
      : lorasiteLive.formatDuration(seconds);
  }
  function setPhase(phase) {
    const el = q("[data-phase]");
    el.textContent = phase && phase.label ? phase.label : "";
    el.hidden = status !== "running" || !phase || !phase.name || phase.name === "training";
  }
  function setStatus(next, error, attempts) {
    status = next;
    const badge = q("[data-status]");
    badge.textContent = status;
    badge.className = `state state-${status}`;
    const queue = q("[data-queue]");
    if (queue && status !== "queued") queue.remove();
    const waiting = q("[data-waiting]");
    if (waiting && status !== "queued") waiting.remove();
    document.querySelectorAll("[data-when]").forEach((form) => {
      form.hidden = !form.dataset.when.split(" ").includes(status);
    });
    const err = q("[data-error]");
    err.hidden = !error;
    err.textContent = error || "";
    if (attempts !== undefined && attempts !== null) q("[data-attempts]").textContent = attempts;
    if (status !== "running") q("[data-phase]").hidden = true;
    q("[data-eta-box]").hidden = status !== "running";
  }
  function setProgress(msg) {
    q("[data-step]").textContent = msg.step;
    q("[data-total]").textContent = msg.total_steps;
    q("[data-loss]").textContent = msg.loss === null ? "—" : msg.loss.toFixed(4);
    q("[data-avg]").textContent = msg.avg_loss === null ? "—" : msg.avg_loss.toFixed(4);
    q("[data-lr]").textContent = msg.lr === null ? "—" : msg.lr.toExponential(2);
    setEta(msg.eta_seconds);
    q("[data-bar]").style.width = `${msg.percent}%`;
    q(".progress.big").setAttribute("aria-valuenow", msg.percent);
  }

  // -- samples, log, files -------------------------------------------------------------------------
  function addSample(sample) {
    const box = q("[data-samples]");
    const none = box.querySelector("[data-no-samples]");
    if (none) none.remove();
    if (box.querySelector(`img[src="${sample.url}"]`)) return;
    const figure = document.createElement("figure");
    figure.dataset.sampleStep = sample.step;
    const img = document.createElement("img");
    img.src = sample.url; img.alt = `Sample at step ${sample.step}: ${sample.prompt || ""}`;
    const caption = document.createElement("figcaption");
    caption.textContent = `step ${sample.step}` + (sample.prompt ? ` · ${sample.prompt}` : "");
    figure.append(img, caption);
    box.append(figure);
  }
  function appendLog(line) {
    const log = q("[data-log]");
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    log.textContent += line + "\n";
    const lines = log.textContent.split("\n");
    if (lines.length > 600) log.textContent = lines.slice(-500).join("\n");
    if (stick) log.scrollTop = log.scrollHeight;
  }
  async function refreshFiles() {
    // The server renders the list, so a live update reads exactly like a fresh load.
    const response = await fetch(root.dataset.filesUrl, { credentials: "same-origin" });
    if (response.ok) q("[data-files]").innerHTML = await response.text();
  }

  // -- buttons, in place ---------------------------------------------------------------------------
  const note = q("[data-action-message]");
  let awaiting = null, noteTimer = null;
  function say(text, kind = "", { fade = false } = {}) {
    if (!note) return;
    clearTimeout(noteTimer);
    note.textContent = text;
    note.hidden = !text;
    note.className = `action-message small ${kind}`;
    // An answered request is not news for long: the page itself shows the result.
    if (fade) noteTimer = setTimeout(() => say(""), 8000);
  }
  function settle(event, text) {
    if (!awaiting || awaiting !== event) return;
    awaiting = null;
    say(text, "done", { fade: true });
  }
  document.querySelectorAll("form[data-job-action]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        const response = await fetch(form.action, { method: "POST", body: new FormData(form),
                                                     headers: { Accept: "application/json" }, credentials: "same-origin" });
        const data = (response.headers.get("Content-Type") || "").includes("json") ? await response.json() : {};
        if (!response.ok) {
          say(data.detail || "That did not work; reload the page and try again.", "error");
          return;
        }
        awaiting = form.dataset.jobAction;
        say(data.message);
        setStatus(data.status, data.error, data.attempts);
        if (data.status === "cancelled") settle("cancel", "Cancelled.");
      } catch (e) {
        say("The server did not answer; check the connection and try again.", "error");
      } finally {
        button.disabled = false;
      }
    });
  });

  // -- live ----------------------------------------------------------------------------------------
  setPoints(initial.points);
  setStatus(initial.status, q("[data-error]").textContent.trim());
  window.addEventListener("load", redraw);
  lorasiteLive.connect(root.dataset.jobSocket, {
    stateElement: q("[data-live-state]"),
    onMessage(msg) {
      if (msg.type === "snapshot") {
        // Every (re)connect starts from the server's truth.
        setPoints(msg.loss_points); redraw(); setStatus(msg.status, msg.error, msg.attempts); setProgress(msg);
        setPhase(msg.phase);
        msg.samples.forEach(addSample);
        q("[data-log]").textContent = msg.logs.join("\n") + (msg.logs.length ? "\n" : "");
      } else if (msg.type === "progress") {
        addPoints(msg.points || [[msg.step, msg.loss, msg.lr]]);
        redraw();
        setProgress(msg);
      } else if (msg.type === "phase") {
        setPhase(msg);
      } else if (msg.type === "status") {
        setStatus(msg.status, msg.error, msg.attempts);
        if (FINISHED.includes(msg.status)) {
          refreshFiles();
          if (msg.status === "cancelled") settle("cancel", "Cancelled.");
          else if (awaiting !== "cancel") { awaiting = null; say(""); }
        }
        if (msg.status === "running") settle("retry", "Running again.");
      } else if (msg.type === "log") appendLog(msg.line);
      else if (msg.type === "sample") {
        addSample(msg);
        settle("sample", `Sample from step ${msg.step} added below.`);
      } else if (msg.type === "artifact") {
        refreshFiles();
        settle("save", "LoRA files saved: download them under LoRA files.");
      }
    },
  });
});
