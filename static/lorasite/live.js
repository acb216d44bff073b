// Websocket client shared by live pages: reconnects with capped exponential backoff and lets the
// page re-sync from the snapshot the server sends on every (re)connect.
(function () {
  function connect(path, { onMessage, onOpen, stateElement } = {}) {
    let attempt = 0;
    let socket = null;
    let stopped = false;
    const setState = (text, cls) => {
      if (!stateElement) return;
      stateElement.textContent = text;
      stateElement.className = "live-state " + (cls || "");
    };
    function open() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + location.host + path);
      socket.onopen = () => { attempt = 0; setState("live", "live"); if (onOpen) onOpen(); };
      socket.onmessage = (event) => {
        let msg;
        try { msg = JSON.parse(event.data); } catch (e) { return; }
        if (onMessage) onMessage(msg);
      };
      socket.onclose = (event) => {
        if (stopped) return;
        if (event.code === 4404 || event.code === 4403) { setState("no access", "down"); return; }
        const delay = Math.min(30000, 500 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
        attempt += 1;
        setState("reconnecting…", "down");
        setTimeout(open, delay);
      };
    }
    open();
    return {
      send(obj) { if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(obj)); },
      close() { stopped = true; if (socket) socket.close(); },
    };
  }
  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    seconds = Math.max(0, Math.round(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
  }
  function csrfToken() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }
  window.lorasiteLive = { connect, formatDuration, csrfToken };

  // Behaviour that would otherwise be inline handlers (the Content-Security-Policy allows none).
  document.addEventListener("change", (event) => {
    const select = event.target.closest && event.target.closest("[data-submit-on-change]");
    if (select && select.form) select.form.submit();
  });
  document.addEventListener("click", (event) => {
    const field = event.target.closest && event.target.closest("[data-select-on-focus]");
    if (field) field.select();
  });
})();
