(function () {
  "use strict";
  // Draws every chart of the page from its JSON block, in the light or dark theme the reader's
  // system prefers, and redraws when that preference changes. Loaded inline; the page's
  // Content-Security-Policy allows exactly this text by its sha256 hash.
  var THEMES = {
    light: { text: "#1f2430", grid: "#e3e7ee", line: "#c3c9d4", hover: "#ffffff" },
    dark: { text: "#e2e6ee", grid: "#2a313c", line: "#465062", hover: "#1d222b" }
  };
  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"]
  };
  var query = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  var charts = [];

  function themeName() {
    return query && query.matches ? "dark" : "light";
  }

  function themed(layout, theme, width) {
    var out = JSON.parse(JSON.stringify(layout));
    if (width < 520) {
      // phone width: smaller legend and margins leave room for the plot
      out.legend = Object.assign({}, out.legend, { font: { size: 10 } });
      out.margin = Object.assign({}, out.margin, { l: 46, r: 6 });
    }
    out.paper_bgcolor = "rgba(0,0,0,0)";
    out.plot_bgcolor = "rgba(0,0,0,0)";
    out.font = Object.assign({}, out.font, { color: theme.text });
    Object.keys(out).forEach(function (key) {
      if (/^[xy]axis[0-9]*$/.test(key)) {
        out[key] = Object.assign({}, out[key], { gridcolor: theme.grid, linecolor: theme.line, zerolinecolor: theme.line });
      }
    });
    out.hoverlabel = Object.assign({}, out.hoverlabel, {
      bgcolor: theme.hover, bordercolor: theme.line, font: { color: theme.text }
    });
    return out;
  }

  function draw(chart) {
    var name = themeName();
    chart.div.setAttribute("data-theme", name);
    return window.Plotly.react(chart.div, chart.figure.data, themed(chart.figure.layout, THEMES[name], chart.div.clientWidth), CONFIG);
  }

  var divs = document.querySelectorAll("[data-figure]");
  if (typeof window.Plotly === "undefined") {
    divs.forEach(function (div) {
      div.textContent = "Charts need the site's shared plotly.js (" + div.getAttribute("data-needs") + ").";
      div.classList.add("chart-missing");
    });
    return;
  }
  divs.forEach(function (div) {
    var chart = { div: div, figure: JSON.parse(document.getElementById(div.getAttribute("data-figure")).textContent) };
    charts.push(chart);
    draw(chart).then(function () {
      div.setAttribute("data-rendered", "true");
    });
  });
  if (query && query.addEventListener) {
    query.addEventListener("change", function () {
      charts.forEach(draw);
    });
  }
})();
