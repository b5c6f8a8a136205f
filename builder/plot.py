"""loss_curve.png: training loss per step for every seed, validation points, and the 600 s training mark."""

from __future__ import annotations

import io

from builder.runs import MAX_TRAIN_SECONDS, SeedRun


def loss_curve_png(runs: list[SeedRun], title: str) -> bytes:
    """PNG bytes; deterministic for the same runs (no timestamps or version strings in the metadata)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    max_step = 1
    for i, r in enumerate(sorted(runs, key=lambda r: r.seed)):
        c = colors[i % len(colors)]
        if r.train_curve:
            xs, ys = zip(*r.train_curve)
            ax.plot(xs, ys, color=c, linewidth=1.2, label=f"seed {r.seed} train loss")
            max_step = max(max_step, max(xs))
        if r.val_curve:
            vx = [v[0] for v in r.val_curve]
            vy = [v[1] for v in r.val_curve]
            ax.scatter(vx, vy, color=c, marker="o", s=22, zorder=3, edgecolors="black", linewidths=0.5, label=f"seed {r.seed} val loss")
            max_step = max(max_step, max(vx))
    step_ms = [r.step_ms for r in runs if r.step_ms]
    if step_ms:
        mark = MAX_TRAIN_SECONDS * 1000.0 / (sum(step_ms) / len(step_ms))
        if mark <= max_step * 1.05:
            ax.axvline(mark, color="black", linestyle="--", linewidth=1.0, label=f"600 s of training (step ~{mark:.0f})")
        else:
            ax.text(0.99, 0.97, f"600 s of training would be at step ~{mark:,.0f} (beyond this run)", transform=ax.transAxes,
                    ha="right", va="top", fontsize=8, color="black")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right" if not step_ms else "center right")
    fig.tight_layout()
    buf = io.BytesIO()
    # Fixed metadata keeps the file byte-identical across builds (the default records the matplotlib version).
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
