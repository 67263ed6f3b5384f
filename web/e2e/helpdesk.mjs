// Browser test of the helpdesk flow in headless Chromium, driven by
// cmd/fvescrow's TestBrowserHelpdeskFlow against a real `fvescrow serve`.
//
// Input (JSON on stdin, so no secret is on a command line or in the
// environment): url, admin {user, password}, serial, deviceID, key,
// newPassword, artifacts, hideAfter, chromium, nodeModules.
// Output: one progress line per step. Secrets (passwords, the key) are
// never printed: failures name the step, not the values.
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";

const cfg = JSON.parse(readFileSync(0, "utf8"));
const require = createRequire(path.join(cfg.nodeModules, "noop.js"));
const { chromium } = require("playwright-core");

const PHONE = { width: 375, height: 812 };
const DESKTOP = { width: 1280, height: 800 };
mkdirSync(cfg.artifacts, { recursive: true });

const step = (msg) => console.log(`step: ${msg}`);
class Fail extends Error {}
const check = (ok, msg) => {
  if (!ok) throw new Fail(msg);
};

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  // The network is closed here: nothing may try to phone home.
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run"],
});

const problems = [];
async function newUser(name) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: DESKTOP, baseURL: cfg.url });
  ctx.setDefaultTimeout(15000);
  const page = await ctx.newPage();
  // A CSP violation or script error shows up here; the pages must have none.
  // A 4xx page (a refused reveal) logs "Failed to load resource"; such
  // documents are expected, subresources (CSS, JS, icons) never fail.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`${name}: console error: ${m.text().slice(0, 200)}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) {
      const where = `${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`;
      if (r.request().resourceType() === "document") console.log(`note: ${name}: ${where}`);
      else problems.push(`${name}: ${where} (${r.request().resourceType()})`);
    }
  });
  page.on("pageerror", (e) => problems.push(`${name}: page error: ${String(e).slice(0, 200)}`));
  return { ctx, page, name };
}

// shot saves a full-page screenshot at phone and desktop widths, and
// checks the page does not scroll sideways on the phone.
async function shot(page, name) {
  for (const vp of [PHONE, DESKTOP]) {
    await page.setViewportSize(vp);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `${name}: ${overflow}px of horizontal overflow at ${vp.width}px`);
    await page.screenshot({ path: path.join(cfg.artifacts, `${name}-${vp.width}.png`), fullPage: true });
  }
  await page.setViewportSize(DESKTOP);
}

// signIn signs in with a one-time password, changing it when asked.
async function signIn(u, user, password, shotName) {
  const { page } = u;
  await page.goto("/ui/home");
  check(page.url().includes("/ui/login"), "an anonymous visit was not sent to the sign-in page");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Choose a new password" }).waitFor();
  if (shotName) await shot(page, shotName);
  await page.getByLabel("One-time password").fill(password);
  await page.getByLabel("New password", { exact: true }).fill(cfg.newPassword);
  await page.getByLabel("Repeat the new password").fill(cfg.newPassword);
  await page.getByRole("button", { name: "Change password and sign in" }).click();
  await page.waitForURL("**/ui/home");
  step(`${u.name} signed in and replaced the one-time password`);
}

let failed = false;
const admin = await newUser("admin");
const hd = await newUser("helpdesk");
const appr = await newUser("approver");
try {
  // Keyboard on the sign-in page: the user name has focus, and Tab walks
  // the form in reading order.
  await admin.page.goto("/ui/login");
  await shot(admin.page, "01-login");
  const focused = () => admin.page.evaluate(() => document.activeElement.id || document.activeElement.textContent.trim());
  check(await focused() === "username", "the sign-in page does not focus the user name");
  const order = [];
  for (let i = 0; i < 3; i++) {
    await admin.page.keyboard.press("Tab");
    order.push(await focused());
  }
  check(order.join(",") === "password,totp,Sign in", `sign-in tab order is ${order.join(",")}`);
  step("keyboard: the sign-in form in reading order");

  await signIn(admin, cfg.admin.user, cfg.admin.password, "02-change-password");

  // The admin creates the helpdesk user and the approver.
  const created = {};
  for (const [user, role] of [["hd", "helpdesk"], ["appr", "approver"]]) {
    await admin.page.getByRole("link", { name: "Users" }).click();
    await admin.page.getByLabel("User name").fill(user);
    await admin.page.getByLabel("Display name").fill(user === "hd" ? "Hana Desk" : "Abe Prover");
    await admin.page.getByRole("checkbox", { name: role, exact: true }).check();
    await admin.page.getByRole("button", { name: "Create user" }).click();
    created[user] = (await admin.page.locator("#otp").textContent()).trim();
    check(created[user].length >= 12, `no one-time password shown for ${user}`);
  }
  await shot(admin.page, "03-users");
  step("admin created hd (helpdesk) and appr (approver)");

  // Helpdesk: sign in, search by serial, open the device.
  await signIn(hd, "hd", created.hd);
  const p = hd.page;
  await shot(p, "04-home");
  // Keyboard: the skip link is the first stop and moves focus to the
  // content; the next stop is the search field.
  const hdFocus = () => p.evaluate(() => document.activeElement.id || document.activeElement.textContent.trim());
  await p.keyboard.press("Tab");
  check(await hdFocus() === "Skip to main content", "the first Tab stop is not the skip link");
  await p.keyboard.press("Enter");
  check(await hdFocus() === "main", "the skip link does not move focus to the main content");
  await p.keyboard.press("Tab");
  check(await hdFocus() === "q", "after the skip link, Tab does not reach the search field");
  const ring = await p.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(ring !== "none", "the focused field shows no focus outline");
  step("keyboard: skip link first, then the search, with a visible focus ring");
  await p.getByRole("searchbox", { name: "Find a device" }).fill(cfg.serial);
  await p.keyboard.press("Enter");
  await p.getByRole("heading", { name: /1 device matching/ }).waitFor();
  await shot(p, "05-search");
  await p.getByRole("row", { name: new RegExp(cfg.serial) }).getByRole("link").click();
  await p.getByRole("heading", { name: "Recovery key versions" }).waitFor();
  check((await p.locator("main").textContent()).includes(cfg.serial), "the device page does not show the serial");
  await shot(p, "06-device");
  step("helpdesk found the device by serial");

  // Reveal without approval is refused; ask for one.
  await p.getByRole("link", { name: "Reveal recovery key…" }).click();
  await p.getByLabel("Reason").fill("User locked out at the FileVault login window after a password reset");
  await p.getByLabel("Ticket ID").fill("IT-4711");
  await shot(p, "07-reveal-form");
  await p.getByRole("button", { name: "Reveal key" }).click();
  await p.getByRole("alert").filter({ hasText: "approval" }).waitFor();
  await shot(p, "08-approval-needed");
  await p.getByRole("button", { name: "Ask for approval" }).click();
  await p.waitForURL("**/ui/approvals/apr_*");
  const approvalURL = new URL(p.url()).pathname;
  check((await p.locator(".badge").first().textContent()).trim() === "pending", "the new request is not pending");
  await shot(p, "09-approval-pending");
  step("helpdesk asked for approval");

  // Approver (second browser context): sign in, approve.
  await signIn(appr, "appr", created.appr);
  const a = appr.page;
  await a.getByRole("link", { name: "Approvals", exact: true }).click();
  await a.getByRole("link", { name: approvalURL.split("/").pop() }).click();
  await shot(a, "10-approve");
  await a.getByLabel("Note").fill("Ticket IT-4711 checked");
  await a.getByRole("button", { name: "Approve" }).click();
  await a.locator(".badge", { hasText: "approved" }).waitFor();
  step("approver approved");

  // Helpdesk reveals with the approval.
  await p.goto(approvalURL);
  await p.getByRole("button", { name: "Reveal key now" }).click();
  await p.getByRole("heading", { name: "FileVault personal recovery key" }).waitFor();
  check(!p.url().includes(cfg.key) && !p.url().includes(cfg.key.replaceAll("-", "")), "the key is in the URL");
  const groups = await p.locator("[data-group]").allTextContents();
  check(groups.length === 6 && groups.every((g) => g.length === 4), "the key is not shown as six blocks of four");
  check(groups.join("-") === cfg.key, "the revealed key differs from the escrowed key");
  const style = await p.locator("#key").evaluate((el) => { const s = getComputedStyle(el); return { size: parseFloat(s.fontSize), family: s.fontFamily }; });
  check(style.size >= 24 && /mono|menlo|consolas/i.test(style.family), "the key is not large and monospace");
  await shot(p, "11-revealed");
  step("helpdesk saw the escrowed key in six blocks");

  // Copy puts exactly the key on the clipboard.
  await hd.ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: cfg.url });
  await p.getByRole("button", { name: "Copy key" }).click();
  await p.getByRole("status").filter({ hasText: "Copied" }).waitFor();
  check(await p.evaluate(() => navigator.clipboard.readText()) === cfg.key, "the clipboard does not hold the key");
  step("copy put the key on the clipboard");

  // Auto-hide after the configured time.
  const t0 = Date.now();
  await p.locator("#key-hidden").waitFor({ state: "visible", timeout: (cfg.hideAfter + 10) * 1000 });
  check(await p.locator("[data-group]").count() === 0, "the key is still in the page after hiding");
  check(!(await p.content()).includes(groups[5]), "the key's text is still in the DOM after hiding");
  check((await p.locator("#key-hidden").textContent()).includes("new reason"), "the hidden message does not explain a new reveal");
  await shot(p, "12-key-hidden");
  step(`the key hid itself (after ${Math.round((Date.now() - t0) / 1000)}s more)`);

  // The reveal is in the device's trail for the helpdesk, and in the audit
  // log for the admin.
  await p.goto(`/ui/devices/${cfg.deviceID}`);
  check(await p.locator("tr.a-key\\.revealed").count() === 1, "the device page does not show the reveal");
  await admin.page.getByRole("link", { name: "Audit log" }).click();
  await admin.page.getByLabel("Action").fill("key.revealed");
  await admin.page.getByRole("button", { name: "Apply filters" }).click();
  const row = admin.page.locator("tr.a-key\\.revealed");
  await row.first().waitFor();
  const rowText = await row.first().textContent();
  check(rowText.includes("local:hd") && rowText.includes("IT-4711"), "the audit row does not name the helpdesk user and ticket");
  await shot(admin.page, "13-audit");
  step("the audit log shows the reveal");

  check(problems.length === 0, `browser problems:\n${problems.join("\n")}`);
} catch (e) {
  failed = true;
  for (const u of [hd, appr, admin]) {
    try { await u.page.screenshot({ path: path.join(cfg.artifacts, `failure-${u.name}.png`), fullPage: true }); } catch {}
  }
  // Our own failures name the check; others (timeouts) name a locator, not a value.
  console.log(`FAIL: ${e instanceof Fail ? e.message : String(e.message).split("\n")[0]}`);
  if (problems.length) console.log(problems.join("\n"));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
