// Loss charts on uPlot: raw loss, an exponential moving average, optional log scale.
(function () {
  function ema(values, alpha = 0.1) {
    const out = [];
    let acc = null;
    for (const v of values) { acc = acc === null ? v : alpha * v + (1 - alpha) * acc; out.push(acc); }
    return out;
  }
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function lossChart(el, { logScale = false, series = null, yValues = null } = {}) {
    // The card, not the chart element, sets the width: the canvas would otherwise hold it wide.
    const width = () => Math.max(240, el.parentElement.clientWidth - 4);
    const axisColour = css("--muted") || "#888";
    const axes = [{ stroke: axisColour, grid: { stroke: css("--border") } },
                  { stroke: axisColour, grid: { stroke: css("--border") }, size: 60, ...(yValues ? { values: yValues } : {}) }];
    const lines = series || [{ label: "loss", stroke: "rgba(120,140,255,.45)", width: 1 },
                             { label: "smoothed", stroke: css("--accent") || "#3a5bd9", width: 2 }];
    const opts = { width: width(), height: 260, scales: { x: { time: false }, y: { distr: logScale ? 3 : 1 } },
                   axes, series: [{ label: "step" }, ...lines], legend: { live: true } };
    const empty = [[], ...lines.map(() => [])];
    const plot = new uPlot(opts, empty, el);
    new ResizeObserver(() => plot.setSize({ width: width(), height: 260 })).observe(el.parentElement);
    return plot;
  }
  window.lorasiteCharts = { ema, lossChart };
})();
