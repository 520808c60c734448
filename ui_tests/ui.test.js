// The Dagster UI of asn_pipeline in headless Chromium (Debian's package) driven by playwright-core:
// lineage of the sources and the four assets, a partition launched from the UI to success, its
// run and checks, a partition metadata plot, and a failing blocking check stopping asn_statistics.
// Screenshots go to docs/screenshots/ui/ (UI_SCREENSHOTS overrides it).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { PROJECT, startDemoInstance } from './demo_instance.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOTS = path.resolve(
  process.env.UI_SCREENSHOTS ?? path.join(PROJECT, 'docs', 'screenshots', 'ui'),
);
const ASSETS = ['cowrie_sessions', 'ip_inventory', 'asn_inventory', 'asn_statistics'];
const SOURCES = ['cowrie_landing', 'maxmind_asn_db', 'maxmind_city_db'];
// DESIGN §3, and the sources upstream of the pipeline.
const LINEAGE = [
  'cowrie_landing -> cowrie_sessions',
  'cowrie_sessions -> ip_inventory',
  'cowrie_sessions -> asn_inventory',
  'ip_inventory -> asn_statistics',
  'asn_inventory -> asn_statistics',
];
const RUN_TIMEOUT_MS = 120_000;
const VIEWPORT = { width: 1600, height: 1000 };
const GRAPH_VIEWPORT = { width: 1800, height: 1300 };
// Days run through the daily job before the browser opens: the plots need several partitions.
const PRELOADED_DAYS = 2;

describe('the Dagster UI of a fresh demo instance', () => {
  let instance;
  let browser;
  let page;
  let launched;
  let failed = false;

  before(async () => {
    instance = await startDemoInstance({ materialise: PRELOADED_DAYS });
    // The community dialog a local webserver shows once per instance.
    await instance.graphql('mutation { setNuxSeen }');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    const context = await browser.newContext({
      viewport: VIEWPORT,
      timezoneId: 'UTC',
      locale: 'en-US',
    });
    context.setDefaultTimeout(30_000);
    page = await context.newPage();
    fs.mkdirSync(SCREENSHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await instance?.stop();
    if (!instance) return;
    if (failed) {
      console.log(`kept for a look: ${instance.dir}\n--- dagster dev ---\n${instance.logTail()}`);
    } else {
      instance.remove();
    }
    console.log(`screenshots: ${SCREENSHOTS}`);
  });

  /** A test that leaves a screenshot of the page in the instance folder when it fails. */
  function step(name, body) {
    test(name, async () => {
      try {
        await body();
      } catch (error) {
        failed = true;
        const shot = path.join(instance.dir, `failed-${name.replace(/\W+/g, '-')}.png`);
        await page?.screenshot({ path: shot, fullPage: true }).catch(() => {});
        error.message += `\n(page ${page?.url()}, screenshot ${shot})`;
        throw error;
      }
    });
  }

  async function screenshot(name) {
    await page.mouse.move(0, 0); // no hover tooltip
    await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
  }

  step('the asset graph shows the sources and the four assets with their lineage', async () => {
    // Room for the nodes' details (at 1600 x 1000 Dagster draws them as bare names).
    await page.setViewportSize(GRAPH_VIEWPORT);
    await openAssetGraph(page, instance.url);
    const edges = await settledLineageEdges(page, [...ASSETS, ...SOURCES]);
    for (const edge of LINEAGE) assert.ok(edges.includes(edge), `${edge} in ${edges.join(', ')}`);
    for (const database of ['maxmind_asn_db', 'maxmind_city_db']) {
      assert.ok(
        edges.includes(`${database} -> ip_inventory`) ||
          edges.includes(`${database} -> asn_inventory`),
        `${database} feeds the inventory: ${edges.join(', ')}`,
      );
    }
    await page.locator('foreignObject').getByText('Latest event').first().waitFor();
    // The nodes fill in their status rows after the graph is drawn: wait for them (best effort,
    // the lineage is already checked).
    await page
      .locator('foreignObject')
      .getByText(/^Loading/)
      .first()
      .waitFor({ state: 'detached', timeout: 20000 })
      .catch(() => {});
    await screenshot('asset-graph');
    await page.setViewportSize(VIEWPORT);
  });

  step('a partition launched from the asset graph runs to success', async () => {
    const day = instance.demo.days[PRELOADED_DAYS];
    const runPath = await launchPartition(page, instance.url, day);
    assert.equal(await finalRunStatus(page), 'Success');
    await page.getByText(`partition: ${day}`).waitFor();
    await page.getByText('RUN_SUCCESS').waitFor();
    launched = { runPath, day };
    await screenshot('run');
  });

  step("the run's checks passed, and so did asn_statistics' checks", async () => {
    assert.ok(launched, 'the launched run');
    await page.goto(`${instance.url}${launched.runPath}`);
    const checks = await runChecks(page);
    for (const asset of ASSETS) {
      assert.ok(
        checks.some((c) => c.asset === asset),
        `a check of ${asset} in ${JSON.stringify(checks)}`,
      );
    }
    await filterRunEvents(page, 'type:ASSET_CHECK_EVALUATION');
    for (const { check, asset } of checks) {
      await page.getByText(`Check ${check} succeeded for materialization of ${asset}.`).waitFor();
    }
    await screenshot('run-checks');

    const own = checks.filter(({ asset }) => asset === 'asn_statistics').map(({ check }) => check);
    assert.ok(own.length > 0, 'asn_statistics has checks');
    await page.goto(`${instance.url}/assets/asn_statistics?view=checks`);
    for (const check of own) await page.getByText(check, { exact: true }).first().waitFor();
    await page.getByText(launched.day, { exact: true }).first().waitFor();
    const results = page.getByText(/^(Succeeded|Failed|Not evaluated|Execution failed)$/);
    await results.nth(own.length - 1).waitFor();
    assert.deepEqual(await results.allInnerTexts(), own.map(() => 'Succeeded'));
    await screenshot('asset-checks');
  });

  step("an asset's metadata is plotted by partition", async () => {
    await page.goto(`${instance.url}/assets/cowrie_sessions`);
    await page.getByRole('button', { name: 'Plots' }).click();
    await page.getByRole('button', { name: 'Partitions' }).click();
    await page.getByText('dagster/row_count', { exact: true }).waitFor();
    await page.locator('canvas').first().waitFor();
    await page
      .getByText('Metadata', { exact: true })
      .evaluate((heading) => heading.scrollIntoView({ block: 'start' }));
    await screenshot('metadata-plots');
  });

  step('a failing blocking check stops asn_statistics', async () => {
    const day = instance.demo.days[PRELOADED_DAYS + 1];
    // Every write of an address's session_count leaves it 1000 too high, as the counters of
    // the system this replaces were: ip_inventory's blocking counter check must fail.
    await instance.sqlite(`
      CREATE TRIGGER corrupt_insert AFTER INSERT ON ip_inventory BEGIN
        UPDATE ip_inventory SET session_count = session_count + 1000
        WHERE ip_address = NEW.ip_address;
      END;
      CREATE TRIGGER corrupt_update AFTER UPDATE OF session_count ON ip_inventory BEGIN
        UPDATE ip_inventory SET session_count = session_count + 1000
        WHERE ip_address = NEW.ip_address;
      END;`);
    const runPath = await launchPartition(page, instance.url, day);
    assert.equal(await finalRunStatus(page), 'Failure');
    await filterRunEvents(page, 'type:ASSET_CHECK_EVALUATION');
    const failedCheck = /^Check \S+ failed for materialization of ip_inventory\.$/;
    await page.getByText(failedCheck).first().waitFor();
    assert.equal(
      await page.getByText(/materialization of asn_statistics\.$/).count(),
      0,
      'no check of asn_statistics ran',
    );

    await page.goto(`${instance.url}${runPath}`);
    await page.getByText('RUN_FAILURE').waitFor();
    await page.getByText(/blocking asset check failed/).first().waitFor();
    const succeeded = await stepList(page, 'Succeeded');
    await succeeded.getByText('cowrie_sessions', { exact: true }).waitFor();
    assert.equal(await succeeded.getByText('asn_statistics', { exact: true }).count(), 0);
    const notExecuted = await stepList(page, 'Not executed');
    await notExecuted.getByText('asn_statistics', { exact: true }).waitFor();
    await screenshot('blocking-check-run');
  });
});

/** The global asset lineage with every group expanded (Dagster collapses groups by default). */
async function openAssetGraph(page, url) {
  await page.goto(`${url}/asset-groups`);
  await page.locator('foreignObject').first().waitFor();
  if ((await page.locator('foreignObject.group [aria-label="unfold_more"]').count()) > 0) {
    await page.keyboard.press('Alt+KeyE'); // "Expand all groups"
  }
  for (const name of [...ASSETS, ...SOURCES]) {
    await page.locator('foreignObject:not(.group)').getByText(name, { exact: true }).waitFor();
  }
}

/**
 * The graph's edges once the layout has settled: after "Expand all groups" the nodes move to
 * their places while the edges may already be drawn, and a read in between matches no edge end
 * to a node (CI saw "undefined -> undefined" once). Read again until the lineage is all there,
 * for up to 15 s, and return the last read.
 */
async function settledLineageEdges(page, names) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const edges = await lineageEdges(page, names);
    if (LINEAGE.every((edge) => edges.includes(edge)) || Date.now() > deadline) return edges;
    await page.waitForTimeout(250);
  }
}

/**
 * The graph's edges as "upstream -> downstream": an SVG edge runs from the middle of its
 * upstream node's right side to the middle of its downstream node's left side.
 */
function lineageEdges(page, names) {
  return page.evaluate((names) => {
    const nodes = [...document.querySelectorAll('foreignObject:not(.group)')]
      .map((element) => {
        const found = names.filter((name) => element.textContent.includes(name));
        const [x, y, w, h] = ['x', 'y', 'width', 'height'].map((a) =>
          Number(element.getAttribute(a)),
        );
        return { name: found.length === 1 ? found[0] : undefined, x, y, w, h };
      })
      .filter((node) => node.name);
    const nearest = (x, y, side) =>
      nodes
        .map((node) => {
          const nodeX = side === 'right' ? node.x + node.w : node.x;
          return { node, distance: Math.hypot(nodeX - x, node.y + node.h / 2 - y) };
        })
        .sort((a, b) => a.distance - b.distance)
        .find(({ distance }) => distance < 40)?.node.name;
    return [...document.querySelectorAll('path[marker-end]')]
      .map((edge) => {
        const numbers = edge.getAttribute('d').match(/-?\d+(\.\d+)?/g).map(Number);
        const [x1, y1] = numbers;
        const [x2, y2] = numbers.slice(-2);
        return `${nearest(x1, y1, 'right')} -> ${nearest(x2, y2, 'left')}`;
      })
      .sort();
  }, names);
}

/** Materialise every asset of the graph for one partition: "Materialize all", the partition,
 * "Launch 1 run", then the toast's link to the run. Return the run page's path. */
async function launchPartition(page, url, day) {
  await openAssetGraph(page, url);
  await page.getByRole('button', { name: /Materialize all/ }).click();
  const partitions = page.getByRole('dialog').getByRole('textbox').first();
  await partitions.fill(day);
  await partitions.press('Enter');
  await page.getByRole('button', { name: 'Launch 1 run' }).click();
  const view = page.getByRole('link', { name: 'View', exact: true });
  const runPath = await view.getAttribute('href');
  // A fresh page load: the run page without the toast over it.
  await page.goto(`${url}${runPath}`);
  return runPath;
}

/** Wait for the run page's status to be final; return it. */
async function finalRunStatus(page) {
  const status = page.getByText(/^(Success|Failure|Canceled)$/).first();
  await status.waitFor({ timeout: RUN_TIMEOUT_MS });
  return status.innerText();
}

/** The checks the run page lists ("N checks" -> "View list"), as { check, asset }. */
async function runChecks(page) {
  await page.getByText(/^\d+ checks$/).click();
  await page.getByText('View list', { exact: true }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByRole('link').first().waitFor();
  const texts = await dialog.getByRole('link').allInnerTexts();
  await dialog.getByRole('button', { name: 'Done' }).click();
  return [...new Set(texts.map((text) => text.split('\n')[0].trim()))].map((text) => {
    const [check, asset] = text.split(' on ');
    return { check, asset };
  });
}

/** One section of the run page's step list ("Succeeded", "Not executed", ...), opened. */
async function stepList(page, section) {
  const header = page.locator('[aria-controls]', {
    hasText: new RegExp(`^${section} \\(\\d+\\)$`),
  });
  const list = page.locator(`[id="${await header.getAttribute('aria-controls')}"]`);
  // The page may still be setting the sections' initial state: open until it stays open.
  for (let attempt = 0; attempt < 20; attempt += 1) {
    if ((await header.getAttribute('aria-expanded')) !== 'true') await header.click();
    await page.waitForTimeout(250);
    if ((await list.innerText()).trim()) break;
  }
  await list.evaluate((element) => element.scrollIntoView({ block: 'end' }));
  return list;
}

/** Type a filter (e.g. "type:ASSET_CHECK_EVALUATION") into the run page's event filter. */
async function filterRunEvents(page, filter) {
  const box = page.getByPlaceholder('Filter…');
  await box.fill(filter);
  await box.press('Enter');
}
