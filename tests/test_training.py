"""The task-training rule: early stopping keeps the best validation state, not the last."""

import torch
from torch import nn

from nas_theseus.training import FitConfig, evaluate, fit_classifier


def test_best_state_is_restored(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    report = fit_classifier(model, digits, FitConfig(max_epochs=40, patience=3, lr=3e-2, cosine=False),
                            progress=False)
    acc, loss = evaluate(model, digits.val)
    assert acc == report.best_val_accuracy and abs(loss - report.best_val_loss) < 1e-9
    assert report.val_accuracy[report.best_epoch] == report.best_val_accuracy
    assert report.epochs == len(report.val_accuracy) and report.steps > 0
    assert max(report.val_accuracy) == report.best_val_accuracy


def test_deterministic_under_a_seed(digits):
    def run():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        r = fit_classifier(m, digits, FitConfig(max_epochs=3), seed=5, progress=False)
        return r.train_loss
    assert run() == run()


def test_progress_bars_in_a_log_are_sparse_and_end_with_their_final_state(monkeypatch, capsys):
    from nas_theseus.utils.progress import progress_bar

    monkeypatch.setenv("NAS_THESEUS_PROGRESS", "1")  # captured stderr is not a terminal, as in a log file
    bar = progress_bar(total=2000, desc="steps", unit="step")
    for i in range(2000):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.4f}")  # tqdm's set_postfix would redraw on every call
    bar.close()
    err = capsys.readouterr().err
    assert err.count("\r") <= 3  # start, close (and at most one 30 s refresh), not one per update
    assert "2000/2000" in err and err.endswith("\n")
