/*
 * nsqadmin's pages, made live: auto-refresh of <main id="content">, the admin actions, the live
 * charts (inline SVG) and the counter. No dependencies, no inline handlers (strict CSP).
 *
 * Every page works without this script; it only adds:
 *  - refresh: every data-refresh-interval ms, GET <page>?fragment=1 and swap <main> in place,
 *    keeping [data-keep][id] elements (charts, forms), focus and scroll; 0 turns polling off;
 *  - actions: button[data-action] -> window.confirm(data-confirm) -> fetch the JSON API;
 *  - charts: section#charts[data-api] polled into svg.chart[data-metric];
 *  - counter: section#counter[data-api] polled into #counter-value and #counter-rate.
 */
(function () {
  "use strict";

  var HISTORY = 60; // chart points kept in memory
  var SVG_NS = "http://www.w3.org/2000/svg";
  var base = document.body.getAttribute("data-base-path") || "/";
  var busy = false; // a confirm or an action is under way: no swap meanwhile
  var generation = 0; // bumped by actions, so a refresh fetched before one is thrown away
  var refreshTimer = null;
  var refreshing = false;

  function content() {
    return document.getElementById("content");
  }

  function period() {
    var main = content();
    var ms = main ? parseInt(main.getAttribute("data-refresh-interval"), 10) : 0;
    return isNaN(ms) || ms < 0 ? 0 : ms;
  }

  function num(value) {
    return typeof value === "number" && isFinite(value) ? value : 0;
  }

  function grouped(n) {
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function short(v) {
    if (v >= 100 || v === Math.round(v)) return grouped(v);
    return v.toFixed(v < 10 ? 2 : 1);
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      function (response) {
        if (!response.ok) throw new Error(response.status + " " + response.statusText);
        return response.json();
      }
    );
  }

  // -- notifications --------------------------------------------------------------------------

  function flash(text, kind) {
    var box = document.getElementById("flash");
    if (!box) return;
    var item = document.createElement("div");
    item.className = "flash-item " + (kind || "ok");
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    var span = document.createElement("span");
    span.className = "flash-text";
    span.textContent = text;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "flash-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    item.appendChild(span);
    item.appendChild(close);
    box.appendChild(item);
    while (box.children.length > 5) box.removeChild(box.firstChild);
    if (kind !== "error") {
      setTimeout(function () {
        if (item.parentNode) item.parentNode.removeChild(item);
      }, 8000);
    }
  }

  // -- auto-refresh ---------------------------------------------------------------------------

  function fragmentURL() {
    var params = new URLSearchParams(location.search);
    params.set("fragment", "1");
    return location.pathname + "?" + params.toString();
  }

  function scheduleRefresh(delay) {
    clearTimeout(refreshTimer);
    var wait = delay === undefined ? period() : delay;
    if (period() > 0) refreshTimer = setTimeout(refresh, wait);
  }

  function typing(main) {
    var active = document.activeElement;
    return active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }

  function refresh() {
    var main = content();
    // The counter polls the JSON API instead of re-rendering.
    if (!main || main.getAttribute("data-page") === "counter") return;
    if (busy || refreshing || document.hidden || typing(main)) {
      scheduleRefresh();
      return;
    }
    refreshing = true;
    var started = generation;
    fetch(fragmentURL(), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.text();
      })
      .then(function (html) {
        if (!busy && started === generation) swap(html);
      })
      .catch(function () {
        // Keep what is shown; the next round tries again.
      })
      .then(function () {
        refreshing = false;
        scheduleRefresh();
      });
  }

  function keyOf(el) {
    if (el.id) return "#" + el.id;
    var parts = [el.tagName];
    ["data-action", "data-topic", "data-channel", "data-node", "href", "name"].forEach(function (a) {
      if (el.hasAttribute(a)) parts.push(a + "=" + el.getAttribute(a));
    });
    return parts.join("|");
  }

  function findByKey(root, key) {
    if (key.charAt(0) === "#") return document.getElementById(key.slice(1));
    var candidates = root.querySelectorAll("a, button, input, select, textarea, [tabindex]");
    for (var i = 0; i < candidates.length; i++) {
      if (keyOf(candidates[i]) === key) return candidates[i];
    }
    return null;
  }

  function swap(html) {
    var parsed = new DOMParser().parseFromString(html, "text/html").getElementById("content");
    var current = content();
    if (!parsed || !current) return;
    var fresh = document.importNode(parsed, true);
    var active = document.activeElement;
    var focusKey = active && active !== document.body && current.contains(active) ? keyOf(active) : null;
    var x = window.scrollX;
    var y = window.scrollY;
    Array.prototype.forEach.call(fresh.querySelectorAll("[data-keep][id]"), function (el) {
      var old = document.getElementById(el.id);
      if (old && current.contains(old)) el.parentNode.replaceChild(old, el);
    });
    current.parentNode.replaceChild(fresh, current);
    if (focusKey) {
      var target = findByKey(fresh, focusKey);
      if (target && typeof target.focus === "function") target.focus({ preventScroll: true });
    }
    window.scrollTo(x, y);
    setupCharts();
  }

  // -- actions --------------------------------------------------------------------------------

  function apiURL(parts) {
    // One segment each: "#" (ephemeral names) escaped; ":" of node names left readable.
    var segments = parts.map(function (part) {
      return encodeURIComponent(part).replace(/%3A/gi, ":");
    });
    return base + "api/" + segments.join("/");
  }

  function describe(button) {
    var action = button.getAttribute("data-action");
    var topic = button.getAttribute("data-topic");
    var channel = button.getAttribute("data-channel");
    var node = button.getAttribute("data-node");
    var question = button.getAttribute("data-confirm") || "";
    var what = channel === null ? "topic " + topic : "channel " + topic + "/" + channel;
    var path = channel === null ? ["topics", topic] : ["topics", topic, channel];
    switch (action) {
      case "pause":
      case "unpause":
      case "empty":
        return { method: "POST", url: apiURL(path), body: { action: action }, question: question, what: action + " " + what };
      case "delete":
        return { method: "DELETE", url: apiURL(path), question: question, what: "delete " + what };
      case "tombstone":
        return {
          method: "DELETE",
          url: apiURL(["nodes", node]),
          body: { topic: topic },
          question: question,
          what: "tombstone topic " + topic + " on " + node
        };
      case "create":
        return describeCreate(button);
      default:
        return null;
    }
  }

  function describeCreate(button) {
    var form = button.form || button.closest("form");
    if (!form) return null;
    var topic = (form.elements.topic.value || "").trim();
    var channel = form.elements.channel ? (form.elements.channel.value || "").trim() : "";
    if (!topic) {
      flash("Enter a topic name.", "error");
      return null;
    }
    var body = { topic: topic };
    var what = "create topic " + topic;
    if (channel) {
      body.channel = channel;
      what = "create channel " + topic + "/" + channel;
    }
    var question = button.getAttribute("data-confirm") || what.charAt(0).toUpperCase() + what.slice(1) + "?";
    return { method: "POST", url: apiURL(["topics"]), body: body, question: question, what: what, form: form };
  }

  function run(button) {
    if (busy || button.disabled) return;
    var request = describe(button);
    if (!request) return;
    busy = true;
    if (!window.confirm(request.question)) {
      busy = false;
      return;
    }
    generation++;
    button.disabled = true;
    var init = { method: request.method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (request.body) {
      init.body = JSON.stringify(request.body);
      init.headers["Content-Type"] = "application/json";
    }
    var after = button.getAttribute("data-after");
    fetch(request.url, init)
      .then(function (response) {
        return response.text().then(function (text) {
          var message = text;
          try {
            var data = JSON.parse(text);
            message = data && typeof data.message === "string" ? data.message : "";
          } catch (e) {
            // A plain-text answer is its own message.
          }
          if (!response.ok) throw new Error(message || response.status + " " + response.statusText);
          return message;
        });
      })
      .then(function (message) {
        var done = "Done: " + request.what + ".";
        if (/^WARNING/.test(message)) flash(done + " " + message, "warning");
        else flash(done, "ok");
        if (after) {
          location.assign(after);
          return;
        }
        if (request.form) request.form.reset();
        busy = false;
        scheduleRefresh(0);
      })
      .catch(function (err) {
        flash("Could not " + request.what + ": " + err.message, "error");
      })
      .then(function () {
        busy = false;
        button.disabled = false;
      });
  }

  document.addEventListener("click", function (event) {
    var close = event.target.closest(".flash-close");
    if (close) {
      close.parentNode.parentNode.removeChild(close.parentNode);
      return;
    }
    var button = event.target.closest("button[data-action]");
    // Submit buttons go through the form's submit event, after the browser validated the form.
    if (!button || button.type === "submit") return;
    event.preventDefault();
    run(button);
  });

  document.addEventListener("submit", function (event) {
    var button = event.target.querySelector("button[data-action]");
    if (!button) return;
    event.preventDefault();
    run(button);
  });

  // -- live charts ----------------------------------------------------------------------------

  var chart = { url: null, kind: null, points: [], timer: null };

  function setupCharts() {
    var box = document.getElementById("charts");
    var url = box ? box.getAttribute("data-api") : null;
    if (url !== chart.url) {
      clearTimeout(chart.timer);
      chart = { url: url, kind: box ? box.getAttribute("data-kind") : null, points: [], timer: null };
      if (url && period() > 0) pollChart();
    }
    if (box) {
      box.hidden = false;
      drawCharts();
    }
  }

  function pollChart() {
    var url = chart.url;
    var next = function () {
      if (url === chart.url && period() > 0) chart.timer = setTimeout(pollChart, Math.max(1000, period()));
    };
    if (document.hidden) {
      next();
      return;
    }
    getJSON(url)
      .then(function (stats) {
        if (url !== chart.url) return;
        var inFlight = num(stats.in_flight_count);
        if (chart.kind === "topic") {
          inFlight = (stats.channels || []).reduce(function (sum, c) {
            return sum + num(c.in_flight_count);
          }, 0);
        }
        chart.points.push({
          t: Date.now() / 1000,
          count: num(stats.message_count),
          depth: num(stats.depth),
          in_flight: inFlight
        });
        if (chart.points.length > HISTORY + 1) chart.points.shift();
        drawCharts();
      })
      .catch(function () {
        // A failed poll leaves a gap; the next one carries on.
      })
      .then(next);
  }

  function series(metric) {
    var points = chart.points;
    var out = [];
    for (var i = 0; i < points.length; i++) {
      if (metric === "rate") {
        if (i === 0) continue;
        var dt = points[i].t - points[i - 1].t;
        var dc = points[i].count - points[i - 1].count;
        // A negative delta is a counter reset (topic deleted and re-created): no rate then.
        out.push({ t: points[i].t, v: dt > 0 && dc >= 0 ? dc / dt : 0 });
      } else {
        out.push({ t: points[i].t, v: points[i][metric] });
      }
    }
    return out.slice(-HISTORY);
  }

  function svg(name, attributes, text) {
    var el = document.createElementNS(SVG_NS, name);
    Object.keys(attributes).forEach(function (k) {
      el.setAttribute(k, attributes[k]);
    });
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function ceiling(max) {
    if (max <= 0) return 1;
    var power = Math.pow(10, Math.floor(Math.log(max) / Math.LN10));
    var m = max / power;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * power;
  }

  function drawCharts() {
    var W = 300;
    var H = 90;
    var TOP = 14;
    var BOTTOM = 4;
    Array.prototype.forEach.call(document.querySelectorAll("svg.chart[data-metric]"), function (el) {
      var metric = el.getAttribute("data-metric");
      var data = series(metric);
      while (el.firstChild) el.removeChild(el.firstChild);
      el.setAttribute("data-points", String(data.length));
      var max = data.reduce(function (m, d) {
        return Math.max(m, d.v);
      }, 0);
      var top = ceiling(max);
      el.appendChild(svg("line", { class: "chart-grid-line", x1: 0, y1: TOP, x2: W, y2: TOP }));
      el.appendChild(svg("line", { class: "chart-grid-line", x1: 0, y1: H - BOTTOM, x2: W, y2: H - BOTTOM }));
      el.appendChild(svg("text", { class: "chart-label", x: 3, y: TOP - 4 }, short(top)));
      var valueBox = document.querySelector('[data-value-for="' + metric + '"]');
      if (valueBox) valueBox.textContent = data.length ? short(data[data.length - 1].v) : "";
      if (!data.length) {
        el.appendChild(svg("text", { class: "chart-label", x: W / 2, y: H / 2, "text-anchor": "middle" }, "collecting\u2026"));
        return;
      }
      var now = data[data.length - 1].t;
      var span = (HISTORY * Math.max(1000, period())) / 1000;
      var x = function (t) {
        return (W - ((now - t) / span) * W).toFixed(1);
      };
      var y = function (v) {
        return (H - BOTTOM - (v / top) * (H - BOTTOM - TOP)).toFixed(1);
      };
      var coords = data.map(function (d) {
        return x(d.t) + "," + y(d.v);
      });
      if (data.length === 1) {
        el.appendChild(svg("circle", { class: "chart-line", cx: x(now), cy: y(data[0].v), r: 2 }));
        return;
      }
      var floor = H - BOTTOM;
      var area = "M" + x(data[0].t) + "," + floor + " L" + coords.join(" L") + " L" + x(now) + "," + floor + " Z";
      el.appendChild(svg("path", { class: "chart-area", d: area }));
      el.appendChild(svg("polyline", { class: "chart-line", points: coords.join(" ") }));
    });
  }

  // -- counter --------------------------------------------------------------------------------

  var lastCount = null;

  function pollCounter() {
    var box = document.getElementById("counter");
    if (!box || period() <= 0) return;
    var next = function () {
      setTimeout(pollCounter, Math.max(1000, period()));
    };
    if (document.hidden) {
      next();
      return;
    }
    getJSON(box.getAttribute("data-api"))
      .then(function (data) {
        var stats = data.stats || {};
        var total = Object.keys(stats).reduce(function (sum, key) {
          return sum + num(stats[key] && stats[key].message_count);
        }, 0);
        var now = Date.now() / 1000;
        var value = document.getElementById("counter-value");
        value.textContent = grouped(total);
        value.setAttribute("data-total", String(total));
        if (lastCount && now > lastCount.t) {
          var rate = Math.max(0, (total - lastCount.total) / (now - lastCount.t));
          document.getElementById("counter-rate").textContent = short(rate);
        }
        lastCount = { t: now, total: total };
      })
      .catch(function (err) {
        flash("Could not read the counter: " + err.message, "error");
      })
      .then(next);
  }

  // -- start ----------------------------------------------------------------------------------

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) scheduleRefresh(0);
  });
  setupCharts();
  pollCounter();
  scheduleRefresh();
})();
