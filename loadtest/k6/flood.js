// k6 script for loadtest/body_flood.py: big bodies flood the router while small
// requests keep coming at a fixed rate. Every response is counted by scenario, status
// and the model that served it (x-served-model); latency by scenario.
//
// Environment (set by loadtest/body_flood.py):
//   TARGET_URL, BIG_FILE, SMALL_FILE, FLOOD_VUS, SMALL_RATE, DURATION, SUMMARY_FILE
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';

const URL = __ENV.TARGET_URL;
const BIG = open(__ENV.BIG_FILE, 'b');
const SMALL = open(__ENV.SMALL_FILE, 'b');
const DURATION = __ENV.DURATION || '10s';
const params = { headers: { 'Content-Type': 'application/json' }, timeout: '60s' };

const outcomes = new Counter('outcomes');
const smallLatency = new Trend('small_latency', true);
const bigLatency = new Trend('big_latency', true);

export const options = {
  scenarios: {
    flood: {
      executor: 'constant-vus', vus: parseInt(__ENV.FLOOD_VUS || '60', 10),
      duration: DURATION, exec: 'flood', gracefulStop: '30s',
    },
    small: {
      executor: 'constant-arrival-rate', rate: parseInt(__ENV.SMALL_RATE || '20', 10),
      timeUnit: '1s', duration: DURATION, preAllocatedVUs: 20, maxVUs: 200,
      exec: 'small', gracefulStop: '30s',
    },
  },
  summaryTrendStats: ['p(50)', 'p(99)', 'max', 'avg'],
};

function count(kind, res) {
  const served = res.headers['X-Served-Model'] || '-';
  outcomes.add(1, { kind: kind, status: String(res.status), served: served });
}

export function flood() {
  const res = http.post(URL, BIG, params);
  bigLatency.add(res.timings.duration);
  count('big', res);
}

export function small() {
  const res = http.post(URL, SMALL, params);
  smallLatency.add(res.timings.duration);
  count('small', res);
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_FILE]: JSON.stringify(data) };
}
