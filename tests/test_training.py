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


def test_function_matching_learns_from_the_teacher_alone_and_hinton_also_from_labels():
    """distill = 1 (function matching) never reads the labels: shuffled labels give the bit-identical model;
    distill < 1 (Hinton) does. Mixup draws come from the fit's seed (reproducible)."""
    import copy

    import pytest
    import torch
    from torch import nn

    from nas_theseus.data import load_mnist1d
    from nas_theseus.data.base import Split, TaskData
    from nas_theseus.errors import UserError
    from nas_theseus.training import FitConfig, fit_classifier

    data = load_mnist1d(num_samples=400)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(40, 10)).eval()
    shuffled = TaskData(data.name, Split(data.train.x, data.train.y[torch.randperm(len(data.train))]), data.val,
                        data.test, data.num_classes)
    student = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 10))

    def trained(d, rule):
        m = copy.deepcopy(student)
        fit_classifier(m, d, rule, seed=3, progress=False, teacher=teacher)
        return m.state_dict()

    fm = FitConfig(max_epochs=2, patience=5, distill=1.0, mixup=1.0, temperature=1.0)
    a, b = trained(data, fm), trained(shuffled, fm)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], v) for k, v in trained(data, fm).items())  # reproducible mixup
    hinton = FitConfig(max_epochs=2, patience=5, distill=0.5)
    c, d = trained(data, hinton), trained(shuffled, hinton)
    assert not all(torch.equal(c[k], d[k]) for k in c)
    with pytest.raises(UserError, match="need a teacher"):
        fit_classifier(copy.deepcopy(student), data, fm, progress=False)
