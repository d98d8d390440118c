// Type-checks every dashboard in ../dashboards against Grafana's own types (@grafana/schema,
// the version pinned in package.json = the Grafana image in docker-compose.yml).
//
// JSON cannot be checked by `tsc` as it is (string enums, excess properties), so each dashboard
// is written out as a TypeScript object literal: the whole dashboard must be a `Dashboard`, and
// each panel, once more, a `Panel` whose `options` and `fieldConfig.defaults.custom` are that
// panel type's own `Options` and `FieldConfig` (timeseries, stat, piechart, ...). Object
// literals get excess-property checks, so a misspelt key fails too. `Json<T>` turns Grafana's
// string enums into the strings a JSON file holds.
//
// Also checked: unique panel ids, every query has a refId and an expr, every panel and query
// uses the provisioned Prometheus datasource, and panels stay inside the 24-column grid.
//
// Usage: npm ci && node check.mjs   (exit 1 on any error)
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dashboards = join(here, "..", "dashboards");
const generated = join(here, "generated");
const DATASOURCE_UID = "prometheus"; // conf/grafana/provisioning/datasources/prometheus.yml

// Panel type -> the module of its types in @grafana/schema, and whether that module has a
// `FieldConfig` (the panel's `fieldConfig.defaults.custom`) besides its `Options`.
const PANEL_TYPES = {
  timeseries: ["timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", true],
  stat: ["stat/panelcfg/x/StatPanelCfg_types.gen", false],
  piechart: ["piechart/panelcfg/x/PieChartPanelCfg_types.gen", true],
  "state-timeline": ["statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen", true],
  gauge: ["gauge/panelcfg/x/GaugePanelCfg_types.gen", false],
  bargauge: ["bargauge/panelcfg/x/BarGaugePanelCfg_types.gen", false],
  table: ["table/panelcfg/x/TablePanelCfg_types.gen", true],
  text: ["text/panelcfg/x/TextPanelCfg_types.gen", false],
};

const errors = [];
let panelCount = 0;
let queryCount = 0;

function structuralChecks(file, dash) {
  const ids = new Set();
  for (const p of dash.panels ?? []) {
    const where = `${file}: panel ${p.id} "${p.title}"`;
    if (ids.has(p.id)) errors.push(`${where}: duplicate id`);
    ids.add(p.id);
    if (!(p.type in PANEL_TYPES)) errors.push(`${where}: no types known for panel type ${p.type}`);
    const g = p.gridPos ?? {};
    if (g.x < 0 || g.w < 1 || g.x + g.w > 24) errors.push(`${where}: gridPos outside 24 columns`);
    if (p.datasource?.uid !== DATASOURCE_UID) errors.push(`${where}: datasource is not ${DATASOURCE_UID}`);
    const refs = new Set();
    for (const t of p.targets ?? []) {
      queryCount++;
      if (!t.refId || refs.has(t.refId)) errors.push(`${where}: missing or duplicate refId`);
      refs.add(t.refId);
      if (!t.expr) errors.push(`${where}: query ${t.refId} has no expr`);
      if (t.datasource?.uid !== DATASOURCE_UID) errors.push(`${where}: query ${t.refId} datasource`);
    }
    if (!(p.targets ?? []).length) errors.push(`${where}: no query`);
    panelCount++;
  }
}

function typescriptFor(dash) {
  const lines = [
    `import type { Dashboard, Panel, FieldConfigSource } from "@grafana/schema";`,
    ...Object.entries(PANEL_TYPES).map(
      ([, [mod]], i) => `import type * as P${i} from "@grafana/schema/dist/esm/raw/composable/${mod}";`,
    ),
    `type Json<T> = T extends string ? \`\${T}\` : T extends number | boolean | null | undefined ? T`,
    `  : T extends ReadonlyArray<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;`,
    `type Typed<O, F> = Json<Omit<Panel, "options" | "fieldConfig"> & { options: O; fieldConfig: FieldConfigSource<F> }>;`,
    `export const dashboard: Json<Dashboard> = ${JSON.stringify(dash, null, 2)};`,
  ];
  const index = Object.keys(PANEL_TYPES);
  (dash.panels ?? []).forEach((p, n) => {
    const i = index.indexOf(p.type);
    if (i >= 0) {
      const custom = PANEL_TYPES[p.type][1] ? `P${i}.FieldConfig` : "Record<string, unknown>";
      lines.push(`export const panel${n}: Typed<P${i}.Options, ${custom}> = ${JSON.stringify(p, null, 2)};`);
    }
  });
  return lines.join("\n") + "\n";
}

rmSync(generated, { recursive: true, force: true });
mkdirSync(generated);
const files = readdirSync(dashboards).filter((f) => f.endsWith(".json"));
if (!files.length) errors.push(`no dashboards in ${dashboards}`);
for (const file of files) {
  const dash = JSON.parse(readFileSync(join(dashboards, file), "utf8"));
  structuralChecks(file, dash);
  writeFileSync(join(generated, file.replace(/\.json$/, ".ts")), typescriptFor(dash));
}
try {
  execFileSync(process.execPath, [join(here, "node_modules/typescript/bin/tsc"), "-p", here], {
    stdio: "inherit",
  });
} catch {
  errors.push("tsc found type errors (above; line numbers refer to generated/*.ts)");
}
if (errors.length) {
  for (const e of errors) console.error(`dashboard check: ${e}`);
  process.exit(1);
}
const schema = JSON.parse(readFileSync(join(here, "node_modules/@grafana/schema/package.json"), "utf8"));
console.log(
  `dashboard check: ${files.length} dashboard(s), ${panelCount} panels, ${queryCount} queries type-check against @grafana/schema ${schema.version}`,
);
