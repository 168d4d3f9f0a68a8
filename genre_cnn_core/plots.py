"""Training plots, written next to the model when matplotlib is installed."""

from __future__ import annotations

from .files import atomic_write


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def save_confusion_matrix(report: dict, genres, path: str) -> None:
    """Confusion matrix of the primary genre of a held-out report as a PNG (rows: first tagged genre,
    columns: predicted)."""
    import numpy as np

    plt = _pyplot()
    matrix = np.asarray(report["confusion"])
    size = max(4.0, 0.5 * len(genres) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(genres)), genres, rotation=60, ha="right")
    axes.set_yticks(range(len(genres)), genres)
    axes.set_xlabel("predicted")
    axes.set_ylabel("tagged")
    for (row, column), value in np.ndenumerate(matrix):
        if value:
            axes.text(column, row, str(value), ha="center", va="center",
                      color="white" if value > matrix.max() / 2 else "black")
    top1 = report["top1_accuracy"]
    axes.set_title(f"held-out: primary genre {'n/a' if top1 is None else format(top1, '.0%')}, "
                   f"micro-F1 {report['micro_f1']:.2f}")
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    plt.close(figure)


def save_training_curve(history: list, path: str) -> None:
    """Training and validation loss (and validation accuracy) per epoch as a PNG."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(epochs, [h["train_loss"] for h in history], label="training loss")
    # Validation runs only every few epochs: plot the epochs that have it, with markers.
    validated = [h for h in history if "val_loss" in h]
    if validated:
        checked = [h["epoch"] for h in validated]
        axes.plot(checked, [h["val_loss"] for h in validated], marker="o", label="validation loss")
        axes.plot(checked, [h["val_accuracy"] for h in validated], marker="o", label="validation accuracy")
    axes.set_xlabel("epoch")
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    plt.close(figure)
