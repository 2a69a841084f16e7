"""`swiftkit eval`: score models or an endpoint with lm-evaluation-harness, one eval artifact per model.

Order of work, so bad input fails before anything heavy: resolve every --model, check outputs,
parse --fail-under, validate tasks and local data, build lm-eval's tasks (datasets load here),
and only then load a model. A crash keeps the finished requests in the artifact's partial folder
(lm-eval's request cache), so re-running the same command resumes.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftkit.artifacts import ModelRef, artifact_writer, default_output, lineage
from swiftkit.console import console, summary
from swiftkit.errors import ArtifactError, SwiftkitError
from swiftkit.eval import reward
from swiftkit.eval.config import EvalConfig, parse_thresholds
from swiftkit.eval.report import check_thresholds, print_table, scores_of, side_by_side, write_eval_artifact
from swiftkit.eval.tasks import TaskPlan, plan_tasks
from swiftkit.resolve import resolve_model_ref


@dataclass
class Target:
    """One thing to score: a resolved model reference or the endpoint."""

    label: str
    output: Path
    ref: ModelRef | None = None


def _targets(cfg: EvalConfig) -> list[Target]:
    if bool(cfg.model) == bool(cfg.url):
        raise SwiftkitError(
            "give --model REF (one or more) or --url BASE_URL",
            "e.g. swiftkit eval --model runs/sft --tasks toy_arithmetic",
        )
    stamp = default_output("eval").name.removeprefix("eval-")
    if cfg.url:
        return [Target("endpoint", Path(cfg.output) if cfg.output else default_output("eval"))]
    refs = [resolve_model_ref(m) for m in cfg.model]
    labels: list[str] = []
    for ref in refs:
        label = ref.path.name
        labels.append(label if label not in labels else f"{label}-{len(labels)}")
    targets = []
    for ref, label in zip(refs, labels, strict=False):
        if cfg.output:
            output = Path(cfg.output) if len(refs) == 1 else Path(cfg.output) / label
        elif ref.manifest is not None:
            # Beside the model, where `swiftkit info MODEL` looks for its evals.
            output = ref.path.parent / f"eval-{label}-{stamp}"
        else:
            output = Path("runs") / f"eval-{label}-{stamp}"
        targets.append(Target(label, output, ref))
    for target in targets:
        if target.output.exists() and any(target.output.iterdir()) and not cfg.overwrite:
            raise ArtifactError(
                f"output already exists: {target.output.resolve()}",
                "pass --overwrite or choose another --output",
            )
    return targets


def _tokenizer_ref(cfg: EvalConfig) -> ModelRef | None:
    """An endpoint's local stand-in: --tokenizer, or --served-model when it is a local directory."""
    local_name = cfg.served_model if cfg.served_model and Path(cfg.served_model).is_dir() else None
    source = cfg.tokenizer or local_name
    return resolve_model_ref(source) if cfg.url and source else None


def _model_dirs(ref: ModelRef | None) -> list[Path]:
    """Where toy tasks look for the model's own task/ data: the artifact, its adapters, base, parents."""
    if ref is None:
        return []
    dirs = [ref.path, *reversed(ref.adapters), ref.base_path]
    dirs += [p for p, m in lineage(ref.path) if m is not None]
    return list(dict.fromkeys(dirs))


def _end_of_turn(tokenizer) -> str:
    """The text a chat template closes an assistant answer with (ChatML: '<|im_end|>')."""
    marker = "\u2063answer\u2063"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # a template that cannot render a plain exchange: score the answer alone
        return ""
    return text.split(marker, 1)[1].rstrip() if marker in text else ""


def _plan(cfg: EvalConfig, out: Path, target: Target, end_of_turn: str) -> TaskPlan:
    return plan_tasks(
        cfg.tasks,
        out,
        data_dir=cfg.data_dir,
        data=cfg.data,
        num_fewshot=cfg.num_fewshot,
        max_gen_toks=cfg.max_gen_toks,
        model_dirs=_model_dirs(target.ref or _tokenizer_ref(cfg)),
        end_of_turn=end_of_turn,
        allow_code_execution=cfg.allow_code_execution,
    )


def _check_names(plan: TaskPlan) -> None:
    """Unknown task names fail in ~2 s instead of after lm-eval's full index build."""
    from swiftkit.eval.tasks import surely_unknown

    generated = {p.stem for p in plan.include_dir.glob("*.yaml")}
    _refuse_unknown(surely_unknown([n for n in plan.names if n not in generated]))


def _refuse_unknown(unknown: list[str]) -> None:
    from swiftkit.eval.tasks import known_offline

    if unknown:
        raise SwiftkitError(
            f"unknown task(s): {', '.join(unknown)}",
            f"offline tasks: {', '.join(known_offline())}; or any lm-eval task name (lm_eval ls tasks)",
        )


def _task_manager(plan: TaskPlan):
    from lm_eval.tasks import TaskManager

    # lm-eval's full index (~15k YAMLs, ~10 s) is only needed for tasks read from the hubs.
    return TaskManager(include_path=str(plan.include_dir), include_defaults=not plan.offline)


def _build_tasks(manager, plan: TaskPlan) -> None:
    """Build lm-eval's tasks once now: unknown names and unreadable datasets fail before a model loads."""
    _refuse_unknown([n for n in plan.names if n not in manager.all_tasks])
    try:
        manager.load(plan.names)
    except SwiftkitError:
        raise
    except Exception as exc:
        # datasets wraps the real cause (a bad row, a missing file) in a generic message.
        cause = exc.__cause__ or exc.__context__ or exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise SwiftkitError(
            f"cannot load task data for {', '.join(plan.names)}: {first}",
            "offline? pass --data-dir with local copies (docs/eval.md)",
        ) from None


def _load_backend(cfg: EvalConfig, target: Target, tokenizer, plan: TaskPlan, chat: bool):
    from swiftkit.eval import backends

    if cfg.url:
        return backends.endpoint_backend(
            cfg.url,
            cfg.api_key,
            cfg.served_model,
            tokenizer,
            _tokenizer_path(cfg),
            chat,
            cfg.batch_size,
            cfg.max_length,
            plan.loglikelihood,
        )
    if cfg.backend == "hf":
        return backends.hf_backend(target.ref, cfg.batch_size, cfg.max_length, cfg.device, cfg.dtype)
    from swiftkit.loading import default_device, load_model

    # load_model leaves the weights where from_pretrained puts them (the host) unless told a device.
    with console.status(f"loading {target.ref.path}"):
        model, _, _ = load_model(target.ref, dtype=cfg.dtype, device=default_device(cfg.device),
                                 trust_remote_code=cfg.trust_remote_code)
    build = backends.engine_backend if cfg.backend == "engine" else backends.local_backend
    return build(model, tokenizer, str(target.ref.path), cfg.batch_size, cfg.max_length, cfg.device)


def _tokenizer_path(cfg: EvalConfig) -> str | None:
    ref = _tokenizer_ref(cfg)
    if ref is None:
        return None
    from swiftkit.loading import tokenizer_dir

    return str(tokenizer_dir(ref))


def _tokenizer(cfg: EvalConfig, target: Target):
    """The tokenizer (and so the chat template) training used; light to load, so it is checked first."""
    from transformers import AutoTokenizer

    if target.ref is not None:
        from swiftkit.loading import load_tokenizer

        return load_tokenizer(target.ref, cfg.trust_remote_code)
    path = _tokenizer_path(cfg)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code) if path else None


def _use_chat(cfg: EvalConfig, tokenizer, label: str) -> bool:
    from swiftkit.eval.backends import has_chat_template

    if tokenizer is None:  # endpoint without a local tokenizer: the server applies its own template
        return cfg.chat if cfg.chat is not None else True
    if cfg.chat and not has_chat_template(tokenizer):
        raise SwiftkitError(
            f"--chat: {label} has no chat template",
            "pass --no-chat, or give a model whose tokenizer carries one",
        )
    return has_chat_template(tokenizer) if cfg.chat is None else cfg.chat


def _score(cfg: EvalConfig, plan: TaskPlan, manager, backend, chat: bool, cache: Path, label: str) -> dict[str, Any]:
    """lm-eval's simple_evaluate with swiftkit's settings; finished requests are cached for resuming."""
    import lm_eval

    from swiftkit.eval.progress import eval_progress

    # The cache is keyed by request text only: the model and settings go into its file name.
    identity = f"{backend.target}|{cfg.backend}|{chat}|{cfg.system_prompt}|{cfg.dtype}|{cfg.max_length}"
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()[:16]
    cache.mkdir(exist_ok=True)
    try:
        with eval_progress(backend.lm, label) as display:
            results = lm_eval.simple_evaluate(
                model=backend.lm,
                tasks=plan.names,
                task_manager=manager,
                num_fewshot=cfg.num_fewshot,
                limit=cfg.limit,
                batch_size=cfg.batch_size,
                apply_chat_template=chat,
                fewshot_as_multiturn=chat,
                system_instruction=cfg.system_prompt,
                gen_kwargs={"max_gen_toks": cfg.max_gen_toks} if cfg.max_gen_toks else None,
                log_samples=True,
                use_cache=str(cache / f"requests-{fingerprint}"),
                bootstrap_iters=1000,
                random_seed=cfg.seed,
                numpy_random_seed=cfg.seed,
                torch_random_seed=cfg.seed,
                fewshot_random_seed=cfg.seed,
                confirm_run_unsafe_code=cfg.allow_code_execution,
            )
        results["swiftkit_phases"] = display.phases
        return results
    except Exception as exc:
        if not cfg.url or isinstance(exc, SwiftkitError):
            raise
        # lm-eval retries, then raises whatever the HTTP client raised: name the endpoint instead.
        raise SwiftkitError(
            f"endpoint {cfg.url} failed during the eval: {type(exc).__name__}: {exc}".splitlines()[0],
            "check the server's log; finished requests are cached, so re-running the command resumes",
        ) from None


def _evaluate_one(cfg: EvalConfig, target: Target) -> dict[str, float]:
    if reward.is_reward_model(target.ref):
        return reward.evaluate(cfg, target.label, target.ref, target.output)
    tokenizer = _tokenizer(cfg, target)
    chat = _use_chat(cfg, tokenizer, target.label)
    end = _end_of_turn(tokenizer) if chat and tokenizer is not None else ""
    with tempfile.TemporaryDirectory(prefix="swiftkit-eval-") as scratch:
        plan = _plan(cfg, Path(scratch), target, end)  # validate data before touching the output
        _check_names(plan)
        _build_tasks(_task_manager(plan), plan)
    from swiftkit.eval.progress import quiet_tqdm

    with quiet_tqdm():  # transformers' per-file loading bars
        backend = _load_backend(cfg, target, tokenizer, plan, chat)
    # Kept on failure: its request cache lets the same command resume where it stopped.
    with artifact_writer(target.output, overwrite=cfg.overwrite, keep_partial=True) as tmp:
        plan = _plan(cfg, tmp / "tasks", target, end)
        manager = _task_manager(plan)
        started = time.time()
        results = _score(cfg, plan, manager, backend, chat, tmp / "cache", target.label)
        wall = time.time() - started
        scores, metrics_used = scores_of(results, plan.primary)
        extra: dict[str, Any] = {
            "chat": chat,
            "chat_template": backend.chat_template if chat else None,
            "num_fewshot": cfg.num_fewshot,
            "limit": cfg.limit,
            "wall_s": round(wall, 2),
            "phases": results.pop("swiftkit_phases", []),
            **backend.info,
        }
        config = cfg.model_dump(exclude={"api_key"})  # never write a secret into an artifact
        write_eval_artifact(tmp, results, scores, metrics_used, backend.target, config, extra, plan.sources)
        _finalise(tmp, target.output.resolve())
    rows = [(task, f"{score:.4f} ({metrics_used[task]})") for task, score in scores.items()]
    summary(
        f"eval of {target.label}",
        [*rows, ("chat template", "applied" if chat else "not applied"), ("time", f"{wall:.1f}s")],
        artifact=str(target.output.resolve()),
    )
    return scores


def _finalise(tmp: Path, final: Path) -> None:
    """Point the kept task YAMLs at where their data will live, and drop the resume cache."""
    import shutil

    for task_yaml in (tmp / "tasks").glob("*.yaml"):
        task_yaml.write_text(task_yaml.read_text(encoding="utf-8").replace(str(tmp), str(final)), encoding="utf-8")
    shutil.rmtree(tmp / "cache", ignore_errors=True)


def run(cfg: EvalConfig) -> list[Path]:
    thresholds = parse_thresholds(cfg.fail_under)
    targets = _targets(cfg)
    if not cfg.tasks:
        from swiftkit.eval.tasks import known_offline

        raise SwiftkitError(
            "no --tasks given",
            f"e.g. --tasks toy_arithmetic,mmlu; offline tasks: {', '.join(known_offline())}",
        )
    for target in targets:
        reward.check_tasks(cfg, target.ref)
    # lm-eval warns about things swiftkit does on purpose (a pre-built model, --max-gen-toks);
    # its request progress bars (with ETA) stay, datasets' per-file ones go.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    all_scores = [_evaluate_one(cfg, target) for target in targets]
    labels = [t.label for t in targets]
    if len(targets) > 1:
        print_table(side_by_side("scores (delta to the first model)", labels, all_scores))
    failures = check_thresholds(labels, all_scores, thresholds)
    if failures:
        raise SwiftkitError("--fail-under: " + "; ".join(failures), "the eval artifacts were written; see results.json")
    return [t.output.resolve() for t in targets]
