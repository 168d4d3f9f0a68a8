"use strict";
const D = JSON.parse(document.getElementById("cnngenre-data").textContent);
const T = D.tracks, F = D.figures, C = F.counts, N = T.id.length;
const UNPREDICTED = "(not predicted)";
const PALETTE = ["#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86",
  "#EB663B", "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16",
  "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038", "#FD3216", "#00FE35",
  "#6A76FC", "#FED4C4", "#FE00CE", "#0DF9FF", "#F6F926", "#FF9616", "#479B55", "#EEA6FB", "#DC587D",
  "#D626FF", "#6E899C", "#00B5F7", "#B68E00", "#C9FBE5", "#FF0092", "#22FFA7", "#E3EE9E", "#86CE00",
  "#BC7196", "#7E7DCD", "#FC6955", "#E48F72"];

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function esc(s) { return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
function label(i) { return (T.artist[i] || "?") + " - " + (T.title[i] || "?") + (T.album[i] ? " [" + T.album[i] + "]" : ""); }
function trackList(positions) {
  const list = el("ol");
  for (const i of positions) list.appendChild(el("li", label(i) + "  (tagged: " + (T.tagged[i].join(", ") || "none") +
    "; predicted: " + (T.predicted[i].map(p => p[0] + " " + p[1].toFixed(2)).slice(0, 3).join(", ") || "none") + ")"));
  return list;
}
function table(header, rows) {
  const t = el("table"), head = el("tr");
  header.forEach(h => head.appendChild(el("th", h)));
  t.appendChild(head);
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) {
      if (cell instanceof Node) { const td = el("td"); td.appendChild(cell); tr.appendChild(td); }
      else tr.appendChild(el("td", cell === null || cell === undefined ? "n/a" : cell, typeof cell === "number" ? {class: "n"} : {}));
    }
    t.appendChild(tr);
  }
  return t;
}
function fixed(v, digits) { return v === null || v === undefined ? "n/a" : Number(v).toFixed(digits); }

document.getElementById("summary").textContent =
  C.matched + " tracks matched (" + C.albums + " albums, " + C.singletons + " singletons): " + C.on_map +
  " on the map, " + C.without_features + " without cached features (not on the map); " + C.predicted +
  " predicted, " + C.not_predicted + " not predicted (" + C.not_predicted_without_features +
  " of them without cached features either)" + (C.predicted_by_other_model ? ", " + C.predicted_by_other_model +
  " predicted by another model" : "") + "; " + C.suspects + " suspects (cnn_suspect \u2265 " + D.suspect_threshold +
  "). Made " + D.created + ".";

// ------------------------------------------------------------------ the map
const genres = D.model.genres.slice();
for (const g of T.primary) if (g && !genres.includes(g)) genres.push(g);
const colour = {};
genres.forEach((g, i) => colour[g] = PALETTE[i % PALETTE.length]);
colour[UNPREDICTED] = "#b0b0b0";
function hover(i) {
  const predicted = T.predicted[i].slice(0, 5).map(p => esc(p[0]) + " " + p[1].toFixed(2)).join(", ") || "not predicted";
  return "<b>" + esc(T.title[i] || "?") + "</b><br>" + esc(T.artist[i] || "?") + " \u2014 " + esc(T.album[i] || "(singleton)") +
    "<br>tagged: " + (esc(T.tagged[i].join(", ")) || "none") + "<br>predicted: " + predicted +
    (T.suspect[i] !== null ? "<br>suspect score: " + T.suspect[i].toFixed(2) : "");
}
// Without WebGL (an old or locked-down browser) the map is drawn as SVG: slower, but it is drawn.
const WEBGL = (() => {
  try { const c = document.createElement("canvas"); return !!(c.getContext("webgl") || c.getContext("experimental-webgl")); }
  catch (e) { return false; }
})();
const SCATTER = WEBGL ? "scattergl" : "scatter";
const byGenre = {};
for (let i = 0; i < N; i++) {
  if (T.x[i] === null) continue;
  const g = T.primary[i] || UNPREDICTED;
  (byGenre[g] = byGenre[g] || []).push(i);
}
const traces = [];
for (const g of [...genres, UNPREDICTED]) {
  const members = byGenre[g];
  if (!members) continue;
  traces.push({type: SCATTER, mode: "markers", name: g + " (" + members.length + ")",
    x: members.map(i => T.x[i]), y: members.map(i => T.y[i]), customdata: members,
    text: members.map(hover), hoverinfo: "text", marker: {size: 6, color: colour[g], opacity: 0.75}});
}
const suspects = [];
for (let i = 0; i < N; i++) if (T.x[i] !== null && T.suspect[i] !== null && T.suspect[i] >= D.suspect_threshold) suspects.push(i);
traces.push({type: SCATTER, mode: "markers", name: "suspects (" + suspects.length + ")", x: suspects.map(i => T.x[i]),
  y: suspects.map(i => T.y[i]), customdata: suspects, text: suspects.map(hover), hoverinfo: "text",
  marker: {size: 13, color: "#d00000", line: {color: "#d00000", width: 2}, symbol: "circle-open"}});
const highlightTrace = traces.length;
traces.push({type: SCATTER, mode: "markers", name: "highlighted album", x: [], y: [], customdata: [], text: [],
  hoverinfo: "text", marker: {size: 14, color: "rgba(255,215,0,0.5)", line: {color: "#000", width: 2}}});
const mapDiv = document.getElementById("map");
document.getElementById("map-note").textContent = "Each track is a point placed by its audio (the first two principal " +
  "axes of its cached embedding), coloured by its predicted primary genre; suspects are ringed in red. Hover for " +
  "details; click a track or pick an album to highlight the album; click a legend entry to hide a genre. " +
  (C.without_features ? C.without_features + " matched tracks have no cached features and are not drawn." : "");
Plotly.newPlot(mapDiv, traces, {margin: {l: 30, r: 10, t: 36, b: 30}, hovermode: "closest", dragmode: "pan",
  legend: {itemsizing: "constant"}, xaxis: {zeroline: false, showticklabels: false},
  yaxis: {zeroline: false, showticklabels: false}},
  {responsive: true, displaylogo: false, showLink: false, scrollZoom: true, showSendToCloud: false,
   modeBarButtonsToRemove: ["sendDataToCloud"]});

const albums = {};
for (let i = 0; i < N; i++) if (T.album_key[i] !== null) (albums[T.album_key[i]] = albums[T.album_key[i]] || []).push(i);
const albumNames = {};
const datalist = document.getElementById("album-list");
for (const key of Object.keys(albums)) {
  const i = albums[key][0], name = (T.album[i] || "?") + " \u2014 " + (T.artist[i] || "?") + " #" + key;
  albumNames[name] = key;
  datalist.appendChild(el("option", null, {value: name}));
}
function highlightAlbum(key) {
  const members = key === null ? [] : (albums[key] || []).filter(i => T.x[i] !== null);
  Plotly.restyle(mapDiv, {x: [members.map(i => T.x[i])], y: [members.map(i => T.y[i])], customdata: [members],
    text: [members.map(hover)]}, [highlightTrace]);
  const info = document.getElementById("album-info");
  if (key === null) { info.textContent = ""; return; }
  const all = albums[key] || [];
  const split = {};
  all.forEach(i => { const g = T.primary[i] || UNPREDICTED; split[g] = (split[g] || 0) + 1; });
  info.textContent = (T.album[all[0]] || "?") + ": " + all.length + " tracks (" + members.length + " on the map); predicted " +
    Object.entries(split).sort((a, b) => b[1] - a[1]).map(e => e[0] + " " + e[1]).join(", ");
}
document.getElementById("album-input").addEventListener("change", e => {
  if (albumNames[e.target.value] !== undefined) highlightAlbum(albumNames[e.target.value]);
});
document.getElementById("album-clear").addEventListener("click", () => {
  document.getElementById("album-input").value = ""; highlightAlbum(null); });
mapDiv.on("plotly_click", e => {
  const i = e.points[0].customdata;
  if (i !== undefined && T.album_key[i] !== null) highlightAlbum(T.album_key[i]);
});
// PAGE.html#album=KEY opens the page with that album highlighted (a link to share, a screenshot to take).
const opened = /^#album=(.+)$/.exec(window.location.hash);
if (opened && albums[decodeURIComponent(opened[1])]) highlightAlbum(decodeURIComponent(opened[1]));
function showAlbumOnMap(key) { highlightAlbum(key); document.getElementById("map-section").scrollIntoView(); }

// ------------------------------------------------------------------ per genre
{
  const most = Math.max(1, ...F.per_genre.map(r => Math.max(r[1], r[2])));
  const rows = F.per_genre.map(([g, tagged, predicted]) => {
    const bars = el("span");
    bars.appendChild(el("span", "", {class: "bar t", style: "width:" + (200 * tagged / most) + "px"}));
    bars.appendChild(el("br"));
    bars.appendChild(el("span", "", {class: "bar p", style: "width:" + (200 * predicted / most) + "px"}));
    return [g, tagged, predicted, bars];
  });
  const box = document.getElementById("genres");
  box.appendChild(el("p", "Per genre of the model: tracks tagged with it (grey; the library's tags, after aliases) and " +
    "tracks given it by the audio (blue; cnn_genres).", {class: "note"}));
  box.appendChild(table(["genre", "tagged", "predicted", ""], rows));
}

// ------------------------------------------------------------------ agreement matrix
{
  const M = F.matrix, cells = {};
  for (const [r, c, members] of M.cells) cells[r + "," + c] = members;
  const t = el("table"), head = el("tr");
  head.appendChild(el("th", "tagged \u2193 / predicted \u2192"));
  M.columns.forEach(c => head.appendChild(el("th", c)));
  t.appendChild(head);
  M.rows.forEach((r, ri) => {
    const tr = el("tr");
    tr.appendChild(el("th", r));
    M.columns.forEach((c, ci) => {
      const members = cells[ri + "," + ci] || [];
      const td = el("td", null, {class: "n" + (r === c ? " agree" : "") + (members.length ? "" : " zero")});
      if (members.length) {
        const b = el("button", members.length, {type: "button", title: r + " \u2192 " + c});
        b.addEventListener("click", () => {
          const box = document.getElementById("cell-tracks");
          box.replaceChildren(el("h3", "Tagged " + r + ", predicted " + c + ": " + members.length + " tracks"), trackList(members));
        });
        td.appendChild(b);
      } else td.textContent = "0";
      tr.appendChild(td);
    });
    t.appendChild(tr);
  });
  document.getElementById("matrix").appendChild(t);
}

// ------------------------------------------------------------------ albums and singletons
{
  const box = document.getElementById("albums");
  box.appendChild(el("p", F.split_albums.length + " albums whose most common predicted genre covers at most half of their " +
    "predicted tracks (most split first).", {class: "note"}));
  if (F.split_albums.length) box.appendChild(table(["album", "artist", "tracks", "predicted genres", ""],
    F.split_albums.map(a => {
      const b = el("button", "show on the map", {type: "button"});
      b.addEventListener("click", () => showAlbumOnMap(String(a.album_key)));
      return [a.album || "(no album tag; beets album " + a.album_key + ")", a.artist || "?", a.tracks.length,
        a.split.map(s => s[0] + " " + s[1]).join(", "), b];
    })));
  const far = document.getElementById("singletons");
  far.appendChild(el("p", F.far_singletons.length + " singletons whose best predicted genre is below the threshold (" +
    D.threshold + "), farthest first.", {class: "note"}));
  if (F.far_singletons.length) far.appendChild(table(["track", "tagged", "best genre", "probability"],
    F.far_singletons.map(([i, p]) => [label(i), T.tagged[i].join(", ") || "none", T.predicted[i][0][0], fixed(p, 2)])));
}

// ------------------------------------------------------------------ the model
{
  const m = D.model, box = document.getElementById("model");
  box.appendChild(el("p", (m.name ? m.name + " \u2014 " : "") + m.id + ": backbone " + m.backbone + ", trained " +
    (m.trained_at || "at an unknown time") + " on " + (m.train_tracks ?? "?") + " tracks; " + m.genres.length + " genres."));
  const v = m.validation;
  if (v && v.per_genre) {
    box.appendChild(el("p", "Held-out quality from training (each track predicted by a model that never heard its artist): " +
      "micro-F1 " + fixed(v.micro_f1, 3) + ", macro-F1 " + fixed(v.macro_f1, 3) + ", mAP " + fixed(v.mean_average_precision, 3) +
      " on " + v.tracks + " tracks; primary genre right for " + (v.top1_accuracy === null ? "n/a" : (100 * v.top1_accuracy).toFixed(1) + "%") +
      " of " + v.top1_tracks + "."));
    // Figures a newer training report adds per genre (artists, ...) get columns of their own.
    const shown = ["precision", "recall", "f1", "average_precision", "support"];
    const more = [...new Set(Object.values(v.per_genre).flatMap(r => Object.keys(r || {})))]
      .filter(k => !shown.includes(k) && m.genres.some(g => typeof (v.per_genre[g] || {})[k] === "number"));
    box.appendChild(table(["genre", "precision", "recall", "F1", "AP", "held-out tracks", ...more, "trained on"],
      m.genres.map(g => { const r = v.per_genre[g] || {};
        return [g + (m.from_children[g] ? " (from " + m.from_children[g].join(", ") + ")" : ""), fixed(r.precision, 2),
          fixed(r.recall, 2), fixed(r.f1, 2), fixed(r.average_precision, 2), r.support ?? "n/a",
          ...more.map(k => typeof r[k] === "number" ? r[k] : "n/a"), m.tracks_per_genre[g] ?? "n/a"]; })));
    if (typeof v.threshold === "number") box.appendChild(el("p", "Genres given at probability \u2265 " + v.threshold +
      (typeof v.top_k === "number" ? ", at most " + v.top_k + " per track" : "") + "."));
    const unscored = m.genres.filter(g => !v.per_genre[g] || v.per_genre[g].f1 === null);
    if (unscored.length) box.appendChild(el("p", "Genres training could not score on held-out tracks: " + unscored.join(", ")));
  } else box.appendChild(el("p", "The model file holds no held-out quality report."));
  box.appendChild(el("h3", "Genres it cannot judge"));
  const unjudged = F.unjudged_genres;
  box.appendChild(el("p", unjudged.length ? "Tagged in these tracks but not among the model's genres (tracks): " +
    unjudged.map(u => u[0] + " " + u[1]).join(", ") : "Every tagged genre of these tracks is one of the model's."));
}
