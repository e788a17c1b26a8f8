// The work page (console/work.py): paints the task it is sent, item by item, and talks to /work/tasks/... only.
// One keystroke per decision; the next HIT comes in the submit's own response and is painted from that data.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const root = $("work");
  const base = root.dataset.base;
  const query = root.dataset.projectId ? `?project_id=${encodeURIComponent(root.dataset.projectId)}` : "";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  // Inside a platform's frame (console/external.py) the page acts by a work token for one assignment, and hands
  // the work back to the platform once our submit stored it.
  const token = root.dataset.workToken || "";
  // A submit not yet acknowledged by the server: sent again (the same request) until it lands, after a reload too.
  const OUTBOX = token ? "crowdmarket.work.outbox.external" : "crowdmarket.work.outbox";
  const SHORTCUTS = "crowdmarket.work.shortcuts";
  // Inside another site's frame the browser may deny storage to us (third-party storage blocked): the outbox
  // then lives in this page's memory, which still outlasts any network failure, though not a reload.
  const store = (() => {
    try { const s = window.localStorage; s.getItem(OUTBOX); return s; } catch (_) {
      const m = new Map();
      return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)),
               removeItem: (k) => m.delete(k) };
    }
  })();
  const SYMBOLS = { USD: "$", GBP: "£", EUR: "€" };
  const BASIS = {
    estimated: "estimated from the requester's time estimate",
    measured: "measured from workers' median time on this batch",
  };

  const st = { view: "loading", task: null, k: 0, answers: [], deadline: 0, warned: 0, lapsed: false,
               busy: false, pendingNext: null, timer: null };

  const money = (cents, currency) => {
    const a = Math.abs(cents);
    const amount = `${Math.floor(a / 100).toLocaleString("en-US")}.${String(a % 100).padStart(2, "0")}`;
    const sign = cents < 0 ? "−" : "";
    return SYMBOLS[currency] ? `${sign}${SYMBOLS[currency]}${amount}` : `${sign}${amount} ${currency}`;
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const el = (tag, attrs = {}, ...kids) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    node.append(...kids);
    return node;
  };

  async function post(path, body, withQuery = true) {
    const resp = await fetch(base + path + (withQuery ? query : ""), {
      method: "POST", credentials: "same-origin", body: JSON.stringify(body || {}),
      headers: { "Content-Type": "application/json", Accept: "application/json",
                 ...(token ? { "X-Work-Token": token } : { "X-CSRFToken": csrf }) },
    });
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    return { status: resp.status, data };
  }

  const show = (view) => {
    st.view = view;
    $("loading").hidden = view !== "loading";
    $("task").hidden = view !== "task";
    $("empty").hidden = view !== "empty";
    $("feedback").hidden = view !== "feedback";
  };
  const notice = (text) => { $("notice").textContent = text || ""; $("notice").hidden = !text; };
  const saving = (text) => { $("saving").textContent = text || ""; };

  // ---- painting --------------------------------------------------------------------------------------------
  function paintProgress(progress) {
    if (!progress) return;
    $("answers-today").textContent = String(progress.answers_today);
    const sum = (key) => progress.earnings.length
      ? progress.earnings.map((e) => money(e[key], e.currency)).join(" + ") : money(0, "USD");
    $("pending").textContent = sum("pending");
    $("approved").textContent = sum("approved");
  }

  function paint(next) {
    paintProgress(next.progress);
    if (!next.task) {
      stopClock();
      $("title").textContent = "No task for you right now";
      $("empty-reason").textContent = next.detail || "There is no work open for you.";
      show("empty");
      return;
    }
    const t = next.task;
    st.task = t; st.k = 0; st.answers = t.items.map(() => undefined); st.lapsed = false; st.busy = false;
    $("title").textContent = t.project.title;
    $("project-description").textContent = t.project.description || "";
    $("guidelines-version").textContent = `v${t.guidelines.version}`;
    $("guidelines-text").textContent = t.guidelines.instructions;
    $("guidelines-changed").hidden = !next.guidelines_changed;
    $("guidelines-changed-version").textContent = `Guidelines v${t.guidelines.version}`;
    if (next.guidelines_changed) $("guidelines").open = true;
    $("reward").textContent = money(t.reward.cents, t.reward.currency);
    $("hourly-rate").textContent = t.hourly_rate
      ? `${money(t.hourly_rate.cents, t.hourly_rate.currency)} per hour (${t.hourly_rate.basis})` : "not known yet";
    $("rate-basis").textContent = t.hourly_rate
      ? `The hourly rate is ${BASIS[t.hourly_rate.basis] || t.hourly_rate.basis}, before any fair-wage top-up.` : "";
    $("item-n").textContent = String(t.items.length);
    startClock(next.expires_in_ms);
    show("task");
    paintItem();
  }

  function itemBody(data) {
    const body = [];
    if (typeof data.text === "string") body.push(el("p", { class: "item-text", text: data.text }));
    const src = data.image_url || data.image;
    if (typeof src === "string") {
      body.push(el("img", { src, alt: String(data.alt || data.image_alt || data.text || "The item's image"),
                            class: "item-image" }));
    }
    if (!body.length) {  // data of another shape: shown as it is
      const dl = el("dl", { class: "item-data" });
      for (const [k, v] of Object.entries(data)) {
        dl.append(el("dt", { text: k }), el("dd", { text: typeof v === "string" ? v : JSON.stringify(v) }));
      }
      body.push(dl);
    }
    return body;
  }

  // The choices of the label schema, as [value, name, description]: categories, or a rating's scale.
  function choices(schema) {
    if (schema.type === "rating") {
      const out = [];
      for (let v = schema.min; v <= schema.max; v++) out.push([v, String(v), ""]);
      return out;
    }
    return (schema.categories || []).map((c) => [c.key, c.name || c.key, c.description || ""]);
  }

  function paintItem() {
    const t = st.task, k = st.k, schema = t.label_schema, n = t.items.length;
    $("item-k").textContent = String(k + 1);
    $("position").textContent = `item ${k + 1} of ${n}`;
    $("item-body").replaceChildren(...itemBody(t.items[k].data));
    $("answer-error").hidden = true;
    const box = $("label-choices");
    box.replaceChildren();
    const current = st.answers[k];
    if (schema.type === "text") {
      $("labels-legend").textContent = "Your answer";
      const area = el("textarea", { id: "answer-text", rows: "3", maxlength: String(schema.max_length || 1000),
                                    "aria-describedby": "keys-help" });
      area.value = current || "";
      area.addEventListener("input", () => { st.answers[st.k] = area.value; });
      box.append(el("label", { for: "answer-text", text: "Type your answer" }), area);
    } else {
      const multi = schema.type === "multi_choice";
      let legend = multi ? "Your answer (choose all that apply)" : "Your answer";
      if (schema.type === "rating" && (schema.min_label || schema.max_label)) {
        legend = `Your answer (${schema.min}: ${schema.min_label || ""} … ${schema.max}: ${schema.max_label || ""})`;
      }
      $("labels-legend").textContent = legend;
      choices(schema).forEach(([value, name, description], i) => {
        const pressed = multi ? (current || []).includes(value) : current === value;
        const b = el("button", { type: "button", class: "label", "aria-pressed": String(pressed) });
        if (i < 9) b.append(el("kbd", { text: String(i + 1), "aria-hidden": "true" }), " ");
        b.append(name);
        if (description) b.append(el("span", { class: "label-description", text: description }));
        b.addEventListener("click", () => pick(value));
        box.append(b);
      });
    }
    $("confirm").textContent = k < n - 1 ? "Next item (Enter)" : "Submit answers (Enter)";
    const area = $("answer-text");
    (area || $("item")).focus({ preventScroll: false });
  }

  function pick(value) {
    if (st.view !== "task" || st.busy) return;
    const schema = st.task.label_schema;
    if (schema.type === "multi_choice") {
      const set = new Set(st.answers[st.k] || []);
      const keys = schema.categories.map((c) => c.key);
      if (set.has(value)) set.delete(value);
      else if (set.size < (schema.max_choices || keys.length)) set.add(value);
      else {
        $("answer-error").textContent = `Choose at most ${schema.max_choices} labels.`;
        $("answer-error").hidden = false;
        return;
      }
      $("answer-error").hidden = true;
      st.answers[st.k] = keys.filter((key) => set.has(key));
      paintPressed();
      return;
    }
    st.answers[st.k] = value;
    paintPressed();
    // One keystroke per decision: the next item of the HIT appears at once; the last one waits for Enter.
    if (st.k < st.task.items.length - 1) { st.k += 1; paintItem(); }
  }

  function paintPressed() {
    const current = st.answers[st.k];
    const values = choices(st.task.label_schema).map((c) => c[0]);
    [...$("label-choices").querySelectorAll("button.label")].forEach((b, i) => {
      const v = values[i];
      b.setAttribute("aria-pressed", String(Array.isArray(current) ? current.includes(v) : current === v));
    });
  }

  function answered(k) {
    const schema = st.task.label_schema, value = st.answers[k];
    if (schema.type === "multi_choice") return (value || []).length >= (schema.min_choices || 0);
    if (schema.type === "text") return typeof value === "string" && value.trim() !== "";
    return value !== undefined;
  }

  function confirmItem() {
    if (st.view !== "task" || st.busy) return;
    if (st.lapsed) { getNext(); return; }
    if (!answered(st.k)) {
      const least = st.task.label_schema.min_choices;
      $("answer-error").textContent = least
        ? `Choose at least ${least} label${least === 1 ? "" : "s"}.` : "Pick an answer for this item first.";
      $("answer-error").hidden = false;
      return;
    }
    if (st.k < st.task.items.length - 1) { st.k += 1; paintItem(); return; }
    const t = st.task;
    const entry = {
      assignment_id: t.assignment_id, items: t.items, label_schema: t.label_schema,
      body: { answers: t.items.map((item, i) => ({ item_id: item.id, answer: st.answers[i] })),
              client: { source: token ? "work-page-external" : "work-page",
                        user_agent: navigator.userAgent.slice(0, 500) }, next: !token },
    };
    performance.mark("cm-submit");  // User Timing for benchmarks/worker_ui.py: the submit key starts a delivery
    store.setItem(OUTBOX, JSON.stringify(entry));
    deliver(entry);
  }

  // ---- talking to the server ------------------------------------------------------------------------------
  // Sends the outbox's submit until the server answers it; network failures and 5xx are retried with the very
  // same body (the submit is idempotent: a repeat replays the stored result, never stores twice).
  async function deliver(entry) {
    st.busy = true;
    saving("Saving…");
    let delay = 300;
    let r = null;
    for (;;) {
      try { r = await post(`/${entry.assignment_id}/submit`, entry.body); } catch (_) { r = null; }
      if (r && r.status < 500 && r.status !== 429 && r.data) break;
      saving("Saving… (retrying)");
      await sleep(delay);
      delay = Math.min(delay * 2, 5000);
    }
    st.busy = false;
    if (r.status === 401 || r.status === 403 || (r.status === 400 && !r.data.errors)) {
      // Not a verdict on the answers (the session ended, the page is stale): they stay in the outbox.
      saving("");
      notice(`${r.data.detail || r.data.title} Your answers are kept and sent again when you reload.`);
      return;
    }
    store.removeItem(OUTBOX);
    saving("");
    if (r.status !== 200) {
      notice(`Not saved: ${r.data.detail || r.data.title}`);
      getNext();
      return;
    }
    notice("");
    saving("Saved.");
    const { result, next } = r.data;
    if (result.feedback && result.feedback.length) { showFeedback(entry, result, next); return; }
    if (token) { complete(); return; }
    paint(next);
    // Submit key to the next task painted: measured once the frame that shows it has been drawn.
    if (next.task && performance.getEntriesByName("cm-submit").length) {
      requestAnimationFrame(() => setTimeout(() => {
        performance.measure("cm-next-task", "cm-submit");
        performance.clearMarks("cm-submit");
      }));
    }
  }

  async function getNext() {
    stopClock();
    show("loading");
    let r = null, delay = 300;
    for (;;) {
      try { r = await post("/next", {}); } catch (_) { r = null; }
      if (r && r.status < 500 && r.data) break;
      await sleep(delay);
      delay = Math.min(delay * 2, 5000);
    }
    if (r.status === 200) paint(r.data);
    else paint({ task: null, detail: r.data.detail || r.data.title });
  }

  async function giveBack() {
    const t = st.task;
    closeReturn();
    st.busy = true;
    let r = null;
    try { r = await post(`/${t.assignment_id}/return`, { next: true }); } catch (_) { r = null; }
    st.busy = false;
    if (r && r.status === 200) { notice(""); saving("Task returned."); paint(r.data.next); return; }
    if (r && r.data) notice(`Not returned: ${r.data.detail || r.data.title}`);
    else notice("Not returned: the network failed. Try again.");
    if (r && (r.status === 409 || r.status === 410)) getNext();
  }

  // ---- returning ----------------------------------------------------------------------------------------------
  function openReturn() {
    if (st.view !== "task" || st.busy) return;
    $("return-confirm").hidden = false;
    $("return-yes").focus();
  }
  function closeReturn() { $("return-confirm").hidden = true; }

  // ---- the lease's countdown ----------------------------------------------------------------------------------
  function startClock(ms) {
    stopClock();
    st.deadline = performance.now() + ms;
    st.warned = 0;
    $("lease-alert").hidden = true;
    tick();
    st.timer = setInterval(tick, 250);
  }
  function stopClock() { if (st.timer) clearInterval(st.timer); st.timer = null; }
  function alertLease(text) { $("lease-alert").textContent = text; $("lease-alert").hidden = false; }

  function tick() {
    const left = st.deadline - performance.now();
    const s = Math.max(0, Math.ceil(left / 1000));
    $("countdown").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    if (left <= 0) {
      stopClock();
      st.lapsed = true;
      $("confirm").textContent = "Get a new task (Enter)";
      alertLease("The lease on this task lapsed: its answers can no longer be saved. Get a new task.");
    } else if (left <= 20000 && st.warned < 2) {
      st.warned = 2;
      alertLease(`${s} seconds left on this task: submit now, or the lease lapses and the answers are lost.`);
    } else if (left <= 60000 && st.warned < 1) {
      st.warned = 1;
      alertLease("Less than a minute left on this task's lease.");
    }
  }

  // ---- feedback on missed known answers ------------------------------------------------------------
  function nameOf(schema, value) {
    const names = Object.fromEntries((schema.categories || []).map((c) => [c.key, c.name || c.key]));
    if (Array.isArray(value)) return value.map((v) => names[v] || v).join(", ") || "(none)";
    return names[value] || String(value);
  }

  function showFeedback(entry, result, next) {
    stopClock();
    st.pendingNext = next;
    const given = Object.fromEntries(result.answers.map((a) => [a.item_id, a.answer]));
    const list = result.feedback.map((f, i) => {
      const item = entry.items.find((it) => it.id === f.item_id);
      const form = el("form", { class: "contest", hidden: "" });
      const noteId = `contest-note-${i}`;
      const note = el("textarea", { id: noteId, rows: "3", maxlength: "5000", required: "" });
      const sent = el("p", { role: "status", class: "contest-status" });
      form.append(el("label", { for: noteId, text: "Why is the correct answer wrong?" }), note,
                  el("button", { type: "submit", text: "Send" }));
      const open = el("button", { type: "button", class: "secondary", text: "Contest this answer" });
      open.addEventListener("click", () => { form.hidden = false; open.hidden = true; note.focus(); });
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        let r = null;
        try {
          r = await post(`/${result.assignment_id}/disputes`, { item_id: f.item_id, note: note.value }, false);
        } catch (_) { r = null; }
        if (r && (r.status === 201 || r.status === 200)) {
          form.hidden = true;
          sent.textContent = `Contest filed (${r.data.state}): a reviewer will look at it.`;
        } else {
          sent.textContent = r && r.data ? `Not filed: ${r.data.detail || r.data.title}` : "Not filed: network error.";
        }
      });
      return el("article", { class: "missed" },
        el("h3", { text: `You missed item ${entry.items.indexOf(item) + 1}` }),
        ...(item ? itemBody(item.data) : []),
        el("p", { text: `Your answer: ${nameOf(entry.label_schema, given[f.item_id])}` }),
        el("p", { class: "correct", text: `Correct answer: ${nameOf(entry.label_schema, f.correct_answer)}` }),
        el("p", { class: "explanation", text: f.explanation ? `Why: ${f.explanation}` : "" }),
        open, form, sent);
    });
    $("feedback-items").replaceChildren(...list);
    show("feedback");
    $("feedback").focus();
  }

  // The platform's completion form (MTurk's externalSubmit), rendered by the server: posted once our submit
  // stored the answers, so the platform never counts work we do not have.
  function complete() {
    stopClock();
    $("title").textContent = "Your answers are saved";
    show("loading");
    $("loading").textContent = "Your answers are saved. Sending the HIT back to the platform…";
    $("complete").submit();
  }

  function continueAfterFeedback() {
    if (token) { complete(); return; }
    const next = st.pendingNext;
    st.pendingNext = null;
    if (next) paint(next); else getNext();
  }

  // ---- keys ---------------------------------------------------------------------------------------------------
  const shortcutsOn = () => $("shortcuts").checked;
  $("shortcuts").checked = store.getItem(SHORTCUTS) !== "off";
  $("shortcuts").addEventListener("change", () => store.setItem(SHORTCUTS, shortcutsOn() ? "on" : "off"));

  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.metaKey || e.defaultPrevented) return;
    const t = e.target, tag = t.tagName;
    const typing = tag === "TEXTAREA" || (tag === "INPUT" && t.type !== "checkbox");
    const control = ["BUTTON", "A", "SUMMARY", "INPUT", "SELECT"].includes(tag) && !t.classList.contains("label");
    if (st.view === "feedback") {
      if (e.key === "Enter" && !typing && !control) { e.preventDefault(); continueAfterFeedback(); }
      return;
    }
    if (st.view !== "task" || st.busy) return;
    if (!$("return-confirm").hidden) { if (e.key === "Escape") { closeReturn(); $("return").focus(); } return; }
    if (e.key === "Enter") {
      // In a text box Enter types a new line and Ctrl+Enter confirms; on other controls Enter is theirs.
      if (typing ? e.ctrlKey : (e.ctrlKey || !control)) { e.preventDefault(); confirmItem(); }
      return;
    }
    if (!shortcutsOn() || typing || e.ctrlKey) return;
    if (/^[1-9]$/.test(e.key)) {
      const b = $("label-choices").querySelectorAll("button.label")[Number(e.key) - 1];
      if (b) { e.preventDefault(); b.click(); }
    } else if ((e.key === "r" || e.key === "R") && !token) {
      e.preventDefault();
      openReturn();
    } else if (e.key === "ArrowLeft" && st.k > 0) {
      e.preventDefault();
      st.k -= 1;
      paintItem();
    }
  });

  $("confirm").addEventListener("click", confirmItem);
  $("return").addEventListener("click", openReturn);
  $("return-yes").addEventListener("click", giveBack);
  $("return-no").addEventListener("click", () => { closeReturn(); $("return").focus(); });
  $("feedback-continue").addEventListener("click", continueAfterFeedback);

  // ---- start: a submit left in the outbox (the network failed, the page was closed) goes first --------------
  const first = root.dataset.first ? JSON.parse(root.dataset.first) : null;
  const pending = store.getItem(OUTBOX);
  if (pending) {
    let entry = null;
    try { entry = JSON.parse(pending); } catch (_) { store.removeItem(OUTBOX); }
    // A token page sends only its own assignment's submit; another one waits for its own page.
    if (entry && (!first || entry.assignment_id === first.task.assignment_id)) {
      show("loading"); deliver(entry); return;
    }
  }
  if (first && root.dataset.submitted === "true") complete();  // reloaded after our submit: hand it back again
  else if (first) paint(first);
  else getNext();
})();
