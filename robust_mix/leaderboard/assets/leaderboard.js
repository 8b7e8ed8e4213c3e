/* robust_mix leaderboard: sort the ranking table by a column, show or hide RobustBench's rows.
   The page is complete without this script; it only adds the two controls. */
(function () {
  "use strict";
  var table = document.getElementById("board");
  if (!table) { return; }
  var body = table.tBodies[0];
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(body.rows, function (row, i) { row.setAttribute("data-order", String(i)); });

  function cellValue(row, column, type) {
    var raw = row.cells[column].getAttribute("data-value");
    if (raw === null || raw === "") { return null; }
    return type === "number" ? parseFloat(raw) : raw.toLowerCase();
  }

  function sortBy(column, descending) {
    var type = headers[column].getAttribute("data-type");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, column, type), y = cellValue(b, column, type);
      if (x === null || y === null) {
        if (x === y) { return a.getAttribute("data-order") - b.getAttribute("data-order"); }
        return x === null ? 1 : -1; /* rows without a value go last either way */
      }
      var order = type === "number" ? x - y : x.localeCompare(y);
      if (descending) { order = -order; }
      return order || a.getAttribute("data-order") - b.getAttribute("data-order");
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(headers, function (th, i) {
      if (i === column) { th.setAttribute("aria-sort", descending ? "descending" : "ascending"); }
      else { th.removeAttribute("aria-sort"); }
    });
  }

  Array.prototype.forEach.call(headers, function (th, column) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "sort-button";
    while (th.firstChild) { button.appendChild(th.firstChild); }
    th.appendChild(button);
    button.addEventListener("click", function () {
      var current = th.getAttribute("aria-sort");
      var descending = current ? current === "ascending" : th.getAttribute("data-type") === "number";
      sortBy(column, descending);
    });
  });

  var controls = document.querySelector(".controls");
  if (controls && controls.getAttribute("data-reference-rows") !== "0") {
    var label = document.createElement("label");
    var box = document.createElement("input");
    box.type = "checkbox";
    box.id = "show-reference";
    box.checked = true;
    box.addEventListener("change", function () {
      document.body.classList.toggle("hide-reference", !box.checked);
    });
    label.appendChild(box);
    label.appendChild(document.createTextNode(" show RobustBench's published rows (table and plot)"));
    controls.appendChild(label);
  }
}());
