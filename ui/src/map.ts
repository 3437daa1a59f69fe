// The map: provinces from the shipped Natural Earth boundaries, sites at their coordinates
// (green online, grey offline, area by cores), and the measured or declared links between them.
import { geoMercator, geoPath } from "d3-geo";
import type { Feature, FeatureCollection, Geometry, Position } from "geojson";
import { currentLang, t } from "./i18n";
import type { Overview, Site } from "./types";

const SVG = "http://www.w3.org/2000/svg";
let provinces: FeatureCollection | null = null;

function area(ring: Position[]): number {
  let a = 0;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    a += (ring[j][0] - ring[i][0]) * (ring[j][1] + ring[i][1]);
  }
  return a / 2; // > 0: anticlockwise in lon/lat (x east, y north)
}

/** d3-geo wants outer rings clockwise and holes anticlockwise (else it fills the rest of the globe). */
function rewind(g: Geometry): void {
  const fix = (rings: Position[][]) =>
    rings.forEach((r, i) => {
      const clockwise = area(r) < 0;
      if ((i === 0) !== clockwise) r.reverse();
    });
  if (g.type === "Polygon") fix(g.coordinates);
  else if (g.type === "MultiPolygon") g.coordinates.forEach(fix);
}

export async function loadProvinces(): Promise<FeatureCollection> {
  if (!provinces) {
    const r = await fetch(`${import.meta.env.BASE_URL}data/cn-provinces.json`);
    const fc = (await r.json()) as FeatureCollection;
    fc.features.forEach((f: Feature) => f.geometry && rewind(f.geometry));
    provinces = fc;
  }
  return provinces;
}

function el<K extends keyof SVGElementTagNameMap>(name: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function title(parent: SVGElement, text: string): void {
  const tt = document.createElementNS(SVG, "title");
  tt.textContent = text;
  parent.appendChild(tt);
}

export function drawMap(svg: SVGSVGElement, fc: FeatureCollection, data: Overview, onSite: (s: Site) => void): void {
  const width = 800;
  const height = 600;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const projection = geoMercator().fitSize([width, height], fc);
  const path = geoPath(projection);
  const land = el("g", { class: "provinces" });
  for (const f of fc.features) {
    const p = el("path", { d: path(f) ?? "", class: "province", "data-code": String(f.properties?.code ?? "") });
    title(p, String(currentLang() === "zh" ? f.properties?.name_zh : f.properties?.name_en));
    land.appendChild(p);
  }
  svg.appendChild(land);
  const at = new Map<string, [number, number]>();
  for (const s of data.sites) {
    if (s.lat == null || s.lon == null) continue;
    const xy = projection([s.lon, s.lat]);
    if (xy) at.set(s.id, xy as [number, number]);
  }
  const links = el("g", { class: "links" });
  for (const l of data.links) {
    const a = at.get(l.a);
    const b = at.get(l.b);
    if (!a || !b) continue;
    const line = el("line", {
      x1: a[0], y1: a[1], x2: b[0], y2: b[1],
      class: `link ${l.source}`,
      "stroke-width": Math.max(1, Math.min(6, Math.log10(1 + l.mbps))),
    });
    title(line, `${l.a} ↔ ${l.b}: ${l.rtt_ms.toFixed(1)} ms, ${l.mbps.toFixed(0)} Mbit/s (${l.source})`);
    links.appendChild(line);
  }
  svg.appendChild(links);
  const dots = el("g", { class: "sites" });
  for (const s of data.sites) {
    const xy = at.get(s.id);
    if (!xy) continue;
    const cores = s.pools.reduce((n, p) => n + p.cpu_cores, 0);
    const used = s.pools.reduce((n, p) => n + p.cpu_reserved, 0);
    const c = el("circle", {
      cx: xy[0], cy: xy[1],
      r: 4 + Math.sqrt(cores),
      class: `site ${s.online ? "online" : "offline"}`,
      "data-site-id": s.id,
      "data-online": String(s.online),
    });
    title(
      c,
      `${s.name} (${s.region_name || s.region_code}) — ${s.online ? t("online") : t("offline")}; ` +
        `${used.toFixed(1)}/${cores.toFixed(0)} ${t("cores")}`,
    );
    c.addEventListener("click", () => onSite(s));
    dots.appendChild(c);
  }
  svg.appendChild(dots);
}
