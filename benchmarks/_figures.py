"""The one registry of inline figures: each number the docs' prose quotes, computed from its results file.

``benchmarks/render_docs.py`` writes ``<!-- fig:NAME COMMIT -->VALUE<!-- /fig -->`` from ``FIGURES[NAME]``; a
figure's function reads only the JSON a benchmark wrote, so a re-run changes the prose with the table. A
function that meets a record it was not written for (another trial at the start, a missing run) raises rather
than quote a wrong number. Standard library only.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


@dataclass(frozen=True)
class Figure:
    source: str  # the results file's name, without .json
    value: Callable[[dict], str]


class Reading(dict):
    """A record's runs that remember which of them a figure read: the figure names those runs' commits."""

    def __init__(self, runs: dict):
        super().__init__(runs)
        self.read: list[str] = []

    def __getitem__(self, key: str):
        self.read.append(key)
        return super().__getitem__(key)


FIGURES: dict[str, Figure] = {}


def figure(name: str, source: str):
    """Register the function that computes figure ``name`` from ``results/SOURCE.json``."""
    def register(fn: Callable[[dict], str]) -> Callable[[dict], str]:
        assert name not in FIGURES, name
        FIGURES[name] = Figure(source, fn)
        return fn
    return register


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def times(x: float) -> str:
    return f"{x:.2f}×"


def span(values: list[float], fmt: Callable[[float], str], unit: str = "") -> str:
    """``lo–hi`` as the prose writes a range (one value when they round alike)."""
    lo, hi = fmt(min(values)), fmt(max(values))
    return (lo if lo == hi else f"{lo}–{hi}") + unit


def times_span(values: list[float]) -> str:
    return span(values, lambda x: f"{x:.2f}", "×")


def fewest_flops_then_accuracy(record: dict) -> dict:
    """A deploy-front record's cheapest point within a point of the guide, ties in FLOPs broken by the best
    validation accuracy. Records stored before that tie-break took the first trial: among their stored points,
    a point at the same FLOPs with higher accuracy replaces it; what the points do not hold (its trial, test
    accuracy, method, candidate) is then None."""
    c = record["cheapest_within_1_point"]
    if c is None:
        return c
    flops = c["flops_x"] * record["guide"]["flops"]
    tied = [p for p in record["points"] if abs(p[1] - flops) < 0.5 and p[0] > c["accuracy"]]
    if not tied:
        return c
    acc, _, lat = max(tied)
    return {"trial": None, "flops_x": c["flops_x"], "latency_x": lat, "accuracy": acc, "test_accuracy": None,
            "method": None, "candidate": None}


# --- the deployer's study (deploy_front.json) ---
NOT, KD, MIXED = "deploy (NoT)", "deploy, KD only", "deploy, NoT or KD per trial"
SEEDS = (0, 1, 2)


def _run(d: dict, study: str, seed: int) -> dict:
    return d["runs"][f"{study} / seed {seed}"]


def _start(d: dict, study: str, seed: int) -> dict:
    """The enqueued start (trial 0): the stored cheapest point, which it is on these records."""
    c = _run(d, study, seed)["cheapest_within_1_point"]
    if c["trial"] not in (0, 1) or c["flops_x"] > 0.45:  # the mixed study's seed 0 ran the start as trial 1
        raise ValueError(f"{study} / seed {seed}: the stored cheapest point is not the enqueued start")
    return c


def _per_seed(fn: Callable[[int], str]) -> str:
    return " / ".join(fn(s) for s in SEEDS)


figure("deploy_front.guide_val", "deploy_front")(
    lambda d: pct(_run(d, NOT, 0)["guide"]["accuracy"]))
figure("deploy_front.start_flops", "deploy_front")(
    lambda d: times_span([_start(d, NOT, s)["flops_x"] for s in SEEDS]))
figure("deploy_front.start_latency", "deploy_front")(
    lambda d: times_span([_start(d, NOT, s)["latency_x"] for s in SEEDS]))
figure("deploy_front.start_val_per_seed", "deploy_front")(
    lambda d: _per_seed(lambda s: pct(_start(d, NOT, s)["accuracy"])))
figure("deploy_front.start_test_per_seed", "deploy_front")(
    lambda d: _per_seed(lambda s: pct(_start(d, NOT, s)["test_accuracy"])))
figure("deploy_front.seed0_best", "deploy_front")(
    lambda d: (lambda b, g: f"trial {b['trial']}, {pct(b['accuracy'])} % at {times(b['flops'] / g)} the FLOPs and "
               f"{times(b['latency_x'])} the latency")(_run(d, NOT, 0)["best"], _run(d, NOT, 0)["guide"]["flops"]))


@figure("deploy_front.seed2_tie", "deploy_front")
def _seed2_tie(d: dict) -> str:
    r = _run(d, NOT, 2)
    c, win = fewest_flops_then_accuracy(r), [w for w in r["deploy_wins"] if w["trial"] != 0]
    if c["trial"] is not None or len(win) != 1:
        raise ValueError("seed 2's stored cheapest point has no better tie")
    return (f"trial {win[0]['trial']}: {times(c['flops_x'])} the FLOPs, {times(c['latency_x'])} the latency, "
            f"{pct(c['accuracy'])} % validation")


figure("deploy_front.kd_start_val_per_seed", "deploy_front")(
    lambda d: _per_seed(lambda s: pct(_start(d, KD, s)["accuracy"])))
figure("deploy_front.kd_best_per_seed", "deploy_front")(
    lambda d: _per_seed(lambda s: pct(_run(d, KD, s)["best"]["accuracy"])))
figure("deploy_front.kd_best_flops_per_seed", "deploy_front")(
    lambda d: _per_seed(lambda s: times(_run(d, KD, s)["best"]["flops"] / _run(d, KD, s)["guide"]["flops"])))
figure("deploy_front.not_best_per_seed", "deploy_front")(
    lambda d: _per_seed(lambda s: pct(_run(d, NOT, s)["best"]["accuracy"])))
figure("deploy_front.mixed_best_per_seed", "deploy_front")(
    lambda d: _per_seed(lambda s: pct(_run(d, MIXED, s)["best"]["accuracy"])))
for _study, _slug in ((NOT, "not"), (KD, "kd"), (MIXED, "mixed")):
    figure(f"deploy_front.hv_median_{_slug}", "deploy_front")(
        lambda d, st=_study: f"{statistics.median(_run(d, st, s)['hypervolume'] for s in SEEDS):.4g}")
    figure(f"deploy_front.hv_per_seed_{_slug}", "deploy_front")(
        lambda d, st=_study: _per_seed(lambda s: f"{_run(d, st, s)['hypervolume']:.4g}"))
figure("deploy_front.kd_hv_higher_seeds", "deploy_front")(
    lambda d: f"{sum(_run(d, KD, s)['hypervolume'] > _run(d, NOT, s)['hypervolume'] for s in SEEDS)} of {len(SEEDS)}")
figure("deploy_front.kd_best_ahead_seeds", "deploy_front")(
    lambda d: f"{sum(_run(d, KD, s)['best']['accuracy'] > _run(d, NOT, s)['best']['accuracy'] for s in SEEDS)} "
              f"of {len(SEEDS)}")


# --- NoT on MNIST-1D (conversion_mnist1d.json): each width's rules as chosen on validation (the table's notes),
# and the runs every width has ---
CONV_RUNS = {256: {"not": "not-ft1e-3", "kd": "kd-fm-lr0.003", "scratch": "scratch-lr0.003"},
             64: {"not": "not-ft3e-3", "kd": "kd-fm-lr0.003", "scratch": "scratch-lr0.01"}}


def _conv(d: dict, method: str, seed: int) -> float:
    return d["runs"][f"W256-s{seed}-{CONV_RUNS[256][method]}"]["test_accuracy"]


def _guide(d: dict, seed: int) -> float:
    return d["runs"][f"guide-s{seed}"]["test_accuracy"]


for _m in CONV_RUNS[256]:
    figure(f"conversion_mnist1d.{_m}_w256", "conversion_mnist1d")(
        lambda d, m=_m: pct(statistics.median(_conv(d, m, s) for s in SEEDS)))
CONV_SHARED = {"not+kd": "not-ft1e-3+fm", "untrained": "untrained", "dmnn": "dmnn", "hinton0.5": "kd-hinton0.5",
               "hinton0.9": "kd-hinton0.9", "ft1e-3": "not-ft1e-3", "ft3e-3": "not-ft3e-3"}


def _cm(d: dict, width: int, who: str, key: str = "test_accuracy") -> float:
    """The median over seeds, in %, of run ``who`` at ``width`` (the guide's for ``guide``)."""
    if who == "guide":
        return 100 * statistics.median(_guide(d, s) for s in SEEDS)
    run = {**CONV_SHARED, **CONV_RUNS[width]}[who]
    return 100 * statistics.median(d["runs"][f"W{width}-s{s}-{run}"][key] for s in SEEDS)


def _stitch(d: dict, width: int, what: str, part: str) -> float:
    return 100 * statistics.median(d["runs"][f"W{width}-s{s}-stitching"][what][part] for s in SEEDS)


def _conv_fig(name: str, fn: Callable[[dict], str]) -> None:
    figure(f"conversion_mnist1d.{name}", "conversion_mnist1d")(fn)


def _gap(d: dict, width: int, a: str, b: str, fmt: str = ".1f") -> str:
    return format(_cm(d, width, a) - _cm(d, width, b), fmt)


_conv_fig("hinton_w256", lambda d: span([_cm(d, 256, "hinton0.5"), _cm(d, 256, "hinton0.9")], lambda x: f"{x:.1f}"))
_conv_fig("not_w64", lambda d: f"{_cm(d, 64, 'not'):.1f}")
_conv_fig("guide_minus_not_w64", lambda d: _gap(d, 64, "guide", "not", ".0f"))
_conv_fig("not_minus_kd_w64", lambda d: _gap(d, 64, "not", "kd", ".0f"))
_conv_fig("not_minus_scratch_w64", lambda d: _gap(d, 64, "not", "scratch"))
_conv_fig("not_kd_w256", lambda d: f"{_cm(d, 256, 'not+kd'):.1f}")
_conv_fig("not_kd_vs_not_w64", lambda d: f"{_cm(d, 64, 'not+kd'):.1f} vs {_cm(d, 64, 'not'):.1f}")
_conv_fig("untrained_minus_scratch_w256", lambda d: _gap(d, 256, "untrained", "scratch"))
_conv_fig("untrained_vs_scratch_w64", lambda d: f"{_cm(d, 64, 'untrained'):.1f} vs {_cm(d, 64, 'scratch'):.1f}")
_conv_fig("not_minus_dmnn_w256", lambda d: _gap(d, 256, "not", "dmnn", ".0f"))
for _w in (256, 64):
    _conv_fig(f"dmnn_vs_not_w{_w}", lambda d, w=_w: f"{_cm(d, w, 'dmnn'):.1f} vs {_cm(d, w, 'not'):.1f}")
_conv_fig("stitch_w256_conv2_conv3", lambda d: " and ".join(f"{_stitch(d, 256, 'penalty', p):+.1f}"
                                                            for p in ("conv2", "conv3")))
_conv_fig("floor_w256_conv2_conv3", lambda d: " and ".join(f"{_stitch(d, 256, 'floor', p):+.1f}"
                                                           for p in ("conv2", "conv3")))
_conv_fig("stitch_w256_conv1", lambda d: f"{_stitch(d, 256, 'penalty', 'conv1'):.1f}")
_conv_fig("floor_w256_conv1", lambda d: f"{_stitch(d, 256, 'floor', 'conv1'):.1f}")
_conv_fig("stitch_w64_span", lambda d: span([_stitch(d, 64, "penalty", p) for p in ("conv1", "conv2", "conv3")],
                                            lambda x: f"{x:.0f}"))
_conv_fig("val_ft_w64", lambda d: f"{_cm(d, 64, 'ft3e-3', 'val_accuracy'):.1f} vs "
                                  f"{_cm(d, 64, 'ft1e-3', 'val_accuracy'):.1f}")
figure("conversion_mnist1d.guide", "conversion_mnist1d")(lambda d: pct(statistics.median(_guide(d, s) for s in SEEDS)))
figure("conversion_mnist1d.not_minus_guide_per_seed", "conversion_mnist1d")(
    lambda d: _per_seed(lambda s: f"{100 * (_conv(d, 'not', s) - _guide(d, s)):+.1f}".replace("-", "−")))
figure("conversion_mnist1d.not_per_seed", "conversion_mnist1d")(
    lambda d: _per_seed(lambda s: pct(_conv(d, "not", s))))
figure("conversion_mnist1d.guide_per_seed", "conversion_mnist1d")(lambda d: _per_seed(lambda s: pct(_guide(d, s))))


def _fixed1000(d: dict, key: str) -> float:
    """The previous recipe's median test accuracy over the seeds: ``key`` is ``guide`` or ``W256-...``."""
    return statistics.median(d["runs"][key.format(s=s)]["test_accuracy"] for s in SEEDS)


figure("conversion_mnist1d_fixed1000.guide", "conversion_mnist1d_fixed1000")(
    lambda d: pct(_fixed1000(d, "guide-s{s}")))
figure("conversion_mnist1d_fixed1000.not_w256", "conversion_mnist1d_fixed1000")(
    lambda d: pct(_fixed1000(d, "W256-s{s}-progressive")))
figure("conversion_mnist1d_fixed1000.not_gap", "conversion_mnist1d_fixed1000")(
    lambda d: f"{100 * (_fixed1000(d, 'guide-s{s}') - _fixed1000(d, 'W256-s{s}-progressive')):.1f}")

# --- the guide and the thread count (guide_threads.json) ---
for _t in (1, 2):
    figure(f"guide_threads.test_{_t}", "guide_threads")(
        lambda d, t=_t: pct(d["runs"][f"{t} threads / run 1"]["test_accuracy"]))

# --- the CNN -> MLPs study (study_not_vs_scratch.json) ---
for _m in ("scratch", "kd"):
    figure(f"study_not_vs_scratch.hv_ratio_{_m}", "study_not_vs_scratch")(
        lambda d, m=_m: f"{d[f'hypervolume_ratio_{m}']:.2f}×")

# --- real data at scale (scale.json), the stage loop (stage_loop.json) ---


def _scale_sizes(d: dict) -> list[int]:
    return sorted({int(k.split("-")[0]) for k in d["runs"]})


figure("scale.stream_peak_mb", "scale")(
    lambda d: span([d["runs"][f"{n}-stream"]["peak_rss_mb"] for n in _scale_sizes(d)], lambda x: f"{x:.0f}"))
figure("scale.sizes", "scale")(lambda d: f"{min(_scale_sizes(d)):,} to {max(_scale_sizes(d)):,}")
figure("scale.stream_over_cache", "scale")(
    lambda d: times_span([d["runs"][f"{n}-stream"]["wall_s"] / d["runs"][f"{n}-cache"]["wall_s"]
                          for n in _scale_sizes(d)]))
figure("stage_loop.ratio", "stage_loop")(lambda d: span([r["ratio"] for r in d["runs"].values()], lambda x: f"{x:.2f}"))

# --- augmentation on digits (digits_augment.json): the targets' median over seeds, the guide's one run ---


def _digits(d: dict, augment: str, who: str) -> float:
    """Test accuracy in % as the table rounds it, so differences agree with the table's."""
    if who == "guide":
        return round(100 * d["runs"][f"{augment}-guide"]["test_accuracy"], 1)
    return round(100 * statistics.median(d["runs"][f"{augment}-s{s}-{who}"]["test_accuracy"] for s in SEEDS), 1)


_WHO = ("guide", "not", "scratch", "kd")
figure("digits_augment.standard_loss", "digits_augment")(
    lambda d: span([_digits(d, "none", w) - _digits(d, "standard", w) for w in _WHO], lambda x: f"{x:.1f}"))
for _w in _WHO:
    figure(f"digits_augment.standard_delta_{_w}", "digits_augment")(
        lambda d, w=_w: f"{_digits(d, 'standard', w) - _digits(d, 'none', w):+.1f}".replace("-", "−"))

# --- early stops and partitions (search_efficiency.json) ---


def _wall(d: dict, which: str, seed: int) -> float:
    return d["runs"][f"{which}|seed{seed}|12"]["wall_s"]


figure("search_efficiency.wall_per_seed", "search_efficiency")(
    lambda d: _per_seed(lambda s: f"{_wall(d, 'searchable partitions', s):.0f} vs {_wall(d, 'fixed parts', s):.0f}"))
figure("search_efficiency.wall_faster_seeds", "search_efficiency")(
    lambda d: f"{sum(_wall(d, 'searchable partitions', s) < _wall(d, 'fixed parts', s) for s in SEEDS)} of "
              f"{len(SEEDS)}")

# --- GPT-2 -> LSTM (lm_gpt2_to_rnn.json): each method's chosen rule, median test loss over the target seeds ---
LM_RULES = {"not": "not-ft3e-3", "scratch": "scratch-lr3e-3"}


def _lm(d: dict, width: int, method: str) -> float:
    return statistics.median(d["runs"][f"H{width}-s{s}-{LM_RULES[method]}"]["test_loss"] for s in SEEDS)


@figure("lm_gpt2_to_rnn.gap_closed_h128", "lm_gpt2_to_rnn")
def _gap_closed(d: dict) -> str:
    scratch, guide = _lm(d, 128, "scratch"), d["runs"]["guide"]["test_loss"]
    return f"{100 * (scratch - _lm(d, 128, 'not')) / (scratch - guide):.0f} %"

# --- the README's first command from a fresh clone (quickstart.json, benchmarks/quickstart_timing.py): its
# install and study timed apart, and the study's own guide, trials and front ---
def _quick(d: dict) -> dict:
    return d["runs"]["run0"]


def _quick_trial0(d: dict) -> dict:
    (t,) = [p for p in _quick(d)["front"] if p["trial"] == 0]
    return t


for _part in ("install", "study", "total"):
    figure(f"quickstart.{_part}_min", "quickstart")(lambda d, p=_part: f"{_quick(d)[f'{p}_s'] / 60:.1f}")
figure("quickstart.date", "quickstart")(lambda d: d["meta"]["date"])
figure("quickstart.guide_s", "quickstart")(lambda d: f"{_quick(d)['guide_s']:.0f}")
figure("quickstart.guide_val", "quickstart")(lambda d: pct(_quick(d)["guide"]["val_accuracy"]))
figure("quickstart.guide_test", "quickstart")(lambda d: pct(_quick(d)["guide"]["test_accuracy"]))
figure("quickstart.trials", "quickstart")(lambda d: str(len(_quick(d)["trials"])))
figure("quickstart.trial0_win", "quickstart")(
    lambda d: _quick_trial0(d)["deploy_win"].replace("x ", "× ").rsplit(",", 1)[0])
figure("quickstart.trial0_acc", "quickstart")(
    lambda d: f"{pct(_quick_trial0(d)['accuracy'])} / {pct(_quick_trial0(d)['test_accuracy'])}")
figure("quickstart.deploy_wins", "quickstart")(lambda d: str(sum(bool(p["deploy_win"]) for p in _quick(d)["front"])))

# --- the CNN -> MLPs study's three fronts (study_not_vs_scratch.json; no runs: one record per method) ---
SVS_METHODS = ("not", "scratch", "kd")


def _svs_point(d: dict, method: str, trial: int) -> dict:
    (p,) = [p for p in d[method]["front"] if p["trial"] == trial]
    return p


def _svs_all(d: dict, key: str) -> list[float]:
    return [p[key] for m in SVS_METHODS for p in d[m]["front"]]


figure("study_not_vs_scratch.hv_ratio_scratch_exact", "study_not_vs_scratch")(
    lambda d: f"{d['hypervolume_ratio_scratch']:.3f}")
figure("study_not_vs_scratch.kd_hv_larger", "study_not_vs_scratch")(
    lambda d: f"{100 * (1 / d['hypervolume_ratio_kd'] - 1):.0f} %")
for _m in ("not", "kd"):
    figure(f"study_not_vs_scratch.{_m}_trial0", "study_not_vs_scratch")(
        lambda d, m=_m: f"{pct(_svs_point(d, m, 0)['accuracy'])} / {pct(_svs_point(d, m, 0)['test_accuracy'])}")
figure("study_not_vs_scratch.kd_trial7", "study_not_vs_scratch")(
    lambda d: f"{pct(_svs_point(d, 'kd', 7)['accuracy'])} % at {_svs_point(d, 'kd', 7)['flops']:,.0f} FLOPs")
figure("study_not_vs_scratch.kd_trial16", "study_not_vs_scratch")(
    lambda d: (lambda p: f"{pct(p['accuracy'])} % at {p['flops']:,.0f} FLOPs and "
               f"{p['latency_ratio_to_guide']:.3f} ×")(_svs_point(d, "kd", 16)))
figure("study_not_vs_scratch.latency_span", "study_not_vs_scratch")(
    lambda d: span(_svs_all(d, "latency_ratio_to_guide"), lambda x: f"{x:.2f}", " ×"))
figure("study_not_vs_scratch.flops_range", "study_not_vs_scratch")(
    lambda d: f"{max(_svs_all(d, 'flops')) / min(_svs_all(d, 'flops')):.0f}×")
figure("study_not_vs_scratch.not_trials_4_5_latency", "study_not_vs_scratch")(
    lambda d: " and ".join(f"{_svs_point(d, 'not', t)['latency_ratio_to_guide']:.3f}" for t in (4, 5)))
figure("study_not_vs_scratch.not_wall_s", "study_not_vs_scratch")(lambda d: f"{d['not']['wall_s']:.0f}")
figure("study_not_vs_scratch.measure_s", "study_not_vs_scratch")(
    lambda d: f"{d['overhead']['median_measure_s']:.1f}")
figure("study_not_vs_scratch.overhead", "study_not_vs_scratch")(lambda d: f"{d['overhead']['median_ratio']:.2f}")

# --- when a stage stops (stage_stop_rule.json): per rule, the median over seeds ---
STOP_DEFAULT, STOP_2000 = "plateau, ≤ 4,000 (default)", "plateau, ≤ 2,000 (the default study's cap)"
STOP_FIXED_4000, STOP_FIXED_2000 = "fixed 4,000, cosine", "fixed 2,000, cosine"
STOP_RULES = (STOP_DEFAULT, STOP_2000, STOP_FIXED_4000, STOP_FIXED_2000)


def _stop(d: dict, rule: str, key: str) -> float:
    values = [d["runs"][f"{rule} / seed {s}"] for s in SEEDS]
    return statistics.median(sum(r["steps"]) if key == "steps" else 100 * r[key] for r in values)


def _stop_fig(name: str, fn: Callable[[dict], str]) -> None:
    figure(f"stage_stop_rule.{name}", "stage_stop_rule")(fn)




def _stop_vals(d: dict) -> list[float]:
    return [_stop(d, r, "val_accuracy") for r in STOP_RULES]


_stop_fig("val_span", lambda d: span(_stop_vals(d), lambda x: f"{x:.1f}"))
_stop_fig("val_spread", lambda d: f"{max(_stop_vals(d)) - min(_stop_vals(d)):.1f}")
for _slug, _rule in (("default", STOP_DEFAULT), ("cap2000", STOP_2000), ("fixed4000", STOP_FIXED_4000)):
    _stop_fig(f"steps_{_slug}", lambda d, r=_rule: f"{_stop(d, r, 'steps'):,.0f}")
_stop_fig("test_default", lambda d: f"{_stop(d, STOP_DEFAULT, 'test_accuracy'):.1f}")
_stop_fig("test_fixed2000", lambda d: f"{_stop(d, STOP_FIXED_2000, 'test_accuracy'):.1f}")
_stop_fig("test_fixed2000_worst_seed", lambda d: pct(min(d["runs"][f"{STOP_FIXED_2000} / seed {s}"]["test_accuracy"]
                                                         for s in SEEDS)))

# --- the deployer's candidates (deploy_candidates.json): per candidate, the median over seeds ---
CAND_32, CAND_16 = "conv1 kept; conv2, conv3 conv 32", "conv1 kept; conv2, conv3 conv 16"
CAND_LOWRANK, CAND_SEP = "conv1 kept; conv2+conv3 lowrank 8", "conv1 kept; conv2, conv3 sepconv 32"


def _cand(d: dict, method: str, name: str, key: str) -> float:
    return statistics.median(d["runs"][f"{method} / seed {s}"]["candidates"][name][key] for s in SEEDS)


def _cand_latency(d: dict, name: str) -> float:
    """The median latency factor over both methods' runs, as the table gives it."""
    return statistics.median(d["runs"][f"{m} / seed {s}"]["candidates"][name]["latency_x"]
                             for m in ("not", "kd") for s in SEEDS)


def _cand_vs(d: dict, name: str) -> str:
    return f"{pct(_cand(d, 'not', name, 'accuracy'))} vs {pct(_cand(d, 'kd', name, 'accuracy'))}"


figure("deploy_candidates.flops_32", "deploy_candidates")(lambda d: times(_cand(d, "not", CAND_32, "flops_x")))
figure("deploy_candidates.not_vs_kd_16", "deploy_candidates")(lambda d: _cand_vs(d, CAND_16))
figure("deploy_candidates.kd_vs_not_lowrank", "deploy_candidates")(
    lambda d: f"{pct(_cand(d, 'kd', CAND_LOWRANK, 'accuracy'))} vs {pct(_cand(d, 'not', CAND_LOWRANK, 'accuracy'))}")
figure("deploy_candidates.latency_sep", "deploy_candidates")(
    lambda d: f"{_cand_latency(d, CAND_SEP):.1f}×")

# --- the streamed stage against a bare loop (stream_throughput.json) ---
figure("stream_throughput.pair_span", "stream_throughput")(
    lambda d: span([p["ratio"] for pairs in d["pairs"].values() for p in pairs], lambda x: f"{x:.2f}"))
figure("stream_throughput.files_wait_share", "stream_throughput")(
    lambda d: f"{100 * d['summary']['files']['median_wait_share']:.0f} %")
figure("digits_augment.standard_not_lead", "digits_augment")(
    lambda d: f"{_digits(d, 'standard', 'not') - max(_digits(d, 'standard', w) for w in ('scratch', 'kd')):.0f}")
for _w in _WHO:
    for _aug in ("none", "crop"):
        figure(f"digits_augment.{_aug}_{_w}", "digits_augment")(lambda d, a=_aug, w=_w: f"{_digits(d, a, w):.1f}")
figure("digits_augment.test_rows", "digits_augment")(lambda d: f"{d['runs']['none-guide']['rows'][2]}")
figure("digits_augment.val_rows", "digits_augment")(lambda d: f"{d['runs']['none-guide']['rows'][1]}")
figure("digits_augment.one_image", "digits_augment")(lambda d: f"{100 / d['runs']['none-guide']['rows'][2]:.2f}")
figure("digits_augment.crop_gain_images", "digits_augment")(
    lambda d: span([(_digits(d, "crop", w) - _digits(d, "none", w)) * d["runs"]["none-guide"]["rows"][2] / 100
                    for w in ("not", "kd")], lambda x: f"{x:.0f}"))


def _search(d: dict, which: str, key: str) -> list:
    return [d["runs"][f"{which}|seed{s}|{key}"] for s in SEEDS]


def _fronts(d: dict, *studies: str) -> list[tuple[float, float, float, str]]:
    """Front points (validation accuracy, FLOPs, latency × guide, candidate) of the partition studies' seeds."""
    return [tuple(p) for which in studies for r in _search(d, which, "12") for p in r["front"]]


def _layers(candidate: str) -> int:
    return candidate.split(";")[0].count("mlp(")


def _on_off(d: dict) -> list[tuple[dict, dict]]:
    return list(zip(_search(d, "early-stop on", "240s"), _search(d, "early-stop off", "240s")))


PART, FIXED = "searchable partitions", "fixed parts"
TWO_LAYER_FLOOR = 0.745  # the 2-layer points the text compares: about 75 % validation and above
figure("search_efficiency.hv_medians", "search_efficiency")(
    lambda d: " vs ".join(f"{statistics.median(r['hypervolume'] for r in _search(d, f'early-stop {w}', '240s')):,.0f}"
                          for w in ("on", "off")))
figure("search_efficiency.hv_larger_seeds", "search_efficiency")(
    lambda d: f"{sum(a['hypervolume'] > b['hypervolume'] for a, b in _on_off(d))} of {len(SEEDS)}")
figure("search_efficiency.trials_on_off", "search_efficiency")(
    lambda d: " against ".join(", ".join(str(r["trials"]) for r in _search(d, f"early-stop {w}", "240s"))
                               for w in ("on", "off")))
figure("search_efficiency.part_hv_ratio_per_seed", "search_efficiency")(
    lambda d: ", ".join(f"{a['hypervolume'] / b['hypervolume']:.2f}"
                        for a, b in zip(_search(d, PART, "12"), _search(d, FIXED, "12"))))
figure("search_efficiency.part_hv_medians", "search_efficiency")(
    lambda d: " vs ".join(f"{statistics.median(r['hypervolume'] for r in _search(d, w, '12')):,.0f}"
                          for w in (PART, FIXED)))
figure("search_efficiency.part_wall_medians", "search_efficiency")(
    lambda d: " vs ".join(f"{statistics.median(r['wall_s'] for r in _search(d, w, '12')):.0f}" for w in (PART, FIXED)))
figure("search_efficiency.part_cheapest_medians", "search_efficiency")(
    lambda d: " vs ".join(f"{statistics.median(r['cheapest_front_flops'] for r in _search(d, w, '12')):,.0f}"
                          for w in (PART, FIXED)))
for _n in (1, 2, 3):
    figure(f"search_efficiency.latency_{_n}_layers", "search_efficiency")(
        lambda d, n=_n: times_span([p[2] for p in _fronts(d, PART, FIXED) if _layers(p[3]) == n]))


def _two_layer(d: dict) -> list[tuple]:
    return [p for p in _fronts(d, PART) if _layers(p[3]) == 2 and p[0] >= TWO_LAYER_FLOOR]


figure("search_efficiency.two_layer_accuracy", "search_efficiency")(
    lambda d: span([100 * p[0] for p in _two_layer(d)], lambda x: f"{x:.0f}"))
figure("search_efficiency.two_layer_latency", "search_efficiency")(lambda d: times_span([p[2] for p in _two_layer(d)]))
figure("search_efficiency.fixed_same_accuracy_latency", "search_efficiency")(
    lambda d: times_span([p[2] for p in _fronts(d, FIXED)
                          if min(q[0] for q in _two_layer(d)) <= p[0] <= max(q[0] for q in _two_layer(d))]))
figure("search_efficiency.example_point", "search_efficiency")(
    lambda d: (lambda p: f"{pct(p[0])} %, {p[2]:.3f} ×")(
        max(p for p in _fronts(d, PART) if p[3].startswith("conv1+conv2=mlp(width=256), conv3=mlp(width=32)"))))

# --- GPT-2 -> LSTM, the reading (lm_gpt2_to_rnn.json; the previous recipe: lm_gpt2_to_rnn_fixed300.json) ---


def _lm_runs(d: dict, width: int, method: str) -> list[dict]:
    return [d["runs"][f"H{width}-s{s}-{LM_RULES[method]}"] for s in SEEDS]


def _lm_diff_span(d: dict, width: int, sign: int) -> str:
    diffs = [sign * (n["test_loss"] - s["test_loss"]) for n, s in zip(_lm_runs(d, width, "not"),
                                                                       _lm_runs(d, width, "scratch"))]
    return span(diffs, lambda x: f"{x:.3f}" if width == 128 else f"{x:.2f}")


def _lm_old(d: dict, method: str) -> float:
    return statistics.median(d["runs"][f"H128-s{s}-{method}"]["test_loss"] for s in SEEDS)


def _lm_chosen_stages(d: dict) -> list[tuple[str, int]]:
    return [(why, steps) for w in (128, 32) for r in _lm_runs(d, w, "not")
            for why, steps in zip(r["stage_stopped"], r["stage_steps"])]


figure("lm_gpt2_to_rnn.h128_not_lead", "lm_gpt2_to_rnn")(lambda d: _lm_diff_span(d, 128, -1))
figure("lm_gpt2_to_rnn.h32_not_behind", "lm_gpt2_to_rnn")(lambda d: _lm_diff_span(d, 32, 1))
for _m in ("not", "scratch"):
    figure(f"lm_gpt2_to_rnn.h128_{_m}", "lm_gpt2_to_rnn")(lambda d, m=_m: f"{_lm(d, 128, m):.3f}")
    figure(f"lm_gpt2_to_rnn_fixed300.h128_{_m}", "lm_gpt2_to_rnn_fixed300")(lambda d, m=_m: f"{_lm_old(d, m):.3f}")
figure("lm_gpt2_to_rnn_fixed300.gap_closed_h128", "lm_gpt2_to_rnn_fixed300")(
    lambda d: (lambda scratch, guide: f"{100 * (scratch - _lm_old(d, 'not')) / (scratch - guide):.0f} %")(
        _lm_old(d, "scratch"), d["runs"]["guide"]["test_loss"]))
figure("lm_gpt2_to_rnn.h32_cka", "lm_gpt2_to_rnn")(
    lambda d: f"{statistics.median(r['heldout_cka'][-1] for r in _lm_runs(d, 32, 'not')):.2f}")
figure("lm_gpt2_to_rnn.plateau_stages", "lm_gpt2_to_rnn")(
    lambda d: f"{sum(why != 'max_steps' for why, _ in _lm_chosen_stages(d))} of {len(_lm_chosen_stages(d))}")
figure("lm_gpt2_to_rnn.plateau_stage_steps", "lm_gpt2_to_rnn")(
    lambda d: ", ".join(f"{steps:,}" for why, steps in _lm_chosen_stages(d) if why != "max_steps"))
figure("lm_gpt2_to_rnn.not_lr_val", "lm_gpt2_to_rnn")(
    lambda d: f"{d['runs']['H128-s0-not-ft1e-3']['val_loss']:.3f} vs {d['runs']['H128-s0-not-ft3e-3']['val_loss']:.3f}")
figure("lm_gpt2_to_rnn.scratch_lr_val", "lm_gpt2_to_rnn")(
    lambda d: f"{d['runs']['H128-s0-scratch-lr3e-3']['val_loss']:.3f} vs "
              f"{d['runs']['H128-s0-scratch-lr1e-3']['val_loss']:.3f}")

# --- tiny ViT -> token-wise MLP on digits (vit_digits_to_mlp.json) ---


def _vit(d: dict, method: str, key: str = "test_accuracy") -> float:
    return statistics.median(d["runs"][f"s{s}-{method}"][key] for s in SEEDS)


figure("vit_digits_to_mlp.guide", "vit_digits_to_mlp")(lambda d: pct(d["runs"]["guide"]["test_accuracy"]))
for _m in ("not", "scratch"):
    figure(f"vit_digits_to_mlp.{_m}", "vit_digits_to_mlp")(lambda d, m=_m: pct(_vit(d, m)))
    figure(f"vit_digits_to_mlp.{_m}_wall_s", "vit_digits_to_mlp")(lambda d, m=_m: f"{_vit(d, m, 'wall_s'):.0f}")


def _vit_gain(d: dict, seed: int) -> str:
    runs = d["runs"]
    gain = 100 * (runs[f"s{seed}-not"]["test_accuracy"] - runs[f"s{seed}-scratch"]["test_accuracy"])
    return f"{gain:+.1f}".replace("-", "−")


figure("vit_digits_to_mlp.not_minus_scratch_per_seed", "vit_digits_to_mlp")(
    lambda d: ", ".join(_vit_gain(d, s) for s in SEEDS))
figure("vit_digits_to_mlp.align_steps", "vit_digits_to_mlp")(lambda d: f"{_vit(d, 'not', 'align_steps'):,.0f}")

# --- latency that ranks (latency_stability.json: runtime|measured|width|setting -> spread of 5 measurements) ---
LONGEST = "200 blocks of 10 ms"
RELATIVE = "relative to the guide"


def _spreads(d: dict, *, runtime: str | None = None, absolute: bool | None = None,
             setting: str | None = None) -> list[float]:
    out = []
    for key, r in d["runs"].items():
        rt, measured, _, st = key.split("|")
        if ((runtime is None or rt == runtime) and (absolute is None or (measured != RELATIVE) == absolute)
                and (setting is None or st == setting)):
            out.append(100 * r["spread"])
    return out


def _worst_short(d: dict, runtime: str) -> str:
    """The worst relative spread of each setting shorter than the longest, as a range over those settings."""
    settings = {k.split("|")[3] for k in d["runs"] if k.split("|")[1] == RELATIVE} - {LONGEST}
    return span([max(_spreads(d, runtime=runtime, absolute=False, setting=s)) for s in settings],
                lambda x: f"{x:.1f}")


figure("latency_stability.absolute_span", "latency_stability")(
    lambda d: span(_spreads(d, absolute=True), lambda x: f"{x:.0f}"))
figure("latency_stability.relative_span", "latency_stability")(
    lambda d: span(_spreads(d, absolute=False), lambda x: f"{x:.0f}"))
def _settings_held(d: dict, runtime: str, goal: float = 5.0) -> str:
    """How many of the timing settings kept every relative spread of ``runtime`` within ``goal`` %."""
    settings = {k.split("|")[3] for k in d["runs"] if k.split("|")[1] == RELATIVE}
    held = sum(max(_spreads(d, runtime=runtime, absolute=False, setting=s)) <= goal for s in settings)
    return f"{held} of {len(settings)}"


for _rt in ("eager", "onnxruntime"):
    figure(f"latency_stability.longest_worst_{_rt}", "latency_stability")(
        lambda d, rt=_rt: f"{max(_spreads(d, runtime=rt, absolute=False, setting=LONGEST)):.1f}")
    figure(f"latency_stability.shorter_worst_{_rt}", "latency_stability")(lambda d, rt=_rt: _worst_short(d, rt))
    figure(f"latency_stability.settings_held_{_rt}", "latency_stability")(lambda d, rt=_rt: _settings_held(d, rt))
figure("latency_stability.eager_16_vs_64", "latency_stability")(
    lambda d: (lambda a, b: f"{100 * (b / a - 1):.0f} %")(
        *(statistics.median(d["runs"][f"eager|{RELATIVE}|{w}|{LONGEST}"]["figures"]) for w in (16, 64))))

# --- the compile fallback's cost with compile off (step_overhead_compile_fallback.json: rates per round) ---
figure("step_overhead_compile_fallback.trial_rounds", "step_overhead_compile_fallback")(
    lambda d: times_span([a / b for a, b in zip(d["results"]["trial"]["rates"]["after"],
                                                d["results"]["trial"]["rates"]["before"])]))

# --- code before a change (the *_before records the history page keeps) ---
figure("stage_loop_before.ratio", "stage_loop_before")(
    lambda d: span([r["ratio"] for r in d["runs"].values()], lambda x: f"{x:.2f}"))
figure("cache_memory_before.ratio", "cache_memory_before")(
    lambda d: f"{(d['peak'] - max(d['rss_before'], 0)) / d['cache_bytes']:.2f}")  # as benchmarks/cache_memory.py
figure("deploy_front.mixed_start_flops", "deploy_front")(
    lambda d: times_span([_start(d, MIXED, s)["flops_x"] for s in SEEDS]))

# --- how far a shorter deployer's study gets (deploy_front.json's points, in the order the trials counted) ---
DEPLOY_REFERENCE = (0.0, 400000.0, 1.0)  # studies/mnist1d_deploy.toml's accuracy and FLOPs; latency 1 × the guide


def hypervolume(points: list[list[float]], ref: tuple[float, float, float] = DEPLOY_REFERENCE) -> float:
    """The volume (accuracy ↑, FLOPs ↓, latency × guide ↓) the points dominate up to ``ref``: slabs in latency,
    each the area of a 2-D staircase."""
    boxes = [(ref[0] - a, f, lat) for a, f, lat in points if a > ref[0] and f < ref[1] and lat < ref[2]]
    levels = sorted({b[2] for b in boxes}) + [ref[2]]
    volume = 0.0
    for z0, z1 in zip(levels, levels[1:]):
        active = sorted((x, y) for x, y, z in boxes if z <= z0)
        area, lowest = 0.0, ref[1]
        for (x, y), x_next in zip(active, [x for x, _ in active[1:]] + [0.0]):
            lowest = min(lowest, y)
            area += (x_next - x) * (ref[1] - lowest)
        volume += area * (z1 - z0)
    return volume


def _hv_share(d: dict, seed: int, n: int) -> float:
    r = _run(d, NOT, seed)
    full = hypervolume(r["points"])
    if abs(full - r["hypervolume"]) > 1e-6 * r["hypervolume"]:
        raise ValueError(f"seed {seed}: the reference is not the study's (hypervolume {full} vs {r['hypervolume']})")
    return hypervolume(r["points"][:n]) / full


for _n in (8, 10):
    figure(f"deploy_front.hv_share_first_{_n}", "deploy_front")(
        lambda d, n=_n: _per_seed(lambda s: f"{_hv_share(d, s, n):.2f}"))


# --- benchmarks/library_vs_tpe.py: the block library against TPE alone -------------------------------------------

def _library_runs(d: dict) -> list[dict]:
    # the main arms' records (seedN), not the variant's (seedN+VARIANT); read: their commits named
    runs = [d["runs"][key] for key in sorted(d["runs"]) if key.startswith("seed") and key[4:].isdigit()]
    if not runs:
        raise ValueError("library_vs_tpe.json holds no seed")
    return runs


@figure("library_vs_tpe.build_s", "library_vs_tpe")
def _library_build_s(d: dict) -> str:
    return span([r["library_build"]["wall_s"] for r in _library_runs(d)], lambda x: f"{x:.0f}")


@figure("library_vs_tpe.build_in_trials", "library_vs_tpe")
def _library_build_in_trials(d: dict) -> str:
    """The build's wall time in trials of the TPE arm (its budget over the trials it finished)."""
    return span([r["library_build"]["wall_s"] / (r["budget_s"] / r["arms"]["tpe"]["finished"])
                 for r in _library_runs(d)], lambda x: f"{x:.1f}", " trials")


@figure("library_vs_tpe.answer_ms", "library_vs_tpe")
def _library_answer_ms(d: dict) -> str:
    return span([1000 * r["answer_s"] / 5 for r in _library_runs(d)], lambda x: f"{x:.0f}")


@figure("library_vs_tpe.hv_ratios", "library_vs_tpe")
def _library_hv_ratios(d: dict) -> str:
    return " / ".join(f"{r['hypervolume_ratio']:.2f}×" for r in _library_runs(d))


@figure("library_vs_tpe.taus", "library_vs_tpe")
def _library_taus(d: dict) -> str:
    return " / ".join("—" if r["tau_raw"] is None else f"{r['tau_raw']:+.2f}" for r in _library_runs(d))


@figure("library_vs_tpe.cli_s", "library_vs_tpe")
def _library_cli_s(d: dict) -> str:
    return span([r["cli_s"] for r in _library_runs(d)], lambda x: f"{x:.1f}", " s")


@figure("library_vs_tpe.taus_calibrated", "library_vs_tpe")
def _library_taus_calibrated(d: dict) -> str:
    return " / ".join("—" if r["tau"] is None else f"{r['tau']:+.2f}" for r in _library_runs(d))


@figure("library_vs_tpe.tau_over", "library_vs_tpe")
def _library_tau_over(d: dict) -> str:
    return span([r["tau_over"] for r in _library_runs(d)], lambda x: f"{x:.0f}")


@figure("library_vs_tpe.trials_tpe", "library_vs_tpe")
def _library_trials_tpe(d: dict) -> str:
    return span([r["arms"]["tpe"]["finished"] for r in _library_runs(d)], lambda x: f"{x:.0f}")


@figure("library_vs_tpe.ratio_at_20", "library_vs_tpe")
def _library_ratio_at_20(d: dict) -> str:
    """The hypervolume ratio at the first point of the curve (20 % of the budget), per seed."""
    ratios = []
    for r in _library_runs(d):
        a, b = r["arms"]["tpe"]["hypervolume_curve"][0], r["arms"]["library"]["hypervolume_curve"][0]
        ratios.append(f"{b / a:.2f}×")
    return " / ".join(ratios)


@figure("library_vs_tpe.picks_beat_tpe", "library_vs_tpe")
def _library_picks_beat_tpe(d: dict) -> str:
    """How many of the library's picks on its arm's front beat TPE's best validation accuracy at no more FLOPs."""
    won = total = 0
    for r in _library_runs(d):
        tpe = r["arms"]["tpe"]["front"]
        for p in (f for f in r["arms"]["library"]["front"] if f["from_library"]):
            total += 1
            won += p["val_accuracy"] > max((f["val_accuracy"] for f in tpe if f["flops"] <= p["flops"]), default=0.0)
    return f"{won} of {total}"


DEEP_REFERENCE_FLOPS = 155168.0  # studies/mnist1d_deep_deploy.toml's [hypervolume_reference] flops: the guide's


def _variant_runs(d: dict) -> list[dict]:
    runs = [d["runs"][key] for key in sorted(d["runs"]) if "+" in key]
    if not runs:
        raise ValueError("library_vs_tpe.json holds no variant run")
    return runs


@figure("library_vs_tpe.goal_share_of_bound", "library_vs_tpe")
def _library_goal_share_of_bound(d: dict) -> str:
    """1.2 x TPE's hypervolume as a share of the most any front can reach here (accuracy 1 at no FLOPs)."""
    return span([1.2 * r["arms"]["tpe"]["hypervolume"] / DEEP_REFERENCE_FLOPS for r in _library_runs(d)],
                lambda x: f"{100 * x:.0f}", " %")


@figure("library_vs_tpe.variant_hv_ratios", "library_vs_tpe")
def _library_variant_hv_ratios(d: dict) -> str:
    return " / ".join(f"{r['hypervolume_ratio']:.2f}×" for r in _variant_runs(d))


@figure("library_vs_tpe.variant_ratio_at_20", "library_vs_tpe")
def _library_variant_ratio_at_20(d: dict) -> str:
    return " / ".join(f"{r['arms']['library']['hypervolume_curve'][0] / r['arms']['tpe']['hypervolume_curve'][0]:.2f}×"
                      for r in _variant_runs(d))


# --- benchmarks/jpeg_decode.py: JPEG folders decoded on the device against Pillow -------------------------------
def _decode_ratio(d: dict, case: str) -> float:
    feeds = d["runs"][case]["feeds"]
    return statistics.median(feeds["device"]) / statistics.median(feeds["pillow"])


@figure("jpeg_decode.cifar_ratio", "jpeg_decode")
def _jpeg_cifar(d: dict) -> str:
    return times(_decode_ratio(d, "cifar"))


@figure("jpeg_decode.photo_ratio", "jpeg_decode")
def _jpeg_photo(d: dict) -> str:
    return times(_decode_ratio(d, "photo"))


# --- benchmarks/latency_aside.py: the README's study with latency in a quiet slot against on a reserved core ----
def _aside_runs(d: dict, way: str) -> list[dict]:
    runs = [r for k, r in d["runs"].items() if k.startswith(way)]
    if not runs:
        raise ValueError(f"no {way} run in the record")
    return runs


def _aside_median(d: dict, way: str, keys: tuple[str, ...]) -> float:
    """The median over the runs of ``way`` of each run's mean per trial of ``keys`` summed."""
    return statistics.median(statistics.mean(sum(t[k] or 0 for k in keys) for t in r["trials"])
                             for r in _aside_runs(d, way))


def _aside_pairs(d: dict, key: str) -> list[float]:
    """Trial by trial (the same architecture), reserved ÷ shared of ``key``."""
    return [b[key] / a[key] for s, r in zip(_aside_runs(d, "shared"), _aside_runs(d, "reserved"))
            for a, b in zip(s["trials"], r["trials"]) if a.get(key) and b.get(key)]


@figure("latency_aside.trial_ratio", "latency_aside")
def _aside_trial_ratio(d: dict) -> str:
    per_trial = {w: statistics.median(r["per_trial_s"] for r in _aside_runs(d, w)) for w in ("shared", "reserved")}
    return f"{per_trial['reserved'] / per_trial['shared']:.3f}"


@figure("latency_aside.training_ratio", "latency_aside")
def _aside_training_ratio(d: dict) -> str:
    training = ("align_s", "finetune_s")
    return f"{_aside_median(d, 'reserved', training) / _aside_median(d, 'shared', training):.3f}"


figure("latency_aside.measure_shared_s", "latency_aside")(
    lambda d: f"{_aside_median(d, 'shared', ('measure_s',)):.1f}")
figure("latency_aside.relative_ratio", "latency_aside")(
    lambda d: f"{statistics.median(_aside_pairs(d, 'latency_relative')):.3f} (range "
              f"{span(_aside_pairs(d, 'latency_relative'), lambda x: f'{x:.3f}')})")
figure("latency_aside.latency_ms_ratio", "latency_aside")(
    lambda d: f"{statistics.median(_aside_pairs(d, 'latency_ms')):.3f} (range "
              f"{span(_aside_pairs(d, 'latency_ms'), lambda x: f'{x:.3f}')})")


@figure("latency_aside.guide_ratio", "latency_aside")
def _aside_guide_ratio(d: dict) -> str:
    """The guide's own figure (measured once a run: ``latency_ms`` ÷ ``latency.relative``), reserved ÷ shared, as
    a percentage lower (or higher)."""
    guide = {w: statistics.median(t["latency_ms"] / t["latency_relative"] for r in _aside_runs(d, w)
                                  for t in r["trials"]) for w in ("shared", "reserved")}
    change = guide["reserved"] / guide["shared"] - 1
    return f"{100 * abs(change):.0f} % {'lower' if change < 0 else 'higher'}"
