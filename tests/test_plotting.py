"""Learning curves: files written, best epoch, the overfitting warning."""

import pytest

from trainwell.plotting import plot_learning_curves

OVERFITTING = {
    "train_loss": [1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12],
    "eval_loss": [1.1, 0.8, 0.6, 0.65, 0.7, 0.75, 0.8],  # best at epoch 3, then +33%
    "train_acc": [0.5, 0.7, 0.8, 0.86, 0.9, 0.94, 0.97],
    "eval_acc": [0.45, 0.65, 0.75, 0.74, 0.73, 0.72, 0.71],
}
HEALTHY = {
    "train_loss": [1.0, 0.6, 0.4, 0.3, 0.25],
    "eval_loss": [1.05, 0.65, 0.45, 0.36, 0.37],  # best at 4, last only 3% above
}


def test_png_written(tmp_path):
    path = tmp_path / "curves.png"
    result = plot_learning_curves(OVERFITTING, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    assert result["path"] == str(path)


def test_svg_and_pdf_written_in_new_directories(tmp_path):
    svg = tmp_path / "run" / "plots" / "curves.svg"
    plot_learning_curves(HEALTHY, svg)
    assert "<svg" in svg.read_text()
    pdf = tmp_path / "curves.pdf"
    plot_learning_curves(HEALTHY, pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_overfitting_is_flagged_on_the_plot(tmp_path):
    path = tmp_path / "curves.svg"
    result = plot_learning_curves(OVERFITTING, path)
    assert result["best_epoch"] == 3
    assert result["overfitting"] is True
    assert result["overfitting_since"] == 3
    text = path.read_text()
    assert "Warning: possible overfitting (validation loss rising since epoch 3)" in text
    assert "best epoch 3" in text
    assert "accuracy (%)" in text


def test_healthy_run_has_no_warning(tmp_path):
    path = tmp_path / "curves.svg"
    result = plot_learning_curves(HEALTHY, path)
    assert result == {
        "path": str(path),
        "best_epoch": 4,
        "overfitting": False,
        "overfitting_since": None,
    }
    text = path.read_text()
    assert "possible overfitting" not in text
    assert "best epoch 4" in text
    assert "accuracy" not in text  # no accuracy panel without accuracies


def test_val_rising_while_train_also_rises_is_not_overfitting(tmp_path):
    history = {"train_loss": [1.0, 0.5, 0.8], "eval_loss": [1.0, 0.5, 0.9]}
    result = plot_learning_curves(history, tmp_path / "c.svg")
    assert result["best_epoch"] == 2 and result["overfitting"] is False


def test_train_only_history(tmp_path):
    path = tmp_path / "curves.svg"
    result = plot_learning_curves({"train_loss": [0.9]}, path)
    assert result["best_epoch"] is None and result["overfitting"] is False
    assert "best epoch" not in path.read_text()


@pytest.mark.parametrize("name", ["curves.jpg", "curves", "curves.png.txt"])
def test_bad_suffix_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf"):
        plot_learning_curves(HEALTHY, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_bad_histories_are_refused(tmp_path):
    with pytest.raises(ValueError, match="train_loss"):
        plot_learning_curves({"train_loss": []}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="eval_loss.*2 epochs"):
        plot_learning_curves({"train_loss": [1, 0.5, 0.4], "eval_loss": [1, 0.6]}, tmp_path / "c.png")


def test_leaves_the_global_backend_and_rc_alone(tmp_path):
    import matplotlib

    backend, fonttype = matplotlib.get_backend(), matplotlib.rcParams["svg.fonttype"]
    plot_learning_curves(HEALTHY, tmp_path / "c.png")
    assert matplotlib.get_backend() == backend
    assert matplotlib.rcParams["svg.fonttype"] == fonttype
