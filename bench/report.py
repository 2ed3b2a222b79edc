"""docs/bench.md and docs/bench.png from one `make bench` run.

The page has the date, the machine, the table (ours, each peer, the ratio,
the target where the issue set one), every command, and the full output of
the run; the figure has one panel per scenario with ours and each peer side
by side.  Plotting needs matplotlib, from the `bench` extra (pyproject.toml):
without it the page is written and the figure left as it was.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"

# scenario (or its start) -> the target the issue set, as text.
TARGETS = {
    "SMTP sessions/s": ">= 1.0x aiosmtpd and >= 1.0x C tcpserver + mailfront",
    "exec to greeting": "<= 1.2x python -I -S -c pass",
    "tcpserver spawn path": ">= 1.0x C (parent CPU per connection <= 1.2x C)",
    "tcpserver fork path": ">= 0.9x C (parent CPU per connection <= 1.2x C)",
}


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{platform.node()}: {platform.system()} {platform.release()} "
            f"{platform.machine()}, {os.cpu_count()} CPUs ({model}), Python "
            f"{platform.python_version()}")


def target_for(scenario: str) -> str:
    return next((text for key, text in TARGETS.items() if scenario.startswith(key)), "")


def fmt(value: float, unit: str) -> str:
    if unit in ("ms", "s"):
        return f"{value:.3g} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return f"{value:.0f} {unit}"


def rows(results: dict[str, list[dict]]) -> list[dict]:
    return [row for name in results for row in results[name] if "scenario" in row]


def markdown(results: dict[str, list[dict]], output: str, started: str, load: tuple) -> str:
    lines = ["# Benchmarks", "",
             f"Written by `make bench` (bench/run_all.py) on {started} UTC.", "",
             f"Machine: {machine()}; load average {load[0]:.2f} at the start, "
             f"{load[1]:.2f} at the end (the machine is shared: compare ratios, measured "
             "side by side in one interleaved run, not absolute figures).", "",
             "![ours and each peer, per scenario](bench.png)", "",
             "| scenario | ours | peer | ratio (ours/peer) | target | CPU per unit |",
             "|---|---|---|---|---|---|"]
    for row in rows(results):
        unit = row["unit"]
        ratio = row["ratio"]
        for peer, value in row["peers"].items():
            if isinstance(ratio, dict):
                r = ratio.get(peer)
            else:
                r = ratio
            if isinstance(ratio, dict) and r is None:
                r = row["ours"] / value if value else None
            cpu = ""
            if "cpu_ms" in row:
                cpu = (f"ours {row['cpu_ms'].get(row.get('ours_name'), 0):.2f} ms, "
                       f"{peer} {row['cpu_ms'].get(peer, 0):.2f} ms")
            elif "cpu_us" in row:
                cpu = (f"parent: ours {row['cpu_us']['ours']:.0f} us, "
                       f"C {row['cpu_us'][peer]:.0f} us")
            name = row["scenario"] + (f" ({row['ours_name']})" if "ours_name" in row else "")
            lines.append(f"| {name} | {fmt(row['ours'], unit)} | {peer}: {fmt(value, unit)} | "
                         f"{'' if r is None else f'{r:.2f}'} | {target_for(row['scenario'])} "
                         f"| {cpu} |")
    lines += ["", "## Commands", ""]
    for row in rows(results):
        lines.append(f"- {row['scenario']}: `{row['command']}`")
    lines += ["", "Each benchmark can be run alone: `python -m bench.NAME` (bench_tcprules, "
              "bench_tcpserver, bench_smtpd, bench_fork, bench_preload_memory).", "",
              "## Output of the run", "", "```", output.rstrip(), "```", ""]
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): docs/bench.png "
              "not written", file=sys.stderr)
        return False
    panels = rows(results)
    if not panels:
        return False
    columns = min(4, len(panels))
    lines = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.6 * lines),
                             squeeze=False)
    for ax, row in zip(axes.flat, panels):
        names = [row.get("ours_name", "ours")] + list(row["peers"])
        values = [row["ours"]] + list(row["peers"].values())
        colours = ["#2b6cb0"] + ["#a0aec0"] * len(row["peers"])
        bars = ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([n.replace(" + ", "\n+ ").replace(" (", "\n(") for n in names],
                           fontsize=7)
        better = "lower is better" if row["unit"] in ("ms", "s") else "higher is better"
        ax.set_title(f"{row['scenario']}\n{row['unit']}, {better}", fontsize=9)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("make bench: ours (blue) and each peer, medians of interleaved runs",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write(results: dict[str, list[dict]], output: str, started: str, load: tuple) -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "bench.md").write_text(markdown(results, output, started, load))
    plotted = plot(results, DOCS / "bench.png")
    print(f"wrote {DOCS / 'bench.md'}" + (f" and {DOCS / 'bench.png'}" if plotted else ""))


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
