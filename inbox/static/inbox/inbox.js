// The inbox's pages (inbox/views.py): ask the page's JSON endpoint every data-poll-ms and
// redraw. Everything the customer or an agent wrote goes in as text (textContent), never as HTML.
"use strict";
(function () {
  const TICKS = { sent: "✓ sent", delivered: "✓✓ delivered", read: "✓✓ read", failed: "✗ failed" };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== "") {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "–";
  }

  function poll(root, draw) {
    const url = root.dataset.url;
    const every = Number(root.dataset.pollMs) || 2500;
    const updated = document.getElementById("ib-updated");
    const error = document.getElementById("ib-error");
    async function once() {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        draw(await response.json());
        updated.textContent = new Date().toLocaleTimeString();
        error.textContent = "";
      } catch (failure) {
        error.textContent = `(could not refresh: ${failure.message})`;
      }
      setTimeout(once, every);
    }
    once();
  }

  function drawList(data) {
    const body = document.querySelector("#ib-conversations tbody");
    const rows = data.conversations.map((c) =>
      el(
        "tr",
        { class: c.taken_over ? "ib-held" : null, "data-lead": c.lead_id },
        el("td", {}, el("a", { href: c.url }, c.name)),
        el("td", {}, c.business),
        el("td", {}, when(c.last_inbound_at)),
        el("td", {}, c.window_open ? "open" : "closed"),
        el("td", {}, c.needs_review ? "needs review" : ""),
        el("td", {}, c.taken_over ? `${c.taken_over_by} until ${when(c.taken_over_until)}` : ""),
      ),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6 }, "No conversations match.")));
    body.replaceChildren(...rows);
  }

  function item(i) {
    const link = el("a", { href: i.admin_url }, "admin");
    if (i.kind === "inbound") {
      const media = i.type !== "text" ? `[${i.type}${i.media_mime_type ? " " + i.media_mime_type : ""}] ` : "";
      const confidence = typeof i.confidence === "number" ? ` ${(i.confidence * 100).toFixed(0)}%` : "";
      const actions = i.actions.map((a) => `${a.action}: ${a.status}`).join(", ");
      return el(
        "li",
        { class: "inbound" },
        el("span", { class: "ib-meta" }, `customer · ${when(i.at)} · `, link),
        el("span", { class: "ib-text" }, media + (i.text || i.caption)),
        el("span", { class: "ib-meta" }, `AI: ${i.intent}${confidence} · ${i.status}` +
          (i.failed_stage ? ` (failed at ${i.failed_stage})` : "") + (actions ? ` · actions: ${actions}` : "")),
      );
    }
    if (i.kind === "bot_reply" || i.kind === "agent_reply") {
      const who = i.kind === "agent_reply" ? `agent ${i.by}` : "bot";
      const skipped = i.status.startsWith("SKIPPED") ? ` · not sent (${i.status})` : "";
      const ticks = TICKS[i.ticks] || (skipped ? "" : i.status.toLowerCase());
      return el(
        "li",
        { class: i.kind, "data-status": i.status, "data-ticks": i.ticks },
        el("span", { class: "ib-meta" }, `${who} · ${when(i.at)} · `, link),
        el("span", { class: "ib-text" }, i.text),
        el("span", { class: "ib-meta ib-ticks" }, ticks + skipped + (i.template ? ` · template ${i.template}` : "") +
          (i.error ? ` · ${i.error}` : "")),
      );
    }
    if (i.kind === "dead_letter") {
      return el("li", { class: "dead_letter" }, `dead letter at ${i.stage} (${i.reason}), ${i.status} · ${when(i.at)} · `, link);
    }
    return el("li", { class: "activity" }, `${i.activity.replaceAll("_", " ")}${i.by ? " by " + i.by : ""} · ${when(i.at)}`);
  }

  function drawThread(data) {
    const list = document.getElementById("ib-items");
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    list.replaceChildren(...(data.items.length ? data.items.map(item) : [el("li", {}, "No messages yet.")]));
    const lead = data.lead;
    const root = document.getElementById("ib-thread");
    const mine = lead.taken_over && lead.taken_over_by === root.dataset.user;
    document.getElementById("ib-state").textContent = lead.taken_over
      ? `taken over by ${lead.taken_over_by} until ${when(lead.taken_over_until)}`
      : "the bot answers";
    if (lead.opted_out) document.getElementById("ib-state").textContent += " · opted out: nothing automatic goes to them";
    document.getElementById("ib-window").textContent = lead.window_open
      ? `window open until ${when(lead.window_closes_at)}`
      : "window closed";
    const show = (id, on) => { const form = document.getElementById(id); if (form) form.hidden = !on; };
    show("ib-take-over", !lead.taken_over);
    show("ib-hand-back", mine);
    show("ib-reply", mine && lead.window_open);
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const list = document.getElementById("ib-list");
    if (list) poll(list, drawList);
    const thread = document.getElementById("ib-thread");
    if (thread) poll(thread, drawThread);
    const text = document.getElementById("ib-text");
    if (text) {
      text.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) text.form.requestSubmit();
      });
    }
  });
})();
