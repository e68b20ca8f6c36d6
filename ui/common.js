/* Shared helpers for the compliance monitor pages (console, agent, search).
 *
 * Plain browser JS, no build step. Everything lives on the global `CM` object.
 * Rule of thumb used throughout the pages: untrusted text (transcripts, explanations,
 * ids coming from the server) is only ever put into the DOM via textContent (see CM.h);
 * the one exception is the search snippet, which the server already HTML-escapes.
 */
(function (global) {
  "use strict";

  // ------------------------------------------------------------------ auth (session cookie)
  // The login page (/login) sets an HttpOnly session cookie; fetch and same-origin websockets send it by
  // themselves. No token is ever read from or put into a URL (issue 18). `token`, `authHeaders` and
  // `withToken` stay for the pages that still call them; they add nothing now.
  const token = null;

  function authHeaders(extra) {
    return Object.assign({}, extra || {});
  }

  function withToken(url) {
    return url;
  }

  function toLogin() {
    const next = global.location.pathname + global.location.search;
    global.location.assign("/login?next=" + encodeURIComponent(next));
  }

  /* Who is logged in: {user, role, agent_id, via, auth}. Sends the browser to /login when nobody is. */
  let mePromise = null;
  function me() {
    if (!mePromise) mePromise = apiFetch("/api/auth/me");
    return mePromise;
  }

  async function logout() {
    try { await apiFetch("/api/auth/logout", { method: "POST" }); } finally { toLogin(); }
  }

  /* fetch + JSON. Throws an Error carrying .status and .body on non-2xx. */
  async function apiFetch(path, opts) {
    opts = opts || {};
    const init = { method: opts.method || "GET", headers: authHeaders(opts.headers) };
    if (opts.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.json);
    }
    init.credentials = "same-origin";
    const resp = await fetch(path, init);
    if (resp.status === 401 && !opts.noLoginRedirect) toLogin();
    let body = null;
    const text = await resp.text();
    if (text) {
      try { body = JSON.parse(text); } catch (e) { body = text; }
    }
    if (!resp.ok) {
      const detail = body && typeof body === "object" && body.detail ? body.detail : text;
      const err = new Error("HTTP " + resp.status + (detail ? ": " + String(detail).slice(0, 200) : ""));
      err.status = resp.status;
      err.body = body;
      throw err;
    }
    return body;
  }

  // ------------------------------------------------------------------ websocket

  function wsUrl(path) {
    const proto = global.location.protocol === "https:" ? "wss:" : "ws:";
    return withToken(proto + "//" + global.location.host + path);
  }

  /* Connect a websocket that reconnects with exponential backoff (0.5 s .. 30 s + jitter).
   * handlers: onEvent(ev), onStatus(state, info), onOpen(). state is one of
   * "connecting" | "open" | "closed". The attempt counter only resets once a socket has
   * stayed up for a few seconds, so a server that accepts and instantly closes (e.g. bad
   * token) does not get hammered. Returns { close() }. */
  function connectWs(path, handlers) {
    let ws = null, attempt = 0, timer = null, stopped = false, openedAt = 0;
    const h = handlers || {};
    const status = (s, info) => { if (h.onStatus) h.onStatus(s, info || {}); };

    function dispatch(data) {
      let msg;
      try { msg = JSON.parse(data); } catch (e) { return; } // ignore non-JSON (pings etc.)
      // One event per message is the contract; also tolerate arrays / {events: [...]}.
      const list = Array.isArray(msg) ? msg : (msg && Array.isArray(msg.events) ? msg.events : [msg]);
      for (const ev of list) {
        if (!ev || typeof ev !== "object" || !ev.type) continue;
        noteServerTime(ev.ts);
        try { h.onEvent(ev); } catch (e) { console.error("event handler failed", ev, e); }
      }
    }

    function open() {
      if (stopped) return;
      status("connecting", { attempt: attempt });
      try {
        ws = new WebSocket(wsUrl(path));
      } catch (e) {
        schedule(null);
        return;
      }
      ws.onopen = () => {
        openedAt = Date.now();
        resetServerTime();
        status("open");
        if (h.onOpen) h.onOpen();
      };
      ws.onmessage = (m) => dispatch(m.data);
      ws.onclose = (e) => { ws = null; schedule(e); };
      ws.onerror = () => { /* onclose follows and does the work */ };
    }

    function schedule(closeEvent) {
      if (stopped) return;
      if (openedAt && Date.now() - openedAt > 5000) attempt = 0;
      openedAt = 0;
      const delay = Math.min(30000, 500 * Math.pow(2, attempt)) + Math.random() * 500;
      attempt += 1;
      const code = closeEvent ? closeEvent.code : 0;
      // 1008 = policy violation, 4401/4403 = app-level auth codes (assumed): bad token.
      const auth = code === 1008 || code === 4401 || code === 4403;
      status("closed", { retryInMs: delay, code: code, auth: auth });
      timer = setTimeout(open, delay);
    }

    open();
    return {
      close() { stopped = true; clearTimeout(timer); if (ws) ws.close(); },
      reconnectNow() { clearTimeout(timer); if (!ws) open(); },
    };
  }

  /* Show the socket state in an element (class conn-open / conn-connecting / conn-closed). */
  function bindStatus(el) {
    return function (state, info) {
      el.classList.remove("conn-open", "conn-connecting", "conn-closed");
      el.classList.add("conn-" + state);
      el.dataset.state = state;
      let text;
      if (state === "open") text = "已连接 connected";
      else if (state === "connecting") text = "连接中… connecting";
      else {
        const s = Math.round((info.retryInMs || 0) / 1000);
        text = (info.auth ? "认证失败 auth failed · " : "已断开 disconnected · ") + s + "秒后重连 retry in " + s + "s";
      }
      el.textContent = text;
    };
  }

  // Server/client clock offset, estimated from event ts (server wall time). Replayed
  // events are old, so the largest (ts - now) seen is the best estimate of the offset.
  let clockSkew = null;
  function noteServerTime(ts) {
    if (typeof ts !== "number") return;
    const d = ts - Date.now() / 1000;
    if (clockSkew === null || d > clockSkew) clockSkew = d;
  }
  function resetServerTime() { clockSkew = null; }
  /* Current time on the server clock, Unix seconds. */
  function serverNow() {
    const skew = clockSkew === null ? 0 : Math.min(clockSkew, 3600); // sanity clamp
    return Date.now() / 1000 + Math.max(skew, -3600);
  }

  // ------------------------------------------------------------------ DOM helpers

  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) {
    return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, (c) => ESC[c]);
  }

  /* h("div", {className, text, dataset, attrs, title, on: {click: fn}}, ...children)
   * Strings among children become text nodes (never parsed as HTML). */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    const p = props || {};
    if (p.className) el.className = p.className;
    if (p.text !== undefined && p.text !== null) el.textContent = String(p.text);
    if (p.title) el.title = p.title;
    if (p.id) el.id = p.id;
    if (p.dataset) for (const k in p.dataset) el.dataset[k] = String(p.dataset[k]);
    if (p.attrs) for (const k in p.attrs) el.setAttribute(k, String(p.attrs[k]));
    if (p.on) for (const k in p.on) el.addEventListener(k, p.on[k]);
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return el;
  }

  /* Fill `el` with `text`, wrapping occurrences of each mark's text in
   * <mark class="sev-...">. marks: [{text, severity, title}]. Matching ignores whitespace
   * in the transcript, because findings are computed on normalised text (no spaces,
   * half-width) while we show the raw ASR text. Unmatched marks are simply skipped
   * (callers also show the finding as a tag, so nothing is lost). */
  function renderMarked(el, text, marks) {
    el.textContent = "";
    text = String(text || "");
    // Index of non-space characters -> position in the raw text.
    let squashed = "";
    const pos = [];
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (/\s/.test(ch)) continue;
      squashed += toHalfWidth(ch).toLowerCase();
      pos.push(i);
    }
    const ranges = [];
    for (const m of marks || []) {
      const needle = toHalfWidth(String(m.text || "")).replace(/\s+/g, "").toLowerCase();
      if (!needle) continue;
      let from = 0, idx;
      while ((idx = squashed.indexOf(needle, from)) >= 0) {
        ranges.push({ a: pos[idx], b: pos[idx + needle.length - 1] + 1, m: m });
        from = idx + needle.length;
      }
    }
    ranges.sort((x, y) => x.a - y.a || severityRank(y.m.severity) - severityRank(x.m.severity));
    let cur = 0;
    for (const r of ranges) {
      if (r.a < cur) continue; // overlapping: the earlier / more severe one wins
      if (r.a > cur) el.appendChild(document.createTextNode(text.slice(cur, r.a)));
      const mk = h("mark", { className: "sev-" + (r.m.severity || "info"), text: text.slice(r.a, r.b) });
      if (r.m.title) mk.title = r.m.title;
      el.appendChild(mk);
      cur = r.b;
    }
    if (cur < text.length) el.appendChild(document.createTextNode(text.slice(cur)));
  }

  function toHalfWidth(ch) {
    const c = ch.charCodeAt(0);
    if (c >= 0xff01 && c <= 0xff5e) return String.fromCharCode(c - 0xfee0);
    if (c === 0x3000) return " ";
    return ch;
  }

  /* Keep a scroll container pinned to the bottom only if the user has not scrolled up. */
  function isNearBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }

  // ------------------------------------------------------------------ labels

  const CATEGORY_LABELS = {
    threat: "威胁恐吓",
    abuse: "辱骂侮辱",
    impersonation: "冒充公检法",
    third_party_disclosure: "向第三方透露债务",
    privacy_leak: "泄露个人信息",
    missing_disclosure: "未做身份披露",
    customer_abuse: "客户辱骂",
    misrepresentation: "虚假陈述/夸大后果",
    induced_borrowing: "诱导借贷还款",
    improper_payment: "违规收费/私人收款",
    calling_hours: "非催收时段",
    call_frequency: "联系频次超限",
  };
  function categoryLabel(cat) {
    return (cat && CATEGORY_LABELS[cat]) || "";
  }
  /* Element: Chinese label + the raw category string in small text. */
  function categoryEl(cat) {
    const zh = categoryLabel(cat);
    if (!cat) return h("span", { className: "cat", text: "—" });
    return h("span", { className: "cat" }, zh ? h("b", { text: zh }) : null, zh ? " " : null,
      h("small", { text: cat }));
  }

  const SEVERITIES = ["info", "warn", "high", "critical"];
  const SEVERITY_LABELS = { info: "提示", warn: "警告", high: "严重", critical: "紧急" };
  const SEVERITY_COLORS = { info: "#2563eb", warn: "#d97706", high: "#ea580c", critical: "#b91c1c" };
  function severityRank(s) { return SEVERITIES.indexOf(s); } // -1 for none/unknown
  function maxSeverity(a, b) { return severityRank(b) > severityRank(a) ? b : a; }
  function severityBadge(sev) {
    if (!sev) return h("span", { className: "sev-badge sev-none", text: "无 none" });
    return h("span", { className: "sev-badge sev-" + sev, dataset: { severity: sev } },
      SEVERITY_LABELS[sev] || sev, " ", h("small", { text: sev }));
  }

  const ACTION_LABELS = {
    warn_collector: "提醒催收员",
    alert_supervisor: "通知主管",
    halt_call: "强制挂断",
  };
  function actionLabel(a) { return ACTION_LABELS[a] || a || ""; }

  // What an action did to the phone call (action.outcome / action_outcome events).
  const OUTCOME_LABELS = {
    pending: "执行中 in progress",
    done: "已完成 done",
    failed: "失败 failed",
    not_supported: "此线路不支持 not supported by this bridge",
    recommended: "建议挂断 · 待主管确认 recommended — awaiting a supervisor",
  };
  function outcomeLabel(o) { return OUTCOME_LABELS[o] || o || ""; }

  const SPEAKER_LABELS = { agent: "催收员", customer: "客户" };
  function speakerLabel(s) { return SPEAKER_LABELS[s] || s || "?"; }

  /* A finding as an alert-list row (console alerts panel, search page findings list).
   * opts: {time: text for the time column, onClick, showCall, showSource}. */
  function findingItem(f, opts) {
    const o = opts || {};
    return h("li", { className: "alert finding sev-" + f.severity,
      dataset: { callId: f.call_id || "", findingId: f.finding_id }, on: o.onClick ? { click: o.onClick } : null },
      h("div", { className: "row" }, h("span", { className: "time", text: o.time || "" }),
        severityBadge(f.severity), categoryEl(f.category)),
      h("div", { className: "row small" },
        o.showCall ? h("span", { className: "call-id", text: f.call_id }) : null,
        h("span", { text: speakerLabel(f.speaker) + " @" + fmtOffset(f.t0) }),
        h("code", { className: "rule-id", text: f.rule_id }),
        o.showSource ? h("span", { className: "muted",
          text: (f.source || "") + (f.score != null ? " " + Number(f.score).toFixed(2) : "") }) : null),
      h("div", { className: "explanation", text: f.explanation }),
      f.rule_source ? h("div", { className: "rule-source muted", title: "依据 source" }, "依据：", h("small", { text: f.rule_source })) : null,
      f.matched_text ? h("div", { className: "matched" }, "「",
        h("mark", { className: "sev-" + f.severity, text: f.matched_text }), "」") : null);
  }

  /* A finding raised on a partial transcript that the final one did not bear out: struck through, with why. */
  function markWithdrawn(li, reason) {
    if (!li || li.classList.contains("withdrawn")) return;
    li.classList.add("withdrawn");
    li.appendChild(h("div", { className: "withdrawn-note" }, "已撤回 ", h("small", { text: "withdrawn" }),
      reason ? "：" + reason : ""));
  }

  // ------------------------------------------------------------------ time formatting

  /* Stream seconds -> mm:ss (h:mm:ss past an hour). */
  function fmtOffset(sec) {
    if (typeof sec !== "number" || !isFinite(sec) || sec < 0) sec = 0;
    sec = Math.floor(sec);
    const hh = Math.floor(sec / 3600), mm = Math.floor((sec % 3600) / 60), ss = sec % 60;
    const p2 = (n) => String(n).padStart(2, "0");
    return hh ? hh + ":" + p2(mm) + ":" + p2(ss) : p2(mm) + ":" + p2(ss);
  }
  /* Unix seconds -> local HH:MM:SS. */
  function fmtClock(unix) {
    if (typeof unix !== "number") return "";
    return new Date(unix * 1000).toLocaleTimeString("zh-CN", { hour12: false });
  }
  /* Unix seconds -> local YYYY-MM-DD HH:MM:SS. */
  function fmtDateTime(unix) {
    if (typeof unix !== "number") return "";
    const d = new Date(unix * 1000);
    const p2 = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p2(d.getMonth() + 1) + "-" + p2(d.getDate()) + " " +
      p2(d.getHours()) + ":" + p2(d.getMinutes()) + ":" + p2(d.getSeconds());
  }

  // ------------------------------------------------------------------ human names (console, issue 18)

  // English names beside the Chinese labels: a card or alert is titled with these, never with a raw id.
  const CATEGORY_NAMES_EN = {
    threat: "Threat",
    abuse: "Abusive language",
    impersonation: "Impersonating officials",
    third_party_disclosure: "Debt disclosed to a third party",
    privacy_leak: "Personal data disclosed",
    missing_disclosure: "Required disclosure missing",
    customer_abuse: "Customer abuse",
    misrepresentation: "Misrepresentation",
    induced_borrowing: "Induced borrowing",
    improper_payment: "Improper payment request",
    calling_hours: "Outside permitted calling hours",
    call_frequency: "Too many calls to this debtor",
  };
  function humanize(id) {
    const s = String(id || "").replace(/[._]+/g, " ").trim();
    return s ? s.charAt(0).toUpperCase() + s.slice(1) : "";
  }
  /* "非催收时段 · Outside permitted calling hours": what a finding is, in words (raw ids stay in small print). */
  function categoryTitle(cat) {
    const zh = categoryLabel(cat), en = CATEGORY_NAMES_EN[cat] || humanize(cat);
    return zh && en ? zh + " · " + en : zh || en || "—";
  }

  // Risk of a live call, from its standing findings (and a halt waiting for a supervisor).
  const RISK_LABELS = { low: "低风险 low", medium: "中风险 medium", high: "高风险 high", critical: "危急 critical" };
  function riskLevel(maxSev, haltRecommended) {
    if (haltRecommended || maxSev === "critical") return "critical";
    if (maxSev === "high") return "high";
    if (maxSev === "warn") return "medium";
    return "low";
  }
  function riskBadge(level) {
    return h("span", { className: "risk-badge risk-" + level, dataset: { risk: level }, title: "风险等级 risk level",
      text: RISK_LABELS[level] || level });
  }

  const ALERT_STATUS_LABELS = {
    open: "待处理 open",
    acknowledged: "已确认 acknowledged",
    assigned: "已指派 assigned",
    resolved: "已解决 resolved",
  };
  function alertStatusLabel(s) { return ALERT_STATUS_LABELS[s] || s || ""; }

  global.CM = {
    token, authHeaders, withToken, apiFetch, me, logout, toLogin,
    wsUrl, connectWs, bindStatus, serverNow,
    esc, h, renderMarked, isNearBottom,
    CATEGORY_LABELS, categoryLabel, categoryEl,
    SEVERITIES, SEVERITY_LABELS, SEVERITY_COLORS, severityRank, maxSeverity, severityBadge,
    ACTION_LABELS, actionLabel, OUTCOME_LABELS, outcomeLabel, speakerLabel, findingItem, markWithdrawn,
    fmtOffset, fmtClock, fmtDateTime,
    CATEGORY_NAMES_EN, categoryTitle, RISK_LABELS, riskLevel, riskBadge, ALERT_STATUS_LABELS, alertStatusLabel,
  };
})(window);
