// Logical vs stored bytes over a path's versions (Chart.js, vendored: works offline).
(function () {
  const canvas = document.getElementById("usage-chart");
  const data = JSON.parse(document.getElementById("usage-data").textContent);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function size(n) {
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 100 ? 1 : 0)) + " " + units[i];
  }
  new Chart(canvas, {
    type: "line",
    data: {
      labels: data.versions,
      datasets: [
        { label: "logical bytes (all versions)", data: data.logical, borderColor: "#3572b0",
          backgroundColor: "rgba(53,114,176,.12)", fill: true, pointRadius: 0, borderWidth: 2 },
        { label: "stored bytes (after dedup)", data: data.stored, borderColor: "#1a7f37",
          backgroundColor: "rgba(26,127,55,.18)", fill: true, pointRadius: 0, borderWidth: 2 },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { title: { display: true, text: "version" } },
        y: { beginAtZero: true, ticks: { callback: (v) => size(v) } },
      },
      plugins: { tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + size(c.parsed.y) } } },
    },
  });
  canvas.dataset.drawn = "yes";
})();
