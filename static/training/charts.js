// Loss charts on uPlot: raw loss, an exponential moving average, an optional log scale that spreads
// the curve over the plot, and whole-step ticks. Each chart element keeps its plot as `el.uplot`
// and its tick labels in data-x-ticks / data-y-ticks (for people at the console, and for tests).
(function () {
  // Steps are whole numbers: ticks go only at whole increments (uPlot would put one at 2.5).
  const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000,
                      25000, 50000, 100000, 200000, 250000, 500000, 1000000];
  // Dash patterns for series that may lie on top of each other (identical runs on Compare).
  const DASHES = [[], [10, 5], [2, 4], [14, 4, 3, 4], [6, 6], [1, 3]];
  const PALETTE = ["#3a5bd9", "#e3a008", "#16a34a", "#db2777", "#0891b2", "#7c3aed"];

  function ema(values, alpha = 0.1) {
    const out = [];
    let acc = null;
    for (const v of values) { acc = acc === null ? v : alpha * v + (1 - alpha) * acc; out.push(acc); }
    return out;
  }
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function number(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e5 || a < 1e-3 ? v.toExponential(1) : String(+v.toPrecision(3));
  }
  // Log scale around the data: uPlot's default snaps out to whole decades, which squeezes a loss
  // of 0.05-0.3 into the lower half of a 0.01-1 axis.
  function logRange(u, min, max) {
    if (!(min > 0) || !(max > 0)) return [min, max];
    if (min === max) return [min / 1.5, max * 1.5];
    const pad = Math.pow(max / min, 0.05);
    return [min / pad, max * pad];
  }
  // Round ticks inside [min, max]: 1-2-5 per decade, or finer steps when the range is under a decade.
  function logSplits(u, axisIdx, min, max) {
    if (!(min > 0) || !(max > min)) return [min];
    for (const mults of [[1, 2, 5], [1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9], [1, 1.2, 1.4, 1.6, 1.8, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9]]) {
      const ticks = [];
      for (let exp = Math.floor(Math.log10(min)); exp <= Math.ceil(Math.log10(max)); exp++) {
        for (const m of mults) {
          const v = +(m * Math.pow(10, exp)).toPrecision(6);
          if (v >= min && v <= max) ticks.push(v);
        }
      }
      if (ticks.length >= 3) {
        const every = Math.ceil(ticks.length / 6);
        return ticks.filter((_, i) => i % every === 0);
      }
    }
    return [min, max];
  }
  function recordTicks(el, key, format) {
    return (u, splits) => {
      const labels = splits.map((v) => (v === null || v === undefined ? "" : format(v)));
      el.dataset[key] = JSON.stringify(labels);
      return labels;
    };
  }
  // The chart's own box sets the width (the card's padding stays outside, so no label is cut off).
  function contentWidth(el) {
    const box = el.parentElement;
    const style = getComputedStyle(box);
    return Math.max(200, Math.floor(box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)));
  }
  function lossChart(el, { logScale = false, series = null, yFormat = number, height = 260, legend = true } = {}) {
    const axisColour = css("--muted") || "#888";
    const grid = { stroke: css("--border") };
    const y = { stroke: axisColour, grid, size: 64, values: recordTicks(el, "yTicks", yFormat) };
    // uPlot's own log filter blanks ticks that are not 1-2-5 multiples; ours are already few and round.
    if (logScale) Object.assign(y, { splits: logSplits, filter: (u, splits) => splits });
    const axes = [{ stroke: axisColour, grid, incrs: STEP_INCRS, values: recordTicks(el, "xTicks", (v) => String(Math.round(v))) }, y];
    const lines = series || [{ label: "loss", stroke: "rgba(120,140,255,.45)", width: 1 },
                             { label: "smoothed", stroke: css("--accent") || "#3a5bd9", width: 2 }];
    const opts = {
      width: contentWidth(el), height,
      scales: { x: { time: false }, y: logScale ? { distr: 3, range: logRange } : { distr: 1 } },
      axes, series: [{ label: "step", value: (u, v) => (v === null ? "--" : String(v)) }, ...lines],
      legend: { show: legend, live: true },
    };
    const plot = new uPlot(opts, [[], ...lines.map(() => [])], el);
    el.uplot = plot;
    new ResizeObserver(() => plot.setSize({ width: contentWidth(el), height })).observe(el.parentElement);
    return plot;
  }
  // Compare: one colour and one dash per run, earlier runs drawn wider underneath, so identical
  // curves still show as two (no point markers: they would cover the dashes).
  function runStyle(i) {
    return { stroke: PALETTE[i % PALETTE.length], dash: DASHES[i % DASHES.length], width: Math.max(1.5, 4 - i),
             points: { show: false } };
  }
  window.lorasiteCharts = { ema, lossChart, number, runStyle };
})();
