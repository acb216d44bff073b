// Team dashboard: progress bars move with the team websocket; a status change re-renders the lists.
document.addEventListener("DOMContentLoaded", () => {
  const panel = document.getElementById("jobs-panel");
  if (!panel) return;
  let refreshTimer = null;
  const refresh = () => {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(async () => {
      const response = await fetch(panel.dataset.fragmentUrl, { credentials: "same-origin" });
      if (response.ok) panel.innerHTML = await response.text();
    }, 250);
  };
  const setField = (row, name, value) => {
    const el = row.querySelector(`[data-field="${name}"]`);
    if (el) el.textContent = value;
  };
  lorasiteLive.connect(panel.dataset.teamSocket, {
    stateElement: document.querySelector("[data-live-state]"),
    onOpen: refresh, // after a reconnect, re-sync from the server
    onMessage(msg) {
      if (msg.type === "status") return refresh();
      if (msg.type !== "progress") return;
      const row = panel.querySelector(`.job-row[data-job="${msg.job}"]`);
      if (!row) return refresh();
      const bar = row.querySelector(".progress");
      if (bar) {
        bar.setAttribute("aria-valuenow", msg.percent);
        bar.querySelector("span").style.width = `${msg.percent}%`;
      }
      setField(row, "step", msg.step);
      setField(row, "total_steps", msg.total_steps);
      setField(row, "avg_loss", msg.avg_loss === null ? "—" : msg.avg_loss.toFixed(4));
      setField(row, "eta", msg.eta_seconds === null ? "estimating…" : lorasiteLive.formatDuration(msg.eta_seconds));
    },
  });
});
