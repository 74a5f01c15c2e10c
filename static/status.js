// The operator page: polls /status every few seconds and draws it. Every value from
// the server is written with textContent, never as HTML.
const POLL_MS = 3000;
const HISTORY = 120; // samples kept per chart: six minutes at the poll rate
const series = { connections: [], messages: [], deliveries: [] };

const $ = (id) => document.getElementById(id);

function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = String(value);
  if (className) el.className = className;
  return el;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(s) {
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function drawChart(canvas, values) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const style = getComputedStyle(document.documentElement);
  ctx.clearRect(0, 0, width, height);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = style.getPropertyValue("--border");
  ctx.beginPath();
  ctx.moveTo(0, height - 0.5);
  ctx.lineTo(width, height - 0.5);
  ctx.stroke();
  ctx.fillStyle = style.getPropertyValue("--muted");
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(`max ${max.toFixed(max < 10 ? 1 : 0)}`, 6, 14);
  if (values.length < 2) return;
  ctx.strokeStyle = style.getPropertyValue("--accent");
  ctx.lineWidth = 2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * width;
    const y = height - 4 - (v / max) * (height - 24);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function push(name, value) {
  series[name].push(value);
  if (series[name].length > HISTORY) series[name].shift();
  drawChart($(`chart-${name}`), series[name]);
}

function renderTotals(totals) {
  const tiles = [
    ["Processes", totals.processes],
    ["Connections", totals.connections],
    ["Bot connections", totals.bot_connections],
    ["Messages / s", totals.messages_per_s_1m],
    ["Deliveries / s", totals.deliveries_per_s_1m],
    ["Memory (RSS)", bytes(totals.rss_bytes)],
  ];
  const dl = $("totals");
  dl.replaceChildren(...tiles.map(([label, value]) => {
    const div = document.createElement("div");
    div.append(text("dt", label), text("dd", value));
    return div;
  }));
}

function renderServices(services) {
  $("services").replaceChildren(...Object.entries(services).map(([name, s]) => {
    const li = document.createElement("li");
    li.append(text("strong", `${name}: `));
    li.append(s.ok ? text("span", `up, ${s.rtt_ms} ms`, "ok")
                   : text("span", `down (${s.error})`, "down"));
    return li;
  }));
}

function renderProcesses(processes) {
  $("processes").replaceChildren(...processes.map((p) => {
    const tr = document.createElement("tr");
    const cells = [
      p.id, `${p.host} / ${p.pid}`, duration(p.uptime_s), p.connections.browser,
      p.connections.bot, p.rooms, p.rate_1m.messages, p.rate_5m.messages,
      `${p.fanout_ms.p50} / ${p.fanout_ms.p99} ms`, `${p.ioloop_lag_ms} ms`, bytes(p.rss_bytes),
      `${p.redis_subscriber} (${p.redis_resubscribes} resubscribes)`,
    ];
    tr.append(...cells.map((c) => text("td", c)));
    return tr;
  }));
}

async function poll() {
  try {
    const response = await fetch("/status", { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      $("problem").textContent = response.status === 401
        ? "Log in as an operator (a user listed in ADMIN_USERS) on the chat page first."
        : "This account is not an operator (ADMIN_USERS).";
      $("problem").hidden = false;
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const status = await response.json();
    $("problem").hidden = true;
    renderTotals(status.totals);
    renderServices(status.services);
    renderProcesses(status.processes);
    push("connections", status.totals.connections);
    push("messages", status.totals.messages_per_s_1m);
    push("deliveries", status.totals.deliveries_per_s_1m);
    $("updated").textContent = `Updated ${new Date(status.time).toLocaleTimeString()} by ${status.node}`;
  } catch (err) {
    $("problem").textContent = `Status unavailable: ${err.message}`;
    $("problem").hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
