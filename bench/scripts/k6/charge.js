// A k6 scenario for gridlb: EV charging sessions at a ramping arrival rate (open model, so a
// slow proxy cannot slow the demand down), with thresholds on latency and refusals.
//
//   TARGET=http://127.0.0.1:8080/charge PEAK_RATE=200 k6 run bench/scripts/k6/charge.js
//
// bench/scripts/k6/run starts substations and gridlb, runs this, and stops them.
import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';

const TARGET = __ENV.TARGET || 'http://127.0.0.1:8080/charge';
const PEAK = Number(__ENV.PEAK_RATE || 200);
// Charger powers (kW) and how common each is, as in ev-demand.
const POWERS = [[3.7, 0.15], [7.4, 0.25], [11, 0.30], [22, 0.15], [50, 0.10], [150, 0.05]];

// Share of sessions the proxy (or every substation it tried) refused for lack of room.
const refusals = new Rate('refusals');

export const options = {
  scenarios: {
    rush: {
      executor: 'ramping-arrival-rate',
      startRate: Math.max(1, Math.round(PEAK / 10)),
      timeUnit: '1s',
      preAllocatedVUs: 50,
      maxVUs: 400,
      stages: [
        { target: PEAK, duration: '10s' }, // morning ramp
        { target: PEAK, duration: '10s' }, // rush hour
        { target: Math.max(1, Math.round(PEAK / 10)), duration: '5s' }, // easing off
      ],
    },
  },
  thresholds: {
    // Answered sessions: p99 under 25 ms through the proxy on loopback.
    'http_req_duration{expected_response:true}': ['p(99)<25'],
    // Fewer than 1 % of sessions refused: the grid is sized to take this demand.
    refusals: ['rate<0.01'],
    // Every answer is a 201 naming its substation, or a 503.
    checks: ['rate>0.999'],
  },
};

function power() {
  let u = Math.random();
  for (const [kw, weight] of POWERS) {
    if (u <= weight) return kw;
    u -= weight;
  }
  return POWERS[POWERS.length - 1][0];
}

export default function () {
  const kw = power();
  const body = JSON.stringify({ vehicle_id: `ev-${__VU}-${__ITER}`, power_kw: kw, duration_s: 1800 });
  const res = http.post(TARGET, body, {
    headers: { 'content-type': 'application/json', 'x-charge-kw': String(kw) },
    responseCallback: http.expectedStatuses(201),
  });
  refusals.add(res.status === 503);
  check(res, {
    'accepted or refused': (r) => r.status === 201 || r.status === 503,
    'an accepted session names its substation': (r) =>
      r.status !== 201 || (r.headers['X-Gridlb-Substation'] || '') !== '',
  });
}
