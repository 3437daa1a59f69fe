// The cpnet dashboard: sign in with an API token, see the network (map, pools, task flow) live
// over server-sent events, and follow a task on its page. Pages by hash: #/login, #/, #/tasks/ID.
import "./style.css";
import { ApiError, get, setToken, stream, token } from "./api";
import { currentLang, setLang, t, type Lang } from "./i18n";
import { drawMap, loadProvinces } from "./map";
import type { FlowMinute, Overview, Site } from "./types";

const app = document.getElementById("app")!;
let stop: AbortController | null = null;
// Each route() starts a new page; a page that is still loading when the next one starts must not
// draw over it (a slow page finishing last would otherwise replace the page the user went to).
let generation = 0;

/** Shows a page's content if it is still the current page; false when the user has moved on. */
function show(my: number, ...nodes: Node[]): boolean {
  if (my !== generation) return false;
  app.replaceChildren(...nodes);
  return true;
}

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...kids: (Node | string | null)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) if (k !== null) e.append(k);
  return e;
}

function header(who?: { role: string; org_id: string | null }): HTMLElement {
  const lang = h("button", { class: "lang", "data-testid": "lang" }, currentLang() === "zh" ? "English" : "中文");
  lang.addEventListener("click", () => {
    setLang((currentLang() === "zh" ? "en" : "zh") as Lang);
    route();
  });
  const right = h("div", { class: "right" }, lang);
  if (who) {
    right.prepend(
      h("a", { href: "#/providers", class: "nav", "data-testid": "nav-providers" }, t("providers")),
      h("a", { href: "#/account", class: "nav", "data-testid": "nav-account" }, t("account")),
    );
    right.prepend(h("span", { class: "who", "data-testid": "who" }, `${who.role}${who.org_id ? " · " + who.org_id : ""}`));
    const out = h("button", { "data-testid": "sign-out" }, t("signOut"));
    out.addEventListener("click", () => {
      setToken(null);
      location.hash = "#/login";
    });
    right.append(out);
  }
  return h("header", {}, h("a", { href: "#/", class: "brand" }, t("title")), right);
}

function login(): void {
  const input = h("input", { type: "password", id: "token", "data-testid": "token", autocomplete: "off", placeholder: "cpn_…" });
  const error = h("p", { class: "error", "data-testid": "login-error" });
  const form = h(
    "form",
    { class: "login" },
    h("label", { for: "token" }, t("token")),
    input,
    h("p", { class: "help" }, t("tokenHelp")),
    h("button", { type: "submit", "data-testid": "sign-in" }, t("signIn")),
    error,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    try {
      await get("/v1/whoami");
      location.hash = "#/";
    } catch (e) {
      setToken(null);
      error.textContent = `${t("badToken")}: ${e instanceof Error ? e.message : e}`;
    }
  });
  app.replaceChildren(header(), h("main", {}, form));
  input.focus();
}

function card(label: string, value: string, testid: string): HTMLElement {
  return h("div", { class: "card" }, h("div", { class: "value", "data-testid": testid }, value), h("div", { class: "label" }, label));
}

function flowChart(flow: FlowMinute[]): SVGSVGElement {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  const W = 600;
  const H = 160;
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 36}`);
  svg.setAttribute("data-testid", "flow");
  const kinds = ["complete", "failed", "canceled", "running", "queued"] as const;
  const max = Math.max(1, ...flow.map((m) => kinds.reduce((n, k) => n + m[k], 0)));
  const bw = W / flow.length;
  flow.forEach((m, i) => {
    let y = H;
    for (const k of kinds) {
      const hgt = (m[k] / max) * H;
      if (hgt <= 0) continue;
      y -= hgt;
      const r = document.createElementNS(NS, "rect");
      r.setAttribute("x", String(i * bw + 1));
      r.setAttribute("y", String(y));
      r.setAttribute("width", String(bw - 2));
      r.setAttribute("height", String(hgt));
      r.setAttribute("class", `flow ${k}`);
      const tt = document.createElementNS(NS, "title");
      tt.textContent = `${new Date(m.minute * 1000).toLocaleTimeString()} ${t(k)}: ${m[k]}`;
      r.appendChild(tt);
      svg.appendChild(r);
    }
  });
  // Axes in words: the scale's top, and the window's two ends.
  const text = (x: number, y: number, s: string, anchor: string, testid?: string) => {
    const e = document.createElementNS(NS, "text");
    e.setAttribute("x", String(x));
    e.setAttribute("y", String(y));
    e.setAttribute("text-anchor", anchor);
    e.setAttribute("class", "legend");
    if (testid) e.setAttribute("data-testid", testid);
    e.textContent = s;
    svg.appendChild(e);
  };
  const base = document.createElementNS(NS, "line");
  base.setAttribute("x1", "0");
  base.setAttribute("x2", String(W));
  base.setAttribute("y1", String(H + 0.5));
  base.setAttribute("y2", String(H + 0.5));
  base.setAttribute("class", "axis");
  svg.appendChild(base);
  text(2, 10, `${max} ${t("perMinute")}`, "start", "flow-max");
  text(0, H + 13, t("minutesAgo"), "start");
  text(W, H + 13, t("now"), "end");
  kinds.forEach((k, i) => {
    const x = i * 110;
    const box = document.createElementNS(NS, "rect");
    box.setAttribute("x", String(x));
    box.setAttribute("y", String(H + 23));
    box.setAttribute("width", "10");
    box.setAttribute("height", "10");
    box.setAttribute("class", `flow ${k}`);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", String(x + 14));
    label.setAttribute("y", String(H + 32));
    label.setAttribute("class", "legend");
    label.textContent = t(k);
    svg.append(box, label);
  });
  return svg;
}

function poolTable(data: Overview, query: string, onlineOnly: boolean): HTMLTableElement {
  const q = query.trim().toLowerCase();
  const rows: HTMLElement[] = [];
  for (const s of data.sites) {
    for (const p of s.pools) {
      const hay = `${p.name} ${p.id} ${s.name} ${p.type} ${s.region_name} ${s.region_code}`.toLowerCase();
      if ((q && !hay.includes(q)) || (onlineOnly && !p.online)) continue;
      const price = p.price_cpu_core_hour == null ? "–" : `${p.price_cpu_core_hour} ${p.currency}`;
      const rep = p.reputation == null ? "–" : p.reputation.toFixed(2);
      // A rate of 0: not known (no catalogue entry, not measured yet), not "no compute".
      const scu = Object.entries(p.scu ?? {})
        .filter(([, rate]) => rate > 0)
        .map(([profile, rate]) => `${profile} ${rate.toFixed(rate < 10 ? 2 : 0)}`)
        .join(" · ") || "–";
      rows.push(
        h(
          "tr",
          { "data-testid": "pool-row", "data-pool-id": p.id },
          h("td", {}, h("span", { class: `dot ${p.online ? "online" : "offline"}` }), ` ${p.name}`),
          h("td", {}, s.name),
          h("td", {}, p.type),
          h("td", {}, s.region_name || s.region_code),
          h("td", {}, `${p.cpu_reserved.toFixed(1)} / ${p.cpu_cores.toFixed(0)}${p.gpus ? ` · ${p.gpus_reserved}/${p.gpus} GPU` : ""}`),
          h("td", { class: "reasons", "data-testid": "pool-scu" }, scu),
          h("td", {}, price),
          h("td", {}, rep),
          h("td", { "data-testid": "pool-state" }, p.online ? t("online") : t("offline")),
        ),
      );
    }
  }
  const head = h("tr", {}, ...(["pool", "site", "type", "region", "load", "scu", "price", "reputation", "state"] as const).map((w) => h("th", {}, t(w))));
  return h("table", { class: "pools" }, h("thead", {}, head), h("tbody", {}, ...rows));
}

interface TaskRow {
  id: string;
  name?: string | null;
  state: string;
  created_at: string;
}

async function overview(my: number): Promise<void> {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "map");
  svg.setAttribute("data-testid", "map");
  const cards = h("div", { class: "cards" });
  const flowBox = h("div", { class: "flowbox" });
  const filter = h("input", { type: "search", placeholder: t("filter"), "data-testid": "pool-filter" });
  const onlineOnly = h("input", { type: "checkbox", id: "online-only" });
  const tableBox = h("div");
  const tasksBox = h("ul", { class: "tasks", "data-testid": "tasks" });
  const status = h("span", { class: "status", "data-testid": "live" }, "…");
  const detail = h("div", { class: "detail", "data-testid": "site-detail" });
  let last: Overview | null = null;
  const fc = await loadProvinces();
  const showSite = (s: Site) => {
    detail.replaceChildren(
      h("strong", {}, s.name),
      ` ${s.region_name || s.region_code} · ${s.online ? t("online") : t("offline")} · `,
      ...s.pools.map((p) => h("span", { class: "chip" }, `${p.name}: ${p.cpu_reserved.toFixed(1)}/${p.cpu_cores} `)),
    );
  };
  const render = (d: Overview) => {
    last = d;
    drawMap(svg, fc, d, showSite);
    const pools = d.sites.flatMap((s) => s.pools);
    const sum = (f: (p: (typeof pools)[number]) => number) => pools.filter((p) => p.online).reduce((n, p) => n + f(p), 0);
    cards.replaceChildren(
      card(t("sitesOnline"), `${d.sites.filter((s) => s.online).length} / ${d.sites.length}`, "sites-online"),
      card(t("poolsOnline"), `${pools.filter((p) => p.online).length} / ${pools.length}`, "pools-online"),
      card(t("cores"), `${sum((p) => p.cpu_reserved).toFixed(1)} / ${sum((p) => p.cpu_cores).toFixed(0)}`, "cores"),
      card(t("gpus"), `${sum((p) => p.gpus_reserved)} / ${sum((p) => p.gpus)}`, "gpus"),
      card(t("queued"), String(d.tasks.QUEUED ?? 0), "queued"),
      card(t("running"), String((d.tasks.RUNNING ?? 0) + (d.tasks.INITIALIZING ?? 0)), "running"),
    );
    flowBox.replaceChildren(h("h2", {}, t("flow")), flowChart(d.flow));
    tableBox.replaceChildren(poolTable(d, filter.value, onlineOnly.checked));
  };
  filter.addEventListener("input", () => last && tableBox.replaceChildren(poolTable(last, filter.value, onlineOnly.checked)));
  onlineOnly.addEventListener("change", () => last && tableBox.replaceChildren(poolTable(last, filter.value, onlineOnly.checked)));
  const who = await get<{ role: string; org_id: string | null }>("/v1/whoami");
  const shown = show(
    my,
    header(who),
    h(
      "main",
      {},
      h("div", { class: "row" }, h("h1", {}, t("overview")), status),
      cards,
      h("div", { class: "grid" },
        h("section", {}, h("h2", {}, t("map")), svg, detail, h("p", { class: "note" }, t("mapNote"))),
        h("section", {}, flowBox, h("h2", {}, t("tasks")), tasksBox),
      ),
      h("section", {}, h("h2", {}, t("pools")), h("div", { class: "filters" }, filter, h("label", { for: "online-only" }, onlineOnly, ` ${t("onlineOnly")}`)), tableBox),
    ),
  );
  if (!shown) return;
  const refreshTasks = async () => {
    try {
      const page = await get<{ tasks: TaskRow[] }>("/v1/tasks?limit=15");
      tasksBox.replaceChildren(
        ...(page.tasks.length
          ? page.tasks.map((x) =>
              h("li", {}, h("a", { href: `#/tasks/${x.id}`, "data-testid": "task-link" }, x.name || x.id), " ", h("span", { class: `state ${x.state}` }, x.state)),
            )
          : [h("li", {}, t("none"))]),
      );
    } catch {
      /* shown again on the next event */
    }
  };
  stop?.abort();
  stop = new AbortController();
  const mine = stop;
  stream(
    "/v1/dashboard/stream",
    (data) => {
      render(data as Overview);
      void refreshTasks();
    },
    (live) => {
      status.textContent = live ? `● ${t("live")}` : t("reconnecting");
      status.className = `status ${live ? "on" : "off"}`;
    },
    mine.signal,
  ).catch(() => {
    setToken(null);
    location.hash = "#/login";
  });
}

interface Attempt {
  attempt: number;
  attempt_id: string;
  pool_id: string;
  site_id: string;
  state: string;
  reason?: string;
  executor_logs?: { stdout?: string; stderr?: string; exit_code?: number }[];
  transfers?: { direction: string; url: string; path: string; size_bytes: number; seconds: number; sha256_verified: boolean }[] | null;
}

function transfersTable(a: Attempt): HTMLElement | null {
  if (!a.transfers || a.transfers.length === 0) return null;
  const head = h("tr", {}, ...(["direction", "bytes", "seconds"] as const).map((w) => h("th", {}, t(w))), h("th", {}, "URL"), h("th", {}, t("verified")));
  return h("div", {},
    h("p", { class: "help" }, t("transfers")),
    h("table", { class: "explain" }, h("thead", {}, head), h("tbody", {}, ...a.transfers.map((x) =>
      h("tr", { "data-testid": "transfer-row" },
        h("td", {}, `${x.direction} ${x.path}`),
        h("td", {}, String(x.size_bytes)),
        h("td", {}, x.seconds.toFixed(3)),
        h("td", {}, h("code", {}, x.url)),
        h("td", {}, x.sha256_verified ? "✓" : "–"),
      )))),
  );
}

interface Explain {
  chosen_pool?: string | null;
  objective?: string;
  placements?: {
    pool_id: string;
    rank: number;
    fits_now: boolean;
    hourly_price: number;
    estimated_cost: number;
    time_to_result_s: number;
    carbon_g: number;
    reasons: string[];
  }[];
  rejections?: { pool_id: string; reasons?: string[]; reason?: string }[];
}

/** The scheduler's explanation: every pool it weighed, ranked, with its reasons. */
function placement(why: Explain): HTMLElement {
  const rows = (why.placements ?? []).map((p) =>
    h("tr", { class: p.pool_id === why.chosen_pool ? "chosen" : "", "data-testid": "placement-row" },
      h("td", {}, String(p.rank)),
      h("td", {}, h("code", {}, p.pool_id)),
      h("td", {}, p.fits_now ? "✓" : "–"),
      h("td", {}, `${p.time_to_result_s.toFixed(0)} s`),
      h("td", {}, p.estimated_cost.toFixed(4)),
      h("td", {}, `${p.carbon_g.toFixed(2)} g`),
      h("td", { class: "reasons" }, p.reasons.join("; ")),
    ),
  );
  const rejected = (why.rejections ?? []).map((r) =>
    h("tr", { class: "rejected" }, h("td", {}, "✗"), h("td", {}, h("code", {}, r.pool_id)), h("td", { colspan: "5" }, (r.reasons ?? [r.reason ?? ""]).join("; "))),
  );
  const head = h("tr", {}, ...["#", "pool", "fits now", "time to result", "cost", "CO₂", "why"].map((x) => h("th", {}, x)));
  return h("div", {},
    h("p", { class: "help" }, `objective: ${why.objective ?? "balanced"}`),
    h("table", { class: "explain" }, h("thead", {}, head), h("tbody", {}, ...rows, ...rejected)),
  );
}

async function taskPage(my: number, id: string): Promise<void> {
  const box = h("main", {}, h("p", {}, "…"));
  const who = await get<{ role: string; org_id: string | null }>("/v1/whoami");
  if (!show(my, header(who), box)) return;
  stop?.abort();
  stop = new AbortController();
  const mine = stop;
  const load = async () => {
    try {
      const [task, ev, why] = await Promise.all([
        get<{ id: string; org_id: string; name?: string; state: string; reason?: string; created_at: string; attempts: Attempt[] }>(`/v1/tasks/${encodeURIComponent(id)}?view=full`),
        get<{ events: { at: string; from_state: string | null; to_state: string; reason?: string }[] }>(`/v1/tasks/${encodeURIComponent(id)}/events`),
        get<{ explanation?: unknown }>(`/v1/tasks/${encodeURIComponent(id)}/explain`).catch(() => null),
      ]);
      box.replaceChildren(
        h("a", { href: "#/" }, t("back")),
        h("h1", {}, `${t("task")} ${task.name ?? ""} `, h("code", {}, task.id)),
        h("p", {}, `${t("state")}: `, h("span", { class: `state ${task.state}`, "data-testid": "task-state" }, task.state), task.reason ? ` — ${task.reason}` : ""),
        h("p", {}, `${t("created")}: ${new Date(task.created_at).toLocaleString()}`),
        h("h2", {}, t("events")),
        h("table", { class: "events" },
          h("tbody", {}, ...ev.events.map((e) =>
            h("tr", { "data-testid": "event-row" }, h("td", {}, new Date(e.at).toLocaleTimeString()), h("td", {}, `${e.from_state ?? "–"} → ${e.to_state}`), h("td", {}, e.reason ?? "")),
          )),
        ),
        h("h2", {}, t("attempts")),
        ...task.attempts.map((a) =>
          h("div", { class: "attempt", "data-testid": "attempt" },
            h("p", {}, `#${a.attempt} `, h("code", {}, a.attempt_id), ` ${a.pool_id} — `, h("span", { class: `state ${a.state}` }, a.state), a.reason ? ` (${a.reason})` : ""),
            ...(a.executor_logs ?? []).map((l, i) =>
              h("details", { open: "" }, h("summary", {}, `${t("logs")} ${i}${l.exit_code != null ? ` · exit ${l.exit_code}` : ""}`), h("pre", { "data-testid": "stdout" }, (l.stdout ?? "") + (l.stderr ? `\n${l.stderr}` : ""))),
            ),
            transfersTable(a),
          ),
        ),
        ...(why ? [h("h2", {}, t("placement")), placement(why as Explain)] : []),
        h("h2", {}, t("bill")),
        await billOfTask(task.org_id, task.id),
      );
      return !["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"].includes(task.state);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        box.replaceChildren(h("a", { href: "#/" }, t("back")), h("p", { class: "error" }, t("notFound")));
        return false;
      }
      if (e instanceof ApiError && e.status === 401) {
        location.hash = "#/login";
        return false;
      }
      return true;
    }
  };
  while (!mine.signal.aborted && (await load())) {
    await new Promise((res) => setTimeout(res, 1000));
  }
}

interface BillLine {
  task_id: string | null;
  task_name: string;
  attempt_id: string | null;
  settled_at: string;
  pool_id: string;
  seconds: number;
  hourly: string;
  charge: number;
}

interface Bill {
  currency: string;
  minor_digits: number;
  lines: BillLine[];
  charged: number;
  held_now: number;
}

/** An amount in minor units as people read it: grouped thousands, the currency's decimals. */
function money(minor: number, digits: number, currency: string): string {
  const amount = (minor / 10 ** digits).toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
  return `${amount} ${currency}`;
}

function month(): string {
  const d = new Date();
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

function billTable(bill: Bill, lines: BillLine[]): HTMLElement {
  const head = h("tr", {}, ...(["task", "pool", "seconds", "hourly", "charge"] as const).map((w) => h("th", {}, t(w))));
  const rows = lines.map((l) =>
    h("tr", { "data-testid": "bill-row" },
      h("td", {}, l.task_id ? h("a", { href: `#/tasks/${l.task_id}` }, l.task_name || l.task_id) : "–"),
      h("td", {}, h("code", {}, l.pool_id)),
      h("td", {}, l.seconds.toFixed(1)),
      h("td", {}, `${l.hourly} ${bill.currency}`),
      h("td", {}, money(l.charge, bill.minor_digits, bill.currency)),
    ),
  );
  return h("table", { class: "bill" }, h("thead", {}, head), h("tbody", {}, ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: "5" }, t("none")))])));
}

/** The lines of this month's bill that charged this task (settled when it ended). */
async function billOfTask(org: string, taskId: string): Promise<HTMLElement> {
  try {
    const bill = await get<Bill>(`/v1/accounts/${encodeURIComponent(org)}/bill?period=${month()}`);
    return billTable(bill, bill.lines.filter((l) => l.task_id === taskId));
  } catch {
    return h("p", { class: "help" }, "–");
  }
}

async function accountPage(my: number): Promise<void> {
  const who = await get<{ role: string; org_id: string | null }>("/v1/whoami");
  const box = h("main", {}, h("p", {}, "…"));
  if (!show(my, header(who), box)) return;
  stop?.abort();
  if (!who.org_id) {
    box.replaceChildren(h("p", {}, t("none")));
    return;
  }
  const org = encodeURIComponent(who.org_id);
  const [acc, bill] = await Promise.all([
    get<{ currency: string; minor_digits: number; balance: number; held: number; available: number; earned: number }>(`/v1/accounts/${org}`),
    get<Bill>(`/v1/accounts/${org}/bill?period=${month()}`),
  ]);
  const m = (x: number) => money(x, acc.minor_digits, acc.currency);
  const parts: HTMLElement[] = [
    h("a", { href: "#/" }, t("back")),
    h("h1", {}, `${t("account")} `, h("code", {}, who.org_id)),
    h("div", { class: "cards" },
      card(t("balance"), m(acc.balance), "balance"),
      card(t("held"), m(acc.held), "held"),
      card(t("available"), m(acc.available), "available"),
      card(t("earned"), m(acc.earned), "earned"),
      card(t("total"), m(bill.charged), "charged"),
    ),
    h("section", {}, h("h2", {}, `${t("billOf")} (${month()})`), billTable(bill, bill.lines)),
  ];
  if (who.role === "admin") {
    const check = await get<{ ok: boolean; accounts: number; transfers: number; holds: number; problems: string[] }>("/v1/ledger/check");
    parts.push(
      h("section", {}, h("h2", {}, t("ledger")),
        h("p", { "data-testid": "ledger-check" },
          h("span", { class: `state ${check.ok ? "COMPLETE" : "SYSTEM_ERROR"}` }, check.ok ? t("ledgerOk") : t("ledgerBad")),
          ` ${check.accounts} accounts · ${check.transfers} transfers · ${check.holds} holds`,
        ),
        ...check.problems.slice(0, 20).map((p) => h("p", { class: "error" }, p)),
      ),
    );
  }
  box.replaceChildren(...parts);
}

interface Reputation {
  pool_id: string;
  score: number;
  at: string;
  evidence: Record<string, number>;
}

/** Every provider, its sites and pools, and each pool's reputation with the figures behind it. */
async function providersPage(my: number): Promise<void> {
  const who = await get<{ role: string; org_id: string | null }>("/v1/whoami");
  const box = h("main", {}, h("p", {}, "…"));
  if (!show(my, header(who), box)) return;
  stop?.abort();
  const [provs, reps, view] = await Promise.all([
    get<{ providers: { id: string; name: string; retired?: boolean }[] }>("/v1/providers"),
    get<{ pools: Reputation[] }>("/v1/reputation"),
    get<Overview>("/v1/dashboard"),
  ]);
  const rep = new Map(reps.pools.map((r) => [r.pool_id, r]));
  const sections = provs.providers.map((p) => {
    const sites = view.sites.filter((s) => s.provider_id === p.id);
    const rows = sites.flatMap((s) =>
      s.pools.map((pool) => {
        const r = rep.get(pool.id);
        const ev = r
          ? `${t("success")} ${r.evidence.success} · ${t("availability")} ${r.evidence.availability} · ` +
            `${t("breaches")} ${r.evidence.breached_windows} · attempts ${r.evidence.attempts} (lost ${r.evidence.lost})`
          : t("notScored");
        return h("tr", { "data-testid": "rep-row", "data-pool-id": pool.id },
          h("td", {}, h("span", { class: `dot ${pool.online ? "online" : "offline"}` }), ` ${s.name} / ${pool.name}`),
          h("td", { "data-testid": "rep-score" }, r ? r.score.toFixed(3) : "–"),
          h("td", { class: "reasons", "data-testid": "rep-evidence" }, ev),
        );
      }),
    );
    const head = h("tr", {}, h("th", {}, t("pool")), h("th", {}, t("reputation")), h("th", {}, t("evidence")));
    return h("section", { "data-testid": "provider", "data-provider-id": p.id },
      h("h2", {}, `${p.name} `, h("code", {}, p.id)),
      h("table", { class: "explain" }, h("thead", {}, head), h("tbody", {}, ...rows)),
    );
  });
  box.replaceChildren(h("a", { href: "#/" }, t("back")), h("h1", {}, t("providers")), ...sections);
}

function route(): void {
  const my = ++generation;
  setLang(currentLang());
  document.title = t("title");
  const hash = location.hash || "#/";
  if (!token() && hash !== "#/login") {
    location.hash = "#/login";
    return;
  }
  if (hash === "#/login") {
    stop?.abort();
    login();
    return;
  }
  const m = hash.match(/^#\/tasks\/([A-Za-z0-9_-]+)$/);
  const done = m
    ? taskPage(my, m[1])
    : hash === "#/account"
      ? accountPage(my)
      : hash === "#/providers"
        ? providersPage(my)
        : overview(my);
  done.catch((e) => {
    if (my !== generation) return; // a page the user has left: its failure is not theirs to see
    if (e instanceof ApiError && e.status === 401) {
      setToken(null);
      location.hash = "#/login";
    } else {
      app.replaceChildren(header(), h("main", {}, h("p", { class: "error" }, String(e))));
    }
  });
}

window.addEventListener("hashchange", route);
route();
