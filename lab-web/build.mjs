// Bundle the page's scripts into the package, each with the licences of what it holds.
import { build } from "esbuild";
import { copyFileSync, readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";

const out = "../src/cnnzoo/lab/static/vendor";

await build({
  entryPoints: ["editor.mjs"], bundle: true, minify: true, format: "iife",
  globalName: "CM", outfile: join(out, "codemirror.js"), legalComments: "none",
});

// Every package inside the editor bundle: codemirror, @codemirror/*, @lezer/*, and
// their small helpers.
const packages = ["codemirror", "crelt", "style-mod", "w3c-keyname"];
for (const scope of ["@codemirror", "@lezer", "@marijn"]) {
  for (const name of readdirSync(join("node_modules", scope))) packages.push(`${scope}/${name}`);
}
const licences = packages.map((name) => {
  const dir = join("node_modules", name);
  const { version } = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = ["LICENSE", "LICENSE.md", "LICENSE.txt"].map((f) => join(dir, f)).find(existsSync);
  return `${name} ${version}\n\n${readFileSync(file, "utf8").trim()}\n`;
});
writeFileSync(join(out, "codemirror.LICENSE.txt"),
  "Licences of the packages bundled into codemirror.js\n\n" + licences.join("\n" + "-".repeat(72) + "\n\n"));

copyFileSync("node_modules/uplot/dist/uPlot.iife.min.js", join(out, "uPlot.js"));
copyFileSync("node_modules/uplot/dist/uPlot.min.css", join(out, "uPlot.css"));
const uplot = JSON.parse(readFileSync("node_modules/uplot/package.json", "utf8"));
writeFileSync(join(out, "uPlot.LICENSE.txt"),
  `uplot ${uplot.version}\n\n${readFileSync("node_modules/uplot/LICENSE", "utf8").trim()}\n`);
