/* The portal (app/ogc/portal.py): a client of this service's public API, and nothing else.
 * Figures: /regions/{id}/overview · maps: the collections' vector tiles · legends: /collections/{id}/classes ·
 * analyses: /processes and /jobs. Signed-in requests carry the session cookie (and, when they change something,
 * the page's CSRF token). */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("portal-config").textContent);
  var T = cfg.text, base = cfg.base, zh = cfg.lang === "zh-CN";
  var COLORS = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026", "#800026"];
  var NODATA = "#c8c8c8";
  var STAGES = {
    siting: ["hotspots", "spatial-autocorrelation", "coverage-gaps", "location-allocation",
             "project-coverage-correlation", "accessibility"],
    needs: ["needs-assessment", "needs-matching", "mpi"],
    coupling: ["coupling-coordination"]
  };
  var state = {region: cfg.region, year: null, unit: null, overview: null, classes: null, shown: []};

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function q(params) {
    return Object.keys(params).filter(function (k) { return params[k] !== null && params[k] !== undefined; })
      .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]); }).join("&");
  }
  function getJSON(path) {
    return fetch(path.indexOf("http") === 0 ? path : base + path, {headers: {Accept: "application/json"},
                                                                   credentials: "same-origin"})
      .then(function (r) {
        if (!r.ok) { return r.json().then(function (p) { throw new Error(p.detail || p.title || r.status); }); }
        return r.json();
      });
  }
  function fmt(v, id) {
    if (v === null || v === undefined) { return null; }
    if (id === "poverty_rate") { return (v * 100).toFixed(2) + " %"; }
    return Number(v).toLocaleString(zh ? "zh-CN" : "en");
  }
  function label(pair, code) { return (pair && (pair[cfg.lang] || pair.en)) || code; }
  function tr(s) { return (cfg.dataText && cfg.dataText[s]) || s; }  // a text of the API in the page's language
  function region() { return cfg.regions.filter(function (r) { return r.id === state.region; })[0]; }

  // ------------------------------------------------------------------------------------------- the map
  maplibregl.setWorkerUrl(cfg.worker);
  maplibregl.prewarm();  // the workers boot while the map is set up
  function tiles(collection, params) {
    var query = q(params || {});
    return base + "/collections/" + collection + "/tiles/WebMercatorQuad/{z}/{y}/{x}" + (query ? "?" + query : "");
  }
  function vector(collection, params) {
    var r = region();
    var src = {type: "vector", tiles: [tiles(collection, params)], minzoom: 0, maxzoom: 14};
    if (r && r.bbox) { src.bounds = r.bbox; }
    return src;
  }
  var map = new maplibregl.Map({
    container: "map", attributionControl: {compact: true}, preserveDrawingBuffer: true,
    // no paint transitions: colours change at once (a new indicator or classes), and the map is idle sooner
    style: {version: 8, sources: {}, transition: {duration: 0, delay: 0},
            layers: [{id: "background", type: "background", paint: {"background-color": "#eef2f5"}}]},
    center: [0, 0], zoom: 1
  });
  map.addControl(new maplibregl.NavigationControl({showCompass: false}));
  map.addControl(new maplibregl.ScaleControl({}));
  var ready = new Promise(function (resolve) { map.on("load", resolve); });

  function fit() {
    var r = region();
    if (r && r.bbox) { map.fitBounds([[r.bbox[0], r.bbox[1]], [r.bbox[2], r.bbox[3]]], {padding: 20, duration: 0}); }
  }

  function setSource(id, src) {
    if (map.getSource(id)) {
      var keep = map.getStyle().layers.filter(function (l) { return l.source === id; });
      keep.forEach(function (l) { map.removeLayer(l.id); });
      map.removeSource(id);
      map.addSource(id, src);
      keep.forEach(function (l) { map.addLayer(l); });
    } else {
      map.addSource(id, src);
    }
  }

  function paintChoropleth() {
    var c = state.classes, prop = $("indicator").value;
    if (!c || !map.getLayer("units-fill")) { return; }
    var expr = ["case", ["==", ["get", prop], null], NODATA];
    c.breaks.forEach(function (b, i) { expr.push(["<=", ["to-number", ["get", prop]], b], COLORS[i]); });
    expr.push(COLORS[c.breaks.length - 1] || NODATA);
    map.setPaintProperty("units-fill", "fill-color", expr);
  }

  function legend() {
    var c = state.classes, box = $("legend"), prop = $("indicator").value;
    box.textContent = "";
    box.appendChild(el("div", {"class": "muted"}, T.figures[prop] + " · " + state.year));
    var lo = c.min;
    c.breaks.forEach(function (b, i) {
      var row = el("div", {"class": "cls", "data-upper": b, "data-count": c.counts[i]});
      row.appendChild(el("span", {"class": "sw", style: "background:" + COLORS[i]}));
      row.appendChild(el("span", {}, fmt(i === 0 ? lo : c.breaks[i - 1], prop) + " – " + fmt(b, prop) +
                                      " (" + c.counts[i] + ")"));
      box.appendChild(row);
    });
    if (c.nulls) {
      var w = el("div", {"class": "cls", "data-count": c.nulls});
      w.appendChild(el("span", {"class": "sw", style: "background:" + NODATA}));
      w.appendChild(el("span", {}, T.withheld + " (" + c.nulls + ")"));
      box.appendChild(w);
    }
  }

  var drawing = 0;  // the latest choropleth asked for: an earlier answer that arrives later is dropped
  function choropleth() {
    var level = $("level").value, prop = $("indicator").value;  // every unit of the level in the region
    var mine = ++drawing;
    var classes = getJSON("/collections/admin-poverty/classes?" + q({property: prop, method: $("method").value,
                                                                     k: 5, level: level, year: state.year,
                                                                     region: state.region}));
    // the tiles load while the classes are computed: the colours are set when both are there
    var drawn = ready.then(function () {
      setSource("units", vector("admin-poverty", {level: level, year: state.year, region: state.region}));
      if (!map.getLayer("units-fill")) {
        map.addLayer({id: "units-fill", type: "fill", source: "units", "source-layer": "admin-poverty",
                      paint: {"fill-color": NODATA, "fill-opacity": 0}}, firstOverlay());
        map.addLayer({id: "units-line", type: "line", source: "units", "source-layer": "admin-poverty",
                      paint: {"line-color": "#555", "line-width": 0.6}}, firstOverlay());
      }
    });
    return Promise.all([classes, drawn]).then(function (got) {
      // natural breaks of 1,200 villages take longer than equal intervals: without this a slow answer to an
      // earlier choice would paint over the answer to the last one
      if (mine !== drawing) { return; }
      state.classes = got[0];
      if (!state.shown.length) { map.setPaintProperty("units-fill", "fill-opacity", 1); }
      paintChoropleth();
      legend();
      $("legend").setAttribute("data-property", prop);
      $("legend").setAttribute("data-level", level);
      $("legend").setAttribute("data-method", state.classes.method);
    });
  }

  function firstOverlay() {
    var ids = ["projects-pt", "facilities-pt", "villages-pt", "households-pt"];
    for (var i = 0; i < ids.length; i++) { if (map.getLayer(ids[i])) { return ids[i]; } }
    var results = map.getStyle().layers.filter(function (l) { return l.id.indexOf("result:") === 0; });
    return results.length ? results[0].id : undefined;
  }

  var POINTS = {
    projects: {color: "#1a56a8", radius: 4.5, box: "show-projects"},
    facilities: {color: "#2e7d32", radius: 3.5, box: "show-facilities"},
    villages: {color: "#6a3d9a", radius: 3, box: "show-villages", collection: "village-poverty"},
    households: {color: "#000000", radius: 2, box: "show-households"}
  };
  function togglePoints(name) {
    var spec = POINTS[name], box = $(spec.box), id = name + "-pt";
    if (!box) { return; }
    ready.then(function () {
      if (box.checked && !map.getLayer(id)) {
        var collection = spec.collection || name;
        setSource(name, vector(collection, collection === "households" ? {} : {region: state.region}));
        map.addLayer({id: id, type: "circle", source: name, "source-layer": collection,
                      paint: {"circle-color": spec.color, "circle-radius": spec.radius,
                              "circle-stroke-color": "#fff", "circle-stroke-width": 0.8}});
      } else if (!box.checked && map.getLayer(id)) {
        map.removeLayer(id);
      }
    });
  }

  // ------------------------------------------------------------------------------------- the overview
  function figures(doc) {
    var dl = $("figures");
    dl.textContent = "";
    doc.figures.forEach(function (f) {
      dl.appendChild(el("dt", {}, T.figures[f.id] || f.title));
      var v = fmt(f.value, f.id);
      dl.appendChild(el("dd", {"class": v === null ? "withheld" : "", "data-figure": f.id}, v === null ? T.withheld : v));
    });
    var f0 = doc.figures[0];
    dl.appendChild(el("dd", {"class": "src"}, T.period + ": " + f0.period + " · " + T.source + ": " + f0.source));
    $("unit-name").textContent = doc.unit.name + (!zh && doc.unit.name_en ? " (" + doc.unit.name_en + ")" : "") +
      " · " + doc.year;
    $("unit-path").textContent = doc.ancestors.map(function (a) { return a.name; }).join(" / ");
    table($("projects-table"), [T.status, T.count, T.budget], doc.projects.byStatus.map(function (p) {
      return [label(p.label, p.code), p.count, Math.round(p.budget).toLocaleString()];
    }).concat([[""]]).concat(doc.projects.byType.map(function (p) {
      return [label(p.label, p.code), p.count, Math.round(p.budget).toLocaleString()];
    })));
    table($("facilities-table"), [T["class"], T.count], doc.facilities.byClass.map(function (f) {
      return [label(f.label, f.code), f.count];
    }));
    table($("children-table"), [T.name, T.figures.poor_households, T.figures.poverty_rate], doc.children.map(function (c) {
      return [{text: c.name, code: c.code, level: c.level}, fmt(c.poor_households) || T.withheld,
              fmt(c.poverty_rate, "poverty_rate") || T.withheld];
    }));
    showYears($("history-table"), $("history-chart"), doc);
    var params = q({region: state.region, unit: doc.unit.code, year: doc.year});
    $("report-link").href = base + "/portal/report?" + params;
    $("xlsx-link").href = base + "/regions/" + encodeURIComponent(state.region) + "/overview?" +
      q({unit: doc.unit.code, year: doc.year, f: "xlsx"});
  }

  function table(t, head, rows) {
    t.textContent = "";
    var tr = el("tr");
    head.forEach(function (h, i) {  // a heading is its text, or {text, title} for a short one
      var th = el("th", {scope: "col", "class": i ? "n" : ""}, h && h.text ? h.text : h);
      if (h && h.title) { th.setAttribute("title", h.title); }
      tr.appendChild(th);
    });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (v, i) {
        var td = el("td", {"class": i ? "n" : ""});
        if (v && v.code) {
          var a = el("a", {href: "#"}, v.text);
          // a village in the list opens its card, as a click on the map does (the keyboard's way to the card)
          a.addEventListener("click", function (e) { e.preventDefault(); if (v.level === 5) { card(v.code); } else { overview(v.code); } });
          td.appendChild(a);
        } else { td.textContent = v === null || v === undefined ? "" : String(v); }
        row.appendChild(td);
      });
      t.appendChild(row);
    });
  }

  // ------------------------------------------------------------------------------------------ over the years
  var FLOWS = ["entered_households", "exits", "returns"];
  function historyColumns(history) {  // a village's history has no monitored households
    return T.history.filter(function (c) { return history.length && c[0] in history[0]; });
  }
  function historyRows(history) {
    var cols = historyColumns(history);
    return history.map(function (h, i) {
      return [String(h.year)].concat(cols.map(function (c) {
        var v = h[c[0]];
        if (v === null || v === undefined) { return i === 0 && FLOWS.indexOf(c[0]) >= 0 ? "" : "—"; }  // see the note
        return c[0] === "income_median" ? v.toFixed(2) : fmt(v);
      }));
    });
  }
  // Poor and monitored households as two lines over the years, drawn as SVG by hand: two polylines do not need a
  // charting library (the table below the chart holds the same figures for screen readers and print).
  var SVG = "http://www.w3.org/2000/svg";
  var SERIES = [["poor_households", "#b2182b"], ["monitored_households", "#2166ac"], ["exits", "#4d9221"]];
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function chart(box, history) {
    box.textContent = "";
    if (history.length < 2) { return; }
    var w = 360, h = 130, l = 46, r = 14, t = 8, b = 20;
    var top = 0;
    var series = SERIES.filter(function (s) { return s[0] in history[0]; });
    series.forEach(function (s) { history.forEach(function (y) { top = Math.max(top, y[s[0]] || 0); }); });
    if (!top) { return; }
    var x = function (i) { return l + i * (w - l - r) / (history.length - 1); };
    var y = function (v) { return t + (h - t - b) * (1 - v / top); };
    var long = {};
    T.history.forEach(function (c) { long[c[0]] = c[2]; });
    var names = series.map(function (s) { return long[s[0]]; });
    var g = svg("svg", {viewBox: "0 0 " + w + " " + h, role: "img", "class": "chart",
                        "aria-label": T.overYears + ": " + names.join(", ")});
    [0, top].forEach(function (v) {
      g.appendChild(svg("line", {x1: l, x2: w - r, y1: y(v), y2: y(v), stroke: "#ccc"}));
      var tx = svg("text", {x: l - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10}); tx.textContent = fmt(v); g.appendChild(tx);
    });
    history.forEach(function (yr, i) {
      if (i === 0 || i === history.length - 1 || yr.year === state.year) {
        var anchor = i === 0 ? "start" : i === history.length - 1 ? "end" : "middle";
        var tx = svg("text", {x: x(i), y: h - 5, "text-anchor": anchor, "font-size": 10,
                              "font-weight": yr.year === state.year ? 700 : 400});
        tx.textContent = yr.year; g.appendChild(tx);
      }
    });
    series.forEach(function (s) {
      var runs = [[]];  // a withheld year breaks the line
      history.forEach(function (yr, i) {
        var v = yr[s[0]];
        if (v === null || v === undefined) { if (runs[runs.length - 1].length) { runs.push([]); } return; }
        runs[runs.length - 1].push(x(i).toFixed(1) + "," + y(v).toFixed(1));
      });
      runs.forEach(function (pts) {
        if (pts.length > 1) { g.appendChild(svg("polyline", {points: pts.join(" "), fill: "none", stroke: s[1], "stroke-width": 2})); }
        if (pts.length === 1) { var c = pts[0].split(","); g.appendChild(svg("circle", {cx: c[0], cy: c[1], r: 2.5, fill: s[1]})); }
      });
    });
    box.appendChild(g);
    var keys = el("div", {"class": "keys"});
    series.forEach(function (s, i) {
      var k = el("span", {"class": "key"});
      k.appendChild(el("span", {"class": "sw", style: "background:" + s[1]})); k.appendChild(document.createTextNode(" " + names[i]));
      keys.appendChild(k);
    });
    box.appendChild(keys);
  }
  function showYears(tbl, chartBox, doc) {  // not "history": that name is the window's History
    table(tbl, [T.year].concat(historyColumns(doc.history).map(function (c) { return {text: c[1], title: c[2]}; })),
          historyRows(doc.history));
    if (chartBox) { chart(chartBox, doc.history); }
    var note = tbl.parentNode.nextSibling;
    if (!note || !note.classList || !note.classList.contains("hnote")) {
      note = el("p", {"class": "muted hnote"}, T.historyNote);
      tbl.parentNode.parentNode.insertBefore(note, tbl.parentNode.nextSibling);
    }
  }

  function overview(unit) {
    var params = {year: state.year, unit: unit};
    return getJSON("/regions/" + encodeURIComponent(state.region) + "/overview?" + q(params)).then(function (doc) {
      state.overview = doc;
      state.unit = doc.unit;
      if ($("year").options.length < doc.years.length) {
        state.year = doc.year;
        var sel = $("year");
        sel.textContent = "";
        doc.years.forEach(function (y) { var o = el("option", {value: y}, y); if (y === doc.year) { o.selected = true; } sel.appendChild(o); });
      }
      figures(doc);
      document.body.setAttribute("data-figures", "ready");
      firstView();
      return doc;
    });
  }

  // ------------------------------------------------------------------------------------------ the card
  function km(a, b) {
    var r = Math.PI / 180, dlat = (b[1] - a[1]) * r, dlon = (b[0] - a[0]) * r;
    var h = Math.sin(dlat / 2) * Math.sin(dlat / 2) + Math.cos(a[1] * r) * Math.cos(b[1] * r) * Math.sin(dlon / 2) * Math.sin(dlon / 2);
    return 12742 * Math.asin(Math.sqrt(h));
  }
  function rows(tbl, pairs) {
    pairs.forEach(function (p) {
      var tr = el("tr");
      tr.appendChild(el("th", {scope: "row"}, p[0]));
      tr.appendChild(el("td", {}, p[1]));
      tbl.appendChild(tr);
    });
  }
  function card(code) {
    var body = $("card-body");
    body.textContent = "…";
    $("card").hidden = false;
    $("card-close").focus();  // the keyboard lands in the card it opened (Escape or the button closes it)
    var vp = getJSON("/collections/village-poverty/items/" + encodeURIComponent(code));
    var vf = getJSON("/collections/villages/items/" + encodeURIComponent(code)).catch(function () { return null; });
    var vh = getJSON("/regions/" + encodeURIComponent(state.region) + "/overview?" + q({unit: code, year: state.year}))
      .catch(function () { return null; });
    Promise.all([vp, vf, vh]).then(function (got) {
      var p = got[0].properties, v = got[1] ? got[1].properties : {}, xy = got[0].geometry.coordinates;
      body.textContent = "";
      body.appendChild(el("h3", {id: "card-title"}, p.name));
      body.appendChild(el("p", {"class": "muted"}, [p.county, p.township].join(" / ") + " · " + code));
      var t = el("table", {"class": "compact"});
      rows(t, [[T.population, fmt(p.population)],
               [T.figures.registered_households, fmt(p.registered_households) || T.withheld],
               [T.figures.poor_households, fmt(p.poor_households) || T.withheld],
               [T.figures.poverty_rate, fmt(p.poverty_rate, "poverty_rate") || T.withheld]]);
      T.cardIndicators.forEach(function (c) {
        var x = v[c[0]];
        if (x !== undefined && x !== null) { rows(t, [[c[1], x === true ? T.yes : x === false ? T.no : fmt(x)]]); }
      });
      body.appendChild(t);
      if (got[2] && got[2].history.length) {
        body.appendChild(el("h4", {}, T.overYears));
        var hc = el("div", {id: "card-history-chart"}), wrap = el("div", {"class": "history", tabindex: "0", role: "region", "aria-label": T.overYears});
        var ht = el("table", {"class": "compact", id: "card-history"});
        wrap.appendChild(ht);
        body.appendChild(hc); body.appendChild(wrap);
        showYears(ht, hc, got[2]);
      }
      var box = [xy[0] - 0.07, xy[1] - 0.05, xy[0] + 0.07, xy[1] + 0.05].join(",");
      return getJSON("/collections/projects/items?" + q({bbox: box, limit: 200})).then(function (fc) {
        var near = fc.features.filter(function (f) {
          return f.geometry && f.geometry.type === "Point" && km(xy, f.geometry.coordinates) <= 5;
        });
        body.appendChild(el("h4", {}, T.nearbyProjects + " (" + near.length + ")"));
        var ul = el("ul");
        near.slice(0, 12).forEach(function (f) {
          ul.appendChild(el("li", {}, f.properties.name + " · " + (f.properties.type || "") + " · " + (f.properties.status || "")));
        });
        body.appendChild(ul);
        return stageFacts(code, body);
      });
    }).catch(function (e) { body.textContent = String(e.message || e); });
  }
  function stageFacts(code, body) {
    var wanted = [["needs-assessment", T.needs], ["coupling-coordination", T.coupling]];
    return results().then(function (all) {
      return Promise.all(wanted.map(function (w) {
        var r = all.filter(function (x) { return x.process === w[0]; })[0];
        if (!r) { return null; }
        return getJSON("/collections/" + r.id + "/queryables").then(function (qs) {
          var key = ["village_code", "code", "admin_code"].filter(function (k) { return qs.properties[k]; })[0];
          if (!key) { return null; }
          var p = {}; p[key] = code; p.limit = 1;
          return getJSON("/collections/" + r.id + "/items?" + q(p)).then(function (fc) {
            if (!fc.features.length) { return; }
            body.appendChild(el("h4", {}, w[1]));
            var t = el("table", {"class": "compact"});
            var props = fc.features[0].properties;
            rows(t, Object.keys(props).filter(function (k) { return typeof props[k] !== "object"; }).slice(0, 14)
              .map(function (k) { return [k, String(props[k])]; }));
            body.appendChild(t);
          });
        }).catch(function () { return null; });
      }));
    });
  }

  // ------------------------------------------------------------------------------------------ results
  function results() {
    var listed = getJSON("/collections").then(function (d) {
      return d.collections.filter(function (c) { return c.result && c.result.process; }).map(function (c) {
        return {id: c.id, title: c.title, process: c.result.process, mine: false};
      });
    });
    var titles = getJSON("/processes").then(function (d) {
      var t = {};
      d.processes.forEach(function (p) { t[p.id] = tr(p.title); });
      return t;
    });
    var mine = cfg.session ? getJSON("/jobs?limit=50").then(function (d) {
      var out = [];
      d.jobs.forEach(function (j) {
        if (j.status !== "successful") { return; }
        j.links.forEach(function (l) {
          if (l.rel === "describedby" && l.href.indexOf("/collections/") >= 0) {
            out.push({id: l.href.split("/collections/")[1].split(/[/?]/)[0], title: null, process: j.processID,
                      mine: true, finished: (j.finished || "").slice(0, 16).replace("T", " ")});
          }
        });
      });
      return out;
    }) : Promise.resolve([]);
    return Promise.all([mine, listed, titles]).then(function (got) {
      return got[0].concat(got[1]).map(function (r) {
        r.title = r.title || ((got[2][r.process] || r.process) + " · " + r.finished);
        return r;
      });
    });
  }
  function stageList(stage) {
    var ul = $("results-" + stage);
    if (stage === "telecom") {
      ul.textContent = "";
      [["telecom-residents", "residents"], ["telecom-admin-od", "commuting"]].forEach(function (t) {
        var b = el("button", {type: "button"}, t[0]);
        b.addEventListener("click", function () { drawResult(t[0], stage); });
        var li = el("li"); li.appendChild(b); ul.appendChild(li);
      });
      return Promise.resolve();
    }
    return results().then(function (all) {
      var mine = all.filter(function (r) { return STAGES[stage].indexOf(r.process) >= 0; });
      ul.textContent = "";
      if (!mine.length) { ul.appendChild(el("li", {"class": "muted"}, T.noResults)); }
      mine.forEach(function (r) {
        var b = el("button", {type: "button", "data-collection": r.id}, r.title);
        b.addEventListener("click", function () { drawResult(r.id, stage); });
        var li = el("li"); li.appendChild(b);
        li.appendChild(el("span", {"class": "muted"}, " · " + r.process + " · " + (r.mine ? T.yours : T.published)));
        ul.appendChild(li);
      });
    });
  }
  function drawResult(collection, stage) {
    return Promise.all([getJSON("/collections/" + collection + "/styles/default?f=mapbox"), ready]).then(function (got) {
      var style = got[0];
      state.shown.forEach(function (id) { if (map.getLayer(id)) { map.removeLayer(id); } });
      state.shown = [];
      Object.keys(style.sources).forEach(function (sid) {
        var src = style.sources[sid];
        if (src.url && !src.tiles) { src = {type: "vector", url: src.url}; }
        setSource("result:" + sid, src);
      });
      style.layers.forEach(function (l) {
        if (!l.source) { return; }
        var layer = JSON.parse(JSON.stringify(l));
        layer.id = "result:" + l.id;
        layer.source = "result:" + l.source;
        if (layer.type === "circle") {  // results stand out over the faded choropleth
          layer.paint = Object.assign({}, layer.paint, {"circle-radius": 5, "circle-stroke-color": "#333",
                                                        "circle-stroke-width": 0.8});
        }
        map.addLayer(layer);
        state.shown.push(layer.id);
      });
      if (map.getLayer("units-fill")) { map.setPaintProperty("units-fill", "fill-opacity", 0.25); }
      document.body.setAttribute("data-result", collection);
      state.result = {name: style.name, rows: style.metadata && style.metadata["tpa:legend"] || []};
      resultLegend(stage);
      if (stage === "coupling") { periods(collection); }
    });
  }
  function resultLegend(view) {  // the drawn result's legend, under whichever stage or run view is open
    var box = view && $("legend-" + view);
    if (!box) { return; }
    box.textContent = "";
    var r = state.result;
    if (!r || !r.rows.length) { return; }
    box.appendChild(el("div", {"class": "muted"}, tr(r.name)));
    r.rows.forEach(function (c) {
      var row = el("div", {"class": "cls"});
      row.appendChild(el("span", {"class": "sw", style: "background:" + c.color}));
      row.appendChild(el("span", {}, tr(c.label)));
      box.appendChild(row);
    });
  }
  function clearResult() {  // back to the overview: the result off the map, the choropleth in full colour
    state.shown.forEach(function (id) { if (map.getLayer(id)) { map.removeLayer(id); } });
    state.shown = [];
    state.result = null;
    if (map.getLayer("units-fill")) { map.setPaintProperty("units-fill", "fill-opacity", 1); }
  }
  function periods(collection) {
    return getJSON("/collections/" + collection + "/queryables").then(function (qs) {
      var slider = $("period");
      if (!qs.properties.period) { slider.disabled = true; $("period-out").textContent = ""; return; }
      return getJSON("/collections/" + collection + "/items?" + q({limit: 1000, properties: "period"})).then(function (fc) {
        var ps = Array.from(new Set(fc.features.map(function (f) { return f.properties.period; }))).sort();
        slider.max = Math.max(0, ps.length - 1);
        slider.value = slider.max;
        slider.disabled = ps.length < 2;
        function apply() {
          var p = ps[+slider.value];
          $("period-out").textContent = p;
          state.shown.forEach(function (id) { map.setFilter(id, ["==", ["get", "period"], p]); });
        }
        slider.oninput = apply;
        if (ps.length) { apply(); }
      });
    });
  }

  // ------------------------------------------------------------------------------------ run an analysis
  var described = null;
  function processes() {
    return getJSON("/processes").then(function (d) {
      var sel = $("process");
      sel.textContent = "";
      d.processes.forEach(function (p) { sel.appendChild(el("option", {value: p.id}, tr(p.title))); });
      return form(sel.value);
    });
  }
  function withRegion(value) {
    // the region chosen above goes into the example's references: {"region": …} and ?region= on hrefs
    var text = JSON.stringify(value);
    var v = JSON.parse(text);
    (function walk(o) {
      if (!o || typeof o !== "object") { return; }
      Object.keys(o).forEach(function (k) {
        if (k === "region" && typeof o[k] === "string") { o[k] = state.region; }
        else if (k === "href" && typeof o[k] === "string" && o[k].indexOf("/collections/") === 0 &&
                 o[k].indexOf("region=") < 0 && o[k].indexOf("/collections/households") < 0) {
          o[k] += (o[k].indexOf("?") < 0 ? "?" : "&") + "region=" + encodeURIComponent(state.region);
        } else { walk(o[k]); }
      });
    })(v);
    return v;
  }
  function form(id) {
    return getJSON("/processes/" + id).then(function (p) {
      described = p;
      var f = $("run-form");
      f.textContent = "";
      $("process-help").textContent = tr(p.description);
      var help = p.links.filter(function (l) { return l.rel === "describedby"; })[0];
      if (help) {
        var a = el("a", {href: help.href, target: "_blank", rel: "noopener"}, T.help + ": " + help.title);
        $("process-help").appendChild(document.createTextNode(" "));
        $("process-help").appendChild(a);
      }
      Object.keys(p.inputs).forEach(function (name) {
        var inp = p.inputs[name], s = inp.schema || {}, id = "in-" + name;
        var example = s.examples ? withRegion(s.examples[0]) : undefined;
        var value = example !== undefined ? example : s["default"];
        if (inp.minOccurs === 0 && example === undefined && (value === undefined || value === null)) { return; }
        var lab = el("label", {"for": id}, tr(inp.title) + (inp.minOccurs ? " *" : ""));
        lab.appendChild(el("span", {"class": "help", id: id + "-help"}, tr(inp.description)));
        f.appendChild(lab);
        var field;
        if (s["enum"]) {
          field = el("select", {id: id, name: name});
          s["enum"].forEach(function (o) { var opt = el("option", {value: o}, o); if (o === value) { opt.selected = true; } field.appendChild(opt); });
        } else if (s.type === "integer" || s.type === "number") {
          field = el("input", {id: id, name: name, type: "number", step: s.type === "integer" ? "1" : "any"});
          if (s.minimum !== undefined) { field.min = s.minimum; }
          if (s.maximum !== undefined) { field.max = s.maximum; }
          if (value !== undefined && value !== null) { field.value = value; }
        } else if (s.type === "boolean") {
          field = el("input", {id: id, name: name, type: "checkbox"});
          field.checked = !!value;
        } else if (s.type === "string") {
          field = el("input", {id: id, name: name, type: "text"});
          if (value !== undefined && value !== null) { field.value = value; }
        } else {
          field = el("textarea", {id: id, name: name, "data-json": "1", spellcheck: "false"});
          field.value = value === undefined ? "" : JSON.stringify(value, null, 1);
        }
        field.setAttribute("aria-describedby", id + "-help");
        f.appendChild(field);
      });
      var go = el("button", {type: "submit", id: "run"}, T.run);
      f.appendChild(go);
    });
  }
  function submit(e) {
    e.preventDefault();
    var inputs = {}, status = $("job-status");
    try {
      Array.prototype.forEach.call($("run-form").elements, function (f) {
        if (!f.name) { return; }
        if (f.getAttribute("data-json")) { if (f.value.trim()) { inputs[f.name] = JSON.parse(f.value); } }
        else if (f.type === "checkbox") { inputs[f.name] = f.checked; }
        else if (f.type === "number") { if (f.value !== "") { inputs[f.name] = Number(f.value); } }
        else if (f.value !== "") { inputs[f.name] = f.value; }
      });
    } catch (err) { status.textContent = T.failed + " " + err.message; return; }
    var headers = {"Content-Type": "application/json", Accept: "application/json", Prefer: "respond-async"};
    if (cfg.session) { headers["X-CSRF-Token"] = cfg.session.csrf; }
    status.textContent = T.running;
    fetch(base + "/processes/" + described.id + "/execution", {method: "POST", headers: headers,
      credentials: "same-origin", body: JSON.stringify({inputs: inputs})}).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.detail || body.title); }
        return follow(body.jobID || (r.headers.get("Location") || "").split("/jobs/")[1]);
      });
    }).catch(function (err) { status.textContent = T.failed + " " + err.message; });
  }
  function follow(job) {
    var status = $("job-status");
    return getJSON("/jobs/" + job).then(function (j) {
      status.textContent = T.running + " " + (j.progress || 0) + " % " + (j.message || "");
      if (j.status === "accepted" || j.status === "running") {
        return new Promise(function (res) { setTimeout(res, 700); }).then(function () { return follow(job); });
      }
      if (j.status !== "successful") { throw new Error(j.message || j.status); }
      var out = j.links.filter(function (l) { return l.rel === "describedby" && l.href.indexOf("/collections/") >= 0; })[0];
      status.textContent = T.finished;
      status.setAttribute("data-job", job);
      if (out) { return drawResult(out.href.split("/collections/")[1].split(/[/?]/)[0], "run"); }
    });
  }

  // ------------------------------------------------------------------------------------------ wiring
  var tabs = Array.prototype.slice.call(document.querySelectorAll("[role=tab]"));
  function select(tab) {
    tabs.forEach(function (t) {
      var on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    });
    var view = tab.id.slice(4);
    if (STAGES[view] || view === "telecom") { stageList(view); }
    if (view === "overview") { clearResult(); } else { resultLegend(view); }
    if (view === "run" && !described) { processes(); }
    history.replaceState(null, "", "#" + view);
  }
  tabs.forEach(function (t, i) {
    t.addEventListener("click", function () { select(t); });
    t.addEventListener("keydown", function (e) {  // arrow keys move between tabs (WAI-ARIA tabs pattern)
      var d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (d) { var n = tabs[(i + d + tabs.length) % tabs.length]; n.focus(); select(n); }
    });
  });
  $("indicator").addEventListener("change", choropleth);
  $("level").addEventListener("change", choropleth);
  $("method").addEventListener("change", choropleth);
  $("year").addEventListener("change", function () { state.year = +$("year").value; overview(state.unit.code).then(choropleth); });
  $("region").addEventListener("change", function () { location.href = base + "/portal?" + q({region: $("region").value}); });
  $("process").addEventListener("change", function () { form($("process").value); });
  $("run-form").addEventListener("submit", submit);
  $("card-close").addEventListener("click", function () { $("card").hidden = true; });
  $("card").addEventListener("keydown", function (e) { if (e.key === "Escape") { $("card").hidden = true; } });
  Object.keys(POINTS).forEach(function (name) {
    var box = $(POINTS[name].box);
    if (box) { box.addEventListener("change", function () { togglePoints(name); }); }
  });
  map.on("click", function (e) {
    var hit = map.queryRenderedFeatures(e.point).filter(function (f) { return f.source === "units" || f.source === "villages"; })[0];
    if (!hit) { return; }
    var code = hit.properties.admin_code || hit.properties.id || String(hit.id).split("-")[0];
    var level = hit.source === "villages" ? 5 : +hit.properties.level;
    if (level === 5) { card(code); } else { overview(code); }
  });
  map.on("mousemove", function (e) {
    var hit = map.queryRenderedFeatures(e.point).filter(function (f) { return f.source === "units"; })[0];
    map.getCanvas().style.cursor = hit ? "pointer" : "";
    map.getCanvas().title = hit ? hit.properties.name : "";
  });
  function firstView() {  // the moment the map is drawn and the figures filled (bench/portal.py reads the mark)
    var b = document.body.dataset;
    if (b.map === "drawn" && b.figures === "ready" && !performance.getEntriesByName("tpa:first-view").length) {
      performance.mark("tpa:first-view");
    }
  }
  map.on("idle", function () {  // drawn: the choropleth's tiles are in and coloured by the classes
    if (map.getLayer("units-fill") && state.classes) { document.body.setAttribute("data-map", "drawn"); firstView(); }
  });

  if (!state.region) { return; }
  ready.then(fit);
  state.year = region().year;  // known with the page: figures, classes and tiles are asked for at once
  var years = $("year");
  if (state.year !== null && state.year !== undefined) { years.appendChild(el("option", {value: state.year}, state.year)); }
  Promise.all([overview(null), choropleth()]).then(function () {
    togglePoints("projects");
    var start = (location.hash || "").slice(1);
    var tab = $("tab-" + start);
    if (tab) { select(tab); }
  }).catch(function (e) { $("figures").textContent = String(e.message || e); });
})();
