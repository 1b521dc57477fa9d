"""The chat benchmarks' own questions, answered by each model, in the files their tools score.

The paper reports AlpacaEval-2 and MT-Bench. Both judge answers to *their own* questions
(AlpacaEval's 805 instructions, MT-Bench's 80 two-turn questions) with an API judge, so stage 5
samples every model on those questions and writes:

* ``exports/<model>.alpaca_eval.json``: AlpacaEval's model outputs, a JSON list of
  ``{instruction, output, generator, dataset}``;
* ``exports/<model>.mt_bench.jsonl``: FastChat's MT-Bench answer file, one line per question,
  ``{question_id, answer_id, model_id, choices: [{index: 0, turns: [a1, a2]}], tstamp}``: the
  second turn answered with the first answer in the conversation, each category at FastChat's
  temperature.

The questions come from the recipe's ``benchmarks`` block (``rlhf_utils.recipes``), loaded with
``datasets`` from the hub (the mini hub holds copies in the same schemas). The answers are saved
with their fingerprint (the model's and the evaluation settings') and reused when unchanged.

Usage::

    questions = load_benchmarks(cfg)      # {} for a recipe without a benchmarks block (the toy world)
    paths = export_answers(run, "iter_3", questions, frames["iter_3"])

The toy world has no such questions; there :func:`export_answers` writes the model's held-out
toy answers in the same two formats, to show the files (no benchmark could score them).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .artifacts import RunDir, atomic_write_json, atomic_write_text, read_json, write_stamped_json
from .config import Config
from .recipes import ADAPTERS, BENCHMARKS, RowError, load_recipe, read_source
from .seeds import seed_for

# FastChat's llm_judge samples each MT-Bench category at its own temperature (0: greedy).
MT_BENCH_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
MT_BENCH_DEFAULT_TEMPERATURE = 0.7


def load_benchmarks(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """Every benchmark of the recipe: its questions (``question_id``, ``turns``, ``category``), in
    the benchmark's own order. A malformed row raises ``ValueError`` naming the benchmark, the
    dataset, the row and the field."""
    recipe = load_recipe(cfg.data.recipe)
    out = {}
    for bench, src in (recipe.get("benchmarks") or {}).items():
        rows = read_source(src["dataset"], src["split"], src.get("config"), src.get("data_file"))
        renames = {actual: expected for expected, actual in (src.get("columns") or {}).items()}
        adapter = ADAPTERS[src["adapter"]]
        questions = []
        for i, row in enumerate(rows):
            try:
                questions.append(adapter.fn({renames.get(k, k): v for k, v in row.items()}))
            except (RowError, KeyError) as err:
                raise ValueError(f"benchmarks.{bench}: {src['dataset']}: row {i}: {err}") from None
        out[bench] = questions
    return out


def model_path(run: RunDir, name: str) -> str:
    """Where stage 4 saved model ``name`` (``sft``, ``offline_dpo``, ``iter_<t>``)."""
    if name == "offline_dpo":
        return str(run / "models/offline_dpo")
    return str(run.policy_path(0 if name == "sft" else int(name.removeprefix("iter_"))))


def _sample(gen, conversations: list[list[dict[str, str]]], temperatures: list[float], cfg: Config, seed: int,
            tag: str) -> list[str]:
    """One answer per conversation, each group of equal temperature in one call, back in order."""
    answers: list[str | None] = [None] * len(conversations)
    for temp in sorted(set(temperatures)):
        idx = [i for i, t in enumerate(temperatures) if t == temp]
        out = gen.generate([conversations[i] for i in idx], n=1, temperature=temp, top_p=cfg.eval.top_p,
                           max_new_tokens=cfg.eval.max_new_tokens, seed=seed, tag=f"{tag}@T={temp}")
        for i, responses in zip(idx, out):
            answers[i] = responses[0]
    return answers  # type: ignore[return-value]


def _answer(gen, bench: str, questions: list[dict[str, Any]], cfg: Config, tag: str) -> list[list[str]]:
    """Each question's answers, one per user turn; turn k is asked after the model's own answers to turns < k."""
    temps = [cfg.eval.temperature if bench == "alpaca_eval" else
             MT_BENCH_TEMPERATURE.get(q["category"], MT_BENCH_DEFAULT_TEMPERATURE) for q in questions]
    answers: list[list[str]] = [[] for _ in questions]
    for turn in range(max(len(q["turns"]) for q in questions)):
        asked = [i for i, q in enumerate(questions) if len(q["turns"]) > turn]
        convos = []
        for i in asked:
            convo = []
            for k in range(turn):
                convo += [{"role": "user", "content": questions[i]["turns"][k]}, {"role": "assistant", "content": answers[i][k]}]
            convos.append(convo + [{"role": "user", "content": questions[i]["turns"][turn]}])
        seed = seed_for(cfg.runtime.seed, "benchmark", 10 * list(BENCHMARKS).index(bench) + turn)
        for i, text in zip(asked, _sample(gen, convos, [temps[i] for i in asked], cfg, seed, f"{tag}:turn{turn + 1}")):
            answers[i].append(text)
    return answers


def answer_benchmarks(run: RunDir, name: str, questions: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """Model ``name``'s answers to every benchmark in ``questions``, written as each tool's file
    under ``exports/``; returns their paths. The answers are sampled through the rollout's
    backend with the evaluation's settings (``eval.*``; MT-Bench at FastChat's temperatures),
    saved to ``exports/<name>.answers.json`` with their fingerprint and reused when unchanged."""
    from .generation import make_generator
    from .models import load_tokenizer

    cfg = run.cfg
    base = run.stamp(f"eval:{name}")
    stamp = replace(base, phase=f"benchmarks:{name}", settings={
        **base.settings, "benchmarks": {b: [q["turns"] for q in qs] for b, qs in questions.items()}})
    store = run / f"exports/{name}.answers.json"
    done = read_json(store, stamp)
    if done is None:
        path = model_path(run, name)
        gen = make_generator(cfg, path, None, load_tokenizer(path, cfg), work_dir=run / f"exports/.{name}.shards",
                             config_path=run / "config.yaml")
        done = {"tstamp": time.time(),
                **{bench: _answer(gen, bench, qs, cfg, f"{name}:{bench}") for bench, qs in questions.items()}}
        write_stamped_json(store, done, stamp)
    model_id = f"{cfg.name}-{name}"  # unique across runs: FastChat and AlpacaEval key their results by it
    paths = []
    if "alpaca_eval" in questions:
        records = [{"instruction": q["turns"][0], "output": a[0], "generator": model_id, "dataset": q["category"]}
                   for q, a in zip(questions["alpaca_eval"], done["alpaca_eval"])]
        paths.append(write_alpaca_eval(records, run / f"exports/{name}.alpaca_eval.json"))
    if "mt_bench" in questions:
        paths.append(write_mt_bench([q["question_id"] for q in questions["mt_bench"]], done["mt_bench"], model_id,
                                    run / f"exports/{name}.mt_bench.jsonl", done["tstamp"]))
    return paths


def write_alpaca_eval(records: list[dict[str, Any]], path: str | Path) -> Path:
    """AlpacaEval's model-outputs file: a JSON list of ``{instruction, output, generator[, dataset]}``."""
    atomic_write_json(path, records)
    return Path(path)


def write_mt_bench(question_ids: list[int], answers: list[list[str]], model_id: str, path: str | Path,
                   tstamp: float) -> Path:
    """FastChat's MT-Bench answer file (``data/mt_bench/model_answer/<model_id>.jsonl``): one JSON
    object per question, its answers to every turn under ``choices[0].turns``."""
    import json

    lines = [json.dumps({"question_id": qid, "answer_id": f"{model_id}-{qid}", "model_id": model_id,
                         "choices": [{"index": 0, "turns": turns}], "tstamp": tstamp})
             for qid, turns in zip(question_ids, answers)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def export_answers(run: RunDir, name: str, questions: dict[str, list[dict[str, Any]]], frame: Any) -> list[Path]:
    """Model ``name``'s answer files: to the benchmarks' own ``questions`` (:func:`answer_benchmarks`),
    or, without any (the toy world), its held-out answers in ``frame`` (columns ``prompt``,
    ``response``) in the same formats, one turn each."""
    if questions:
        return answer_benchmarks(run, name, questions)
    model_id = f"{run.cfg.name}-{name}"
    records = [{"instruction": p, "output": r, "generator": model_id} for p, r in zip(frame["prompt"], frame["response"])]
    return [write_alpaca_eval(records, run / f"exports/{name}.alpaca_eval.json"),
            write_mt_bench(list(range(1, len(frame) + 1)), [[r] for r in frame["response"]], model_id,
                           run / f"exports/{name}.mt_bench.jsonl", time.time())]
