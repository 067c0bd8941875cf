/* The report's map: the poverty rate of the unit's children (or the unit) from the admin-poverty vector tiles,
 * classed by /collections/admin-poverty/classes; the same requests the portal makes. */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("report-config").textContent);
  var COLORS = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"];
  document.getElementById("print").addEventListener("click", function () { window.print(); });
  maplibregl.setWorkerUrl(cfg.worker);
  // the unit's children (or the unit itself when it has none), classed among themselves
  var params = "year=" + cfg.year + "&region=" + encodeURIComponent(cfg.region) +
    (cfg.parent ? "&parent_code=" + encodeURIComponent(cfg.parent) : "&admin_code=" + encodeURIComponent(cfg.unit));
  var map = new maplibregl.Map({container: "map", interactive: false, attributionControl: false,
    preserveDrawingBuffer: true, fadeDuration: 0,
    style: {version: 8, sources: {}, transition: {duration: 0, delay: 0},
            layers: [{id: "bg", type: "background", paint: {"background-color": "#eef2f5"}}]}});
  var loaded = new Promise(function (resolve) { map.on("load", resolve); });
  fetch(cfg.base + "/collections/admin-poverty/classes?property=poverty_rate&k=5&" + params,
        {headers: {Accept: "application/json"}, credentials: "same-origin"}).then(function (r) { return r.json(); })
    .then(function (c) {
      var expr = ["case", ["==", ["get", "poverty_rate"], null], "#c8c8c8"];
      c.breaks.forEach(function (b, i) { expr.push(["<=", ["to-number", ["get", "poverty_rate"]], b], COLORS[i]); });
      expr.push(COLORS[Math.max(0, c.breaks.length - 1)]);
      var legend = document.getElementById("legend");
      c.breaks.forEach(function (b, i) {
        var s = document.createElement("span");
        var sw = document.createElement("span"); sw.className = "sw"; sw.style.background = COLORS[i];
        s.appendChild(sw);
        s.appendChild(document.createTextNode("≤ " + (b * 100).toFixed(2) + " % (" + c.counts[i] + ")"));
        legend.appendChild(s);
      });
      if (c.nulls) { legend.appendChild(document.createTextNode(cfg.withheld + " (" + c.nulls + ")")); }
      loaded.then(function () {
        var src = {type: "vector", tiles: [cfg.base + "/collections/admin-poverty/tiles/WebMercatorQuad/{z}/{y}/{x}?" + params],
                   maxzoom: 14};
        if (cfg.bbox) { src.bounds = cfg.bbox; }
        map.addSource("units", src);
        map.addLayer({id: "fill", type: "fill", source: "units", "source-layer": "admin-poverty",
                      paint: {"fill-color": expr, "fill-opacity": 1}});
        map.addLayer({id: "line", type: "line", source: "units", "source-layer": "admin-poverty",
                      paint: {"line-color": "#444", "line-width": 0.5}});
        map.once("idle", function () { document.body.setAttribute("data-map", "drawn"); });
      });
      return fetch(cfg.base + "/collections/admin-poverty/items/" + cfg.unit + "-" + cfg.year + "?f=json",
                   {headers: {Accept: "application/geo+json"}}).then(function (r) { return r.json(); });
    }).then(function (f) {
      var xs = [], ys = [];
      (function walk(c) { if (typeof c[0] === "number") { xs.push(c[0]); ys.push(c[1]); } else { c.forEach(walk); } })(f.geometry.coordinates);
      map.fitBounds([[Math.min.apply(null, xs), Math.min.apply(null, ys)], [Math.max.apply(null, xs), Math.max.apply(null, ys)]],
                    {padding: 10, duration: 0});
    });
})();
