// k6 load script for loadtest/bench: POSTs one fixed body to one URL.
//
// Environment (set by loadtest/bench/processes.py, run_k6):
//   TARGET_URL     full URL, e.g. http://127.0.0.1:10000/v1/chat/completions
//   BODY_FILE      file whose bytes are the request body (read once, sent as-is)
//   CONTENT_TYPE   default application/json
//   MODE           warmup | fixed | max
//   DURATION       e.g. 20s (fixed and max)
//   RATE           requests/s for MODE=fixed (constant-arrival-rate)
//   VUS            virtual users for MODE=max (constant-vus) and VU pool bound for fixed
//   WARMUP_ITERS   requests for MODE=warmup (shared-iterations)
//   SUMMARY_FILE   where handleSummary writes the JSON summary
//   API_KEY        if set, sent as x-api-key (the gateway rows)
//
// Correctness: every response must be 200 (check + bench_errors counter).
// No thresholds: the harness judges the numbers, k6 only measures.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const URL = __ENV.TARGET_URL;
const BODY = open(__ENV.BODY_FILE, 'b');
const MODE = __ENV.MODE || 'max';
const DURATION = __ENV.DURATION || '5s';
const RATE = parseInt(__ENV.RATE || '500', 10);
const VUS = parseInt(__ENV.VUS || '64', 10);
const WARMUP_ITERS = parseInt(__ENV.WARMUP_ITERS || '300', 10);
const SUMMARY_FILE = __ENV.SUMMARY_FILE || 'summary.json';

const errors = new Counter('bench_errors');
const headers = { 'Content-Type': __ENV.CONTENT_TYPE || 'application/json' };
if (__ENV.API_KEY) {
  headers['x-api-key'] = __ENV.API_KEY;
}
const params = { headers, responseType: 'none' };

function scenario() {
  if (MODE === 'warmup') {
    return {
      executor: 'shared-iterations',
      vus: Math.min(8, VUS),
      iterations: WARMUP_ITERS,
      maxDuration: '30s',
      gracefulStop: '5s',
    };
  }
  if (MODE === 'fixed') {
    return {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.min(50, VUS * 2),
      maxVUs: Math.max(200, VUS * 2),
      gracefulStop: '5s',
    };
  }
  return { executor: 'constant-vus', vus: VUS, duration: DURATION, gracefulStop: '5s' };
}

export const options = {
  scenarios: { bench: scenario() },
  discardResponseBodies: true,
  thresholds: {},
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(95)', 'p(99)', 'p(99.9)', 'count'],
  // Loopback only; nothing to resolve.
  dns: { ttl: '1h', select: 'first' },
};

export default function () {
  const res = http.post(URL, BODY, params);
  const ok = check(res, { 'status is 200': (r) => r.status === 200 });
  if (!ok) {
    errors.add(1);
  }
}

export function handleSummary(data) {
  return { [SUMMARY_FILE]: JSON.stringify(data) };
}
