// greenfly's status page: polls the broker's own JSON (/api/v1/overview every second,
// /api/v1/clients every two) and draws the rate chart on a canvas. No libraries: the page
// must work on a firewalled VPS with no way out to a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
let filterText = "";

function fmtNumber(n) {
  if (n === null || n === undefined) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n * 100) / 100);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "memory only";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function fmtDuration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${Math.floor(s % 60)}s` : `${Math.floor(s)}s`;
}

function setText(id, text) { const el = $(id); if (el.textContent !== text) el.textContent = text; }

function showOverview(o) {
  const state = $("state");
  state.textContent = o.ready ? "ready" : (o.journal_failure ? "journal failing: " + o.journal_failure : "not ready");
  state.className = "pill " + (o.ready ? "ok" : "bad");
  setText("uptime", fmtDuration(o.uptime));
  setText("clients-online", String(o.clients_online));
  setText("clients-offline", String(o.clients_offline));
  const last = o.rates.length ? o.rates[o.rates.length - 1] : [0, 0, 0];
  setText("rate-in", fmtNumber(last[1]));
  setText("rate-out", fmtNumber(last[2]));
  setText("received", String(o.messages_received));
  setText("sent", String(o.messages_sent));
  const drops = Object.entries(o.dropped);
  setText("dropped", String(drops.reduce((sum, [, n]) => sum + n, 0)));
  setText("dropped-detail", drops.filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", "));
  setText("queued", String(o.queued));
  setText("inflight", String(o.inflight));
  setText("journal", fmtBytes(o.journal_bytes));
  setText("fsync", o.fsync_avg_seconds === null ? "idle" : (o.fsync_avg_seconds * 1000).toFixed(2) + " ms avg");
  setText("subscriptions", String(o.subscriptions));
  setText("retained", String(o.retained));
  drawChart(o.rates);
}

function drawChart(rates) {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 960, height = canvas.clientHeight || 220;
  if (canvas.width !== width * ratio) { canvas.width = width * ratio; canvas.height = height * ratio; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const css = getComputedStyle(document.documentElement);
  const left = 48, bottom = 20, top = 8, plotW = width - left - 8, plotH = height - top - bottom;
  const now = rates.length ? rates[rates.length - 1][0] : Date.now() / 1000;
  const span = 900;
  let max = 1;
  for (const r of rates) max = Math.max(max, r[1], r[2]);
  max = niceCeiling(max);
  ctx.strokeStyle = css.getPropertyValue("--line");
  ctx.fillStyle = css.getPropertyValue("--muted");
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
    ctx.fillText(fmtNumber((max * i) / 4), 4, y + 4);
  }
  for (let minutes = 15; minutes >= 0; minutes -= 5) {
    const x = left + plotW - (plotW * minutes * 60) / span;
    ctx.fillText(minutes ? `-${minutes}m` : "now", Math.min(x - 8, left + plotW - 24), height - 4);
  }
  for (const [index, color] of [[1, "--in"], [2, "--out"]]) {
    ctx.strokeStyle = css.getPropertyValue(color);
    ctx.lineWidth = 2;
    ctx.beginPath();
    rates.forEach((r, i) => {
      const x = left + plotW - (plotW * (now - r[0])) / span;
      const y = top + plotH - (plotH * r[index]) / max;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function niceCeiling(n) {
  const power = Math.pow(10, Math.floor(Math.log10(n)));
  for (const step of [1, 2, 5, 10]) if (n <= step * power) return step * power;
  return 10 * power;
}

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (numeric) td.className = "num";
  return td;
}

function showClients(page) {
  const body = $("clients");
  const rows = page.items.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.clientId = c.client_id;
    tr.append(cell(c.client_id), cell(c.address), cell(c.user), cell(`${c.protocol} (${c.transport})`),
              cell(c.keepalive, true), cell(c.connected_since.replace("T", " ").replace("+00:00", " UTC")),
              cell(c.inflight, true), cell(c.queued, true), cell(c.subscriptions, true));
    return tr;
  });
  body.replaceChildren(...rows);
  setText("client-count", page.total > page.items.length
    ? `${page.items.length} of ${page.total}` : `${page.total}`);
}

async function getJSON(path) {
  const reply = await fetch(path, { cache: "no-store" });
  if (!reply.ok) throw new Error(`${path}: ${reply.status}`);
  return reply.json();
}

async function pollOverview() {
  try { showOverview(await getJSON("api/v1/overview")); }
  catch (err) { $("state").textContent = "broker unreachable"; $("state").className = "pill bad"; }
}

async function pollClients() {
  try {
    const q = filterText ? "&q=" + encodeURIComponent(filterText) : "";
    showClients(await getJSON("api/v1/clients?limit=200" + q));
  } catch (err) { /* the overview poll shows the broker unreachable */ }
}

$("filter").addEventListener("input", (event) => { filterText = event.target.value.trim(); pollClients(); });
pollOverview();
pollClients();
setInterval(pollOverview, 1000);
setInterval(pollClients, 2000);
