"""The toy world: a templated instruction task with a known gold reward.

It stands in for the paper's open datasets and human raters so that a tiny model on a CPU
can walk the whole recipe, and every effect (reward-model accuracy, length bias,
online vs offline DPO) is measured against the truth instead of a proxy.

A prompt reads ``write positive about tea in 5 words with sun``. The gold reward of a
response ``y`` (whitespace-separated words) to that prompt is::

    r*(x, y) = 0.2 * [topic in y]
             + 0.2 * [required word in y]
             + 0.3 * clip((#asked-sentiment words - #opposite words) / (length - 2), 0, 1)
             + 0.2 * max(0, 1 - |#words - length| / length)
             + 0.1 * #distinct words / #words

(weights from ``data_recipes/toy_world.yaml``). Its maximum, 1.0, is reached by the topic,
the required word and ``length - 2`` distinct words of the asked sentiment.

Answers come from **writers** (:class:`Writer`, the recipe's ``writers``): the teacher, whose
demonstrations train the SFT model, and others with habits of their own (longer or shorter than
asked, another word order, a narrow vocabulary, less skill), who write the offline preference
pairs as the paper's other LLMs did. A simulated **annotator** labels each pair: Bradley-Terry on
the gold difference plus a bias per word of length difference.

Usage::

    world = ToyWorld.from_recipe("toy_world")
    prompt = world.all_instructions()[0].text
    world.gold_reward(prompt, world.best_response(prompt))          # 1.0
    verbose = world.writer("verbose", teacher_skill=0.6)
    pairs = world.preference_pairs(world.all_instructions(), 10, seed=0, writers=[verbose],
                                   temperature=0.1, length_bias=0.35)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import yaml

TEMPLATE = "write {sentiment} about {topic} in {length} words with {required}"
TEACHER = "teacher"  # the writer of the SFT demonstrations (its skill is the world.teacher_skill knob)
ORDERS = ("topic_first", "required_first", "shuffled")


@dataclass(frozen=True)
class Instruction:
    sentiment: str
    topic: str
    length: int
    required: str

    @property
    def text(self) -> str:
        return TEMPLATE.format(**self.__dict__)


@dataclass(frozen=True)
class Writer:
    """Someone who answers instructions, with habits of their own: a stand-in for one of the many LLMs
    whose answers fill the paper's open preference sets (the toy recipe's ``writers``)."""

    name: str
    skill: float  # 0..1: how often it follows each part of an instruction
    extra_words: tuple[int, int] = (0, 0)  # words added to (or, negative, cut from) the length it aims at
    order: str = "topic_first"  # topic_first (the teacher's habit), required_first, or shuffled
    vocabulary: int = 0  # how many of the asked sentiment's words it knows (0: all of them)

    def __post_init__(self):
        if not 0 <= self.skill <= 1:
            raise ValueError(f"writer {self.name!r}: skill must be in [0, 1], got {self.skill}")
        if self.order not in ORDERS:
            raise ValueError(f"writer {self.name!r}: order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        object.__setattr__(self, "extra_words", tuple(self.extra_words))


def parse_instruction(prompt: str) -> Instruction:
    """Read the attributes back from a prompt string (the gold reward needs only the text)."""
    words = prompt.split()
    if len(words) != 9 or words[0] != "write" or words[2] != "about" or words[4] != "in" or words[7] != "with":
        raise ValueError(f"not a toy-world prompt: {prompt!r}")
    return Instruction(sentiment=words[1], topic=words[3], length=int(words[5]), required=words[8])


class ToyWorld:
    """Prompts, gold reward, a noisy teacher and a simulated annotator, all seeded."""

    def __init__(self, recipe: dict[str, Any]):
        self.recipe = recipe
        self.topics: list[str] = recipe["topics"]
        self.required_words: list[str] = recipe["required_words"]
        self.sentiment_words: dict[str, list[str]] = recipe["sentiment_words"]
        self.fillers: list[str] = recipe["fillers"]
        self.lengths: list[int] = recipe["lengths"]
        self.weights: dict[str, float] = recipe["gold_weights"]
        self.pref: dict[str, Any] = recipe["preference"]
        self.writers: dict[str, dict[str, Any]] = recipe.get("writers") or {TEACHER: {}}
        if abs(sum(self.weights.values()) - 1.0) > 1e-9:
            raise ValueError("toy_world.yaml: gold_weights must sum to 1")

    @classmethod
    def from_recipe(cls, name: str = "toy_world") -> "ToyWorld":
        from .recipes import recipe_path  # the one resolver of recipe names and paths

        path = recipe_path(name)
        with open(path) as fh:
            recipe = yaml.safe_load(fh)
        if recipe.get("kind") != "toy_world":
            raise ValueError(f"{path}: kind must be toy_world")
        return cls(recipe)

    # ------------------------------------------------------------------ vocabulary
    def vocabulary(self) -> list[str]:
        """Every word a prompt or a response can hold, in a fixed order."""
        template = [w for w in TEMPLATE.split() if not w.startswith("{")]
        words = template + list(self.sentiment_words) + [str(n) for n in self.lengths]
        words += self.topics + self.required_words + self.fillers
        for polarity in self.sentiment_words.values():
            words += polarity
        return list(dict.fromkeys(words))

    # --------------------------------------------------------------------- prompts
    def all_instructions(self) -> list[Instruction]:
        return [
            Instruction(s, t, n, r)
            for s in self.sentiment_words
            for t in self.topics
            for n in self.lengths
            for r in self.required_words
        ]

    def split_pool(self, n_eval: int, n_iteration: int, iterations: int, seed: int) -> dict[str, list[Instruction]]:
        """Disjoint pools of distinct instructions: eval, iteration_1..T, and train (the rest)."""
        pool = self.all_instructions()
        random.Random(seed).shuffle(pool)
        need = n_eval + n_iteration * iterations
        if need >= len(pool):
            raise ValueError(
                f"world: eval + iteration prompts ({need}) must leave training prompts out of {len(pool)} distinct ones"
            )
        splits = {"eval": pool[:n_eval]}
        for t in range(iterations):
            start = n_eval + t * n_iteration
            splits[f"iteration_{t + 1}"] = pool[start : start + n_iteration]
        splits["train"] = pool[need:]
        return splits

    # ----------------------------------------------------------------- gold reward
    def gold_components(self, prompt: str, response: str) -> dict[str, float]:
        ins = parse_instruction(prompt)
        words = response.split()
        if not words:
            return {k: 0.0 for k in self.weights}
        asked = set(self.sentiment_words[ins.sentiment])
        opposite = {w for s, ws in self.sentiment_words.items() if s != ins.sentiment for w in ws}
        net = sum(w in asked for w in words) - sum(w in opposite for w in words)
        return {
            "topic": float(ins.topic in words),
            "required": float(ins.required in words),
            "sentiment": min(1.0, max(0.0, net / (ins.length - 2))),
            "length": max(0.0, 1.0 - abs(len(words) - ins.length) / ins.length),
            "distinct": len(set(words)) / len(words),
        }

    def gold_reward(self, prompt: str, response: str) -> float:
        """r*(x, y) in [0, 1]; see the module docstring for the formula."""
        parts = self.gold_components(prompt, response)
        return sum(self.weights[k] * v for k, v in parts.items())

    def best_response(self, prompt: str) -> str:
        """A response that reaches the maximum gold reward of 1."""
        ins = parse_instruction(prompt)
        body = self.sentiment_words[ins.sentiment][: ins.length - 2]
        return " ".join([ins.topic, *body, ins.required])

    # --------------------------------------------------------------------- writers
    def writer(self, name: str, teacher_skill: float) -> Writer:
        """One writer of the recipe's population; the teacher's skill is the ``world.teacher_skill`` knob."""
        if name not in self.writers:
            raise ValueError(f"world.offline_writers: unknown writer {name!r} (the recipe has: {', '.join(self.writers)})")
        habits = dict(self.writers[name])
        if name == TEACHER:
            habits["skill"] = teacher_skill
        return Writer(name=name, **habits)

    def write(self, ins: Instruction, rng: random.Random, writer: Writer, skill: float | None = None) -> str:
        """An answer in the writer's habits, following each part of the instruction with probability
        ``skill`` (default: the writer's own). With the teacher's habits this is :meth:`teacher_response`."""
        skill = writer.skill if skill is None else skill
        length = ins.length if rng.random() < skill else max(2, ins.length + rng.choice([-2, -1, 1, 2, 3]))
        if writer.extra_words != (0, 0):
            length = max(2, length + rng.randint(*writer.extra_words))
        first = ins.topic if rng.random() < skill else rng.choice(self.topics)
        last = ins.required if rng.random() < skill else rng.choice(self.fillers)
        words = []
        asked = self.sentiment_words[ins.sentiment][: writer.vocabulary or None]
        opposite = [w for s, ws in self.sentiment_words.items() if s != ins.sentiment for w in ws]
        for _ in range(length - 2):
            u = rng.random()
            if u < skill:
                words.append(rng.choice(asked))  # with replacement: repetitions happen, as in real text
            elif u < skill + (1 - skill) / 2:
                words.append(rng.choice(self.fillers))
            else:
                words.append(rng.choice(opposite))
        # Habits of order; the gold reward ignores order, a policy's likelihood does not.
        if writer.order == "required_first":
            first, last = last, first
        answer = [first, *words, last][:length]
        if writer.order == "shuffled":
            rng.shuffle(answer)
        return " ".join(answer)

    def teacher_response(self, ins: Instruction, rng: random.Random, skill: float) -> str:
        """A demonstration in the teacher's habits (topic first, required word last), following each
        part of the instruction with probability ``skill``."""
        return self.write(ins, rng, Writer(name=TEACHER, skill=skill))

    def pad_response(self, response: str, rng: random.Random) -> str:
        """A longer, worse twin: filler and repeated words appended (the length trap)."""
        words = response.split()
        extra = [rng.choice(self.fillers + words) for _ in range(rng.randint(2, 4))]
        return " ".join(words + extra)

    # ------------------------------------------------------------------- annotator
    def annotator_prob(self, prompt: str, a: str, b: str, temperature: float, length_bias: float) -> float:
        """P(annotator prefers a over b): Bradley-Terry on gold differences plus a per-word length bias."""
        logit = (self.gold_reward(prompt, a) - self.gold_reward(prompt, b)) / temperature
        logit += length_bias * (len(a.split()) - len(b.split()))
        return 1.0 / (1.0 + math.exp(-logit))

    def preference_pairs(
        self,
        instructions: list[Instruction],
        n_prompts: int,
        seed: int,
        writers: list[Writer],
        temperature: float,
        length_bias: float,
    ) -> list[dict[str, Any]]:
        """Answer pairs by ``writers`` (two drawn at random per pair), labelled by the simulated annotator.

        The first answer is written at its writer's skill, the second at a random fraction of it,
        so pairs range from near ties to clear wins. category: ``length_trap`` (one answer is the
        other padded with extra words), else ``easy`` when the gold gap is at least ``easy_gap``,
        else ``hard``. ``annotator_p_chosen`` is the probability with which the annotator would pick
        the chosen side again: the label noise, from which the best accuracy any judge can expect
        against these labels follows (mean of max(p, 1 - p)).
        """
        rng = random.Random(seed)
        rows = []
        for _ in range(n_prompts):
            ins = rng.choice(instructions)
            for _ in range(self.pref["pairs_per_prompt"]):
                first, second = (rng.choice(writers), rng.choice(writers)) if len(writers) > 1 else (writers[0], writers[0])
                a = self.write(ins, rng, first)
                if rng.random() < self.pref["length_trap_share"]:
                    b, category = self.pad_response(a, rng), "length_trap"
                else:
                    b = self.write(ins, rng, second, skill=second.skill * rng.random())
                    gap = abs(self.gold_reward(ins.text, a) - self.gold_reward(ins.text, b))
                    category = "easy" if gap >= self.pref["easy_gap"] else "hard"
                if a == b:
                    continue
                p = self.annotator_prob(ins.text, a, b, temperature, length_bias)
                if rng.random() >= p:
                    a, b, p = b, a, 1 - p
                rows.append(
                    {
                        "prompt": ins.text,
                        "chosen": a,
                        "rejected": b,
                        "category": category,
                        "gold_chosen": self.gold_reward(ins.text, a),
                        "gold_rejected": self.gold_reward(ins.text, b),
                        "annotator_p_chosen": p,
                    }
                )
        return rows
