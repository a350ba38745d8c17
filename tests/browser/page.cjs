// Drives the status page in Debian's headless Chromium, as a person would:
//   node page.cjs BASE_URL OUT_DIR TOKEN
// Needs NODE_MODULES (where scripts/test installed playwright-core) and
// CHROMIUM (default /usr/bin/chromium). Prints one JSON line of findings;
// exits 1 with the reason when something a person would see is wrong.
const path = require("path");
const fs = require("fs");
const { chromium } = require(path.join(process.env.NODE_MODULES, "playwright-core"));

const [base, outDir, token] = process.argv.slice(2);

function fail(msg) {
  console.error("browser test: " + msg);
  process.exit(1);
}

(async () => {
  fs.mkdirSync(outDir, { recursive: true });
  const profile = fs.mkdtempSync(path.join(outDir, "profile-"));
  // A fresh profile each run (playwright passes it as --user-data-dir).
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1500, height: 900 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const found = {};
  try {
    const page = await browser.newPage();
    const posts = [];
    page.on("request", (r) => { if (r.method() === "POST") posts.push(r.url()); });
    await page.goto(base + "/", { waitUntil: "load" });

    // The activities are listed.
    for (const slug of ["sweep-ok", "bridge-down"]) {
      if (!(await page.locator(`tr.activity[data-slug="${slug}"]`).isVisible())) fail(`activity ${slug} is not shown`);
    }
    found.activities = await page.locator("tr.activity").count();

    // A red strip cell after the automation error.
    const red = page.locator('tr.activity[data-slug="bridge-down"] .strip .cell.error').first();
    if (!(await red.isVisible())) fail("no automation-error cell in bridge-down's strip");
    found.red_cell_colour = await red.evaluate((e) => getComputedStyle(e).backgroundColor);
    if (found.red_cell_colour !== "rgb(217, 58, 58)") fail("the automation-error cell is not red: " + found.red_cell_colour);
    found.recommendation = (await page.locator('tr.activity[data-slug="bridge-down"] td.action').innerText()).trim();
    if (!found.recommendation.includes("bridge unreachable")) fail("no recommendation: " + found.recommendation);

    // A confirmation before a trigger; dismissing it sends nothing.
    const dialogs = [];
    page.once("dialog", async (d) => { dialogs.push({ type: d.type(), message: d.message() }); await d.dismiss(); });
    await page.locator('tr.activity[data-slug="bridge-down"] button[data-op="trigger"]').click();
    await page.waitForTimeout(0);
    if (dialogs.length !== 1 || dialogs[0].type !== "confirm" || !dialogs[0].message.includes("trigger bridge-down")) {
      fail("no confirmation before the trigger: " + JSON.stringify(dialogs));
    }
    if (posts.length) fail("a dismissed confirmation still sent " + posts.join(", "));
    found.trigger_confirmation = dialogs[0].message;

    await page.screenshot({ path: path.join(outDir, "status-page.png"), fullPage: true });

    // Pause through the page: confirm, reason, token; the row then shows it paused.
    const answers = { confirm: null, prompt: ["browser test", token] };
    page.on("dialog", async (d) => {
      if (d.type() === "confirm") await d.accept();
      else if (d.type() === "prompt") await d.accept(answers.prompt.shift());
      else await d.dismiss();
    });
    await Promise.all([
      page.waitForEvent("load"),
      page.locator('tr.activity[data-slug="sweep-ok"] button[data-op="pause"]').click(),
    ]);
    const state = (await page.locator('tr.activity[data-slug="sweep-ok"] td').first().innerText()).trim();
    if (!state.includes("paused")) fail("after the pause the row says: " + state);
    found.paused_row = state;
    await page.screenshot({ path: path.join(outDir, "status-page-paused.png"), fullPage: true });
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(found));
})().catch((e) => fail(e.stack || String(e)));
