// The status page: polls /status.json (every second, ?every=SECONDS to change) and redraws.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const every = 1000 * Number(new URLSearchParams(location.search).get("every") || 1);

  function pick(doc, path) {
    return path.split(".").reduce((value, key) => (value == null ? value : value[key]), doc);
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function rows(tbody, list, columns, empty) {
    tbody.replaceChildren();
    if (!list.length) {
      const tr = document.createElement("tr");
      cell(tr, empty);
      tr.className = "muted";
      tbody.appendChild(tr);
      return;
    }
    for (const entry of list) {
      const tr = document.createElement("tr");
      for (const column of columns) cell(tr, String(entry[column]));
      tbody.appendChild(tr);
    }
  }

  function chart(counts) {
    const svg = $("chart");
    const max = Math.max(1, ...counts);
    const width = 600 / counts.length;
    const bars = counts.map((count, i) => {
      const h = Math.round((count / max) * 120);
      return `<rect x="${(i * width).toFixed(1)}" y="${130 - h}" width="${(width - 1).toFixed(1)}" ` +
        `height="${h}" fill="#2f6fed"><title>${count}</title></rect>`;
    });
    svg.innerHTML = `<line x1="0" y1="130.5" x2="600" y2="130.5" stroke="#d9dee5"/>` +
      `<text x="4" y="12" font-size="11" fill="#5f6b7a">max ${max} per bucket</text>` + bars.join("");
    svg.dataset.total = counts.reduce((a, b) => a + b, 0);
  }

  function render(doc) {
    for (const el of document.querySelectorAll("[data-figure]")) {
      const value = pick(doc, el.dataset.figure);
      el.textContent = value == null ? "-" : String(value);
    }
    chart(doc.throughput.counts);
    rows($("keys"), doc.keys, ["fingerprint", "connections", "sessions", "in_flight", "succeeded", "failed"], "no key seen yet");
    rows($("errors"), Object.entries(doc.errors_by_code).map(([code, count]) => ({ code, count })), ["code", "count"], "no error");
    const faults = Object.entries(doc.faults);
    $("faults").textContent = faults.length ? faults.map(([k, v]) => `${k} = ${v}`).join(", ") : "none";
    $("faults").className = faults.length ? "warn" : "muted";
    $("outputs-hidden").hidden = doc.results_shown;
    const outputs = $("outputs");
    const wanted = doc.latest_outputs.map((o) => o.url).join(" ");
    if (outputs.dataset.urls !== wanted) {
      outputs.dataset.urls = wanted;
      outputs.replaceChildren(...doc.latest_outputs.map((o) => {
        const img = document.createElement("img");
        img.src = o.url;
        img.alt = "latest output";
        return img;
      }));
    }
    $("updated").textContent = `up ${Math.round(doc.uptime)} s · updated ${new Date().toLocaleTimeString()}`;
    window.lastStatus = doc;  // what the page shows, for scripts and tests
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  async function refresh() {
    try {
      const response = await fetch("/status.json", { cache: "no-store" });
      render(await response.json());
    } catch (error) {
      $("updated").textContent = `cannot reach the server (${error.message}); retrying`;
    } finally {
      setTimeout(refresh, every);
    }
  }
  refresh();
})();
