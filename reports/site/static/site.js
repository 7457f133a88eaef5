// xtalbench site: sortable tables and Plotly figures (plotly.min.js ships beside this file).
(function () {
  "use strict";
  function key(row, index) {
    var cell = row.cells[index];
    var v = cell ? cell.getAttribute("data-value") : null;
    if (v === null || v === "") return null;
    var n = Number(v);
    return isNaN(n) ? v : n;
  }
  function sortBy(th) {
    var table = th.closest("table");
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, index), y = key(b, index);
      if (x === null && y === null) return 0;
      if (x === null) return 1;   // missing values last, whatever the direction
      if (y === null) return -1;
      var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.tabIndex = 0;
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(th); });
  });
  if (window.Plotly) {
    document.querySelectorAll("script.figure-data").forEach(function (s) {
      var fig = JSON.parse(s.textContent);
      var div = document.getElementById(s.getAttribute("data-target"));
      div.innerHTML = "";
      window.Plotly.newPlot(div, fig.data, fig.layout, {responsive: true, displaylogo: false});
      div.setAttribute("data-rendered", "plotly");
    });
  }
})();
