"""Loss and accuracy curves by epoch, as a PNG beside the checkpoint."""

from __future__ import annotations

from pathlib import Path

from edgecls.fileio import atomic_path


def plot_curves(history: list[dict], title: str, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split, markersize=3)
        ax_acc.plot(epochs, [100 * h[f"{split}_acc"] for h in history], style, label=split, markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{title}: accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
