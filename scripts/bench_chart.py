#!/usr/bin/env python3
"""Helper of scripts/bench-netns.sh: parses the raw measurements, writes results.json and chart.svg
and prints the table. Standard library only (no matplotlib: the SVG is written by hand).

    bench_chart.py summary RUN_DIR
        One line with the figures of one configuration run (RUN_DIR = OUT/raw/runN/CONFIG),
        for the progress log.
    bench_chart.py report --out OUT --repeat N --meta KEY=VALUE ... [--smoke]
        Reads OUT/raw/run*/CONFIG/, writes OUT/results.json and OUT/chart.svg, prints the table.
        Exit status 1 if a test of a configuration delivered nothing (in any run), else 0.
    bench_chart.py sent-pps UDP_CLIENT_JSON
        The packets per second an iperf3 UDP client sent (an integer; 0 if unknown): the first
        offer of the zero-loss search.
    bench_chart.py trial RUN_DIR NAME MAX_LOSS_PCT
        One zero-loss trial (RUN_DIR/NAME.json and NAME-server.json): "SENT_PPS RECEIVED_PPS
        LOSS_PCT pass|fail|error", pass when the loss is at most MAX_LOSS_PCT.

Raw files per configuration run (written by bench-netns.sh):
    tcp1.json, tcp4.json   iperf3 -J output of the client (TCP 1 stream, 4 streams)
    udp.json               iperf3 -J output of the UDP client; udp-server.json of its server
    zl-K.json              iperf3 -J output of zero-loss trial K's client; zl-K-server.json of its server
    zero-loss.txt          one line per zero-loss trial: "K REQUESTED_PPS SENT_PPS RECEIVED_PPS
                           LOSS_PCT pass|fail|error"
    ping.txt               ping output (one "time=X ms" line per reply)
    cpu.txt                lines "before|after PID UTIME STIME" (clock ticks) of the vxtap processes
                           around the TCP single-stream test, and "clk_tck N"
    stats-a.json/-b.json   `vxtap stats --json` of both VTEPs after the tests (vxtap only)
    error.txt              why a configuration or test failed, one reason a line (if any)
"""
import json
import math
import os
import statistics
import sys

CONFIGS = ["veth", "kernel-vxlan", "vxtap-vxlan", "vxtap-geneve", "vxtap-latency", "vxtap-nooffload"]
VXTAP_ONLY = {"cpu_s_per_gb", "syscalls_per_gb"}
KERNEL = "kernel-vxlan"
UDP_PAYLOAD = 64

# key, label in the table, unit, decimals
METRICS = [
    ("tcp1_gbps", "tcp1", "Gbit/s", 2),
    ("tcp1_retrans", "tcp1 retransmits", "", 0),
    ("tcp4_gbps", "tcp4", "Gbit/s", 2),
    ("tcp4_retrans", "tcp4 retransmits", "", 0),
    ("udp_kpps", "udp64 delivered", "kpps", 1),
    ("udp_loss_pct", "udp64 loss", "%", 1),
    ("udp_zl_kpps", "udp64 zero-loss", "kpps", 1),
    ("rtt_avg_us", "rtt avg", "us", 1),
    ("rtt_p99_us", "rtt p99", "us", 1),
    ("rtt_b2b_us", "rtt avg back-to-back", "us", 1),
    ("cpu_s_per_gb", "vxtap cpu (tcp1)", "s/GB", 2),
    ("syscalls_per_gb", "vxtap syscalls (tcp1)", "k/GB", 1),
]
RTT_METRICS = {"rtt_avg_us", "rtt_p99_us", "rtt_b2b_us"}
CHART = [("tcp1_gbps", "TCP, 1 stream"), ("tcp4_gbps", "TCP, 4 streams"), ("udp_kpps", "UDP 64 B, packets/s"),
         ("udp_zl_kpps", "UDP 64 B, zero loss")]
SENDER_BOUND = 0.95  # a trial whose sender made less than this share of the rate asked is sender-bound
COLOURS = {"veth": "#8c8c8c", "kernel-vxlan": "#1f77b4", "vxtap-vxlan": "#ff7f0e", "vxtap-geneve": "#2ca02c",
           "vxtap-latency": "#9467bd", "vxtap-nooffload": "#d62728"}


def load_json(path, errors):
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        errors.append(f"{os.path.basename(path)}: unreadable JSON ({e})")
        return None
    if isinstance(data, dict) and data.get("error"):
        errors.append(f"{os.path.basename(path)}: iperf3: {data['error']}")
    return data


def tcp_figures(data):
    """(Gbit/s at the receiver, bytes received, retransmits) of an iperf3 TCP client run."""
    try:
        end = data["end"]
        rcv, snd = end["sum_received"], end["sum_sent"]
        return rcv["bits_per_second"] / 1e9, int(rcv["bytes"]), snd.get("retransmits")
    except (KeyError, TypeError):
        return None, 0, None


def udp_figures(server, client):
    """(delivered packets/s, delivered packets, loss %) at the receiver of an iperf3 UDP run."""
    for data in (server, client):  # the server's own report first, the copy in the client's next
        try:
            r = data["end"]["sum_received"]
        except (KeyError, TypeError):
            continue
        seconds = r.get("seconds") or 0
        if r.get("bytes"):
            delivered = r["bytes"] // UDP_PAYLOAD
        else:
            delivered = max(0, r.get("packets", 0) - r.get("lost_packets", 0))
        if seconds <= 0:
            continue
        return delivered / seconds, delivered, r.get("lost_percent")
    return None, 0, None


def udp_sent(client):
    """(packets sent, seconds) of an iperf3 UDP client run."""
    try:
        s = client["end"]["sum_sent"]
        return int(s["packets"]), float(s["seconds"])
    except (KeyError, TypeError, ValueError):
        return None, None


def trial_figures(run_dir, name):
    """(sent pps, received pps, loss %) of a paced UDP trial; loss = 1 - received / sent."""
    errors = []
    client = load_json(os.path.join(run_dir, f"{name}.json"), errors)
    server = load_json(os.path.join(run_dir, f"{name}-server.json"), errors)
    sent, secs = udp_sent(client)
    try:
        r = server["end"]["sum_received"]
        received, rsecs = int(r["bytes"]) // UDP_PAYLOAD, float(r["seconds"])
    except (KeyError, TypeError, ValueError):
        return None
    if not sent or not secs or not rsecs:
        return None
    return sent / secs, received / rsecs, max(0.0, 100.0 * (1 - received / sent))


def zero_loss_figures(run_dir):
    """The zero-loss search's trials, its figure (kpps sent by the best passing trial) and
    whether that trial was sender-bound; (None, False) without a passing trial."""
    path = os.path.join(run_dir, "zero-loss.txt")
    trials = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) != 6:
                    continue
                num = lambda x, cast: cast(x) if x not in ("-", "") else None
                trials.append({"trial": int(p[0]), "requested_pps": num(p[1], int), "sent_pps": num(p[2], int),
                               "received_pps": num(p[3], int), "loss_pct": num(p[4], float), "verdict": p[5]})
    passed = [t for t in trials if t["verdict"] == "pass" and t["sent_pps"]]
    if not passed:
        return trials, None, False
    best = max(passed, key=lambda t: t["sent_pps"])
    return trials, best["sent_pps"] / 1e3, best["sent_pps"] < SENDER_BOUND * best["requested_pps"]


def ping_figures(path):
    """(avg us, p99 us, replies, loss %) from ping output; p99 by nearest rank."""
    if not os.path.exists(path):
        return None, None, 0, None
    times, sent = [], None
    with open(path) as f:
        for line in f:
            if "time=" in line and "bytes from" in line:
                tok = line.split("time=", 1)[1].split()
                times.append(float(tok[0]) * (1e3 if tok[1:2] == ["ms"] else 1.0))
            elif "packets transmitted" in line:
                sent = int(line.split()[0])
    if not times:
        return None, None, 0, (100.0 if sent else None)
    s = sorted(times)
    p99 = s[max(0, math.ceil(0.99 * len(s)) - 1)]
    loss = 100.0 * (sent - len(times)) / sent if sent else None
    return statistics.fmean(times), p99, len(times), loss


def cpu_figure(path, gbytes):
    """vxtap CPU seconds (all threads of both processes, user+system) per GB received."""
    if not os.path.exists(path) or not gbytes:
        return None, None
    before, after, tck = {}, {}, 100
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 2 and p[0] == "clk_tck":
                tck = int(p[1])
            elif len(p) == 4 and p[0] in ("before", "after"):
                (before if p[0] == "before" else after)[p[1]] = int(p[2]) + int(p[3])
    if not before or set(before) != set(after):
        return None, None
    secs = sum(after[k] - before[k] for k in before) / tck
    return secs / gbytes, secs


def syscalls_figure(run_dir, gbytes, errors):
    """Thousands of packet-moving system calls of both vxtap processes per GB received in tcp1."""
    if not gbytes:
        return None
    total = 0
    for side in ("a", "b"):
        before = load_json(os.path.join(run_dir, f"tcp1-stats-before-{side}.json"), errors)
        after = load_json(os.path.join(run_dir, f"tcp1-stats-after-{side}.json"), errors)
        if not before or not after:
            return None
        for k in ("rx_syscalls", "tx_syscalls"):
            if k not in after or k not in before:
                return None
            total += after[k] - before[k]
    return total / gbytes / 1e3


def parse_run(run_dir):
    """Figures of one configuration run, the list of problems and which tests delivered traffic."""
    errors = []
    if os.path.exists(os.path.join(run_dir, "error.txt")):
        with open(os.path.join(run_dir, "error.txt")) as f:
            errors += [l.strip() for l in f if l.strip()]
    fig, moved = {}, {}
    t1 = load_json(os.path.join(run_dir, "tcp1.json"), errors)
    fig["tcp1_gbps"], tcp1_bytes, fig["tcp1_retrans"] = tcp_figures(t1)
    fig["tcp1_bytes"] = tcp1_bytes
    moved["tcp1"] = tcp1_bytes > 0
    t4 = load_json(os.path.join(run_dir, "tcp4.json"), errors)
    fig["tcp4_gbps"], tcp4_bytes, fig["tcp4_retrans"] = tcp_figures(t4)
    fig["tcp4_bytes"] = tcp4_bytes
    moved["tcp4"] = tcp4_bytes > 0
    us = load_json(os.path.join(run_dir, "udp-server.json"), errors)
    uc = load_json(os.path.join(run_dir, "udp.json"), errors)
    pps, delivered, fig["udp_loss_pct"] = udp_figures(us, uc)
    fig["udp_kpps"] = pps / 1e3 if pps is not None else None
    fig["udp_delivered_packets"] = delivered
    moved["udp"] = delivered > 0
    sent, secs = udp_sent(uc)
    fig["udp_sent_kpps"] = sent / secs / 1e3 if sent and secs else None
    trials, fig["udp_zl_kpps"], fig["udp_zl_sender_bound"] = zero_loss_figures(run_dir)
    fig["udp_zl_trials"] = trials
    if trials:
        moved["udp_zero_loss"] = any(t["received_pps"] for t in trials)
    fig["rtt_avg_us"], fig["rtt_p99_us"], replies, fig["ping_loss_pct"] = ping_figures(os.path.join(run_dir, "ping.txt"))
    fig["ping_replies"] = replies
    moved["ping"] = replies > 0
    fig["rtt_b2b_us"], _, replies_b2b, _ = ping_figures(os.path.join(run_dir, "ping-b2b.txt"))
    if os.path.exists(os.path.join(run_dir, "ping-b2b.txt")):
        moved["ping_b2b"] = replies_b2b > 0
    fig["cpu_s_per_gb"], fig["vxtap_cpu_s"] = cpu_figure(os.path.join(run_dir, "cpu.txt"), tcp1_bytes / 1e9)
    fig["syscalls_per_gb"] = syscalls_figure(run_dir, tcp1_bytes / 1e9, errors)
    try:
        fig["tcp_congestion"] = t1["end"]["sender_tcp_congestion"]
    except (KeyError, TypeError):
        fig["tcp_congestion"] = None
    stats = {}
    for side in ("a", "b"):
        s = load_json(os.path.join(run_dir, f"stats-{side}.json"), errors)
        if s is not None:
            stats[side] = s
    return fig, errors, moved, stats


def fmt(v, decimals):
    if v is None:
        return "-"
    if decimals == 0:
        return str(int(round(v)))
    return f"{v:.{decimals}f}"


def ratio(v, k):
    if v is None or k is None or k == 0:
        return None
    return v / k


def cmd_summary(run_dir):
    fig, errors, moved, _ = parse_run(run_dir)
    parts = []
    for key, label, unit, dec in METRICS:
        if fig.get(key) is not None:
            parts.append(f"{label} {fmt(fig[key], dec)}{(' ' + unit) if unit else ''}")
    if fig.get("udp_zl_sender_bound"):
        parts.append("zero-loss sender-bound")
    line = "; ".join(parts) or "no figures"
    if not all(moved.values()):
        line += "  [NOTHING DELIVERED: " + ", ".join(k for k, v in moved.items() if not v) + "]"
    print(line)
    for e in errors:
        print(f"  problem: {e}")


def nice_step(top):
    for step in (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 500, 1000):
        if top / step <= 8:
            return step
    return 10 ** math.ceil(math.log10(top / 8))


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chart_svg(medians, configs, subtitle):
    """Grouped bars: per chart metric one group, per configuration one bar, kernel-vxlan = 1.0."""
    W, H = 820, 460
    left, right, top, bottom = 80, 190, 60, 70
    pw, ph = W - left - right, H - top - bottom
    norm = {}
    for key, _ in CHART:
        k = medians.get(KERNEL, {}).get(key)
        for c in configs:
            norm[(key, c)] = ratio(medians.get(c, {}).get(key), k)
    ymax = max([1.0] + [v for v in norm.values() if v is not None]) * 1.12
    step = nice_step(ymax)
    ymax = math.ceil(ymax / step) * step
    y = lambda v: top + ph - v / ymax * ph
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{left + pw / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
           'Throughput relative to the kernel VXLAN device (kernel-vxlan = 1.0)</text>',
           f'<text x="{left + pw / 2}" y="42" text-anchor="middle" fill="#555">{esc(subtitle)}</text>']
    # grid and y axis
    v = 0.0
    while v <= ymax + 1e-9:
        yy = y(v)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    out.append(f'<line x1="{left}" y1="{y(1.0):.1f}" x2="{left + pw}" y2="{y(1.0):.1f}" stroke="#1f77b4" '
               'stroke-dasharray="5,4"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text transform="translate(22,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
               'ratio to kernel-vxlan (higher is better)</text>')
    out.append(f'<text x="{left + pw / 2}" y="{H - 18}" text-anchor="middle">test (median figure of each configuration)</text>')
    # bars
    gw = pw / len(CHART)
    bw = gw * 0.8 / len(configs)
    for gi, (key, label) in enumerate(CHART):
        gx = left + gi * gw + gw * 0.1
        for ci, c in enumerate(configs):
            x = gx + ci * bw
            r = norm[(key, c)]
            if r is None:
                out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph - 4}" text-anchor="middle" font-size="10">n/a</text>')
                continue
            yy = y(r)
            out.append(f'<rect x="{x + 1:.1f}" y="{yy:.1f}" width="{bw - 2:.1f}" height="{top + ph - yy:.1f}" '
                       f'fill="{COLOURS.get(c, "#444")}"><title>{esc(c)} {esc(label)}: {r:.3f}x</title></rect>')
            txt = f"{r:.3f}" if 0 < r < 0.01 else f"{r:.2f}"
            out.append(f'<text x="{x + bw / 2:.1f}" y="{yy - 4:.1f}" text-anchor="middle" font-size="10">{txt}</text>')
        out.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + ph + 20}" text-anchor="middle">{esc(label)}</text>')
    # legend
    lx, ly = left + pw + 20, top + 10
    out.append(f'<text x="{lx}" y="{ly}" font-weight="bold">configuration</text>')
    for i, c in enumerate(configs):
        yy = ly + 14 + i * 22
        out.append(f'<rect x="{lx}" y="{yy}" width="14" height="14" fill="{COLOURS.get(c, "#444")}"/>')
        out.append(f'<text x="{lx + 20}" y="{yy + 11}">{esc(c)}</text>')
    yy = ly + 14 + len(configs) * 22 + 6
    out.append(f'<line x1="{lx}" y1="{yy}" x2="{lx + 14}" y2="{yy}" stroke="#1f77b4" stroke-dasharray="5,4"/>')
    out.append(f'<text x="{lx + 20}" y="{yy + 4}">kernel-vxlan = 1.0</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def table(medians, configs, repeat, sender_bound=()):
    kern = medians.get(KERNEL, {})
    rows = [["figure"] + configs]
    for key, label, unit, dec in METRICS:
        row = [f"{label} {unit}".strip()]
        for c in configs:
            v = medians.get(c, {}).get(key)
            if key in VXTAP_ONLY and c in ("veth", KERNEL):
                row.append("-")
                continue
            cell = fmt(v, dec)
            if key == "udp_zl_kpps" and v is not None and c in sender_bound:
                cell += "^"
            r = ratio(v, kern.get(key))
            if v is not None and key in RTT_METRICS and kern.get(key) is not None:
                cell += f" ({r:.2f}x, {v - kern[key]:+.1f}us)" if r is not None else f" ({v - kern[key]:+.1f}us)"
            elif r is not None:
                cell += f" ({r:.3f}x)" if 0 < r < 0.01 else f" ({r:.2f}x)"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "  ".join(s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(r, widths)))
    out = [line(rows[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in rows[1:]]
    return "\n".join(out)


def cmd_report(argv):
    out_dir, repeat, smoke, meta = None, 1, False, {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--out":
            out_dir, i = argv[i + 1], i + 2
        elif a == "--repeat":
            repeat, i = int(argv[i + 1]), i + 2
        elif a == "--smoke":
            smoke, i = True, i + 1
        elif a == "--meta":
            k, _, v = argv[i + 1].partition("=")
            meta[k] = v
            i += 2
        else:
            sys.exit(f"bench_chart.py report: unknown argument {a}")
    raw = os.path.join(out_dir, "raw")
    runs, failures = [], []
    for n in range(1, repeat + 1):
        for c in CONFIGS:
            d = os.path.join(raw, f"run{n}", c)
            if not os.path.isdir(d):
                continue
            fig, errors, moved, stats = parse_run(d)
            runs.append({"run": n, "config": c, "figures": fig, "delivered": moved, "problems": errors,
                         "vxtap_stats": stats, "raw_dir": os.path.relpath(d, out_dir)})
            for test, ok in moved.items():
                if not ok:
                    failures.append(f"run {n}, {c}: {test} delivered nothing")
    configs = [c for c in CONFIGS if any(r["config"] == c for r in runs)]
    sender_bound = [c for c in configs if any(r["config"] == c and r["figures"].get("udp_zl_sender_bound") for r in runs)]
    medians = {}
    for c in configs:
        medians[c] = {}
        for key in list(METRICS_KEYS) + ["ping_loss_pct", "vxtap_cpu_s", "tcp1_bytes", "udp_sent_kpps"]:
            vals = [r["figures"].get(key) for r in runs if r["config"] == c]
            vals = [v for v in vals if v is not None]
            medians[c][key] = statistics.median(vals) if vals else None
    ratios = {c: {k: ratio(medians[c].get(k), medians.get(KERNEL, {}).get(k)) for k in METRICS_KEYS} for c in configs}
    rtt_delta = {c: {k: (medians[c][k] - medians[KERNEL][k]) if KERNEL in medians and medians[c].get(k) is not None
                     and medians[KERNEL].get(k) is not None else None for k in sorted(RTT_METRICS)} for c in configs}
    result = {
        "meta": meta,
        "configs": configs,
        "metrics": [{"key": k, "label": l, "unit": u} for k, l, u, _ in METRICS],
        "median": medians,
        "ratio_to_kernel_vxlan": ratios,
        "rtt_delta_to_kernel_vxlan_us": rtt_delta,
        "zero_loss_sender_bound": sender_bound,
        "ok": not failures,
        "failures": failures,
        "runs": runs,
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    subtitle = (f"median of {repeat} run(s), iperf3 {meta.get('duration_s', '?')} s, kernel {meta.get('kernel', '?')}, "
                f"{meta.get('nproc', '?')} CPUs, vxtap {meta.get('git_head', '?')}")
    with open(os.path.join(out_dir, "chart.svg"), "w") as f:
        f.write(chart_svg(medians, configs, subtitle))
    print()
    print(f"vxtap netns benchmark{' (smoke)' if smoke else ''}: median of {repeat} run(s), "
          f"iperf3 {meta.get('duration_s', '?')} s per test, {meta.get('pings', '?')} pings; "
          f"ratio (x) to kernel-vxlan in brackets")
    print(table(medians, configs, repeat, sender_bound))
    print(f"cpu = user+system seconds of both vxtap processes during the TCP single-stream test per 1e9 bytes received;"
          f" syscalls = their packet-moving system calls (TAP reads/writes, socket sends/receives) in that test, per GB;"
          f" udp64 = 64-byte payloads at unlimited rate, delivered at the receiver;"
          f" udp64 zero-loss = the highest paced rate losing <= {meta.get('zero_loss_max_loss_pct', '?')} %"
          f" (binary search, at most {meta.get('zero_loss_trials', '?')} trials of {meta.get('zero_loss_seconds', '?')} s;"
          f" ^ = sender-bound: the tunnel carried all that iperf3 could send)")
    cc = sorted({r["figures"].get("tcp_congestion") for r in runs} - {None})
    if cc:
        print(f"TCP congestion control (iperf3 sender): {', '.join(cc)}")
    if meta.get("loadavg_start"):
        print(f"load average (1/5/15 min) at start {meta['loadavg_start']}, at end {meta.get('loadavg_end', '?')}; "
              f"{meta.get('nproc', '?')} CPUs")
    print(f"results: {os.path.join(out_dir, 'results.json')}  chart: {os.path.join(out_dir, 'chart.svg')}")
    problems = [(r["run"], r["config"], p) for r in runs for p in r["problems"]]
    for n, c, p in problems:
        print(f"problem: run {n}, {c}: {p}")
    if failures:
        for fl in failures:
            print(f"FAIL: {fl}")
        return 1
    return 0


METRICS_KEYS = [m[0] for m in METRICS]


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "summary":
        cmd_summary(sys.argv[2])
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "sent-pps":
        sent, secs = udp_sent(load_json(sys.argv[2], []))
        print(int(sent / secs) if sent and secs else 0)
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "trial":
        t = trial_figures(sys.argv[2], sys.argv[3])
        if t is None:
            print("0 0 - error")
        else:
            sent, recv, loss = t
            print(f"{int(sent)} {int(recv)} {loss:.3f} {'pass' if loss <= float(sys.argv[4]) else 'fail'}")
        return 0
    if len(sys.argv) >= 2 and sys.argv[1] == "report":
        return cmd_report(sys.argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
