"""``locallearn measure``: memory and time of training steps, without a dataset.

"Will it fit, and what does K buy me?" needs no data: the bytes a step saves for backward
depend only on the shapes, so one real ``train_step`` of the one loop (engine/loop.py) on a
random batch of the right shape measures ``act_bytes_peak`` exactly -- the same number a
training run reports for that model, rule and batch size (its first step is metered the same
way). Step time is the median of ``steps`` timed steps after ``warmup`` untimed ones (the
metered step is never timed: the meter's hooks slow it); ``steps=0`` measures memory only.

Random inputs are "images" of uniform pixels in [0, 1] normalised with their exact
statistics (mean 1/2, std 1/sqrt(12) per channel), so a rule that reconstructs the raw input
(InfoPro's decoder, BCE against x * std + mean) sees targets in [0, 1] as it would on data.

Peak memory besides the saved activations:
* CUDA: ``torch.cuda.max_memory_allocated`` over model building and every step, minus what was
  allocated before (weights, gradients, optimizer state, workspace, activations: what the
  papers call GPU memory).
* CPU: the resident-set high-water mark is per process and never goes down, so in one
  process every rule after the first would inherit the largest peak so far. Several rules on
  CPU are therefore measured each in a fresh child process (``isolate``), and the result says
  which scope its ``peak_rss_bytes`` has. It includes the Python interpreter and the torch
  library (``rss_base_bytes``, read before the model is built, is that part).
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from locallearn import __version__
from locallearn.config import RunConfig, config_from_mapping, validate
from locallearn.engine.loop import train_step
from locallearn.errors import UsageError
from locallearn.measure.memory import SavedTensorMeter, peak_rss_bytes
from locallearn.measure.params import count_params

DEFAULT_STEPS = 3
DEFAULT_WARMUP = 1
PIXEL_MEAN = 0.5  # uniform [0, 1] pixels
PIXEL_STD = 1 / math.sqrt(12)
SHAPE_HINT = "give the shape of one input, without the batch, as positive integers joined by x"


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"3x32x32"`` -> (3, 32, 32). Anything else is a UsageError naming the value."""
    parts = str(text).strip().lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UsageError(
            f"--input-shape {text!r} is not a shape: {SHAPE_HINT}, e.g. 3x32x32 (images) "
            "or 1x40 (signals)"
        )
    return shape


def random_batch(
    input_shape: Sequence[int], classes: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised uniform-pixel inputs (B, *input_shape) and uniform labels (B,)."""
    pixels = torch.rand(batch_size, *input_shape, generator=generator)
    x = (pixels - PIXEL_MEAN) / PIXEL_STD
    y = torch.randint(0, classes, (batch_size,), generator=generator)
    return x, y


def _check(cfg: RunConfig, classes: int, steps: int, warmup: int) -> None:
    validate(cfg)
    if cfg.augment or cfg.as_sequence:
        flag = "--augment" if cfg.augment else "--as-sequence"
        raise UsageError(
            f"{flag} does not apply to measure: it runs on random inputs of --input-shape "
            "(give the shape the model sees)"
        )
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise UsageError(f"--classes must be an integer of at least 2, got {classes!r}")
    if steps < 0:
        raise UsageError(f"--steps must be >= 0 (0: memory only, no timing), got {steps}")
    if warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {warmup}")


def measure_config(
    cfg: RunConfig,
    input_shape: Sequence[int],
    classes: int,
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    rss_scope: str = "process",
) -> dict[str, Any]:
    """Measure one (rule, model) of ``cfg`` at ``cfg.batch_size`` in this process.

    Builds the model and rule exactly as a run does (seeded, same optimizers), then runs one
    metered step, ``warmup`` untimed and ``steps`` timed steps of ``engine.loop.train_step``.
    """
    # Imported here: engine.run imports this package, so a module-level import would loop.
    from locallearn.engine.evaluation import resolve_run_config
    from locallearn.engine.run import check_accelerator_options, make_optimizer, resolve_device
    from locallearn.models import MODELS, build_model
    from locallearn.rules import RULES, build_rule

    input_shape = tuple(int(d) for d in input_shape)
    _check(cfg, classes, steps, warmup)
    RULES.get(cfg.rule)
    MODELS.get(cfg.model)
    cfg = resolve_run_config(cfg)  # the rule's recipe: its batch size, optimiser, activation
    device = resolve_device(cfg.device)
    check_accelerator_options(cfg, device)
    cuda = device.type == "cuda"
    cuda_base = 0
    if cuda:
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        cuda_base = torch.cuda.memory_allocated(device)
    rss_base = peak_rss_bytes()

    torch.manual_seed(cfg.seed)
    network = build_model(cfg.model, input_shape, classes, **cfg.model_options())
    stats = ((PIXEL_MEAN,) * input_shape[0], (PIXEL_STD,) * input_shape[0])
    rule = build_rule(
        cfg.rule, network, input_shape, classes, input_stats=stats, **cfg.rule_options()
    )
    rule.to(device)
    if cfg.channels_last:
        rule.network.to(memory_format=torch.channels_last)
    optimizers = [make_optimizer(cfg, rule.stage_parameters(i)) for i in range(rule.blocks)]
    x, y = random_batch(
        input_shape, classes, cfg.batch_size, torch.Generator().manual_seed(cfg.seed)
    )
    if cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x, y = x.to(device), y.to(device)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16)

    amp = autocast if cfg.amp else None
    # Weights are not activations: the same exclusions as a run's meter (engine/run.py).
    frozen = [*rule.network.parameters(), *rule.network.buffers()]
    frozen += [*rule.signal_modules().parameters(), *rule.signal_modules().buffers()]
    meter = SavedTensorMeter(exclude=frozen)
    rule.train(True)
    rule.begin_epoch(0, 1)
    with meter:
        train_step(rule, optimizers, x, y, meter, amp)
    for _ in range(warmup):
        train_step(rule, optimizers, x, y, None, amp)
    seconds = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_step(rule, optimizers, x, y, None, amp)
        if cuda:
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    step_seconds = statistics.median(seconds) if seconds else None

    result: dict[str, Any] = {
        "rule": cfg.rule,
        "model": cfg.model,
        "blocks": rule.blocks,
        "cuts": list(rule.cuts),
        "input_shape": list(input_shape),
        "classes": classes,
        "batch_size": cfg.batch_size,
        "device": str(device),
        "seed": cfg.seed,
        "optimizer": cfg.optimizer,
        "options": {
            k: v for k, v in {**cfg.model_options(), **cfg.rule_options()}.items() if v is not None
        },
        "act_bytes_peak": meter.peak,
        "block_act_bytes": list(meter.segments),
        "act_vs_bp": None,
        "params": count_params(rule.network.parameters()),
        "aux_params": count_params(rule.aux_parameters()),
        "step_seconds": step_seconds,
        "step_seconds_all": seconds,
        "samples_per_second": cfg.batch_size / step_seconds if step_seconds else None,
        "steps": steps,
        "warmup": warmup,
        "amp": cfg.amp,
        "channels_last": cfg.channels_last,
        "torch_version": torch.__version__,
        "locallearn_version": __version__,
    }
    if cuda:
        torch.cuda.synchronize(device)
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - cuda_base
    else:
        result["peak_rss_bytes"] = peak_rss_bytes()
        result["rss_base_bytes"] = rss_base
        result["rss_scope"] = rss_scope
    return result


def _measure_in_child(
    cfg: RunConfig,
    input_shape: tuple[int, ...],
    classes: int,
    steps: int,
    warmup: int,
    threads: int,
) -> dict[str, Any]:
    torch.set_num_threads(threads)  # a spawned child starts with torch's default, not ours
    return measure_config(
        cfg, input_shape, classes, steps=steps, warmup=warmup, rss_scope="fresh process"
    )


def measure_isolated(
    cfg: RunConfig,
    input_shape: Sequence[int],
    classes: int,
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """``measure_config`` in a fresh ("spawn") child process, so its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        threads = torch.get_num_threads()
        future = pool.submit(
            _measure_in_child, cfg, tuple(input_shape), classes, steps, warmup, threads
        )
        return future.result()


def measure_configs(
    cfg: RunConfig,
    rules: Sequence[str],
    input_shape: Sequence[int],
    classes: int,
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    isolate: bool | None = None,
    on_result: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure each of ``rules`` with the options of ``cfg``; one result dict per rule.

    A rule option goes to the rules that take it, and one that no listed rule takes is an
    error (as in ``compare``). ``isolate`` None: a fresh process per rule on CPU when there
    is more than one rule (see the module docstring). ``act_vs_bp`` is each rule's
    act_bytes_peak over BP's when ``bp`` is in the list. ``on_result`` gets the results so
    far after each rule.
    """
    from locallearn.api import configs_for_rules

    configs = configs_for_rules(cfg, rules)
    for c in configs:  # every value checked before the first (possibly long) measurement
        _check(c, classes, steps, warmup)
    if isolate is None:
        isolate = cfg.device == "cpu" and len(configs) > 1
    results: list[dict[str, Any]] = []
    for c in configs:
        if isolate:
            result = measure_isolated(c, input_shape, classes, steps=steps, warmup=warmup)
        else:
            result = measure_config(c, input_shape, classes, steps=steps, warmup=warmup)
        results.append(result)
        _ratios(results)
        if on_result is not None:
            on_result(results)
    return results


def _ratios(results: list[dict[str, Any]]) -> None:
    bp = next((r for r in results if r["rule"] == "bp"), None)
    for r in results:
        if bp is not None and bp["act_bytes_peak"]:
            r["act_vs_bp"] = r["act_bytes_peak"] / bp["act_bytes_peak"]


def _config(rule: str, model: str, batch_size: int, options: dict[str, Any]) -> RunConfig:
    return config_from_mapping({**options, "rule": rule, "model": model, "batch_size": batch_size})


def measure_step(
    rule: str,
    model: str,
    input_shape: Sequence[int] | str,
    classes: int,
    batch_size: int,
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    isolate: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Memory and time of one rule's training step on ``model`` at ``batch_size``.

    ``options`` are RunConfig fields (``blocks``, ``head``, ``width``, ``device``, ``seed``,
    ``optimizer`` ...). ``input_shape`` is a tuple or text such as "3x32x32".

        measure_step("greedy", "mlp", (1, 40), 10, 128, blocks=3)["act_bytes_peak"]
    """
    if isinstance(input_shape, str):
        input_shape = parse_input_shape(input_shape)
    cfg = _config(rule, model, batch_size, options)
    if isolate:
        _check(cfg, classes, steps, warmup)
        return measure_isolated(cfg, input_shape, classes, steps=steps, warmup=warmup)
    return measure_config(cfg, input_shape, classes, steps=steps, warmup=warmup)


def measure_rules(
    rules: Sequence[str] | str,
    model: str,
    input_shape: Sequence[int] | str,
    classes: int,
    batch_size: int,
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    isolate: bool | None = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """``measure_step`` for several rules with shared options (see ``measure_configs``).

    In-process by default; ``isolate=True`` (or None: on CPU with several rules, as the
    command line does) gives each rule a fresh process and so its own peak RSS.
    """
    if isinstance(rules, str):
        rules = [r for r in rules.split(",") if r]
    if isinstance(input_shape, str):
        input_shape = parse_input_shape(input_shape)
    cfg = _config(rules[0] if rules else "bp", model, batch_size, options)
    return measure_configs(
        cfg, rules, input_shape, classes, steps=steps, warmup=warmup, isolate=isolate
    )


def measure_table(results: Sequence[dict[str, Any]]) -> str:
    """The table ``locallearn measure`` prints: one row per rule."""
    from locallearn.report import format_bytes, format_table

    cuda = any("cuda_peak_bytes" in r for r in results)
    headers = [
        "rule",
        "K",
        "act memory",
        "vs BP",
        "GPU peak" if cuda else "peak RSS",
        "step time",
        "samples/s",
        "params",
        "aux params",
    ]
    rows = []
    for r in results:
        peak = r.get("cuda_peak_bytes", r.get("peak_rss_bytes"))
        rows.append(
            [
                r["rule"],
                r["blocks"],
                format_bytes(r["act_bytes_peak"]),
                "-" if r["act_vs_bp"] is None else f"{r['act_vs_bp']:.2f}x",
                format_bytes(peak),
                "-" if r["step_seconds"] is None else f"{r['step_seconds'] * 1000:.1f} ms",
                "-" if r["samples_per_second"] is None else f"{r['samples_per_second']:.0f}",
                f"{r['params']:,}",
                f"{r['aux_params']:,}",
            ]
        )
    return format_table(headers, rows)


def measure_note(results: Sequence[dict[str, Any]]) -> str:
    """One line saying what the peak-memory column includes."""
    if not results:
        return ""
    first = results[0]
    if "cuda_peak_bytes" in first:
        return "GPU peak: torch.cuda.max_memory_allocated (weights, optimizer state, activations)"
    scopes = {r.get("rss_scope") for r in results}
    if scopes == {"fresh process"}:
        scope = "each rule in a fresh process"
    else:
        scope = "whole process: a later rule includes the peaks of the rules before it"
    return (
        f"peak RSS: resident-set high-water mark ({scope}), including Python and torch "
        f"(~{first['rss_base_bytes'] / 2**20:.0f} MiB before the model was built)"
    )
