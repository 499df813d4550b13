"use strict";
// The live cluster page: renders each state the console streams on
// /events (server-sent events). Everything is built with DOM calls and
// textContent: nothing from the cluster is ever parsed as HTML.
(function () {
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  };
  const num = (v, d = 1) => (v === undefined || v === null ? "–" : Number(v).toFixed(d));
  const ms = (v) => (v === undefined || v === null ? "–" : (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms");
  const fill = (tbody, rows) => tbody.replaceChildren(...rows);

  function totals(s) {
    const t = s.totals;
    const box = (label, value, id) => el("div", { id }, el("b", {}, value), el("span", {}, label));
    $("#totals").replaceChildren(
      box("nodes live / known", t.live_nodes + " / " + t.nodes, "total-nodes"),
      box("connections", t.connections, "total-connections"),
      box("pushes/s", num(t.pushes_per_s)),
      box("acked/s", num(t.acked_per_s)),
      box("offline/s", num(t.offline_per_s)),
      box("timeouts/s", num(t.timeouts_per_s)),
      box("map version", s.map_version)
    );
  }

  function services(s) {
    fill($("#services tbody"), s.services.map((sv) => {
      const pools = el("td", {});
      for (const t of sv.tiers) {
        const label = t.tier + (t.tier === sv.default_tier ? "*" : "") + ": " + (t.nodes.length ? t.nodes.join(", ") : "no node") + " (" + t.connections + ")";
        pools.append(el("span", { class: "pill" + (t.nodes.length ? "" : " dead") }, label));
      }
      return el("tr", { "data-service": sv.name },
        el("td", {}, el("b", {}, sv.name)),
        el("td", { class: "n", "data-field": "connections" }, sv.connections),
        el("td", { class: "n" }, num(sv.pushes_per_s)), el("td", { class: "n" }, num(sv.acked_per_s)),
        el("td", { class: "n" + (sv.offline_per_s > 0 ? " bad" : "") }, num(sv.offline_per_s)),
        el("td", { class: "n" + (sv.timeouts_per_s > 0 ? " bad" : "") }, num(sv.timeouts_per_s)),
        el("td", { class: "n" }, ms(sv.p50_ms)), el("td", { class: "n" }, ms(sv.p90_ms)), el("td", { class: "n" }, ms(sv.p99_ms)),
        pools);
    }));
  }

  function nodes(s) {
    fill($("#nodes tbody"), s.nodes.map((n) => {
      const by = el("td", {});
      for (const svc of Object.keys(n.services).sort()) {
        const tiers = n.services[svc];
        const parts = Object.keys(tiers).sort().map((t) => (t || "none") + " " + tiers[t]);
        by.append(el("span", { class: "pill" }, svc + ": " + parts.join(", ")));
      }
      const state = el("span", { class: "pill state-" + n.state + (n.live ? "" : " dead") }, n.state + (n.live ? "" : ", dead"));
      return el("tr", { "data-node": n.id },
        el("td", {}, el("b", {}, n.id)),
        el("td", { class: "n", "data-field": "connections" }, n.stats ? n.connections : "–"),
        el("td", {}, state), el("td", {}, n.class || ""),
        el("td", { class: "n" }, n.stats ? Math.round(n.cpu * 100) + "%" : "–"),
        el("td", { class: "n" }, n.stats ? ms(n.lag_ms) : "–"),
        by, el("td", { class: "muted" }, n.pools.join(" ")));
    }));
  }

  function decisions(s) {
    const list = s.decisions.map((d) => {
      const where = [d.service, d.tier, d.node].filter(Boolean).join(" / ");
      const figs = Object.entries(d.figures || {}).map(([k, v]) => k + " " + (Math.round(v * 100) / 100)).join(", ");
      const outcome = d.error ? "failed: " + d.error : d.dry_run ? "dry run" : d.applied ? "applied" : "not applied";
      return el("li", {},
        el("div", { class: "when" }, new Date(d.at).toLocaleTimeString() + " · " + d.rule + (where ? " · " + where : "") + " · " + outcome),
        el("div", {}, d.change), el("div", { class: "fig" }, figs));
    });
    if (!list.length) list.push(el("li", { class: "muted" }, "no decision yet"));
    $("#decisions").replaceChildren(...list);
  }

  function disconnects(s) {
    $("#gone-window").textContent = "(last " + s.disconnect_window_s + " s)";
    const rows = Object.entries(s.disconnects).sort((a, b) => b[1] - a[1])
      .map(([r, k]) => el("tr", {}, el("td", {}, r), el("td", { class: "n" }, k)));
    if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted" }, "none")));
    fill($("#disconnects tbody"), rows);
  }

  function render(s) {
    totals(s);
    services(s);
    nodes(s);
    decisions(s);
    disconnects(s);
    const st = $("#status");
    st.dataset.state = "live";
    st.textContent = "live · " + new Date(s.at).toLocaleTimeString() + (s.map_error ? " · map: " + s.map_error : "");
    document.body.dataset.updated = s.at;
  }

  const es = new EventSource("events");
  es.addEventListener("state", (e) => render(JSON.parse(e.data)));
  es.onerror = () => {
    const st = $("#status");
    st.dataset.state = "lost";
    st.textContent = "connection lost; retrying…";
  };
})();
