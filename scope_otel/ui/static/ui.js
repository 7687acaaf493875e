/* scope-otel viewer: traces list, one trace (waterfall, details, time travel), call graphs.
 * Every recorded value reaches the page through textContent or an attribute set by
 * the DOM API: data is never parsed as HTML. */
"use strict";
(function () {
  var MARK = window.performance && performance.mark ? function (name) { performance.mark("scope:" + name); } : function () {};
  MARK("script");
  var DATA = JSON.parse(document.getElementById("scope-data").textContent || "{}");
  MARK("parsed");
  var OFFLINE = document.body.getAttribute("data-offline") === "1";
  var PAGE = document.body.getAttribute("data-page");
  var SVG = "http://www.w3.org/2000/svg";
  var SHORT = 4096; // characters of a value shown before "show all"

  // -- small helpers ---------------------------------------------------------
  function el(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      for (var key in props) {
        if (!Object.prototype.hasOwnProperty.call(props, key)) continue;
        var value = props[key];
        if (value === undefined || value === null) continue;
        if (key === "text") node.textContent = String(value);
        else if (key === "cls") node.className = value;
        else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, String(value));
      }
    }
    for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
    return node;
  }
  function add(node) {  // add(node, child, child, ...): children are nodes, text, arrays or nothing
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === undefined || child === null || child === false) continue;
      if (Array.isArray(child)) { child.forEach(function (c) { add(node, c); }); continue; }
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    for (var key in attrs) node.setAttribute(key, String(attrs[key]));
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function ms(ns) {
    if (ns === null || ns === undefined) return "–";
    var v = ns / 1e6;
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    if (v >= 10) return v.toFixed(1) + " ms";
    return v.toFixed(3) + " ms";
  }
  function shortText(text, n) {
    text = String(text);
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }
  function oneLine(text) { return String(text).replace(/\s+/g, " ").trim(); }
  function valueBox(text) {
    // a recorded value: preformatted text, long values cut with a button to show the rest
    text = String(text);
    var pre = el("pre", { cls: "value" });
    if (text.length <= SHORT) { pre.textContent = text; return pre; }
    pre.textContent = text.slice(0, SHORT);
    var more = el("button", { cls: "more", type: "button", text: "show all " + text.length.toLocaleString() + " characters",
      onclick: function () { pre.textContent = text; more.remove(); } });
    return el("div", null, pre, more);
  }
  function traceHref(id, span) {
    return "/trace/" + encodeURIComponent(id) + (span ? "#span=" + encodeURIComponent(span) : "");
  }
  function listHref(match) {
    var q = new URLSearchParams();
    for (var k in match) if (match[k]) q.set(k, match[k]);
    return "/?" + q.toString();
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body && body.error ? body.error : "HTTP " + r.status);
        return body;
      });
    });
  }
  function header(active) {
    var nav = el("nav", { cls: "top" }, el("span", { cls: "brand", text: "scope-otel" }));
    if (OFFLINE) {
      add(nav, el("span", { cls: "offline", text: "saved copy: works offline, links to other traces need the viewer" }));
    } else {
      add(nav, el("a", { href: "/", cls: active === "list" ? "on" : "", text: "Traces" }));
      add(nav, el("a", { href: "/graph", cls: active === "graph" ? "on" : "", text: "Graph" }));
    }
    document.body.appendChild(nav);
  }
  function problem(message) {
    return el("div", { cls: "problem", role: "alert", text: message });
  }

  // -- traces list -------------------------------------------------------------
  function listPage() {
    header("list");
    var params = new URLSearchParams(location.search);
    var fields = {};
    function input(name, props) {
      var node = el("input", Object.assign({ name: name, id: "f-" + name }, props));
      if (props.type === "checkbox") node.checked = params.get(name) === "1";
      else if (params.get(name)) node.value = params.get(name);
      fields[name] = node;
      return node;
    }
    var service = el("select", { name: "service", id: "f-service" }, el("option", { value: "", text: "all services" }));
    (DATA.services || []).forEach(function (s) { add(service, el("option", { value: s, text: s })); });
    service.value = params.get("service") || "";
    fields.service = service;
    var since = input("since", { type: "datetime-local", step: "1", title: "from (your local time)" });
    var until = input("until", { type: "datetime-local", step: "1", title: "to (your local time)" });
    [since, until].forEach(function (node) {  // the URL holds UTC; the inputs show local time
      var raw = params.get(node.name);
      if (raw) { var d = new Date(raw); if (!isNaN(d)) node.value = localInput(d); }
    });
    var live = el("input", { type: "checkbox", id: "f-live", checked: "checked" });
    var form = el("form", { cls: "filters", id: "filters" },
      el("label", null, "service ", service),
      el("label", null, "root or route ", input("name", { type: "search", placeholder: "POST /orders" })),
      el("label", null, input("errors", { type: "checkbox", value: "1" }), " errors only"),
      el("label", null, "min ", input("min_ms", { type: "number", min: "0", step: "any", placeholder: "ms", cls: "num" }), " ms"),
      el("label", null, "from ", since),
      el("label", null, "to ", until),
      el("label", null, "text ", input("text", { type: "search", placeholder: "argument, return value, SQL" })),
      el("label", { title: "traces holding a span of exactly this name, anywhere" }, "calls ", input("span", { type: "search", placeholder: "Cart.add" })),
      el("button", { type: "submit", text: "Search" }),
      el("label", { cls: "live" }, live, " live"));
    var status = el("div", { cls: "status", id: "list-status" });
    var table = el("table", { cls: "traces", id: "traces" },
      el("thead", null, el("tr", null, ["", "started", "root", "services", "spans", "duration"].map(function (h) {
        return el("th", { text: h });
      }))));
    var body = el("tbody");
    table.appendChild(body);
    add(document.body, el("main", { cls: "list" }, el("h1", { text: "Traces" }), form, status, table,
      el("p", { cls: "legend", text: "✗ the trace has failing spans · newest first · click a row to open the trace" })));
    var seen = null;
    var pending = false;
    function query() {
      var q = new URLSearchParams();
      ["service", "name", "min_ms", "text", "span"].forEach(function (k) { if (fields[k].value) q.set(k, fields[k].value); });
      if (fields.errors.checked) q.set("errors", "1");
      ["since", "until"].forEach(function (k) {
        if (fields[k].value) { var d = new Date(fields[k].value); if (!isNaN(d)) q.set(k, d.toISOString()); }
      });
      return q;
    }
    function load(user) {
      if (pending) return;
      pending = true;
      var q = query();
      if (user) history.replaceState(null, "", "/?" + q.toString());
      getJSON("/api/traces?" + q.toString()).then(function (rows) {
        pending = false;
        render(rows, !user && seen !== null);
        status.textContent = rows.length + " trace" + (rows.length === 1 ? "" : "s") +
          (rows.length >= 50 ? " (the newest 50)" : "") + " · updated " + new Date().toLocaleTimeString();
        status.classList.remove("bad");
        if (!document.body.hasAttribute("data-ready")) {
          document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
          document.body.setAttribute("data-ready", "1");
        }
      }, function (err) {
        pending = false;
        status.textContent = "cannot list traces: " + err.message;
        status.classList.add("bad");
      });
    }
    function render(rows, markNew) {
      var previous = seen || {};
      seen = {};
      clear(body);
      if (!rows.length) {
        body.appendChild(el("tr", null, el("td", { colspan: "6", cls: "empty", text: "no trace matches" })));
      }
      rows.forEach(function (r) {
        seen[r.trace_id] = true;
        var root = r.root || "(no root span)";
        var tr = el("tr", { cls: "row" + (r.errors ? " has-error" : "") + (markNew && !previous[r.trace_id] ? " new" : ""),
            "data-trace-id": r.trace_id },
          el("td", { cls: "mark", title: r.errors ? r.errors + " failing span(s)" : "", text: r.errors ? "✗" : "" }),
          el("td", { cls: "when", text: new Date(r.start + "Z").toLocaleString() }),
          el("td", { cls: "root" }, el("a", { href: traceHref(r.trace_id), text: shortText(root, 120) }),
            r.entry && r.entry !== root ? el("span", { cls: "entry", text: " " + shortText(r.entry, 120) }) : null),
          el("td", { cls: "services" }, r.services.map(function (s) { return el("span", { cls: "chip", text: s }); })),
          el("td", { cls: "n", text: r.spans }),
          el("td", { cls: "n", text: ms(r.duration_ns) }));
        tr.addEventListener("click", function (e) {
          if (e.target.tagName !== "A") location.href = traceHref(r.trace_id);
        });
        body.appendChild(tr);
      });
    }
    form.addEventListener("submit", function (e) { e.preventDefault(); load(true); });
    form.addEventListener("change", function (e) { if (e.target !== live) load(true); });
    setInterval(function () {
      if (live.checked && document.visibilityState === "visible") load(false);
    }, 3000);
    load(false);
  }
  function localInput(d) {
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + "T" +
      two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  // -- one trace: layout and time-travel steps ---------------------------------
  var ROW = 24;        // px per waterfall row
  var GROUP_MIN = 3;   // siblings repeated this often show as one group (as `scope-otel trace` does)

  function groupRepeats(kids) {
    // siblings in order; those sharing service, name and SQL (Span.same) GROUP_MIN times or
    // more gathered where the first stood
    if (kids.length < GROUP_MIN) return kids.map(function (c) { return [c]; });
    var counts = new Map(), out = [], groups = new Map();
    kids.forEach(function (c) { counts.set(c.same, (counts.get(c.same) || 0) + 1); });
    kids.forEach(function (c) {
      if (counts.get(c.same) >= GROUP_MIN) {
        var g = groups.get(c.same);
        if (!g) { g = []; groups.set(c.same, g); out.push(g); }
        g.push(c);
      } else out.push([c]);
    });
    return out;
  }

  function Span(c, i) {
    // one span of the server's columns (model.COLUMNS), every field set here so that all
    // spans share one shape; layout() fills depth, order, group and error marks
    this.id = c.id[i]; this.parent = c.parent[i];
    this.name = c.name_d[c.name_i[i]]; this.kind = c.kind_d[c.kind_i[i]];
    this.service = c.service_d[c.service_i[i]]; this.instance = c.instance_d[c.instance_i[i]];
    this.process = c.process_d[c.process_i[i]];
    this.start = c.start[i]; this.dur = c.dur[i];
    this.status = c.status_d[c.status_i[i]]; this.status_msg = c.status_msg[i];
    this.c = c; this.a0 = 0; this.an = c.attr_n[i]; this._attrs = null;  // attributes: c.attr_*[a0, a0 + an)
    this.events = c.events[i].length ? c.events[i].map(function (e) { return { t: e[0], name: e[1], attrs: e[2] }; }) : NONE;
    this.links = c.links[i].length ? c.links[i].map(function (l) { return { trace_id: l[0], span_id: l[1], attrs: l[2] }; }) : NONE;
    this.sql = c.sql_d[c.sql_i[i]]; this.hlc = c.hlc[i];
    // equal for spans with the same service, name and SQL (the columns' dictionary indices)
    this.same = (c.name_i[i] * c.service_d.length + c.service_i[i]) * c.sql_d.length + c.sql_i[i];
    this.depth = 0; this.i = 0; this.group = 0; this.err = 0;
  }
  Object.defineProperty(Span.prototype, "attrs", { get: function () {
    // key -> value, built when first read (the waterfall and time travel read the columns)
    if (!this._attrs) {
      var a = Object.create(null), c = this.c;
      for (var j = this.a0; j < this.a0 + this.an; j++) a[c.attr_d[c.attr_i[j]]] = c.attr_v[j];
      this._attrs = a;
    }
    return this._attrs;
  } });
  var NONE = Object.freeze([]);
  function decodeSpans(c) {
    var out = new Array(c.n);
    for (var i = 0, at = 0; i < c.n; i++) { out[i] = new Span(c, i); out[i].a0 = at; at += out[i].an; }
    return out;
  }

  function layout(input) {
    // depth-first order (siblings by start), depth, repeated-sibling groups, error marks:
    // err 2 = a failing span, 1 = on the path from one to its root
    var byId = Object.create(null), children = Object.create(null), roots = [];
    input.forEach(function (s) { byId[s.id] = s; });
    input.forEach(function (s) {
      if (s.parent && byId[s.parent] && s.parent !== s.id) (children[s.parent] = children[s.parent] || []).push(s);
      else roots.push(s);
    });
    var ordered = [], seen = Object.create(null), groupNo = 0, stack = [];
    for (var r = roots.length - 1; r >= 0; r--) stack.push([roots[r], 0]);
    while (stack.length) {
      var top = stack.pop(), span = top[0], depth = top[1];
      if (seen[span.id]) continue;  // a corrupt parent cycle
      seen[span.id] = true;
      span.depth = depth;
      ordered.push(span);
      var rows = groupRepeats(children[span.id] || NONE);
      rows.forEach(function (row) { if (row.length > 1) { groupNo++; row.forEach(function (m) { m.group = groupNo; }); } });
      for (var i = rows.length - 1; i >= 0; i--) for (var j = rows[i].length - 1; j >= 0; j--) stack.push([rows[i][j], depth + 1]);
    }
    input.forEach(function (s) { if (!seen[s.id]) { s.depth = 0; ordered.push(s); } });
    ordered.forEach(function (s, i) { s.i = i; });
    ordered.forEach(function (s) {
      if (s.status !== "error") return;
      s.err = 2;
      for (var p = byId[s.parent], hops = 0; p && hops < 512; p = byId[p.parent], hops++) if (!p.err) p.err = 1;
    });
    return { spans: ordered, byId: byId, children: children, roots: roots };
  }

  function eventFact(e) {
    var a = e.attrs;
    if (e.name === "exception") return ["exception", a["exception.type"] || "", a["exception.message"] || ""];
    if (e.name === "scope.state_change") return ["state", a["scope.target"] || "", a["scope.value"] || ""];
    if (e.name === "scope.send" || e.name === "scope.recv") return [e.name.slice(6), a["messaging.destination.name"] || "", a["messaging.message.id"] || ""];
    return ["event", e.name, Object.keys(a).map(function (k) { return k + "=" + a[k]; }).join(", ")];
  }

  function Step(k, s, n, v, t) {
    // one fact of time travel: its kind, the span's index, a name, a value, the time (ns)
    this.k = k; this.s = s; this.n = n; this.v = v; this.t = t;
  }

  function buildSteps(L) {
    // Every recorded fact, one per step, in the call tree's order: a call's entry and
    // arguments before anything inside it, its return and exit after; each child call one
    // unbroken block among its parent's own facts.  Clocks order only siblings (by the
    // hybrid logical clock when all of them carry one, which holds across nodes whose wall
    // clocks disagree, else by start) and a span's own facts among its children.
    // Concurrent children (threads) are shown one after the other.
    function ordered(sibs) {
      if (sibs.length < 2) return sibs;  // read only: nothing to sort
      var all = sibs.every(function (s) { return s.hlc; });
      return sibs.slice().sort(all
        ? function (a, b) { return a.hlc < b.hlc ? -1 : a.hlc > b.hlc ? 1 : a.start - b.start; }
        : function (a, b) { return a.start - b.start; });
    }
    var steps = [], seen = Object.create(null);
    var c = L.spans.length ? L.spans[0].c : { attr_d: [], attr_i: [], attr_v: [] };
    var argName = c.attr_d.map(function (key) { return key.indexOf("scope.arg.") === 0 ? key.slice(10) : null; });
    var returned = c.attr_d.indexOf("scope.return");
    function open(span) {
      seen[span.id] = true;
      steps.push(new Step("enter", span.i, span.name, "", span.start));
      for (var j = span.a0; j < span.a0 + span.an; j++) {
        var arg = argName[c.attr_i[j]];
        if (arg !== null) steps.push(new Step("arg", span.i, arg, c.attr_v[j], span.start));
      }
      var facts = !span.events.length ? NONE : span.events.slice().sort(function (a, b) { return a.t - b.t; }).map(function (e) {
        var f = eventFact(e);
        return new Step(f[0], span.i, f[1], f[2], e.t);
      });
      return { span: span, facts: facts, kids: ordered(L.children[span.id] || NONE), f: 0, c: 0 };
    }
    function close(span) {
      var end = span.start + span.dur;
      for (var j = span.a0; j < span.a0 + span.an; j++) {
        if (c.attr_i[j] === returned) { steps.push(new Step("return", span.i, "", c.attr_v[j], end)); break; }
      }
      steps.push(new Step("exit", span.i, span.name, span.status, end));
    }
    ordered(L.roots).forEach(function (root) {
      if (seen[root.id]) return;
      var stack = [open(root)];
      while (stack.length) {
        var fr = stack[stack.length - 1];
        var factNext = fr.f < fr.facts.length, kidNext = fr.c < fr.kids.length;
        if (!factNext && !kidNext) { stack.pop(); close(fr.span); continue; }
        if (factNext && (!kidNext || fr.facts[fr.f].t <= fr.kids[fr.c].start)) { steps.push(fr.facts[fr.f++]); continue; }
        var kid = fr.kids[fr.c++];
        if (!seen[kid.id]) stack.push(open(kid));
      }
    });
    return steps;
  }

  // -- one trace: the page ----------------------------------------------------------

  function tracePage() {
    header("trace");
    var T = DATA.trace;
    var L = layout(decodeSpans(T.columns));
    var spans = L.spans, byId = L.byId;
    MARK("laid-out");
    T.steps = null;  // built after the first paint (allSteps), or when first needed
    var groups = {};   // group number -> member spans
    spans.forEach(function (s) { if (s.group) (groups[s.group] = groups[s.group] || []).push(s); });
    var open = {};     // group number -> expanded
    var selected = null;
    var stepAt = -1;   // time-travel position, -1 = not started
    var end = Math.max(T.duration_ns, 1);

    // summary
    var root = spans[0];
    var failing = spans.filter(function (s) { return s.err === 2; });
    var actions = el("div", { cls: "actions" });
    if (!OFFLINE) {
      add(actions, el("a", { cls: "button", id: "save-html", href: "/trace/" + T.trace_id + ".html",
        download: "trace-" + T.trace_id + ".html", text: "Save as HTML" }));
      add(actions, el("a", { cls: "button", id: "save-chrome", href: "/api/trace/" + T.trace_id + "/chrome-trace",
        download: "trace-" + T.trace_id + ".json", text: "Chrome trace JSON" }));
    }
    add(document.body, el("section", { cls: "summary" },
      el("h1", null, failing.length ? el("span", { cls: "fail-mark", text: "✗ " }) : null,
        el("span", { id: "trace-root", text: shortText(root.name, 200) })),
      el("div", { cls: "facts" },
        el("span", { text: "trace " + T.trace_id }),
        el("span", { text: new Date(T.start).toLocaleString() }),
        el("span", { text: ms(T.duration_ns) }),
        el("span", { text: spans.length + " spans" }),
        el("span", { text: T.services.join(", ") }),
        failing.length ? el("span", { cls: "bad", text: failing.length + " failing" }) : null),
      actions,
      el("div", { cls: "legend", id: "legend" },
        el("span", null, el("b", { cls: "m-fail", text: "✗" }), " failing span"),
        el("span", null, el("b", { cls: "m-path", text: "↑" }), " on the error path (failing span → root)"),
        el("span", null, el("b", { text: "×N" }), " repeated siblings, grouped (click to expand)"),
        el("span", null, el("b", { cls: "n1", text: "N+1?" }), " the same statement run again and again"),
        el("span", null, el("b", { text: "← →" }), " step through time, Home/End: first/last step"))));

    var waterfall = el("div", { cls: "waterfall", id: "waterfall", tabindex: "0" });
    var inner = el("div", { cls: "wf-inner" });
    waterfall.appendChild(inner);
    var detail = el("aside", { cls: "detail", id: "detail" },
      el("p", { cls: "hint", text: "Select a span to see its arguments, return value, exception, state changes, events and links." }));
    var travel = el("section", { cls: "travel", id: "travel" });
    add(document.body, el("main", { cls: "trace" }, el("div", { cls: "left" }, waterfall, travel), detail));

    // rows shown: spans in depth-first order, a collapsed group as one row
    var rows = [];
    function buildRows() {
      rows = [];
      var skipDepth = -1;
      var shownGroup = {};
      for (var i = 0; i < spans.length; i++) {
        var s = spans[i];
        if (skipDepth >= 0) {
          if (s.depth > skipDepth) continue;
          skipDepth = -1;
        }
        if (s.group && !open[s.group]) {
          if (!shownGroup[s.group]) { shownGroup[s.group] = true; rows.push({ group: s.group, span: s }); }
          skipDepth = s.depth;
          continue;
        }
        rows.push({ span: s });
      }
      inner.style.height = rows.length * ROW + "px";
    }
    function groupFacts(g) {
      var members = groups[g];
      var total = 0, err = 0, first = members[0];
      members.forEach(function (m) { total += m.dur; err = Math.max(err, m.err); });
      var lo = first.start, hi = 0;
      members.forEach(function (m) { lo = Math.min(lo, m.start); hi = Math.max(hi, m.start + m.dur); });
      return { members: members, total: total, err: err, lo: lo, hi: hi, sql: !!first.sql };
    }
    function rowFor(r, index) {
      var s = r.span;
      var node = el("div", { cls: "wf-row", "data-span-id": s.id, "data-row": index });
      node.style.top = index * ROW + "px";
      var label = el("div", { cls: "wf-label" });
      label.style.paddingLeft = (6 + Math.min(s.depth, 40) * 14) + "px";
      var err = s.err, left = s.start, width = s.dur, text = s.name;
      if (r.group) {
        var g = groupFacts(r.group);
        err = g.err; left = g.lo; width = g.hi - g.lo;
        node.classList.add("group");
        node.setAttribute("data-group", r.group);
        add(label, el("span", { cls: "twisty", text: "▸" }));
      } else if (s.group) {
        add(label, el("span", { cls: "twisty", text: "▾" }));
      }
      if (err === 2) { node.classList.add("failing"); add(label, el("b", { cls: "m-fail", text: "✗ " })); }
      else if (err === 1) { node.classList.add("err-path"); add(label, el("b", { cls: "m-path", text: "↑ " })); }
      add(label, el("span", { cls: "svc", text: s.service }));
      add(label, el("span", { cls: "name", text: " " + shortText(text, 160) }));
      if (r.group) {
        add(label, el("span", { cls: "times", text: " ×" + groups[r.group].length }));
        if (g.sql && groups[r.group].length >= 3) add(label, el("span", { cls: "n1", title: "the same statement ran " + groups[r.group].length + " times under one parent: an N+1 query?", text: "N+1?" }));
      }
      if (s.sql) add(label, el("span", { cls: "sql", text: " " + shortText(oneLine(s.sql), 200) }));
      var bar = el("div", { cls: "wf-bar-area" });
      var b = el("div", { cls: "wf-bar k-" + s.kind });
      b.style.left = (100 * left / end) + "%";
      b.style.width = Math.max(0.15, 100 * width / end) + "%";
      add(bar, b, el("span", { cls: "wf-dur", text: r.group ? ms(g.total) + " total" : ms(s.dur) }));
      node.appendChild(label);
      node.appendChild(bar);
      if (selected && selected.id === s.id && !r.group) node.classList.add("selected");
      var now = stepAt >= 0 ? allSteps()[stepAt].s : -1;
      if (now >= 0 && (r.group ? groups[r.group].some(function (m) { return m.i === now; }) : s.i === now)) node.classList.add("now");
      node.addEventListener("click", function () {
        if (r.group) { open[r.group] = true; buildRows(); draw(); return; }
        select(s, false);
      });
      node.addEventListener("dblclick", function () {
        if (s.group && !r.group) { open[s.group] = false; buildRows(); draw(); }
      });
      return node;
    }
    var drawn = null;
    function draw() {
      var top = waterfall.scrollTop, h = waterfall.clientHeight || 600;
      var from = Math.max(0, Math.floor(top / ROW) - 20), to = Math.min(rows.length, Math.ceil((top + h) / ROW) + 20);
      clear(inner);
      for (var i = from; i < to; i++) inner.appendChild(rowFor(rows[i], i));
      drawn = [from, to];
    }
    var scheduled = false;
    waterfall.addEventListener("scroll", function () {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(function () { scheduled = false; draw(); });
    });
    function reveal(span) {
      // expand the group holding ``span`` and its ancestors', then scroll it into view
      var changed = false, p = span;
      while (p) {
        if (p.group && !open[p.group]) { open[p.group] = true; changed = true; }
        p = byId[p.parent];
      }
      if (changed) buildRows();
      for (var i = 0; i < rows.length; i++) {
        if (rows[i].span === span) {
          var y = i * ROW;
          if (y < waterfall.scrollTop || y > waterfall.scrollTop + waterfall.clientHeight - ROW) {
            waterfall.scrollTop = Math.max(0, y - waterfall.clientHeight / 3);
          }
          break;
        }
      }
      draw();
    }

    // details of one span
    function section(title, body) {
      return el("section", { cls: "d-sec" }, el("h3", { text: title }), body);
    }
    function kv(pairs) {
      var table = el("table", { cls: "kv" });
      pairs.forEach(function (p) {
        table.appendChild(el("tr", null, el("th", { text: p[0] }), el("td", null, valueBox(p[1]))));
      });
      return table;
    }
    function frames(stack) {
      // "File "x", line n, in f" lines of a Python traceback, innermost last
      var out = [], re = /^\s*File "(.*)", line (\d+), in (.*)$/;
      String(stack || "").split("\n").forEach(function (line) {
        var m = re.exec(line);
        if (m) out.push({ file: m[1], line: m[2], fn: m[3] });
      });
      return out;
    }
    function select(span, fromStep) {
      selected = span;
      clear(detail);
      var a = span.attrs;
      var args = [], others = [];
      Object.keys(a).forEach(function (k) {
        if (k.indexOf("scope.arg.") === 0) args.push([k.slice(10), a[k]]);
        else if (k !== "scope.return") others.push([k, a[k]]);
      });
      add(detail, el("h2", { id: "detail-name" }, span.err === 2 ? el("b", { cls: "m-fail", text: "✗ " }) : null, span.name));
      add(detail, el("div", { cls: "facts" },
        el("span", { cls: "chip", text: span.service }),
        el("span", { text: span.kind }),
        el("span", { text: ms(span.dur) + " at +" + ms(span.start) }),
        span.status ? el("span", { cls: span.status === "error" ? "bad" : "", text: span.status }) : null,
        el("span", { cls: "mono", text: "span " + span.id }),
        span.process ? el("span", { text: span.process }) : null));
      if (span.status_msg) add(detail, section("Status", valueBox(span.status_msg)));
      if (span.sql) add(detail, section("SQL", valueBox(span.sql)));
      if (args.length) add(detail, el("div", { id: "detail-args" }, section("Arguments", kv(args))));
      if ("scope.return" in a) add(detail, el("div", { id: "detail-return" }, section("Return value", valueBox(a["scope.return"]))));
      var exceptions = span.events.filter(function (e) { return e.name === "exception"; });
      exceptions.forEach(function (e) {
        var fs = frames(e.attrs["exception.stacktrace"]);
        var box = el("div", { cls: "exception", id: "detail-exception" },
          el("div", { cls: "exc-head" }, el("b", { text: e.attrs["exception.type"] || "exception" }), ": ",
            el("span", { text: shortText(e.attrs["exception.message"] || "", SHORT) })));
        if (fs.length) {
          add(box, el("ol", { cls: "frames" }, fs.map(function (f) {
            return el("li", null, el("b", { text: f.fn }), el("span", { cls: "where", text: "  " + f.file + ":" + f.line }));
          })));
        }
        if (e.attrs["exception.stacktrace"]) {
          add(box, el("details", null, el("summary", { text: "traceback" }), valueBox(e.attrs["exception.stacktrace"])));
        }
        add(detail, section("Exception", box));
      });
      var states = span.events.filter(function (e) { return e.name === "scope.state_change"; });
      if (states.length) {
        add(detail, section("State changes", kv(states.map(function (e) {
          return [(e.attrs["scope.target"] || "?") + "  (+" + ms(e.t - span.start) + ")", e.attrs["scope.value"] || ""];
        }))));
      }
      var rest = span.events.filter(function (e) { return e.name !== "exception" && e.name !== "scope.state_change"; });
      if (rest.length) {
        add(detail, section("Events", el("ul", { cls: "events" }, rest.map(function (e) {
          return el("li", null, el("b", { text: e.name }), " +" + ms(e.t - span.start) + " ",
            el("span", { cls: "mono", text: Object.keys(e.attrs).map(function (k) { return k + "=" + shortText(e.attrs[k], 300); }).join("  ") }));
        }))));
      }
      var links = [];
      span.links.forEach(function (l) {
        links.push(linkItem("from", l.trace_id, l.span_id, (l.attrs["messaging.destination.name"] || l.attrs["scope.handoff"] || "link")));
      });
      (T.incoming || []).forEach(function (l) {
        if (l.to_span === span.id) links.push(linkItem("to", l.trace_id, l.span_id, l.service + " " + l.name));
      });
      // a scope.send here and a scope.recv elsewhere in this trace with the same channel and id
      span.events.forEach(function (e) {
        if (e.name !== "scope.send" && e.name !== "scope.recv") return;
        var other = e.name === "scope.send" ? "scope.recv" : "scope.send";
        spans.forEach(function (o) {
          o.events.forEach(function (oe) {
            if (oe.name === other && oe.attrs["messaging.message.id"] === e.attrs["messaging.message.id"] &&
                oe.attrs["messaging.destination.name"] === e.attrs["messaging.destination.name"] && o !== span) {
              links.push(linkItem(e.name === "scope.send" ? "to" : "from", T.trace_id, o.id, o.service + " " + o.name));
            }
          });
        });
      });
      if (links.length) add(detail, section("Links", el("ul", { cls: "links", id: "detail-links" }, links)));
      if (others.length) add(detail, el("details", { cls: "attrs" }, el("summary", { text: "attributes (" + others.length + ")" }), kv(others)));
      add(detail, el("button", { type: "button", cls: "jump", text: "Time travel to this call",
        onclick: function () { var st = allSteps(); for (var i = 0; i < st.length; i++) if (st[i].s === span.i) { go(i); break; } } }));
      if (!fromStep) history.replaceState(null, "", "#span=" + span.id);
      reveal(span);
    }
    function linkItem(direction, traceId, spanId, label) {
      var text = (direction === "from" ? "← message from " : "→ message to ") + label;
      var here = traceId === T.trace_id && byId[spanId];
      var a;
      if (here) {
        a = el("a", { href: "#span=" + spanId, text: text, "data-span-id": spanId });
        a.addEventListener("click", function (e) { e.preventDefault(); select(byId[spanId], false); });
      } else if (OFFLINE) {
        a = el("span", { text: text + " (trace " + traceId + ", span " + spanId + ")" });
      } else {
        a = el("a", { href: traceHref(traceId, spanId), text: text, "data-trace-id": traceId });
      }
      return el("li", null, a, el("span", { cls: "mono where", text: "  " + traceId.slice(0, 8) + "/" + spanId }));
    }

    // time travel
    var stepLabel = el("span", { id: "tt-step" });
    var stepText = el("div", { cls: "tt-what", id: "tt-what" });
    var stackList = el("ol", { cls: "tt-stack", id: "tt-stack" });
    var known = el("div", { cls: "tt-known", id: "tt-known" });
    var slider = el("input", { type: "range", min: "0", max: "0", value: "0", id: "tt-slider" });
    function allSteps() {
      // every step of the trace (buildSteps): a 10,000-span trace has ~30,000, so the page is
      // drawn first and they are built when it is idle, or at once when time travel is used earlier
      if (!T.steps) {
        T.steps = buildSteps(L);
        slider.max = String(Math.max(0, T.steps.length - 1));
        if (stepAt < 0) stepLabel.textContent = " " + T.steps.length + " steps: press → to start ";
      }
      return T.steps;
    }
    slider.addEventListener("input", function () { go(parseInt(slider.value, 10)); });
    add(travel, el("div", { cls: "tt-bar" },
      el("b", { text: "Time travel " }),
      el("button", { type: "button", id: "tt-prev", title: "previous step (←)", text: "◀", onclick: function () { go(stepAt - 1); } }),
      el("button", { type: "button", id: "tt-next", title: "next step (→)", text: "▶", onclick: function () { go(stepAt + 1); } }),
      stepLabel, slider),
      stepText,
      el("div", { cls: "tt-cols" },
        el("div", null, el("h3", { text: "Call stack (innermost first)" }), stackList),
        el("div", null, el("h3", { text: "Known so far" }), known)));
    function describe(st) {
      var s = spans[st.s];
      switch (st.k) {
        case "enter": return "→ call " + s.name + "  [" + s.service + "]";
        case "arg": return "  argument " + st.n + " = " + shortText(st.v, 300);
        case "state": return "  set " + st.n + " = " + shortText(st.v, 300);
        case "send": return "  send on " + st.n + " (message " + st.v + ")";
        case "recv": return "  receive from " + st.n + " (message " + st.v + ")";
        case "exception": return "✗ " + s.name + " raised " + st.n + ": " + shortText(st.v, 300);
        case "return": return "← " + s.name + " returned " + shortText(st.v, 300);
        case "exit": return "← leave " + s.name + (st.v === "error" ? " (failed)" : "");
        default: return "  event " + st.n + " " + shortText(st.v, 300);
      }
    }
    function go(i) {
      var steps = allSteps();
      if (!steps.length) return;
      i = Math.max(0, Math.min(steps.length - 1, i));
      stepAt = i;
      var st = steps[i];
      slider.value = String(i);
      stepLabel.textContent = " step " + (i + 1) + " / " + steps.length + "  +" + ms(st.t) + " ";
      stepText.textContent = describe(st);
      stepText.className = "tt-what k-" + st.k;
      // the stack: the step's span and its callers; after "exit" the span has left
      clear(stackList);
      var frame = spans[st.s];
      if (st.k === "exit") frame = byId[frame.parent];
      var argsOf = {}, state = {}, returns = [];
      for (var j = 0; j <= i; j++) {
        var x = steps[j];
        if (x.k === "arg") (argsOf[x.s] = argsOf[x.s] || []).push([x.n, x.v]);
        else if (x.k === "state") state[x.n] = [x.v, x.s];
        else if (x.k === "return") returns.push([spans[x.s].name, x.v]);
        else if (x.k === "exception") returns.push([spans[x.s].name, "raised " + x.n + ": " + x.v]);
      }
      var depth = 0;
      while (frame && depth < 512) {
        var li = el("li", { "data-span-name": frame.name },
          el("b", { text: frame.name }), el("span", { cls: "svc", text: "  " + frame.service }));
        var fa = argsOf[frame.i];
        if (fa) add(li, el("div", { cls: "tt-args", text: fa.map(function (p) { return p[0] + "=" + shortText(p[1], 120); }).join(", ") }));
        (function (f) { li.addEventListener("click", function () { select(f, true); }); })(frame);
        stackList.appendChild(li);
        frame = byId[frame.parent];
        depth++;
      }
      if (!stackList.firstChild) stackList.appendChild(el("li", { cls: "empty", text: "(nothing running)" }));
      clear(known);
      var stateKeys = Object.keys(state);
      if (stateKeys.length) {
        add(known, el("h4", { text: "state as last set" }), kv(stateKeys.map(function (k) { return [k, state[k][0]]; })));
      }
      if (returns.length) {
        add(known, el("h4", { text: "finished calls (latest first)" }),
          kv(returns.slice(-20).reverse().map(function (r) { return [r[0], r[1]]; })));
      }
      if (!stateKeys.length && !returns.length) add(known, el("p", { cls: "hint", text: "no state set and no call finished yet" }));
      select(spans[st.s], true);
    }
    document.addEventListener("keydown", function (e) {
      var tag = (e.target && e.target.tagName) || "";
      if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || e.altKey || e.ctrlKey || e.metaKey) return;
      if (e.key === "ArrowRight" || e.key === "j") { go(stepAt + 1); e.preventDefault(); }
      else if (e.key === "ArrowLeft" || e.key === "k") { go(stepAt - 1); e.preventDefault(); }
      else if (e.key === "Home") { go(0); e.preventDefault(); }
      else if (e.key === "End") { go(allSteps().length - 1); e.preventDefault(); }
    });
    stepLabel.textContent = " press → to step through time ";

    buildRows();
    draw();
    var m = /#span=([0-9a-fA-F]+)/.exec(location.hash);
    if (m && byId[m[1]]) select(byId[m[1]], false);
    window.addEventListener("resize", draw);
    document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
    document.body.setAttribute("data-ready", "1");
    // the steps when the page is idle after its first frame (a click or key before that builds them)
    var idle = window.requestIdleCallback ? function (f) { requestIdleCallback(f, { timeout: 2000 }); } : function (f) { setTimeout(f, 0); };
    requestAnimationFrame(function () { idle(function () { allSteps(); MARK("steps"); }); });
  }

  // -- graphs ------------------------------------------------------------------
  function graphPage() {
    header("graph");
    var params = new URLSearchParams(location.search);
    var by = params.get("by") || "service";
    var window_ = params.get("window") || "3600";  // seconds or "all"; an empty hour falls back to all time
    var windows = [["900", "15 min"], ["3600", "1 hour"], ["21600", "6 hours"], ["86400", "24 hours"], ["all", "all time"]];
    var note = el("p", { cls: "hint", id: "graph-note" });
    var holder = el("div", { cls: "graph", id: "graph" });
    var pick = el("div", { cls: "tabs" });
    ["service", "function"].forEach(function (b) {
      add(pick, el("a", { href: "/graph?by=" + b + "&window=" + window_, cls: b === by ? "on" : "", id: "by-" + b, text: b + " calls" }));
    });
    var span = el("select", { id: "graph-window", title: "count calls started in this window" });
    windows.forEach(function (w) { add(span, el("option", { value: w[0], text: "last " + w[1] })); });
    span.value = window_;
    span.addEventListener("change", function () { location.href = "/graph?by=" + by + "&window=" + span.value; });
    add(pick, el("label", null, " over ", span));
    add(document.body, el("main", { cls: "graphs" }, el("h1", { text: "Call graph" }), pick, note, holder,
      el("p", { cls: "legend", text: "edge label: calls · error rate · p50 / p99 of the callee · dashed: messages (queues, links) · click an edge or a node to list its traces" })));
    function load(kind, fallback, win) {
      getJSON("/api/graph?by=" + kind + "&window=" + win).then(function (g) {
        if (!g.edges.length && win !== "all") {
          note.textContent += " No calls in the chosen window: showing all time. ";
          span.value = "all";
          return load(kind, fallback, "all");
        }
        var between = g.edges.filter(function (e) { return e.src !== e.dst; });
        if (!between.length && kind === "service" && fallback) {
          note.textContent += "No calls between services recorded (one service, or no client/server pairs): showing the function graph. ";
          pick.querySelector("#by-service").classList.remove("on");
          pick.querySelector("#by-function").classList.add("on");
          return load("function", false, win);
        }
        if (g.left_out) note.textContent += " The " + g.edges.length + " busiest edges are drawn; " + g.left_out + " more are left out.";
        draw(g);
      }, function (err) { holder.appendChild(problem("cannot draw the graph: " + err.message)); });
    }
    function draw(g) {
      clear(holder);
      if (!g.edges.length) { holder.appendChild(el("p", { cls: "hint", text: "no edges yet: record some traffic first" })); return; }
      // layers by longest path from the sources; back edges (cycles) ignored for layering
      var out = {}, indeg = {};
      g.nodes.forEach(function (n) { out[n] = []; indeg[n] = 0; });
      g.edges.forEach(function (e) { if (e.src !== e.dst) out[e.src].push(e.dst); });
      var layer = {}, state = {};
      function visit(n) {
        if (state[n] === 2) return layer[n];
        if (state[n] === 1) return -1; // cycle
        state[n] = 1;
        var best = 0;
        g.edges.forEach(function (e) {
          if (e.dst === n && e.src !== n) { var l = visit(e.src); if (l >= 0) best = Math.max(best, l + 1); }
        });
        state[n] = 2;
        layer[n] = best;
        return best;
      }
      g.nodes.forEach(visit);
      var columns = [];
      g.nodes.forEach(function (n) { (columns[layer[n]] = columns[layer[n]] || []).push(n); });
      var pos = {}, colW = 0;
      var charW = 7, nodeH = 30, gapY = 26, padX = 20;
      var widths = {};
      g.nodes.forEach(function (n) { widths[n] = Math.min(300, 20 + charW * n.length); colW = Math.max(colW, widths[n]); });
      var gapX = 170, maxRows = 0;
      columns.forEach(function (col, c) {
        if (!col) return;
        if (c > 0) { // order by the mean row of callers
          col.sort(function (a, b) { return mean(a) - mean(b); });
        }
        col.forEach(function (n, r) { pos[n] = { x: padX + c * (colW + gapX), y: 50 + r * (nodeH + gapY) }; });
        maxRows = Math.max(maxRows, col.length);
      });
      function mean(n) {
        var ys = g.edges.filter(function (e) { return e.dst === n && pos[e.src]; }).map(function (e) { return pos[e.src].y; });
        return ys.length ? ys.reduce(function (a, b) { return a + b; }, 0) / ys.length : 0;
      }
      var W = padX * 2 + columns.length * (colW + gapX), H = 130 + maxRows * (nodeH + gapY);
      var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, id: "graph-svg" });
      var defs = svg("defs", {});
      var marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
      marker.appendChild(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#667" }));
      defs.appendChild(marker);
      root.appendChild(defs);
      var maxCalls = Math.max.apply(null, g.edges.map(function (e) { return e.calls; }));
      g.edges.forEach(function (e, k) {
        var a = pos[e.src], b = pos[e.dst];
        var x1 = a.x + widths[e.src], y1 = a.y + nodeH / 2, x2 = b.x, y2 = b.y + nodeH / 2, d;
        if (e.src === e.dst) {
          d = "M " + (a.x + widths[e.src] - 20) + " " + a.y + " C " + (a.x + widths[e.src] + 30) + " " + (a.y - 40) + ", " +
            (a.x + widths[e.src] + 40) + " " + (a.y + nodeH) + ", " + (a.x + widths[e.src]) + " " + (a.y + nodeH - 6);
        } else if (x2 <= x1) { // back edge: around below
          d = "M " + (a.x + widths[e.src] / 2) + " " + (a.y + nodeH) + " C " + (a.x + widths[e.src] / 2) + " " + (a.y + nodeH + 60) + ", " +
            (b.x + widths[e.dst] / 2) + " " + (b.y + nodeH + 60) + ", " + (b.x + widths[e.dst] / 2) + " " + (b.y + nodeH);
        } else {
          var mx = (x1 + x2) / 2;
          d = "M " + x1 + " " + y1 + " C " + mx + " " + y1 + ", " + mx + " " + y2 + ", " + x2 + " " + y2;
        }
        var rate = e.calls ? e.errors / e.calls : 0;
        var group = svg("g", { "class": "edge" + (rate > 0 ? " has-error" : "") + (e.message ? " message" : ""), "data-src": e.src, "data-dst": e.dst, tabindex: 0 });
        var path = svg("path", { d: d, "stroke-width": 1 + 4 * Math.log(1 + e.calls) / Math.log(1 + maxCalls), "marker-end": "url(#arrow)", fill: "none" });
        var hit = svg("path", { d: d, "class": "hit", fill: "none" });
        var label = e.message
          ? e.calls + " msgs" + (e.channel ? " · " + shortText(e.channel, 30) : "")
          : e.calls + "× · " + (100 * rate).toFixed(rate > 0 && rate < 0.01 ? 2 : 0) + "% err · " + ms(e.p50_ns) + " / " + ms(e.p99_ns);
        var t = svg("text", { x: e.src === e.dst ? a.x + widths[e.src] + 10 : (x1 + x2) / 2, y: e.src === e.dst ? a.y - 14 : (y1 + y2) / 2 - 5 + (k % 2 ? 12 : 0), "text-anchor": "middle" });
        t.textContent = label;
        var title = svg("title", {});
        title.textContent = e.src + " → " + e.dst + "\n" + label;
        group.appendChild(title);
        group.appendChild(path);
        group.appendChild(hit);
        group.appendChild(t);
        group.addEventListener("click", function () { location.href = listHref(e.match); });
        root.appendChild(group);
      });
      g.nodes.forEach(function (n) {
        var p = pos[n];
        var group = svg("g", { "class": "node", "data-node": n, tabindex: 0 });
        var title = svg("title", {});
        title.textContent = n;
        group.appendChild(title);
        group.appendChild(svg("rect", { x: p.x, y: p.y, width: widths[n], height: nodeH, rx: 5 }));
        var t = svg("text", { x: p.x + 10, y: p.y + nodeH / 2 + 4 });
        t.textContent = shortText(n, Math.floor((widths[n] - 20) / charW));
        group.appendChild(t);
        group.addEventListener("click", function () {
          var i = n.indexOf(":");
          location.href = listHref(g.by === "function" && i >= 0 ? { service: n.slice(0, i), span: n.slice(i + 1) } : { service: n });
        });
        root.appendChild(group);
      });
      holder.appendChild(root);
      document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
      document.body.setAttribute("data-ready", "1");
    }
    load(by, by === "service", window_);
  }

  function errorPage() {
    header("");
    add(document.body, el("main", null, el("h1", { text: "Error " + (DATA.status || "") }), problem(DATA.error || "unknown error")));
  }

  function run(page) {
    try {
      page();
    } catch (err) {
      document.body.appendChild(problem("the viewer failed: " + (err && err.message ? err.message : err)));
      throw err;
    }
  }

  if (PAGE === "list") run(listPage);
  else if (PAGE === "trace" && !DATA.trace) {
    // a served trace page is a shell: its data comes as JSON (parsed once, not first read by
    // the HTML parser as text), fetched while this script and the style are already in place
    getJSON("/api/trace/" + encodeURIComponent(DATA.trace_id)).then(function (trace) {
      MARK("fetched");
      DATA.trace = trace;
      run(tracePage);
    }, function (err) {
      header("trace");
      document.body.appendChild(problem("cannot load trace " + DATA.trace_id + ": " + err.message));
    });
  }
  else if (PAGE === "trace") run(tracePage);
  else if (PAGE === "graph") run(graphPage);
  else run(errorPage);
})();
