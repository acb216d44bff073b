// Job page: live status, progress, loss/LR charts, log tail and samples from the job websocket.
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("job");
  const initial = JSON.parse(document.getElementById("chart-data").textContent);
  const q = (sel) => document.querySelector(sel);
  let steps = [], losses = [], lrs = [];
  let logScale = false;
  const lossEl = q("[data-loss-chart]"), lrEl = q("[data-lr-chart]");
  let lossPlot = null, lrPlot = null;

  function setPoints(points) {
    steps = points.map((p) => p[0]); losses = points.map((p) => p[1]); lrs = points.map((p) => p[2]);
  }
  function redraw() {
    // Exposed for people and tests: how many points the chart holds, up to which step.
    lossEl.dataset.points = steps.length;
    lossEl.dataset.lastStep = steps.length ? steps[steps.length - 1] : 0;
    if (!window.uPlot) return;
    if (!lossPlot) {
      lossPlot = lorasiteCharts.lossChart(lossEl, { logScale });
      lrPlot = lorasiteCharts.lossChart(lrEl, { series: [{ label: "learning rate", stroke: "#e3a008", width: 2 }],
                                                 yValues: (u, values) => values.map((v) => v.toExponential(1)) });
    }
    lossPlot.setData([steps, losses, lorasiteCharts.ema(losses)]);
    lrPlot.setData([steps, lrs]);
  }
  q("[data-log-scale]").addEventListener("change", (event) => {
    logScale = event.target.checked;
    if (lossPlot) { lossPlot.destroy(); lossPlot = null; lrPlot.destroy(); lrPlot = null; lrEl.innerHTML = ""; }
    redraw();
  });

  function setStatus(status, error) {
    const badge = q("[data-status]");
    badge.textContent = status;
    badge.className = `state state-${status}`;
    const queue = q("[data-queue]");
    if (queue && status !== "queued") queue.remove();
    document.querySelectorAll("[data-when]").forEach((form) => {
      form.hidden = !form.dataset.when.split(" ").includes(status);
    });
    const err = q("[data-error]");
    err.hidden = !error;
    err.textContent = error || "";
  }
  function setProgress(msg) {
    q("[data-step]").textContent = msg.step;
    q("[data-total]").textContent = msg.total_steps;
    q("[data-loss]").textContent = msg.loss === null ? "—" : msg.loss.toFixed(4);
    q("[data-avg]").textContent = msg.avg_loss === null ? "—" : msg.avg_loss.toFixed(4);
    q("[data-lr]").textContent = msg.lr === null ? "—" : msg.lr.toExponential(2);
    q("[data-eta]").textContent = lorasiteLive.formatDuration(msg.eta_seconds);
    q("[data-bar]").style.width = `${msg.percent}%`;
    q(".progress.big").setAttribute("aria-valuenow", msg.percent);
  }
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
  const LAYOUT_LABELS = { kohya: "Download kohya / A1111 / ComfyUI", diffusers: "Download diffusers",
                          remote: "Download as the remote trainer wrote it" };
  async function refreshFiles() {
    const response = await fetch(root.dataset.artifactsUrl, { credentials: "same-origin" });
    if (!response.ok) return;
    const files = (await response.json()).filter((a) => a.kind.startsWith("lora_"));
    if (!files.length) return;
    const list = q("[data-files]");
    list.innerHTML = "";
    for (const file of files) {
      const layout = { lora_kohya: "kohya", lora_remote: "remote" }[file.kind] || "diffusers";
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.className = "button-link";
      link.href = `/api/jobs/${initial.job}/weights?layout=${layout}`;
      link.setAttribute("download", "");
      link.textContent = LAYOUT_LABELS[layout];
      const meta = document.createElement("span");
      meta.className = "muted small";
      meta.textContent = ` ${(file.size_bytes / 1048576).toFixed(2)} MB · sha256 ${file.sha256.slice(0, 12)}…`;
      li.append(link, meta);
      list.append(li);
    }
  }

  setPoints(initial.points);
  setStatus(initial.status, q("[data-error]").textContent.trim());
  window.addEventListener("load", redraw);
  lorasiteLive.connect(root.dataset.jobSocket, {
    stateElement: q("[data-live-state]"),
    onMessage(msg) {
      if (msg.type === "snapshot") {
        // Every (re)connect starts from the server's truth.
        setPoints(msg.loss_points); redraw(); setProgress(msg); setStatus(msg.status, msg.error);
        msg.samples.forEach(addSample);
        q("[data-log]").textContent = msg.logs.join("\n") + (msg.logs.length ? "\n" : "");
      } else if (msg.type === "progress") {
        if (!steps.length || msg.step > steps[steps.length - 1]) {
          steps.push(msg.step); losses.push(msg.loss); lrs.push(msg.lr); redraw();
        }
        setProgress(msg);
      } else if (msg.type === "status") {
        setStatus(msg.status, msg.error);
        if (["completed", "cancelled", "failed"].includes(msg.status)) refreshFiles();
      } else if (msg.type === "log") appendLog(msg.line);
      else if (msg.type === "sample") addSample(msg);
      else if (msg.type === "artifact") refreshFiles();
    },
  });
});
