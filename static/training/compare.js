// Compare: every chosen run's smoothed loss on one chart, each in its own colour and dash (two
// identical runs would otherwise hide each other), and a legend of their names and short ids.
window.addEventListener("load", () => {
  const series = JSON.parse(document.getElementById("compare-data").textContent);
  const el = document.querySelector("[data-compare-chart]");
  if (!el || !series.length) return;
  // Align every run on the union of their steps; gaps are null so uPlot leaves them open.
  const steps = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const columns = series.map((s) => {
    const smooth = lorasiteCharts.ema(s.points.map((p) => p[1]));
    const byStep = new Map(s.points.map((p, i) => [p[0], smooth[i]]));
    return steps.map((step) => (byStep.has(step) ? byStep.get(step) : null));
  });
  const styles = series.map((s, i) => lorasiteCharts.runStyle(i));
  // The page's own legend below shows each run's dash; uPlot's would only repeat the names.
  const plot = lorasiteCharts.lossChart(el, {
    series: series.map((s, i) => ({ label: s.label, spanGaps: true, ...styles[i] })), legend: false,
  });
  plot.setData([steps, ...columns]);
  // The server lists the names; draw each run's line sample in front of its name.
  const svg = "http://www.w3.org/2000/svg";
  series.forEach((s, i) => {
    const item = document.querySelector(`[data-compare-legend] [data-run="${s.id}"]`);
    if (!item) return;
    const swatch = document.createElementNS(svg, "svg");
    swatch.setAttribute("width", "36"); swatch.setAttribute("height", "10"); swatch.setAttribute("aria-hidden", "true");
    const line = document.createElementNS(svg, "line");
    Object.entries({ x1: 0, y1: 5, x2: 36, y2: 5, stroke: styles[i].stroke, "stroke-width": 2,
                     "stroke-dasharray": styles[i].dash.join(" ") }).forEach(([k, v]) => line.setAttribute(k, v));
    swatch.append(line);
    item.prepend(swatch);
  });
});
