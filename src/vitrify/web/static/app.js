// The vitrify dashboard page: fetches the JSON endpoints, draws them, and refreshes whenever the
// server's event stream says the project changed (no page reloads).
"use strict";

const TOKEN = document.querySelector('meta[name="vitrify-token"]').content;
const {scatterPlot, linePlot} = window.vitrifyPlots;
const view = {signature: "", job: null, micrograph: null, micrographPinned: false, refreshing: false,
              again: false, refreshes: 0};

function api(path, params) {
  const query = new URLSearchParams(Object.assign({token: TOKEN}, params || {}));
  return `${path}?${query}`;
}

async function getJSON(path, params) {
  const response = await fetch(api(path, params), {cache: "no-store"});
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 60) return `${value.toFixed(1)} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${Math.floor(value / 3600)} h ${Math.round((value % 3600) / 60)} min`;
}

function clock(value) {
  return value ? new Date(value * 1000).toLocaleTimeString() : "";
}

function badge(status) {
  return element("span", {class: `badge ${String(status).toLowerCase().replace(/\s+/g, "-")}`}, status);
}

// ---- schemes ---------------------------------------------------------------------------------
async function schemeAction(name, action) {
  if (action === "abort" && !window.confirm(`Abort scheme ${name} and its running job?`)) return;
  const response = await fetch(`api/schemes/${encodeURIComponent(name)}/${action}`,
                               {method: "POST", headers: {"X-Vitrify-Token": TOKEN}});
  const body = await response.json().catch(() => ({}));
  document.getElementById(`scheme-message-${name}`).textContent =
    response.ok ? `${action} sent` : `${action} refused: ${body.error || response.status}`;
}

function renderSchemes(schemes) {
  const box = document.getElementById("schemes");
  if (!schemes.length) return;
  box.replaceChildren(...schemes.map(s => {
    const card = element("div", {class: "card", "data-scheme": s.scheme});
    const head = element("div", {class: "cardhead"});
    head.append(element("strong", {}, s.scheme), badge(s.state),
                element("span", {class: "node"}, `at ${s.current_node || "?"}`));
    const buttons = element("div", {class: "buttons"});
    for (const action of ["abort", "continue"]) {
      const button = element("button", {type: "button", class: action}, action);
      button.disabled = action === "abort" ? s.state !== "running" : s.state === "running";
      button.addEventListener("click", () => schemeAction(s.scheme, action));
      buttons.append(button);
    }
    buttons.append(element("span", {id: `scheme-message-${s.scheme}`, class: "sub"}));
    const jobs = element("table", {class: "small"});
    for (const j of s.jobs || []) {
      const row = element("tr", {class: j.node === s.current_node ? "current" : ""});
      row.append(element("td", {}, j.node), element("td", {}, j.job === j.node ? "" : j.job),
                 element("td", {}, ""));
      row.lastChild.append(badge(j.status));
      jobs.append(row);
    }
    card.append(head, buttons, jobs);
    if ((s.log || []).length) card.append(element("pre", {class: "log"}, s.log.join("\n")));
    return card;
  }));
  scrollLogsToEnd(box);
}

function scrollLogsToEnd(box) {
  for (const pre of box.querySelectorAll("pre.log")) pre.scrollTop = pre.scrollHeight;
}

// ---- jobs and failures -----------------------------------------------------------------------
function renderJobs(jobs) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren(...jobs.map(j => {
    const row = element("tr", {"data-job": j.name, "data-status": j.status,
                               class: j.name === view.job ? "chosen" : ""});
    row.append(element("td", {}, j.alias ? `${j.name} (${j.alias})` : j.name), element("td", {}, j.type),
               element("td"), element("td", {}, clock(j.start_s)), element("td", {}, seconds(j.elapsed_s)));
    row.children[2].append(badge(j.status));
    row.addEventListener("click", () => { view.job = view.job === j.name ? null : j.name; refresh(); });
    return row;
  }));
}

async function renderJobDetail() {
  const box = document.getElementById("job-detail");
  if (!view.job) { box.classList.add("hidden"); return; }
  const detail = await getJSON("api/job", {name: view.job});
  box.classList.remove("hidden");
  box.replaceChildren(element("h3", {}, detail.name));
  for (const [file, text] of Object.entries(detail.logs)) {
    if (!text) continue;
    box.append(element("div", {class: "sub"}, file), element("pre", {class: "log", "data-file": file}, text));
  }
  scrollLogsToEnd(box);
}

function renderFailures(failures) {
  const list = document.getElementById("failures");
  if (!failures.length) { list.replaceChildren(element("li", {class: "empty"}, "Nothing failed.")); return; }
  list.replaceChildren(...failures.map(f => {
    const item = element("li", {class: f.kind});
    item.append(element("strong", {}, `${f.job} ${f.kind}`), element("pre", {class: "log"}, f.message));
    return item;
  }));
}

// ---- micrographs -----------------------------------------------------------------------------
function thresholdLines(metric) {
  const lines = [];
  for (const t of metric.thresholds || []) {
    if (t.min !== null) lines.push({value: t.min, label: `${t.job} min ${t.min}`});
    if (t.max !== null) lines.push({value: t.max, label: `${t.job} max ${t.max}`});
  }
  return lines;
}

function chooseMicrograph(name) {
  view.micrograph = name;
  view.micrographPinned = true;
  document.getElementById("mic-select").value = name;
  refresh();
}

function renderProgress(progress) {
  document.getElementById("progress").replaceChildren(...progress.map(p => {
    const chip = element("span", {title: p.job, "data-step": p.step});
    chip.append(element("b", {}, String(p.count)), ` ${p.step}`);
    return chip;
  }));
}

function timeAxis(rows) {
  const times = rows.map(r => r.time_s).filter(t => t !== null);
  const start = times.length ? Math.min(...times) : 0;
  const span = times.length ? Math.max(...times) - start : 0;
  return span > 3 * 3600 ? {start, scale: 3600, label: "hours"} : {start, scale: 60, label: "minutes"};
}

function renderMicrographs(data) {
  renderProgress(data.progress || []);
  const rows = data.micrographs;
  document.getElementById("mic-count").textContent = rows.length ? `(${rows.length})` : "";
  const axis = timeAxis(rows);
  const box = document.getElementById("mic-plots");
  for (const metric of data.metrics) {
    let svg = box.querySelector(`svg[data-metric="${metric.key}"]`);
    if (!svg) {
      svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("data-metric", metric.key);
      svg.id = `plot-${metric.key}`;
      box.append(svg);
    }
    const points = rows.map(r => ({x: r.time_s === null ? NaN : (r.time_s - axis.start) / axis.scale, y: r[metric.key],
                                   rejected: r.selected === false, id: r.name,
                                   tip: `${r.name}\n${metric.title}: ${r[metric.key]} ${metric.unit}`}));
    scatterPlot(svg, {points, thresholds: thresholdLines(metric), title: metric.title, xLabel: axis.label,
                      yLabel: metric.unit, highlight: view.micrograph, onClick: chooseMicrograph});
  }
  renderMicrographView(rows);
}

function renderMicrographView(rows) {
  const select = document.getElementById("mic-select");
  const names = rows.map(r => r.name);
  if (!view.micrographPinned || !names.includes(view.micrograph)) view.micrograph = names[names.length - 1] || null;
  select.replaceChildren(...names.map(n => element("option", {value: n}, n.split("/").pop())));
  if (view.micrograph) select.value = view.micrograph;
  const image = document.getElementById("mic-image");
  const row = rows.find(r => r.name === view.micrograph);
  if (!row) { image.removeAttribute("src"); return; }
  const src = api("api/micrograph.png", {name: row.name, v: view.signature});
  if (image.getAttribute("src") !== src) image.setAttribute("src", src);
  const fmt = v => (v === null || v === undefined ? "–" : Number(v).toFixed(1));
  document.getElementById("mic-info").textContent =
    `${row.name} · drift ${fmt(row.drift_angst)} Å · defocus ${fmt(row.defocus_angst)} Å · ` +
    `CTF to ${fmt(row.ctf_max_resolution_angst)} Å · ${row.picks ?? "–"} picks` +
    (row.selected === false ? " · rejected by the selection" : "");
}

// ---- classes and maps ------------------------------------------------------------------------
function renderClasses(data) {
  const gallery = document.getElementById("class-gallery");
  const info = document.getElementById("classes-info");
  if (!data.job) return;
  const ranker = data.ranker;
  info.textContent = `${data.model}` + (data.resolution_angst ? ` · ${data.resolution_angst.toFixed(1)} Å` : "") +
    (ranker ? ` · ranked by ${ranker.job}` + (ranker.threshold !== null ? `, threshold ${ranker.threshold}` : "") +
              `, ${ranker.n_selected} selected` : " · no class ranker yet");
  const shown = data.classes.length ? data.classes[0].stack : null;
  if (ranker && shown && !ranker.stacks.includes(shown)) {
    info.textContent += ` (it ranked ${ranker.stacks.join(", ")}, not these classes yet)`;
  }
  gallery.replaceChildren(...data.classes.map(c => {
    const figure = element("figure", {class: "class" + (c.selected ? " selected" : ""), "data-class": c.number,
                                      "data-score": c.score === null ? "" : c.score});
    figure.append(element("img", {src: api("api/class.png", {stack: c.stack, number: c.number, v: view.signature}),
                                  alt: `class ${c.number}`}));
    const share = c.distribution === null ? "" : ` · ${(100 * c.distribution).toFixed(1)}%`;
    const score = c.score === null ? "" : ` · score ${c.score.toFixed(2)}`;
    figure.append(element("figcaption", {}, `#${c.number}${share}${score}`));
    return figure;
  }));
}

function renderMaps(maps) {
  const box = document.getElementById("maps");
  if (!maps.length) return;
  box.replaceChildren(...maps.map(m => {
    const card = element("div", {class: "map", "data-map": m.map});
    card.append(element("h3", {}, `${m.job} ${m.type}` +
                        (m.resolution_angst ? ` · ${m.resolution_angst.toFixed(2)} Å` : "")));
    card.append(element("img", {src: api("api/map.png", {path: m.map, v: view.signature}),
                                alt: `central sections of ${m.map}`, class: "slices"}));
    if (m.fsc) {
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "fsc");
      linePlot(svg, {curves: [{xs: m.fsc.resolution_inv_angst, ys: m.fsc.fsc}], yRange: [-0.05, 1.05],
                     guides: [{value: 0.143, label: "0.143"}], title: `FSC (${m.fsc.label})`,
                     xLabel: "1/Å", yLabel: "FSC"});
      card.append(svg);
    }
    return card;
  }));
}

// ---- refresh loop ----------------------------------------------------------------------------
async function refresh() {
  if (view.refreshing) { view.again = true; return; }
  view.refreshing = true;
  try {
    const [state, micrographs, classes, maps] = await Promise.all(
      ["api/state", "api/micrographs", "api/classes", "api/maps"].map(p => getJSON(p)));
    view.signature = state.signature;
    renderSchemes(state.schemes);
    renderJobs(state.jobs);
    renderFailures(state.failures);
    renderMicrographs(micrographs);
    renderClasses(classes);
    renderMaps(maps);
    await renderJobDetail();
    view.refreshes += 1;
    document.body.dataset.signature = state.signature;
    document.body.dataset.refreshes = String(view.refreshes);
  } catch (error) {
    document.getElementById("live-status").textContent = `error: ${error.message}`;
  } finally {
    view.refreshing = false;
    if (view.again) { view.again = false; refresh(); }
  }
}

function listen() {
  const status = document.getElementById("live-status");
  const source = new EventSource(api("api/events"));
  source.addEventListener("open", () => { status.textContent = "live"; status.className = "live on"; });
  source.addEventListener("error", () => { status.textContent = "reconnecting…"; status.className = "live off"; });
  source.addEventListener("change", event => {
    status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    if (event.data !== view.signature) refresh();
  });
}

document.getElementById("mic-select").addEventListener("change", event => chooseMicrograph(event.target.value));
refresh();
listen();
