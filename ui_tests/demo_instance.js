// A fresh demo instance for the UI test: its own DAGSTER_HOME, SQLite inventory and demo files in
// a temporary folder, a few days already materialised, and `dagster dev` (webserver and daemon)
// serving it on 127.0.0.1.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const PROJECT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VENV_BIN = path.join(PROJECT, '.venv', 'bin');
const SERVER_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 10_000;

/** Run a command to its end; resolve with its stdout, reject with its output's tail. */
function run(command, args, options) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${path.basename(command)} exited with ${code}:\n${tail(stderr)}`));
    });
  });
}

function tail(text, lines = 40) {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** `run`, naming the instance folder when it fails. */
async function runIn(dir, ...args) {
  try {
    return await run(...args);
  } catch (error) {
    error.message = `${error.message}\n(instance folder ${dir})`;
    throw error;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const inventoryFile = (dir) => path.join(dir, 'inventory.sqlite');

const SQLITE_SCRIPT = `import sqlite3, sys
with sqlite3.connect(sys.argv[1]) as connection:
    connection.executescript(sys.argv[2])`;

/** The environment of every process of the instance: nothing from the caller's ASN_PIPELINE_*. */
function instanceEnvironment(dir) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('ASN_PIPELINE_')),
  );
  const demo = path.join(dir, 'demo');
  return {
    ...env,
    DAGSTER_HOME: path.join(dir, 'dagster_home'),
    ASN_PIPELINE_DB_URL: `sqlite:///${inventoryFile(dir)}`,
    ASN_PIPELINE_LANDING_DIR: path.join(demo, 'landing'),
    ASN_PIPELINE_MAXMIND_ASN_DB: path.join(demo, 'demo-asn.mmdb'),
    ASN_PIPELINE_MAXMIND_CITY_DB: path.join(demo, 'demo-city.mmdb'),
    ASN_PIPELINE_CYMRU: 'off',
  };
}

/**
 * Prepare the instance (demo files, `materialise` days run through the daily job) and start
 * `dagster dev` on a free port; resolve once its code location has loaded.
 */
export async function startDemoInstance({ materialise = 2 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asn-pipeline-ui-'));
  const env = instanceEnvironment(dir);
  const inventoryPath = inventoryFile(dir);
  fs.mkdirSync(env.DAGSTER_HOME);
  fs.copyFileSync(
    path.join(PROJECT, 'dagster_home', 'dagster.yaml'),
    path.join(env.DAGSTER_HOME, 'dagster.yaml'),
  );
  const prepare = [path.join(PROJECT, 'ui_tests', 'prepare_instance.py'), path.join(dir, 'demo')];
  const prepared = await runIn(
    dir,
    path.join(VENV_BIN, 'python'),
    [...prepare, '--days', String(materialise)],
    { cwd: PROJECT, env },
  );
  const demo = JSON.parse(prepared.trim().split('\n').at(-1));
  env.ASN_PIPELINE_START_DATE = demo.start_date;

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logPath = path.join(dir, 'dagster-dev.log');
  const log = fs.openSync(logPath, 'w');
  // A process group of its own, so that stopping it stops the webserver, daemon and code server.
  const server = spawn(
    path.join(VENV_BIN, 'dagster'),
    ['dev', '-h', '127.0.0.1', '-p', String(port), '-w', path.join(PROJECT, 'workspace.yaml')],
    { cwd: PROJECT, env, detached: true, stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  const killGroup = () => {
    try {
      process.kill(-server.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  // Whatever ends the test, dagster dev does not outlive it.
  const onSignal = (signal) => {
    killGroup();
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(128 + os.constants.signals[signal]);
  };
  process.on('exit', killGroup);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(signal, onSignal);

  const instance = {
    dir,
    env,
    url,
    demo,
    logTail: () => tail(fs.readFileSync(logPath, 'utf8')),
    graphql: (query, variables = {}) => graphql(url, query, variables),
    /** Run an SQL script in the inventory (SQLite) with Python's sqlite3. */
    sqlite: (script) =>
      runIn(dir, path.join(VENV_BIN, 'python'), ['-c', SQLITE_SCRIPT, inventoryPath, script], {
        cwd: PROJECT,
        env,
      }),
    /** Stop `dagster dev` (Ctrl-C, then SIGKILL after a grace period). */
    async stop() {
      if (server.exitCode === null && server.signalCode === null) {
        const exited = new Promise((resolve) => server.once('exit', resolve));
        try {
          process.kill(-server.pid, 'SIGINT');
        } catch {
          // already gone
        }
        await Promise.race([exited, sleep(STOP_GRACE_MS)]);
      }
      killGroup();
      process.off('exit', killGroup);
      for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.off(signal, onSignal);
    },
    /** Remove the temporary folder. */
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
  try {
    await waitForCodeLocation(instance, server);
  } catch (error) {
    await instance.stop();
    error.message += `\n--- dagster dev (${logPath}) ---\n${instance.logTail()}`;
    throw error;
  }
  return instance;
}

async function graphql(url, query, variables) {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`GraphQL: ${JSON.stringify(body.errors)}`);
  return body.data;
}

const LOCATION_STATUS = `{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}`;

/** Wait for the webserver to answer and the code location to load; fail on a load error. */
async function waitForCodeLocation(instance, server) {
  const deadline = Date.now() + SERVER_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`dagster dev exited with ${server.exitCode}`);
    let entries = [];
    try {
      entries = (await instance.graphql(LOCATION_STATUS)).workspaceOrError.locationEntries ?? [];
    } catch {
      // not answering yet
    }
    const failed = entries.find((e) => e.locationOrLoadError?.__typename === 'PythonError');
    if (failed) {
      const { message } = failed.locationOrLoadError;
      throw new Error(`code location ${failed.name} failed to load: ${message}`);
    }
    if (entries.length > 0 && entries.every((e) => e.loadStatus === 'LOADED')) return;
    await sleep(500);
  }
  const seconds = SERVER_TIMEOUT_MS / 1000;
  throw new Error(`dagster dev did not load the code location within ${seconds} s`);
}
