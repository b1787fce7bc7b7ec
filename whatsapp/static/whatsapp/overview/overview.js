/* The live overview: polls the JSON endpoint (data-url) every data-poll-ms, one request at a
   time, and redraws the figures and the uPlot chart. Every value is put in with textContent,
   never as HTML. While the tab is hidden it does not poll. */
(function () {
  "use strict";

  const root = document.getElementById("overview");
  if (!root) return;
  const url = root.dataset.url;
  const pollMs = Number(root.dataset.pollMs) || 2500;
  const $ = (id) => document.getElementById(id);
  let chart = null;

  function text(id, value) {
    const el = $(id);
    if (el) el.textContent = value === null || value === undefined ? "n/a" : String(value);
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 3600000) return (ms / 60000).toFixed(1) + " min";
    return (ms / 3600000).toFixed(1) + " h";
  }

  function clock(date, seconds) {
    const options = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (seconds) options.second = "2-digit";
    return date.toLocaleTimeString([], options);
  }

  function cell(row, value, options) {
    const td = document.createElement(options && options.header ? "th" : "td");
    if (options && options.href) {
      const a = document.createElement("a");
      a.href = options.href;
      a.textContent = value;
      td.appendChild(a);
    } else {
      td.textContent = value;
    }
    if (options && options.className) td.className = options.className;
    row.appendChild(td);
    return td;
  }

  function fill(tbody, rows, empty, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell(tr, empty, { className: "ov-empty" });
      td.colSpan = columns;
      tbody.appendChild(tr);
      return;
    }
    rows.forEach((build) => {
      const tr = document.createElement("tr");
      build(tr);
      tbody.appendChild(tr);
    });
  }

  function drawChart(perMinute) {
    const data = [perMinute.minutes, perMinute.processed, perMinute.failed, perMinute.dead_lettered];
    const box = $("ov-chart");
    const width = Math.max(300, box.clientWidth - 16);
    if (chart) {
      chart.setData(data);
      if (Math.abs(chart.width - width) > 2) chart.setSize({ width: width, height: 260 });
      return;
    }
    chart = new uPlot(
      {
        width: width,
        height: 260,
        scales: { y: { range: (u, min, max) => [0, Math.max(5, max * 1.1)] } },
        axes: [
          { values: (u, splits) => splits.map((v) => clock(new Date(v * 1000), false)) },
          { label: "messages / min", size: 60 },
        ],
        series: [
          {},
          { label: "processed", stroke: "#2e7d32", fill: "rgba(46,125,50,0.12)", width: 2 },
          { label: "failed", stroke: "#ef6c00", width: 2 },
          { label: "dead-lettered", stroke: "#c62828", width: 2, dash: [6, 4] },
        ],
      },
      data,
      box
    );
    root.chart = chart; // what is drawn, for a browser test to read
  }

  function render(d) {
    const totals = d.per_minute.totals;
    text("ov-processed", totals.processed);
    text("ov-failed", totals.failed);
    text("ov-dead-lettered", totals.dead_lettered);
    text("ov-in-flight", d.in_flight.RECEIVED + (d.in_flight.WAITING || 0) + d.in_flight.PROCESSING);
    const open = $("ov-open-dead-letters");
    open.textContent = d.dead_letters.total;
    open.href = d.dead_letters.url;
    text("ov-stuck-count", d.stuck.count);
    drawChart(d.per_minute);

    [["ov-latency-end-to-end", d.latency.end_to_end_ms], ["ov-latency-pipeline", d.latency.pipeline_ms]].forEach(
      ([id, p]) => {
        const tds = $(id).querySelectorAll("td");
        tds[0].textContent = duration(p.p50);
        tds[1].textContent = duration(p.p95);
        tds[2].textContent = duration(p.p99);
      }
    );
    text("ov-latency-count", d.latency.count + " messages processed in the last " + d.latency.minutes + " min (first runs)");

    fill(
      $("ov-dead-letters").querySelector("tbody"),
      d.dead_letters.groups.map((g) => (tr) => {
        cell(tr, g.reason, { href: g.url });
        cell(tr, g.stage);
        cell(tr, g.count, { href: g.url });
      }),
      "No open dead letters",
      3
    );

    fill(
      $("ov-notices").querySelector("tbody"),
      d.account_notices.map((n) => (tr) => {
        cell(tr, n.severity, { className: n.severity === "info" ? "" : "ov-bad" });
        cell(tr, n.summary, { href: n.url });
        cell(tr, n.business || "–");
        cell(tr, clock(new Date(n.received_at), false));
      }),
      "None: Meta reported nothing about the accounts",
      4
    );

    fill(
      $("ov-breakers").querySelector("tbody"),
      d.breakers.map((b) => (tr) => {
        cell(tr, b.name, { href: b.url });
        cell(tr, b.state + (b.forced ? " (forced)" : ""), { className: "ov-bad" });
        cell(tr, b.remaining_seconds ? duration(b.remaining_seconds * 1000) + " more" : "–");
      }),
      "Every breaker is closed",
      3
    );

    const queueRows = [];
    if (d.queues === null) {
      queueRows.push((tr) => { cell(tr, "Celery queues"); cell(tr, "not readable", { className: "ov-bad" }); });
    } else {
      Object.keys(d.queues).sort().forEach((name) => {
        queueRows.push((tr) => { cell(tr, name); cell(tr, d.queues[name]); });
      });
    }
    if (d.consumer_lag === null) {
      queueRows.push((tr) => { cell(tr, "Kafka consumer lag"); cell(tr, "not readable", { className: "ov-bad" }); });
    } else {
      queueRows.push((tr) => { cell(tr, "Kafka consumer lag, all partitions"); cell(tr, d.consumer_lag.total); });
      d.consumer_lag.partitions
        .filter((p) => p.lag > 0)
        .forEach((p) => queueRows.push((tr) => { cell(tr, "  " + p.topic + " [" + p.partition + "]"); cell(tr, p.lag); }));
    }
    fill($("ov-queues").querySelector("tbody"), queueRows, "–", 2);

    const stuck = $("ov-stuck");
    stuck.replaceChildren();
    if (d.stuck.oldest) {
      const o = d.stuck.oldest;
      const a = document.createElement("a");
      a.href = o.url;
      a.textContent = o.processing_id;
      stuck.append(a, " (" + o.business_id + ") in " + o.status + " for " + duration(o.age_seconds * 1000));
    } else {
      const span = document.createElement("span");
      span.className = "ov-empty";
      span.textContent = "None: no row has waited past " + duration(d.stuck.after_seconds * 1000);
      stuck.append(span);
    }

    fill(
      $("ov-not-sent").querySelector("tbody"),
      d.replies_not_sent.map((r) => (tr) => {
        cell(tr, r.why, { header: true });
        cell(tr, r.count, { href: r.url });
      }),
      "–",
      2
    );

    const w = d.webhooks;
    const outbox = d.outbox;
    fill(
      $("ov-webhooks").querySelector("tbody"),
      [
        ["Webhook deliveries, last hour", w.deliveries],
        ["  messages (new / duplicate / unroutable)", w.messages + " (" + w.new_messages + " / " + w.duplicates + " / " + w.unroutable + ")"],
        ["  unreadable items", w.unreadable],
        ["  statuses", w.statuses],
        ["Outbox backlog", outbox.backlog === null ? "not readable" : outbox.backlog],
        [
          "Oldest unpublished",
          outbox.oldest_age_seconds === null ? "not readable" : outbox.backlog ? duration(outbox.oldest_age_seconds * 1000) : "–",
        ],
      ].map(([label, value]) => (tr) => { cell(tr, label, { header: true }); cell(tr, value); }),
      "–",
      2
    );

    text("ov-updated", clock(new Date(d.generated_at), true));
    root.dataset.generatedAt = d.generated_at;
  }

  async function poll() {
    if (!document.hidden) {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.redirected || response.status === 403) {
          text("ov-error", "Logged out or not allowed: reload the page to log in.");
        } else if (!response.ok) {
          text("ov-error", "The figures could not be read (HTTP " + response.status + "); trying again.");
        } else {
          render(await response.json());
          text("ov-error", "");
        }
      } catch (error) {
        text("ov-error", "The server did not answer; trying again.");
      }
    }
    window.setTimeout(poll, pollMs);
  }

  window.addEventListener("resize", () => { if (chart) chart.setSize({ width: Math.max(300, $("ov-chart").clientWidth - 16), height: 260 }); });
  poll();
})();
