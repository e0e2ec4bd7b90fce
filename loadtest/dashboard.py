"""The Grafana dashboard's panels, drawn from real Prometheus query results (no Grafana).

Grafana cannot be installed from the registries this project reaches, so
``scripts/render-dashboard`` shows the same panels another honest way, in two steps:

    python -m loadtest.dashboard collect --out data.json [--seconds 60]
        (the router's virtualenv) starts ``model-router stack`` (the compose topology,
        natively), sends a bounded mixed workload through Envoy, then asks its
        Prometheus for every query of deploy/grafana/dashboards/model-router.json over
        that time (``query_range``; ``$__rate_interval`` = 20s, 4 scrape intervals).
    python -m loadtest.dashboard plot --data data.json --out docs/dashboard.png
        (a virtualenv with matplotlib) draws each panel: time series as lines with
        Grafana's legends, stat panels as their last value.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "model-router.json"
RATE_INTERVAL = "20s"
STEP_S = 5

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}
FRAUD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
# (weight, path, body, expected status): routed, native, unknown model, invalid body.
MIX = [
    (6, "/v1/chat/completions", CHAT, 200),
    (3, "/v2/models/fraud/infer", FRAUD, 200),
    (1, "/v1/chat/completions", {**CHAT, "model": "gpt-9"}, 404),
    (1, "/v1/chat/completions", {**CHAT, "messages": []}, 400),
]


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p.get("type") != "row"]


async def _traffic(url: str, until: float, workers: int) -> dict[str, int]:
    import httpx

    seen: dict[str, int] = {}
    weights = [m[0] for m in MIX]

    async def one(client: httpx.AsyncClient) -> None:
        while time.monotonic() < until:
            _, path, body, want = random.choices(MIX, weights)[0]
            resp = await client.post(path, json=body)
            key = f"{path} {resp.status_code}" + ("" if resp.status_code == want else " UNEXPECTED")
            seen[key] = seen.get(key, 0) + 1
            await asyncio.sleep(random.uniform(0.0, 0.1))

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        tasks = [asyncio.create_task(one(client), name=f"traffic-{i}") for i in range(workers)]
        await asyncio.gather(*tasks)
    return seen


async def collect(seconds: float, workers: int) -> dict[str, Any]:
    import httpx

    from extproc.dev.native_stack import NativeStack

    workdir = Path(tempfile.mkdtemp(prefix="model-router-dashboard-"))
    stack = NativeStack(ROOT, workdir)
    await stack.start()
    try:
        start = time.time()
        seen = await _traffic(stack.envoy_url, time.monotonic() + seconds, workers)
        await asyncio.sleep(2 * STEP_S)  # the last scrapes
        end = time.time()
        out: dict[str, Any] = {"start": start, "end": end, "requests": seen, "panels": []}
        async with httpx.AsyncClient(base_url=stack.prometheus_url, timeout=30) as prom:
            for panel in panels():
                targets = []
                for target in panel.get("targets", []):
                    expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                    resp = await prom.get(
                        "/api/v1/query_range",
                        params={"query": expr, "start": start, "end": end, "step": STEP_S},
                    )
                    resp.raise_for_status()
                    targets.append(
                        {
                            "expr": expr,
                            "legend": target.get("legendFormat", ""),
                            "result": resp.json()["data"]["result"],
                        }
                    )
                out["panels"].append(
                    {
                        "title": panel["title"],
                        "type": panel["type"],
                        "unit": panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
                        "targets": targets,
                    }
                )
    finally:
        await stack.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # kept (logs) only when something failed
    return out


def _legend(template: str, labels: dict[str, str]) -> str:
    text = template or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def plot(data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = data["panels"]
    cols = 3
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.1 * rows))
    start = data["start"]
    for ax, panel in zip(axes.flat, shown, strict=False):
        ax.set_title(panel["title"], fontsize=10, loc="left")
        series = [
            (_legend(t["legend"], r["metric"]), r["values"])
            for t in panel["targets"]
            for r in t["result"]
        ]
        if panel["type"] == "stat":
            last = [float(v[-1][1]) for _, v in series if v]
            text = "no data" if not last else f"{sum(last):.3g}"
            ax.text(0.5, 0.45, text, fontsize=30, ha="center", va="center")
            ax.set_axis_off()
            continue
        for name, values in series:
            xs = [float(t) - start for t, _ in values]
            ys = [float(v) if v not in ("NaN", "+Inf", "-Inf") else float("nan") for _, v in values]
            ax.plot(xs, ys, label=name[:40], linewidth=1.2)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("seconds", fontsize=7)
        ax.tick_params(labelsize=7)
        if panel["unit"]:
            ax.set_ylabel(panel["unit"], fontsize=7)
        if series:
            ax.legend(fontsize=6, loc="upper left", ncol=2)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_axis_off()
    total = sum(data["requests"].values())
    fig.suptitle(
        "model-router dashboard panels: NOT a Grafana rendering. Drawn with matplotlib from real "
        f"Prometheus query_range results of `model-router stack` ({total} requests over "
        f"{data['end'] - data['start']:.0f} s; scripts/render-dashboard)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(out, dpi=70)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--seconds", type=float, default=60.0)
    c.add_argument("--workers", type=int, default=4)
    p = sub.add_parser("plot")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.command == "collect":
        data = asyncio.run(collect(args.seconds, args.workers))
        args.out.write_text(json.dumps(data))
        unexpected = {k: v for k, v in data["requests"].items() if "UNEXPECTED" in k}
        print(json.dumps(data["requests"], indent=1))
        if unexpected:
            sys.exit(f"unexpected statuses: {unexpected}")
    else:
        plot(json.loads(args.data.read_text()), args.out)


if __name__ == "__main__":
    main()
