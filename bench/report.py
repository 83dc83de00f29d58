"""BENCHMARKS.md from the raw figures: the targets first, then one section per case that ran."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

MIB = 2**20

# (label, case, the figure the verdict is on, how to show the case's figures, is the target met)
Target = Tuple[str, str, Callable[[Dict[str, Any]], float], Callable[[Dict[str, Any]], str],
               Callable[[float], bool]]
TARGETS: Sequence[Target] = (
    ("runner forward overhead over plain PyTorch <= 5%", "forward", lambda c: c["runner_overhead_vs_plain"],
     lambda c: f"{100 * c['runner_overhead_vs_plain']:+.1f}% (CPU time {100 * c['runner_overhead_vs_plain_cpu']:+.1f}%)",
     lambda v: v <= 0.05),
    ("runner forward >= 1.5x faster than OpenCV DNN, like for like (direct convolutions against direct, "
     "Winograd against Winograd)", "forward",
     lambda c: min(c["runner_speedup_vs_opencv_direct"], c["winograd_speedup_vs_opencv"]),
     lambda c: f"direct {c['runner_speedup_vs_opencv_direct']:.2f}x, Winograd {c['winograd_speedup_vs_opencv']:.2f}x "
               f"(the runner's default against OpenCV's: {c['runner_speedup_vs_opencv']:.2f}x)",
     lambda v: v >= 1.5),
    ("solver iteration overhead over plain PyTorch <= 10%", "training", lambda c: c["solver_overhead_vs_plain"],
     lambda c: f"{100 * c['solver_overhead_vs_plain']:+.1f}% (CPU time {100 * c['solver_overhead_vs_plain_cpu']:+.1f}%)",
     lambda v: v <= 0.10),
    ("`caffe.Net(deploy, TEST, weights=...)` of FCN-8s, fresh process, <= 0.6 s", "loading",
     lambda c: c["ways"]["pycaffe"]["seconds"], lambda c: f"{c['ways']['pycaffe']['seconds']:.2f} s",
     lambda v: v <= 0.6),
    ("`caffe.Net(deploy, TEST, weights=...)` peak memory <= 1.2x file size", "loading",
     lambda c: c["ways"]["pycaffe"]["peak_over_file_size"],
     lambda c: f"{c['ways']['pycaffe']['peak_over_file_size']:.2f}x", lambda v: v <= 1.2),
    ("caffemodel load (fast path) < 1 s", "loading", lambda c: c["ways"]["fast"]["seconds"],
     lambda c: f"{c['ways']['fast']['seconds']:.2f} s", lambda v: v < 1.0),
    ("caffemodel load peak memory < 1.3x file size", "loading", lambda c: c["ways"]["fast"]["peak_over_file_size"],
     lambda c: f"{c['ways']['fast']['peak_over_file_size']:.2f}x", lambda v: v < 1.3),
    ("Net.copy_from of the same file < 1 s", "loading", lambda c: c["ways"]["copy_from"]["seconds"],
     lambda c: f"{c['ways']['copy_from']['seconds']:.2f} s", lambda v: v < 1.0),
    ("Net.copy_from peak memory < 1.3x file size", "loading",
     lambda c: c["ways"]["copy_from"]["peak_over_file_size"],
     lambda c: f"{c['ways']['copy_from']['peak_over_file_size']:.2f}x", lambda v: v < 1.3),
    ("filter dilation faster than shift-and-stitch on the same dense output (Section 3.2)", "dilation",
     lambda c: c["dilated_speedup"], lambda c: f"{c['dilated_speedup']:.1f}x", lambda v: v > 1.0),
    ("`set_speed(compile=True)` >= 1.3x faster than the default `net.forward()` on FCN-8s", "forward",
     lambda c: c["option_speedups"].get("compile"), lambda c: f"{c['option_speedups']['compile']:.2f}x",
     lambda v: v >= 1.3),
    ("bfloat16: the runner's best within 1.15x of plain PyTorch's best bfloat16 configuration (FCN-8s)", "forward",
     lambda c: c.get("bf16_runner_over_plain"), lambda c: f"{c['bf16_runner_over_plain']:.2f}x its time",
     lambda v: v <= 1.15),
    ("the default `net.forward()` faster than OpenCV DNN on every zoo net, at every thread count", "zoo",
     lambda c: _zoo_worst(c, "opencv_over_runner")[0], lambda c: _zoo_show(c, "opencv_over_runner"),
     lambda v: v > 1.0),
    ("`set_speed(compile=True)` >= 1.3x faster than the default on every zoo net", "zoo",
     lambda c: _zoo_worst(c, "compile_speedup")[0], lambda c: _zoo_show(c, "compile_speedup"), lambda v: v >= 1.3),
)


def _zoo_worst(c: Dict[str, Any], key: str) -> Tuple[Optional[float], str]:
    """The smallest of a zoo figure over nets and thread counts, and where (None where none was measured)."""
    found = [(t[key], f"{name}, {threads} thread{'s' * (threads != '1')}") for name, net in c["nets"].items()
             for threads, t in net["threads"].items() if t.get(key) is not None]
    return min(found) if found else (None, "")


def _zoo_show(c: Dict[str, Any], key: str) -> str:
    values = [t[key] for net in c["nets"].values() for t in net["threads"].values() if t.get(key) is not None]
    worst, where = _zoo_worst(c, key)
    return f"{min(values):.2f}x to {max(values):.2f}x (lowest: {where})"


def _table(header: Sequence[str], rows: List[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _header(results: Dict[str, Any]) -> List[str]:
    m = results["machine"]
    dirty = " plus uncommitted changes" if m["uncommitted_changes"] else ""
    load = ", ".join(f"{v:.1f}" for v in m["load_average_at_start"])
    end = ", ".join(f"{v:.1f}" for v in m.get("load_average_at_end", []))
    return [
        "# Benchmarks", "",
        f"Generated by `make bench` (`python -m bench.run`) at commit `{m['commit']}`{dirty}, {m['date_utc']} UTC.",
        "Every ratio compares things timed in the same run, taking turns (A, B, A, B, ...) after a warm-up "
        "round; a figure is the median of the repetitions. Raw figures: `bench/results.json`.", "",
        f"Machine: {m['cpu']} ({m['cpu_capability']}), {m['logical_cpus']} logical CPUs, torch using "
        f"{m['torch_threads']} threads, {m['memory_gib']} GiB; GPU: {m['gpu'] or 'none'}. Python {m['python']}, "
        f"torch {m['torch']}, numpy {m['numpy']}, OpenCV {m['opencv']}, protobuf {m['protobuf']}. "
        f"Load average (1, 5, 15 min) at start: {load}; at end: {end}.",
    ] + _earlier_runs(results) + [
        "Host memory: " + ("freed blocks kept in the process for reuse (`runner.host_memory`, "
                           "`make bench ARGS=--keep-freed-memory`), for every contender alike." if m.get("freed_memory_kept") else
                           "glibc's defaults (freed large blocks go back to the OS), as a pycaffe script runs; every "
                           "contender alike."), "",
    ]


def _earlier_runs(results: Dict[str, Any]) -> List[str]:
    """The cases whose figures a ``--merge`` run kept from earlier runs, and when and where those ran."""
    runs: Dict[str, List[str]] = {}
    for name in results.get("kept_cases", ()):
        m = results["case_machines"][name]
        when = (f"commit `{m['commit']}`{' plus uncommitted changes' * bool(m['uncommitted_changes'])}, "
                f"{m['date_utc']} UTC, load average at start {m['load_average_at_start'][0]:.1f}")
        runs.setdefault(when, []).append(name)
    if not runs:
        return []
    return ["Figures kept from earlier runs (`--merge`): " + "; ".join(
        f"{', '.join(names)} at {when}" for when, names in runs.items()) + "."]


def _targets(cases: Dict[str, Any]) -> List[str]:
    rows = []
    for label, case, read, show, met in TARGETS:
        value = read(cases[case]) if case in cases else None
        if value is not None:  # a figure the run did not measure (a quick run compiles nothing) has no row
            rows.append((label, show(cases[case]), "met" if met(value) else "**missed**"))
    return ["## Targets", ""] + _table(("target", "measured", ""), rows) if rows else []


FORWARD_NAMES = {
    "runner": "runner (`net.forward()`, as pycaffe calls it: no wrapper)",
    "plain_pytorch": "plain PyTorch `nn.Module`",
    "opencv_dnn": "OpenCV DNN (`readNetFromCaffe`, its defaults: Winograd 3x3)",
    "opencv_dnn_direct": "OpenCV DNN, `enableWinograd(False)`",
    "winograd": "runner, `set_speed(winograd=True)` (NNPACK: Winograd 3x3, FFT 7x7)",
    "bf16_autocast": "runner, `set_speed(autocast=torch.bfloat16)`",
    "compile": "runner, `set_speed(compile=True)` (inductor, frozen weights)",
    "bf16_compile": "runner, `set_speed(autocast=torch.bfloat16, compile=True)`",
    "plain_bf16_autocast": "plain PyTorch, bf16 autocast",
    "plain_bf16_weights": "plain PyTorch, bf16 weights, channels-last bf16 input",
    "plain_bf16_compile": "plain PyTorch, `torch.compile` with frozen weights, bf16 autocast",
}


def _forward_rows(c: Dict[str, Any], timings: Dict[str, Any], peak: float) -> List[Sequence[Any]]:
    runner = timings["runner"]["median_s"]
    rows = []
    for name, timing in timings.items():
        if name == "conv_peak":
            continue
        gflops = 2 * c["gmac"] / timing["median_s"]
        error = c["checks"].get(f"{name}_relative_error")
        rows.append((FORWARD_NAMES.get(name, name), _ms(timing["median_s"]), _ms(timing["best_s"]),
                     _ms(timing["cpu_median_s"]), f"{runner / timing['median_s']:.2f}x",
                     f"{gflops:.0f} ({100 * gflops / peak:.0f}%)", f"{error:.1e}" if error is not None else ""))
    return rows


def _forward(c: Dict[str, Any]) -> List[str]:
    header = ("contender", "median", "best", "CPU time", "speed vs runner", "GFLOP/s (% of conv peak)", "error")
    peak = c["conv_peak_gflops"]
    lines = ["## 1. Forward: FCN-8s VGG16 deploy net", "",
             f"Input {'x'.join(map(str, c['input']))}, random He-normal weights, {c['gmac']:.1f} GMAC "
             "(convolutions and deconvolutions). GFLOP/s is twice the net's multiply-adds over the median time; "
             "its share is of the conv peak, the GFLOP/s of one 256->256 3x3 convolution on 100x100 timed in "
             f"the same round ({peak['main']:.0f} GFLOP/s in the first, {peak['options']:.0f} in the second). "
             "Winograd needs fewer multiplications than the layers' multiply-adds, so it can pass 100%. "
             "Error: max abs difference to the runner's float32 output / max abs output. OpenCV computes 3x3 "
             "convolutions by Winograd's algorithm unless told not to; its `enableWinograd(False)` row is the "
             "like-for-like comparison with torch's direct convolutions, and the runner's `winograd` speed "
             "option the like-for-like comparison with its default.", ""]
    lines += _table(header, _forward_rows(c, c["timings"], peak["main"]))
    lines += [f"Runner overhead over plain PyTorch: {100 * c['runner_overhead_vs_plain']:+.1f}% (median wall "
              f"time), {100 * c['runner_overhead_vs_plain_cpu']:+.1f}% (median CPU time).", "",
              "Speed options (`Net.set_speed`), timed in a second round against the runner:", ""]
    lines += _table(header, _forward_rows(c, c["option_timings"], peak["options"]))
    if c.get("compile_seconds"):
        lines += ["Compiling (trace + inductor, first call) took " + ", ".join(
            f"{seconds:.0f} s ({name.replace('_', ' ')})" for name, seconds in c["compile_seconds"].items()) + ".", ""]
    if c.get("bf16_runner_over_plain") is not None:
        best = c["bf16_best"]
        lines += [f"bfloat16, best against best: the runner's fastest ({FORWARD_NAMES[best['runner']]}) takes "
                  f"{c['bf16_runner_over_plain']:.2f}x the time of plain PyTorch's fastest "
                  f"({FORWARD_NAMES[best['plain']]}).", ""]
    return lines


def _training(c: Dict[str, Any]) -> List[str]:
    t = c["timings"]
    rows = [(name.replace("_", " "), _ms(v["median_s"]), _ms(v["best_s"]), _ms(v["cpu_median_s"]),
             f"{1 / v['median_s']:.2f}") for name, v in t.items()]
    loss = c["first_loss"]
    return ["## 2. Training iteration: FCN-8s, forward + backward + SGD update", "",
            f"Input {'x'.join(map(str, c['input']))}, batch 1, no dropout; `solver.step(1)` against plain PyTorch "
            "(`F.cross_entropy(..., reduction='sum')`, `torch.optim.SGD` with the release's per-parameter rates). "
            f"Both start from the same weights and data: first losses {loss['solver']:.6g} (solver) and "
            f"{loss['plain_pytorch']:.6g} (plain).", ""] + \
        _table(("", "median", "best", "CPU time", "images/s"), rows) + \
        [f"Solver overhead: {100 * c['solver_overhead_vs_plain']:+.1f}% (median wall time), "
         f"{100 * c['solver_overhead_vs_plain_cpu']:+.1f}% (median CPU time).", ""]


def _amortize(c: Dict[str, Any]) -> List[str]:
    t = c["timings"]
    rows = [(name.replace("_", " "), _ms(v["median_s"]), f"{c['gmac'][name]:.1f}")
            for name, v in t.items()]
    return ["## 3. Amortization (paper Section 3.1): convolutional AlexNet vs patch classifier", "",
            f"One {c['image'][0]}x{c['image'][1]} image through AlexNet with fc6-fc8 as convolutions gives a "
            f"{c['grid'][0]}x{c['grid'][1]} grid of 1000-class scores; the classifier (fc6-fc8 InnerProduct) "
            f"needs {c['patches']} 227x227 forwards for as many outputs, one at a time or as one batch.", ""] + \
        _table(("", "median", "GMAC"), rows) + \
        [f"Fully convolutional vs separate patches: **{c['speedup_vs_separate']:.1f}x** faster; vs one batch of "
         f"{c['patches']}: **{c['speedup_vs_batched']:.1f}x** (the paper: about 5x, 22 ms vs 100 x 1.2 ms on a GPU).",
         ""]


def _dilation(c: Dict[str, Any]) -> List[str]:
    t = c["timings"]
    rows = [(name.replace("_", " "), _ms(v["median_s"]), f"{c['gmac'][name]:.2f}") for name, v in t.items()]
    f = c["stride"]
    return ["## 8. Shift-and-stitch vs filter dilation (paper Section 3.2)", "",
            f"A net of unpadded 3x3 convolutions, a 2x2 pooling and two stride-2 convolutions (output stride {f}) on a "
            f"{c['image'][0]}x{c['image'][1]} image. Shift-and-stitch runs it on the {f * f} shifted copies and "
            "interlaces them (`surgery.shift_stitch`); `surgery.dilation.remove_subsampling` from pool1 on "
            "gives the same dense output in one forward (the same weights, filters dilated). The two outputs "
            f"({c['dense_output'][0]}x{c['dense_output'][1]}) agree to {c['relative_error']:.1e} of their "
            "magnitude. GMAC for shift-and-stitch counts every shift at full size (an upper bound).", ""] + \
        _table(("", "median", "GMAC"), rows) + \
        [f"The dilated net is **{c['dilated_speedup']:.1f}x** faster than shift-and-stitch.", ""]


def _loading(c: Dict[str, Any]) -> List[str]:
    size = c["file_bytes"]
    names = {"pycaffe": "`caffe.Net(deploy, caffe.TEST, weights=...)` (build and load, as pycaffe)",
             "fast": "`load_caffemodel` (packed bytes as numpy views)",
             "copy_from": "`Net.copy_from` into a built net",
             "protobuf": "protobuf `FromString` + `numpy.array(blob.data)`"}
    rows = [(names[way], f"{v['seconds']:.2f} s", f"{v['peak_bytes_above_start'] / MIB:.0f} MiB",
             f"{v['peak_over_file_size']:.2f}x") for way, v in c["ways"].items()]
    return ["## 4. Loading a released-size caffemodel", "",
            f"FCN-8s VGG16 with random weights: {size / MIB:.0f} MiB. Each way runs in a fresh process; peak is "
            "its resident high-water mark above what it held just before (`VmHWM`, reset before the call).", ""] + \
        _table(("way", "seconds", "peak above start", "peak / file"), rows) + \
        [f"The fast path is {c['fast_speedup_vs_protobuf']:.1f}x faster than protobuf's own decoding.", ""]


def _data(c: Dict[str, Any]) -> List[str]:
    rows = [(d["kind"], d["prefetch"], f"{d['images_per_second']:.0f}") for d in c["delivery"]]
    net = c["training_wait"]["net"]
    waits = [(r["prefetch"], r["iterations"], f"{r['seconds']:.1f} s", f"{r['data_wait_seconds']:.2f} s",
              f"{100 * r['wait_fraction']:.1f}%") for r in c["training_wait"]["runs"]]
    return ["## 5. Data layers", "",
            f"Images/s each layer delivers on synthetic data in the release's formats (pictures up to "
            f"{c['image_size'][0]}x{c['image_size'][1]}), nothing else running in between; prefetch 0 decodes "
            "inline, otherwise on 2 background threads.", ""] + \
        _table(("dataset", "prefetch", "images/s"), rows) + \
        [f"Data-wait fraction of a short `solvers.training.train` run (FCN-8s with widths {net['widths']} and "
         f"fc width {net['fc_width']}, synthetic VOC), from train_log.jsonl:", ""] + \
        _table(("prefetch", "iterations", "seconds", "waiting for data", "fraction"), waits)


def _scoring(c: Dict[str, Any]) -> List[str]:
    rows = [(name.replace("_", " "), _ms(v["median_s"]),
             f"{c['pixels_per_second'][name] / 1e6:.0f}" if name in c["pixels_per_second"] else "")
            for name, v in c["timings"].items()]
    return ["## 6. Scoring", "",
            f"Confusion histogram of {c['pixels_per_call'] / 1e6:.1f} M pixels ({c['classes']} classes, 5% void) "
            "per call, and the paper's four metrics from it.", ""] + \
        _table(("", "median", "M pixels/s"), rows)


def _gpu(c: Dict[str, Any]) -> List[str]:
    lines = ["## 7. GPU", ""]
    if not c["available"]:
        return lines + [f"No GPU was available for this run ({c['note']}); on a CUDA machine `make bench` "
                        "measures the forward in fp32, TF32 and bf16 autocast, training images/s and peak GPU "
                        "memory here.", ""]
    lines += [f"Device: {c['device']}.", ""]
    for part in ("forward", "training"):
        rows = [(name, _ms(v["median_s"]), f"{v['images_per_second']:.1f}", f"{v['peak_gib']:.2f} GiB")
                for name, v in c[part].items()]
        lines += [f"{part.capitalize()}:", ""] + _table(("precision", "median", "images/s", "peak memory"), rows)
    return lines


def _zoo(c: Dict[str, Any]) -> List[str]:
    rows = []
    for name, net in c["nets"].items():
        for threads, t in net["threads"].items():
            timings = t["timings"]
            compiled = timings.get("compile")
            rows.append((name, threads, _ms(timings["runner"]["median_s"]),
                         _ms(compiled["median_s"]) if compiled else "",
                         _ms(timings["opencv_dnn"]["median_s"]), f"**{t['opencv_over_runner']:.2f}x**",
                         f"{t['compile_speedup']:.2f}x" if t.get("compile_speedup") else "",
                         f"{max(t['relative_errors'].values()):.1e}",
                         f"{t['compile_seconds']:.0f} s" if t.get("compile_seconds") else ""))
    load = ", ".join(f"{v:.1f}" for v in c["load_average"])
    return ["## 9. Model-zoo nets: the default `net.forward()`, `compile=True` and OpenCV DNN", "",
            "The zoo's deploy prototxts of BVLC layers (bench/zoo/, sources in bench/zoo/SOURCES.tsv) at batch 1, "
            "random He-normal weights, BatchNorm statistics set from the timing image; OpenCV reads the same "
            "prototxt and the same weights saved as a caffemodel. Threads: torch's intra-op threads and "
            "`cv2.setNumThreads` alike; the three take turns, medians. Error: the largest deviation of OpenCV's "
            "or the compiled output from the default's, relative to its magnitude. Compile: trace and inductor at "
            "the first call (compiled code is specialised to the thread count). Speeds are ratios of medians "
            f"within one row: OpenCV's time over the default's, the default's over compiled. Load average "
            f"(1, 5, 15 min) at the end of the case: {load}.", ""] + \
        _table(("net", "threads", "default", "compile=True", "OpenCV DNN", "default vs OpenCV", "compile vs default",
                "error", "compile"), rows)


SECTIONS: Dict[str, Callable[[Dict[str, Any]], List[str]]] = {
    "forward": _forward, "training": _training, "amortize": _amortize, "loading": _loading, "data": _data,
    "scoring": _scoring, "gpu": _gpu, "dilation": _dilation, "zoo": _zoo}


def fresh_demo_section(record: Optional[Dict[str, Any]]) -> List[str]:
    """`make demo` timed from a fresh clone (bench/fresh_demo.py's record, measured apart from this run)."""
    if record is None:
        return []
    m = record["machine"]
    scores = ", ".join(f"{name} {100 * iu:.1f}" for name, iu in record["mean_iu"].items() if iu is not None)
    return ["## 10. `make demo` from a fresh clone", "",
            f"`python -m bench.fresh_demo` at commit `{m['commit']}`, {m['date_utc']} UTC: `git clone`, then "
            "`make demo` with no virtualenv active, so the time includes making `.venv` and installing torch "
            f"and the rest. {m['logical_cpus']} logical CPUs ({m['cpu']}); load average before "
            f"{record['load_average_before'][0]:.2f}, after {record['load_average_after'][0]:.2f}.", "",
            f"| whole `make demo` | install (until stage 1 starts) | demo |", "|---|---|---|",
            f"| {record['seconds'] / 60:.1f} min | {record['install_seconds']:.0f} s | "
            f"{(record['seconds'] - record['install_seconds']) / 60:.1f} min |", "",
            f"Mean IU of that run (seed 0, validation split): {scores}.", ""]


def render(results: Dict[str, Any], fresh_demo: Optional[Dict[str, Any]] = None) -> str:
    """The whole report as Markdown; ``fresh_demo`` is bench/fresh_demo.py's record, when there is one."""
    cases = results["cases"]
    lines = _header(results) + _targets(cases)
    for name, section in SECTIONS.items():
        if name in cases:
            lines += section(cases[name])
    seconds = sum(results.get("case_seconds", {}).values())
    lines += [f"Whole `make bench` run: {seconds / 60:.1f} min.", ""]
    lines += fresh_demo_section(fresh_demo)
    return "\n".join(lines) + "\n"
