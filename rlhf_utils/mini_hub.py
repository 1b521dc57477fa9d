"""A local stand-in for the Hugging Face Hub, built by the project's own code, for the rehearsal.

The real presets load a Qwen2.5 checkpoint and the RLHFlow datasets from the hub. The mini hub
holds the same kinds of things, small enough for a 2-core CPU and written here, never downloaded:

* ``models/Qwen2.5-mini-Instruct``: a Qwen2-architecture causal LM at tiny width, with a
  byte-level BPE tokenizer trained on the mini hub's own text, Qwen2.5-Instruct's special tokens
  and its ChatML chat template (the original, as TRL ships it; system turn included), saved with
  ``save_pretrained`` in safetensors like a hub checkpoint;
* ``datasets/<hub id>/data/train-0000k-of-0000n.jsonl``: each RLHFlow dataset that the
  ``colab_t4`` recipe reads, in its real schema (``conversations`` for the SFT set, whole
  ``chosen`` / ``rejected`` conversations with scores for preference_700K, ``context_messages``
  for the four prompt sets), laid out as a hub dataset repository so ``datasets`` streams it as
  it streams the hub; and the two chat benchmarks' questions in their schemas
  (``tatsu-lab/alpaca_eval/alpaca_eval.json``, a JSON list of ``instruction``/``output``/
  ``generator``/``dataset``; ``HuggingFaceH4/mt_bench_prompts``, two-turn ``prompt`` lists with
  ``prompt_id``, ``category`` and ``reference``), which notebook 05 answers;
* ``recipe.yaml``: ``data_recipes/rlhflow_small.yaml`` with each hub id pointed at its folder
  here and the sample sizes cut to CPU size.

The text is English from a deterministic generator (topics, questions, answers of several
qualities), so tokenizer, templates, lengths and the adapters see what real data looks like.

Usage (``rlhf_utils.rehearsal`` runs every notebook on it)::

    hub = build_mini_hub("runs/mini_hub")   # built once, reused while VERSION matches
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .artifacts import atomic_dir
from .recipes import RECIPE_DIR

VERSION = 3  # bump when anything below changes what the mini hub holds
MODEL = "models/Qwen2.5-mini-Instruct"
RECIPE = "recipe.yaml"
# Rows per dataset, written in two JSON-lines shards each (the recipe streams samples of them).
ROWS = {"sft": 600, "preference": 600, "prompts": 160, "alpaca_eval": 24, "mt_bench": 8}
# The recipe's num_samples, cut from rlhflow_small's 2000 / 4000 / 512 / 128.
SAMPLES = {"sft": 320, "preference": 320, "iteration_prompts": 48, "eval_prompts": 24}
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# ------------------------------------------------------------------------ the text

TOPICS: dict[str, dict[str, list[str]]] = {
    "sourdough bread": {
        "facts": ["A starter is a mix of flour and water that wild yeast and bacteria keep alive.",
                  "The dough needs a long, slow rise, often overnight in the fridge.",
                  "Steam in the first minutes of baking lets the crust expand before it sets."],
        "tips": ["feed the starter at the same time every day", "use a kitchen scale instead of cups",
                 "bake in a preheated cast-iron pot with the lid on"],
    },
    "learning Python": {
        "facts": ["Python reads almost like plain English, which makes it a common first language.",
                  "Indentation is part of the syntax, so blocks are marked by spaces, not braces.",
                  "The standard library covers files, dates, networking and much more."],
        "tips": ["write a small script every day", "read other people's code on GitHub",
                 "learn to use the debugger early"],
    },
    "saving money": {
        "facts": ["A budget shows where money goes before it is gone.",
                  "Small recurring costs, like subscriptions, add up over a year.",
                  "An emergency fund usually covers three to six months of expenses."],
        "tips": ["pay yourself first on payday", "cancel subscriptions you have not used in a month",
                 "compare prices before any large purchase"],
    },
    "the French Revolution": {
        "facts": ["It began in 1789 with the storming of the Bastille.",
                  "It ended the absolute monarchy of Louis XVI.",
                  "Its ideals of liberty, equality and fraternity spread across Europe."],
        "tips": ["start with a timeline of the main events", "read a short biography of Robespierre",
                 "compare it with the American Revolution"],
    },
    "running a first marathon": {
        "facts": ["Most training plans last sixteen to twenty weeks.",
                  "The long weekly run builds endurance more than speed work does.",
                  "Tapering in the last two weeks lets the body recover before race day."],
        "tips": ["increase weekly distance by no more than ten percent", "practise eating during long runs",
                 "buy shoes that fit well and break them in"],
    },
    "houseplants": {
        "facts": ["Most houseplants die from too much water rather than too little.",
                  "Bright, indirect light suits the majority of tropical plants.",
                  "Pots need drainage holes so roots do not sit in water."],
        "tips": ["check the soil with a finger before watering", "rotate the pot every few weeks",
                 "wipe dust off the leaves"],
    },
    "photosynthesis": {
        "facts": ["Plants turn light, water and carbon dioxide into sugar and oxygen.",
                  "Chlorophyll absorbs red and blue light and reflects green.",
                  "The process happens mainly in the leaves, inside chloroplasts."],
        "tips": ["draw the inputs and outputs as a diagram", "remember the word equation first",
                 "connect it to why forests matter for the climate"],
    },
    "writing a cover letter": {
        "facts": ["A cover letter explains why you want this job, not only what you have done.",
                  "Hiring managers often read it in under a minute.",
                  "One page is almost always enough."],
        "tips": ["name the company and the role in the first line", "give one concrete achievement with a number",
                 "end with a clear request for an interview"],
    },
    "black holes": {
        "facts": ["A black hole is a region where gravity is so strong that not even light escapes.",
                  "Many form when a massive star collapses at the end of its life.",
                  "The first image of a black hole's shadow was published in 2019."],
        "tips": ["start with how escape velocity works", "watch a simulation of an event horizon",
                 "read about the Event Horizon Telescope"],
    },
    "sleeping better": {
        "facts": ["Adults need about seven to nine hours of sleep a night.",
                  "Screens in the evening can delay the feeling of tiredness.",
                  "A regular wake-up time steadies the body clock."],
        "tips": ["keep the bedroom cool and dark", "avoid caffeine after lunch",
                 "get up at the same time every day, even at weekends"],
    },
    "electric cars": {
        "facts": ["An electric car has far fewer moving parts than a petrol car.",
                  "Most owners charge at home overnight.",
                  "Range drops in cold weather because the battery works less efficiently."],
        "tips": ["check where the nearest fast chargers are", "compare the total cost over five years",
                 "test drive one for a whole day"],
    },
    "learning a new language": {
        "facts": ["Short daily practice beats long weekly sessions.",
                  "Listening to native speakers trains the ear for rhythm and sounds.",
                  "The thousand most common words cover most everyday conversation."],
        "tips": ["use spaced-repetition flashcards", "speak from the first week, even badly",
                 "watch series with subtitles in the language"],
    },
}
ASK = [
    "How do I get started with {t}?", "What should a beginner know about {t}?", "Can you explain {t} simply?",
    "Give me three tips for {t}.", "What are common mistakes with {t}?", "Why does {t} matter?",
    "I'm curious about {t}. Where should I begin?", "Summarise the key points of {t} in a few sentences.",
]
FOLLOW_UP = ["Can you say more about the second point?", "Thanks! Anything else I should avoid?",
             "Could you make that shorter?", "What would you do first?"]
SYSTEMS = ["You are a patient teacher.", "You are a concise assistant.", "Answer as a friendly expert."]
OPENERS = ["Good question.", "Happy to help.", "Here is a short overview.", "Sure."]
CLOSERS = ["Good luck!", "I hope this helps.", "Take it one step at a time.", "Enjoy the process."]


def _good_answer(rng: random.Random, topic: str) -> str:
    t = TOPICS[topic]
    facts = rng.sample(t["facts"], 2)
    tips = rng.sample(t["tips"], 2)
    return (f"{rng.choice(OPENERS)} {facts[0]} {facts[1]} To start, {tips[0]}, and {tips[1]}. "
            f"{rng.choice(CLOSERS)}")


def _bad_answer(rng: random.Random, topic: str) -> str:
    """A worse answer, in one of the ways real rejected answers are worse."""
    other = rng.choice([x for x in TOPICS if x != topic])
    return rng.choice([
        f"It depends. {topic.capitalize()} is a big subject.",                              # vague
        f"{rng.choice(TOPICS[other]['facts'])} {rng.choice(CLOSERS)}",                          # off topic
        f"I'm not able to help with {topic}.",                                               # needless refusal
        f"{rng.choice(TOPICS[topic]['facts'])} {rng.choice(TOPICS[topic]['facts'])} " * 2,   # repetitive
    ]).strip()


def _question(rng: random.Random, topic: str) -> str:
    return rng.choice(ASK).format(t=topic)


def _conversation(rng: random.Random) -> list[dict[str, str]]:
    """A user question and a good answer, sometimes with a system turn or a follow-up."""
    topic = rng.choice(list(TOPICS))
    msgs = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.25 else []
    msgs += [{"role": "user", "content": _question(rng, topic)},
             {"role": "assistant", "content": _good_answer(rng, topic)}]
    if rng.random() < 0.3:
        msgs += [{"role": "user", "content": rng.choice(FOLLOW_UP)},
                 {"role": "assistant", "content": _good_answer(rng, topic)}]
    return msgs


def sft_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """RLHFlow/RLHFlow-SFT-Dataset-ver2's schema: ``conversations``, ``source``, ``conversation_id``."""
    sources = ["sharegpt", "slimorca", "mathinstruct", "evol_instruct"]
    return [{"conversations": _conversation(rng), "source": rng.choice(sources), "conversation_id": i} for i in range(n)]


def preference_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """hendrydong/preference_700K's schema: whole ``chosen`` / ``rejected`` conversations that share
    every turn but the last, with ``chosen_score`` / ``rejected_score``."""
    rows = []
    for _ in range(n):
        topic = rng.choice(list(TOPICS))
        prompt = [{"role": "user", "content": _question(rng, topic)}]
        good, bad = round(rng.uniform(6, 10), 1), round(rng.uniform(1, 6), 1)
        rows.append({"chosen": prompt + [{"role": "assistant", "content": _good_answer(rng, topic)}],
                     "rejected": prompt + [{"role": "assistant", "content": _bad_answer(rng, topic)}],
                     "chosen_score": good, "rejected_score": bad})
    return rows


def prompt_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """RLHFlow/iterative-prompt-v1-iter{t}-20K's schema: ``context_messages``, a history ending
    with the user turn to answer."""
    rows = []
    for _ in range(n):
        convo = _conversation(rng)
        rows.append({"context_messages": convo[:-1]})
    return rows


ALPACA_SETS = ["helpful_base", "koala", "oasst", "selfinstruct", "vicuna"]
MT_BENCH_CATEGORIES = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]


def alpaca_eval_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """tatsu-lab/alpaca_eval's ``alpaca_eval.json``: ``instruction``, a reference ``output``, its
    ``generator`` and the ``dataset`` the instruction came from."""
    rows = []
    for _ in range(n):
        topic = rng.choice(list(TOPICS))
        rows.append({"instruction": _question(rng, topic), "output": _good_answer(rng, topic),
                     "generator": "gpt4_1106_preview", "dataset": rng.choice(ALPACA_SETS)})
    return rows


def mt_bench_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """HuggingFaceH4/mt_bench_prompts: two user turns under ``prompt``, FastChat's ``prompt_id``
    (from 81, as MT-Bench's), a ``category`` and ``reference`` answers (math, reasoning, coding)."""
    rows = []
    for i in range(n):
        topic, category = rng.choice(list(TOPICS)), MT_BENCH_CATEGORIES[i % len(MT_BENCH_CATEGORIES)]
        reference = [_good_answer(rng, topic), _good_answer(rng, topic)] if category in ("math", "reasoning", "coding") else []
        rows.append({"prompt": [_question(rng, topic), rng.choice(FOLLOW_UP)], "prompt_id": 81 + i,
                     "category": category, "reference": reference})
    return rows


# ------------------------------------------------------------------------ building


def _write_repo(folder: Path, rows: list[dict[str, Any]], shards: int = 2) -> None:
    """Rows as ``data/train-0000k-of-0000n.jsonl``, the layout of a hub dataset repository.

    JSON lines (hub datasets come as JSON or parquet) rather than parquet: ``datasets`` sleeps 5 s
    whenever a parquet stream is closed early (a PyArrow workaround), which a sample always does.
    On the hub that is 5 s per source; here it would be most of the data stage."""
    (folder / "data").mkdir(parents=True)
    size = -(-len(rows) // shards)
    for k in range(shards):
        lines = (json.dumps(row, ensure_ascii=False) for row in rows[k * size:(k + 1) * size])
        (folder / f"data/train-{k:05d}-of-{shards:05d}.jsonl").write_text("\n".join(lines) + "\n")


def build_tokenizer(texts: list[str], vocab_size: int = 1200):
    """A byte-level BPE tokenizer trained on ``texts``, with Qwen2.5-Instruct's special tokens and
    its original chat template (as TRL ships it, which also lets TRL find its training variant)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    template = resources.files("trl").joinpath("chat_templates/qwen2_5.jinja").read_text()
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"], chat_template=template,
                                   model_max_length=32768, padding_side="right")


def build_model(tok, seed: int):
    """A Qwen2ForCausalLM at tiny width (Qwen2.5-0.5B's shape, scaled down), tied embeddings."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, rope_theta=1_000_000.0, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")], pad_token_id=tok.pad_token_id,
        do_sample=True, temperature=0.7, top_p=0.8,
    )
    return model


def pretrain(model, tok, conversations: list[list[dict[str, str]]], seed: int, steps: int = 300) -> None:
    """A few hundred full-parameter steps of next-token prediction on the mini hub's own chats, so
    the checkpoint writes English in the ChatML format as an instruct model does (a random one
    would make every later stage a test of noise)."""
    import torch

    torch.manual_seed(seed)
    ids = [i for convo in conversations for i in tok.apply_chat_template(convo, tokenize=True, return_dict=True)["input_ids"]]
    block = 128
    data = torch.tensor(ids[: len(ids) // block * block]).view(-1, block)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        batch = data[torch.randint(len(data), (16,))]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def hub_recipe(datasets_dir: str) -> dict[str, Any]:
    """``rlhflow_small.yaml`` with every hub id pointed at ``datasets_dir/<hub id>`` and the
    sample sizes cut to :data:`SAMPLES`: the same parts, sources, adapters and order."""
    recipe = yaml.safe_load((RECIPE_DIR / "rlhflow_small.yaml").read_text())
    recipe["description"] = "rlhflow_small's structure on the mini hub (tests and the rehearsal)."
    for part, sources in recipe.items():
        if isinstance(sources, list):
            for src in sources:
                src["dataset"] = f"{datasets_dir}/{src['dataset']}"
                src["num_samples"] = SAMPLES[part]
    for src in recipe["benchmarks"].values():  # answered whole, as on the hub
        src["dataset"] = f"{datasets_dir}/{src['dataset']}"
    return recipe


def build_mini_hub(root: str | Path, seed: int = 0) -> Path:
    """Write the mini hub under ``root`` (once: an existing one of this :data:`VERSION` is reused)
    and return its folder."""
    import datasets

    target = Path(root) / f"v{VERSION}"
    if (target / RECIPE).is_file():
        return target
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    rng = random.Random(seed)
    recipe = hub_recipe("datasets")
    data = {"sft": sft_rows(rng, ROWS["sft"]), "preference": preference_rows(rng, ROWS["preference"])}
    with atomic_dir(target) as tmp:
        _write_repo(tmp / recipe["sft"][0]["dataset"], data["sft"])
        _write_repo(tmp / recipe["preference"][0]["dataset"], data["preference"])
        for src in recipe["iteration_prompts"] + recipe["eval_prompts"]:
            _write_repo(tmp / src["dataset"], prompt_rows(rng, ROWS["prompts"]))
        bench = recipe["benchmarks"]
        alpaca = tmp / bench["alpaca_eval"]["dataset"]
        alpaca.mkdir(parents=True)  # one JSON list, as the hub repository's file
        (alpaca / bench["alpaca_eval"]["data_file"]).write_text(json.dumps(alpaca_eval_rows(rng, ROWS["alpaca_eval"]), indent=1))
        _write_repo(tmp / bench["mt_bench"]["dataset"], mt_bench_rows(rng, ROWS["mt_bench"]), shards=1)
        texts = [m["content"] for row in data["sft"] for m in row["conversations"]] + [QWEN_SYSTEM]
        tok = build_tokenizer(texts)
        model = build_model(tok, seed)
        pretrain(model, tok, [row["conversations"] for row in data["sft"]], seed)
        model.save_pretrained(tmp / MODEL, safe_serialization=True)
        tok.save_pretrained(tmp / MODEL)
        (tmp / RECIPE).write_text("# Written by rlhf_utils.mini_hub; the datasets beside it are generated.\n"
                                  + yaml.safe_dump(recipe, sort_keys=False))
    return target
