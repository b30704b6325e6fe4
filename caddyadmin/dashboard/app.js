// Tenantgate admin dashboard: plain JavaScript on the JSON API under v1/
// (relative, so the page works wherever tenant_admin is mounted). The admin
// token is kept in this tab's sessionStorage and sent as an Authorization
// header, never in a URL.
"use strict";

const TOKEN_KEY = "tenantgate-admin-token";
const $ = (sel) => document.querySelector(sel);

const OUTCOMES = [
	["allowed", "Allowed", "#2f9e44"],
	["rate_limited_minute", "429 minute", "#f59f00"],
	["rate_limited_day", "429 day", "#e8590c"],
	["backend_error", "Backend error", "#c92a2a"],
	["gateway_error", "Gateway error", "#862e9c"],
];
const ROW_FIELD = {
	allowed: "allowed",
	rate_limited_minute: "rate_limited_minute",
	rate_limited_day: "rate_limited_day",
	backend_error: "backend_errors",
	gateway_error: "gateway_errors",
};
const RANGES = {
	hour: { ms: 3600e3, granularity: "minute", step: 60 },
	day: { ms: 24 * 3600e3, granularity: "hour", step: 3600 },
	month: { ms: 30 * 24 * 3600e3, granularity: "day", step: 86400 },
};

const state = { orgs: [], next: null, selected: null, charts: [], keyNames: new Map() };

// --- API ------------------------------------------------------------------

class APIError extends Error {
	constructor(status, message) {
		super(message);
		this.status = status;
	}
}

async function api(method, path, body) {
	const headers = { Accept: "application/json" };
	const token = sessionStorage.getItem(TOKEN_KEY);
	if (token) headers.Authorization = "Bearer " + token;
	const init = { method, headers, cache: "no-store", credentials: "omit" };
	if (body !== undefined) {
		headers["Content-Type"] = "application/json";
		if (method === "POST") headers["Idempotency-Key"] = crypto.randomUUID();
		init.body = JSON.stringify(body);
	}
	const resp = await fetch(path, init);
	let data = null;
	try {
		data = await resp.json();
	} catch (_) {
		// not JSON: reported below by status
	}
	if (!resp.ok) {
		const msg = data && data.error ? data.error.message : resp.status + " " + resp.statusText;
		throw new APIError(resp.status, msg);
	}
	return data;
}

// --- helpers --------------------------------------------------------------

function status(text, isError) {
	const el = $("#status");
	el.textContent = text || "";
	el.classList.toggle("error", !!isError);
}

function el(tag, attrs, ...children) {
	const node = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (k === "class") node.className = v;
		else if (k.startsWith("data-")) node.setAttribute(k, v);
		else node[k] = v;
	}
	for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
	return node;
}

function fmtTime(s) {
	if (!s) return "—";
	const d = new Date(s);
	return d.toISOString().replace("T", " ").replace(/:\d\d\.\d+Z$|:\d\dZ$/, " UTC");
}

function fmtInt(n) {
	return n == null ? "—" : Number(n).toLocaleString("en-US");
}

function meter(used, total) {
	const frac = total > 0 ? Math.min(1, used / total) : 0;
	const m = el("span", { class: "meter" + (frac > 0.9 ? " high" : "") }, el("span"));
	m.firstChild.style.width = (frac * 100).toFixed(1) + "%";
	return m;
}

function failed(err) {
	if (err instanceof APIError && err.status === 401) {
		status("The admin token was refused: enter the token the gateway was started with (ADMIN_TOKEN).", true);
	} else {
		status(err.message, true);
	}
}

// --- organizations --------------------------------------------------------

async function loadOrgs(more) {
	try {
		const q = "v1/orgs?limit=100" + (more && state.next ? "&cursor=" + encodeURIComponent(state.next) : "");
		const page = await api("GET", q);
		state.orgs = more ? state.orgs.concat(page.data) : page.data;
		state.next = page.next_cursor;
		$("#more-orgs").hidden = !state.next;
		renderOrgs();
		status(state.orgs.length + " organization" + (state.orgs.length === 1 ? "" : "s"));
		await Promise.all(state.orgs.map(loadOrgLimits));
	} catch (err) {
		failed(err);
	}
}

function renderOrgs() {
	const body = $("#orgs tbody");
	body.replaceChildren();
	for (const o of state.orgs) {
		const row = el("tr", { "data-org-id": o.id },
			el("td", {}, o.name),
			el("td", {}, o.plan_tier),
			el("td", { class: o.disabled_at ? "status-disabled" : "" }, o.disabled_at ? "disabled" : "active"),
			el("td", { class: "quota" }, "…"),
			el("td", { class: "headroom" }, "…"),
			el("td", { class: "id" }, o.id));
		row.addEventListener("click", () => selectOrg(o));
		if (state.selected && state.selected.id === o.id) row.classList.add("selected");
		body.append(row);
	}
	if (!state.orgs.length) body.append(el("tr", {}, el("td", { colSpan: 6, class: "empty" }, "No organizations yet: POST v1/orgs")));
}

async function loadOrgLimits(o) {
	const row = document.querySelector(`#orgs tr[data-org-id="${o.id}"]`);
	if (!row) return;
	try {
		const l = await api("GET", "v1/orgs/" + o.id + "/limits");
		const quota = row.querySelector(".quota");
		quota.replaceChildren(meter(l.used_today, l.per_day), `${fmtInt(l.used_today)} / ${fmtInt(l.per_day)}`);
		const cap = l.per_minute + l.burst;
		const head = row.querySelector(".headroom");
		head.replaceChildren(meter(cap - l.remaining_minute, cap), `${fmtInt(l.remaining_minute)} of ${fmtInt(cap)} left`);
		head.title = "bucket full again at " + fmtTime(l.reset_minute) + " (" + l.source + ")";
	} catch (err) {
		row.querySelector(".quota").textContent = "—";
		row.querySelector(".headroom").textContent = err.status === 503 ? "no limiter" : "—";
	}
}

// --- one organization -----------------------------------------------------

async function selectOrg(o) {
	state.selected = o;
	for (const r of document.querySelectorAll("#orgs tbody tr")) r.classList.toggle("selected", r.dataset.orgId === o.id);
	$("#org-section").hidden = false;
	$("#org-title").textContent = o.name + " (" + o.plan_tier + ")";
	const lim = [];
	if (o.rate_limit_per_minute != null) lim.push(o.rate_limit_per_minute + "/min");
	if (o.rate_limit_per_day != null) lim.push(o.rate_limit_per_day + "/day");
	if (o.burst != null) lim.push("burst " + o.burst);
	$("#org-limits").textContent = "ID " + o.id + " · created " + fmtTime(o.created_at) +
		" · limits: " + (lim.length ? lim.join(", ") : "the plan's");
	await loadKeys(o); // first, so that top keys show names
	await loadUsage(o);
}

async function loadUsage(o) {
	const r = RANGES[$("#range").value];
	const to = new Date();
	const from = new Date(to.getTime() - r.ms);
	const qs = `from=${from.toISOString()}&to=${to.toISOString()}&granularity=${r.granularity}`;
	try {
		const [total, byKey] = await Promise.all([
			api("GET", `v1/orgs/${o.id}/usage?${qs}`),
			api("GET", `v1/orgs/${o.id}/usage?${qs}&group_by=key`),
		]);
		drawCharts(total.rows, from, to, r);
		renderTopKeys(byKey.rows);
	} catch (err) {
		failed(err);
		drawCharts([], from, to, r);
		renderTopKeys([]);
	}
}

// buckets lays rows on a regular time axis (empty buckets are zero).
function buckets(rows, from, to, r) {
	const start = Math.floor(from.getTime() / 1000 / r.step) * r.step;
	const end = Math.floor(to.getTime() / 1000 / r.step) * r.step;
	const xs = [];
	for (let t = start; t <= end; t += r.step) xs.push(t);
	const index = new Map(xs.map((t, i) => [t, i]));
	const at = new Array(xs.length).fill(null);
	for (const row of rows) {
		const i = index.get(Math.floor(Date.parse(row.bucket) / 1000 / r.step) * r.step);
		if (i !== undefined) at[i] = row;
	}
	return { xs, at };
}

function drawCharts(rows, from, to, r) {
	for (const c of state.charts) c.destroy();
	state.charts = [];
	const { xs, at } = buckets(rows, from, to, r);
	const field = (name, scale) => at.map((row) => (row ? row[name] / (scale || 1) : 0));
	const total = rows.reduce((n, row) => n + row.requests, 0);

	// Requests stacked by outcome: each band is drawn filled down to zero,
	// the tallest (the running total) first.
	const raw = OUTCOMES.map(([key]) => field(ROW_FIELD[key]));
	const stacked = [];
	let acc = xs.map(() => 0);
	for (const series of raw) {
		acc = acc.map((v, i) => v + series[i]);
		stacked.push(acc);
	}
	const order = OUTCOMES.map((_, i) => OUTCOMES.length - 1 - i);
	const reqEl = $("#chart-requests");
	reqEl.dataset.totalRequests = String(total);
	state.charts.push(chart(reqEl, [xs, ...order.map((i) => stacked[i])],
		order.map((i) => ({
			label: OUTCOMES[i][1], stroke: OUTCOMES[i][2], fill: OUTCOMES[i][2] + "cc", width: 1,
			value: (u, v, s, idx) => (idx == null ? "—" : fmtInt(raw[i][idx])),
		}))));

	state.charts.push(chart($("#chart-latency"), [xs, field("latency_p50_us", 1000), field("latency_p95_us", 1000), field("latency_p99_us", 1000)], [
		{ label: "p50", stroke: "#2457c5", width: 1.5 },
		{ label: "p95", stroke: "#f59f00", width: 1.5 },
		{ label: "p99", stroke: "#c92a2a", width: 1.5 },
	]));
	state.charts.push(chart($("#chart-bytes"), [xs, field("bytes_in"), field("bytes_out")], [
		{ label: "in", stroke: "#0c8599", width: 1.5 },
		{ label: "out", stroke: "#5f3dc4", width: 1.5 },
	]));
}

function chart(target, data, series) {
	target.replaceChildren();
	const width = Math.max(360, target.clientWidth || 480);
	return new uPlot({
		width,
		height: 200,
		series: [{}, ...series],
		axes: [{}, { size: 60 }],
		scales: { x: { time: true } },
		cursor: { drag: { x: false, y: false } },
	}, data, target);
}

function renderTopKeys(rows) {
	const byKey = new Map();
	for (const r of rows) {
		const k = byKey.get(r.key_id) || { key_id: r.key_id, requests: 0, allowed: 0, limited: 0, errors: 0, bytes_out: 0 };
		k.requests += r.requests;
		k.allowed += r.allowed;
		k.limited += r.rate_limited_minute + r.rate_limited_day;
		k.errors += r.backend_errors + r.gateway_errors;
		k.bytes_out += r.bytes_out;
		byKey.set(r.key_id, k);
	}
	const top = [...byKey.values()].sort((a, b) => b.requests - a.requests).slice(0, 10);
	const body = $("#top-keys tbody");
	body.replaceChildren();
	for (const k of top) {
		body.append(el("tr", { "data-key-id": k.key_id },
			el("td", {}, keyLabel(k.key_id)), el("td", {}, fmtInt(k.requests)), el("td", {}, fmtInt(k.allowed)),
			el("td", {}, fmtInt(k.limited)), el("td", {}, fmtInt(k.errors)), el("td", {}, fmtInt(k.bytes_out))));
	}
	if (!top.length) body.append(el("tr", {}, el("td", { colSpan: 6, class: "empty" }, "No requests in this period")));
}

// keyLabel names a key by its name and prefix when the keys list has it.
function keyLabel(id) {
	const k = state.keyNames.get(id);
	return k ? `${k.name} (${k.prefix}…)` : id;
}

async function loadKeys(o) {
	const body = $("#keys tbody");
	try {
		let keys = [];
		let cursor = null;
		do {
			const page = await api("GET", `v1/orgs/${o.id}/keys?limit=1000` + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
			keys = keys.concat(page.data);
			cursor = page.next_cursor;
		} while (cursor && keys.length < 10000);
		body.replaceChildren();
		for (const k of keys) {
			state.keyNames.set(k.id, k);
			body.append(keyRow(k));
		}
		if (!keys.length) body.append(el("tr", {}, el("td", { colSpan: 7, class: "empty" }, "No keys")));
	} catch (err) {
		failed(err);
	}
}

function keyRow(k) {
	const cell = el("td");
	if (k.status === "active") {
		const btn = el("button", { type: "button", class: "danger revoke" }, "Revoke");
		btn.addEventListener("click", async () => {
			if (!btn.classList.contains("confirm")) {
				btn.classList.add("confirm");
				btn.textContent = "Confirm revoke";
				return;
			}
			btn.disabled = true;
			try {
				const revoked = await api("POST", "v1/keys/" + k.id + "/revoke", {});
				row.replaceWith(keyRow(revoked));
				status("Revoked key " + revoked.prefix + "… (" + revoked.name + "): gateways refuse it now.");
			} catch (err) {
				btn.disabled = false;
				failed(err);
			}
		});
		cell.append(btn);
	}
	const row = el("tr", { "data-key-id": k.id, "data-status": k.status },
		el("td", {}, k.name), el("td", { class: "id" }, k.prefix + "…"),
		el("td", { class: "status-" + k.status }, k.status),
		el("td", {}, fmtTime(k.created_at)), el("td", {}, fmtTime(k.last_used_at)),
		el("td", {}, k.expires_at ? fmtTime(k.expires_at) : "never"), cell);
	return row;
}

// --- start ----------------------------------------------------------------

$("#token-form").addEventListener("submit", (ev) => {
	ev.preventDefault();
	const t = $("#token").value.trim();
	if (t) sessionStorage.setItem(TOKEN_KEY, t);
	$("#token").value = "";
	loadOrgs(false);
});
$("#forget-token").addEventListener("click", () => {
	sessionStorage.removeItem(TOKEN_KEY);
	status("Token forgotten.");
});
$("#refresh").addEventListener("click", () => {
	loadOrgs(false);
	if (state.selected) selectOrg(state.selected);
});
$("#more-orgs").addEventListener("click", () => loadOrgs(true));
$("#range").addEventListener("change", () => state.selected && loadUsage(state.selected));

loadOrgs(false);
