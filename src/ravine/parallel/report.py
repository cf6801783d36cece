"""Tables and plots of parallel runs (matplotlib imported only to plot)."""

from __future__ import annotations

from pathlib import Path

from ravine.parallel.runtime import RunResult


def staleness_summary(staleness: dict[int, int]) -> str:
    """'mean 0.61, max 5' or '-' when nothing was pushed."""
    total = sum(staleness.values())
    if not total:
        return "-"
    mean = sum(int(k) * v for k, v in staleness.items()) / total
    return f"mean {mean:.2f}, max {max(int(k) for k in staleness)}"


def format_table(results: list[RunResult]) -> str:
    """A Markdown table, one row per run."""
    head = (
        "| algo | workers | shards | wall s | updates | updates/s | bytes/update | final loss "
        "| staleness | faults |"
    )
    rows = [head, "|" + "---|" * 10]
    for r in results:
        c = r.config
        shards = c["shards"] if c["algo"] in ("downpour", "easgd", "eamsgd") else "-"
        rows.append(
            f"| {c['algo']} | {c['workers']} | {shards} | {r.wall_s:.2f} | {r.updates} "
            f"| {r.updates_per_s:.0f} | {r.bytes_per_update:.0f} | {r.final_loss:.4f} "
            f"| {staleness_summary(r.staleness)} | {len(r.faults)} |"
        )
    return "\n".join(rows)


def plot_compare(results: list[RunResult], path: str | Path) -> Path:
    """Loss against wall time and against updates, one line per run, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_u) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for r in results:
        if not r.curve:
            continue
        t, u, loss = zip(*r.curve, strict=True)
        label = f"{r.config['algo']} ({r.config['workers']} workers)"
        ax_t.plot(t, loss, label=label)
        counted = [(n, v) for n, v in zip(u, loss, strict=True) if n > 0]  # log axis
        ax_u.plot(*zip(*counted, strict=True), label=label)
    ax_t.set(xlabel="wall time (s)", ylabel="evaluation loss", title="loss against wall time")
    ax_u.set(
        xlabel="updates, all workers (Hogwild!: examples; others: mini-batches)",
        ylabel="evaluation loss",
        title="against updates",
        xscale="log",
    )
    for ax in (ax_t, ax_u):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
